"""smsrent quickstart: the whole flow against the built-in sandbox, with the official MCP Python client.

Launches `smsrent-mcp` over stdio (no credentials, so it serves the simulated providers), then:
balance -> plans -> rent with a max price -> wait for the code (printing progress) -> messages -> refund.

    python examples/quickstart.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

import anyio
from mcp import Client, StdioServerParameters


def show(title: str, data: Any) -> None:
    print(f"\n== {title}\n{json.dumps(data, indent=2)}")


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments, progress_callback=progress if tool == "wait_for_code" else None)
    if result.is_error:
        raise SystemExit(f"{tool} failed: {result.content[0].text}")  # type: ignore[union-attr]
    assert result.structured_content is not None
    return result.structured_content


async def progress(done: float, total: float | None, message: str | None) -> None:
    print(f"   ... {done:4.1f}/{total or 0:.0f} s  {message or ''}")


async def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "SMSRENT_SANDBOX": "1", "SMSRENT_DATA_DIR": data_dir, "SMSRENT_LOG_LEVEL": "WARNING"}
        server = StdioServerParameters(command=sys.executable, args=["-m", "smsrent"], env=env)
        async with Client(server) as client:
            balances = await call(client, "get_balance")
            currency = balances["currency"]
            show("Balances", [f"{b['provider']}: {b['amount']} {currency}" for b in balances["balances"]])

            plans = await call(client, "list_plans", service="telegram", max_price="2")
            show(
                "Cheapest Telegram plans",
                [f"{p['plan_id']}  {p['price']} USD  {p.get('duration', '')}" for p in plans["plans"][:4]],
            )

            # Rent on GotSMS, whose numbers sleep: wait_for_code wakes the number and follows its queue.
            gotsms_plan = next(p for p in plans["plans"] if p["plan_id"].startswith("gotsms:"))
            rented = await call(client, "rent_number", plan_id=gotsms_plan["plan_id"], max_price="2")
            rental = rented["rental"]
            show("Rented", {k: rental[k] for k in ("rental_id", "phone", "service", "price", "status")})

            print("\n== Waiting for the code (the sandbox sends one a few seconds after the number is online)")
            waited = await call(client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=45)
            show(
                "Code",
                {"outcome": waited["outcome"], "code": waited.get("code"), "waited_seconds": waited["waited_seconds"]},
            )

            messages = await call(client, "get_messages", rental_id=rental["rental_id"])
            show("Messages (SMS text is untrusted and comes fenced)", [m.get("text") for m in messages["messages"]])

            # A number that got no SMS can be given back: rent a spare and refund it.
            spare = await call(
                client, "rent_number", service="discord", country="USA", max_price="1", provider="gotsms"
            )
            refunded = await call(client, "refund", rental_id=spare["rental"]["rental_id"])
            show(
                "Refunded an unused rental",
                {"refunded": refunded.get("refunded"), "balance_after": refunded.get("balance_after")},
            )

            if "code" not in waited:
                raise SystemExit("no code arrived")
            print(f"\nCODE {waited['code']}")


if __name__ == "__main__":
    anyio.run(main)
