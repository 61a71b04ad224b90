"""A real server process killed between a purchase's intent and its outcome; the restart reconciles it."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from smsrent.sandbox import serve_loopback
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.e2e.process import command, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def purchases(data_dir: Path) -> list[tuple[str, str | None, str | None]]:
    with sqlite3.connect(data_dir / "ledger.sqlite3") as db:
        return db.execute("SELECT state, rental_id, price FROM purchases ORDER BY purchase_id").fetchall()


def rent_posts(sandbox: GotSmsSandbox) -> int:
    return sum(1 for _, method, path in sandbox.requests if (method, path) == ("POST", "/api/rents"))


async def test_kill_between_intent_and_outcome_then_restart_reconciles(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox
) -> None:
    plan = next(p for p in gotsms_sandbox.plans.values() if p.duration_type == "day")
    gotsms_sandbox.inject("POST", "/api/rents", "commit_then_hang")
    async with serve_loopback(gotsms_sandbox.app) as base:
        env = server_env(tmp_path, GOTSMS_API_TOKEN=gotsms_sandbox.token, GOTSMS_BASE_URL=f"{base}/api")
        pidfile = tmp_path / "server.pid"
        doomed = StdioServerParameters(
            command="/bin/sh", args=["-c", f'echo $$ > "{pidfile}"; exec "{command()}"'], env=env
        )

        async def buy_and_die() -> None:
            async with Client(doomed) as client:
                await client.call_tool("rent_number", {"plan_id": f"gotsms:{plan.id}", "max_price": "5"})

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(buy_and_die)
                while gotsms_sandbox.commits < 1:  # the provider has made the rent; its answer never comes
                    await anyio.sleep(0.05)
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
                tg.cancel_scope.cancel()

        rented_at_provider = list(gotsms_sandbox.rents)
        assert len(rented_at_provider) == 1
        assert purchases(tmp_path) == [("reserved", None, None)]  # the intent was recorded before the POST

        restarted = StdioServerParameters(command=command(), env=env)
        async with Client(restarted) as client:
            listed = await client.call_tool("list_rentals", {})
            assert not listed.is_error, listed.content
            assert listed.structured_content is not None
            ids = [r["rental_id"] for r in listed.structured_content["rentals"]]
            assert ids == [f"gotsms:{rented_at_provider[0]}"]

            state, rental_id, price = purchases(tmp_path)[0]
            assert (state, rental_id) == ("bought", f"gotsms:{rented_at_provider[0]}")
            assert price is not None
            assert rent_posts(gotsms_sandbox) == 1  # reconciled from the rent list, never bought again

            again = await client.call_tool("rent_number", {"plan_id": f"gotsms:{plan.id}", "max_price": "5"})
            assert not again.is_error, again.content  # settled, so buying is allowed again
            assert rent_posts(gotsms_sandbox) == 2


async def test_restart_keeps_spend_against_the_daily_budget(tmp_path: Path, gotsms_sandbox: GotSmsSandbox) -> None:
    plan = next(p for p in gotsms_sandbox.plans.values() if p.duration_type == "day" and p.price <= 2)
    async with serve_loopback(gotsms_sandbox.app) as base:
        env = server_env(
            tmp_path,
            GOTSMS_API_TOKEN=gotsms_sandbox.token,
            GOTSMS_BASE_URL=f"{base}/api",
            SMSRENT_DAILY_BUDGET=str(plan.price),
        )
        arguments = {"plan_id": f"gotsms:{plan.id}", "max_price": str(plan.price)}
        async with Client(StdioServerParameters(command=command(), env=env)) as client:
            first = await client.call_tool("rent_number", arguments)
            assert not first.is_error, first.content
        async with Client(StdioServerParameters(command=command(), env=env)) as client:
            second = await client.call_tool("rent_number", arguments)
            assert second.is_error
            text = second.content[0].text  # type: ignore[union-attr]
            assert "SMSRENT_DAILY_BUDGET" in text
            assert "nothing was bought" in text
            listed = await client.call_tool("list_rentals", {})
            assert listed.structured_content is not None
            assert listed.structured_content["count"] == 1
    assert rent_posts(gotsms_sandbox) == 1
