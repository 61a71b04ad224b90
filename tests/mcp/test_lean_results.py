"""Results cost a model as little as they can and stay complete (both eras, through a real client).

The text block is the structured content as compact JSON; nothing is `null`; what a result shares (`sandbox`,
`currency`) is said once, not per item; times have one form (UTC, `Z`); a code costs well under a kilobyte.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult

from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.mcp import UTC_TIME, local_id, rent_getatext, rent_gotsms, text_of, wait_while

pytestmark = pytest.mark.anyio

TIME_FIELDS = {"started_at", "ends_at", "received_at", "online_at", "online_till"}


def walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair inside a JSON value, at any depth."""
    yield key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, k)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item, key)


def check_lean(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    structured = result.structured_content
    assert structured is not None
    assert len(result.content) == 1
    assert text_of(result) == json.dumps(structured, separators=(",", ":"), ensure_ascii=False)  # compact, same JSON
    for key, value in walk(structured):
        assert value is not None, f"{key} is null"
        if key in TIME_FIELDS:
            assert UTC_TIME.match(value), (key, value)
        if isinstance(value, dict) and value is not structured:
            assert "sandbox" not in value, f"{key} repeats sandbox"  # said once per result
            assert "currency" not in value, f"{key} repeats currency"
    assert structured["sandbox"] is True
    return structured


async def test_every_result_is_lean_compact_and_in_utc(
    client: Client, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    gotsms = await rent_gotsms(client)
    getatext = await rent_getatext(client)  # Getatext gives naive times in US Eastern: shown in UTC
    assert UTC_TIME.match(getatext["ends_at"])
    gotsms_sandbox.deliver(local_id(gotsms["rental_id"]), "Your code is 480213", "480213")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("get_balance", {}),
        ("list_plans", {"service": "telegram"}),
        ("rent_number", {"plan_id": "getatext:uber", "max_price": "1"}),
        ("wait_for_code", {"rental_id": gotsms["rental_id"], "timeout_seconds": 5}),
        ("wait_for_code", {"rental_id": getatext["rental_id"], "timeout_seconds": 1}),
        ("get_messages", {"rental_id": gotsms["rental_id"]}),
        ("wake_up", {"rental_id": gotsms["rental_id"]}),
        ("list_rentals", {"status": "all"}),
        ("refund", {"rental_id": getatext["rental_id"]}),
        ("finish_rental", {"rental_id": (await rent_getatext(client, "getatext:google"))["rental_id"]}),
    ]
    for tool, arguments in calls:
        check_lean(await client.call_tool(tool, arguments))


async def test_a_code_costs_well_under_a_kilobyte(client: Client, gotsms_sandbox: GotSmsSandbox) -> None:
    """A GotSMS code with its SMS text, sender and the number's phase: the whole answer a model reads."""
    rental_id = (await rent_gotsms(client))["rental_id"]
    body = "Telegram code: 502718. Do not give it to anyone, even if they say they are from Telegram!"
    result = await wait_while(client, rental_id, lambda: gotsms_sandbox.deliver(local_id(rental_id), body, "502718"))
    out = check_lean(result)
    assert out["code"] == "502718"
    assert len(text_of(result)) < 700, text_of(result)


async def test_list_plans_reads_every_page_and_says_how_to_get_more(client: Client) -> None:
    first = check_lean(await client.call_tool("list_plans", {}))
    assert (len(first["plans"]), first["count"]) == (10, 45)  # the 10 cheapest of every page of both providers
    assert "limit=45" in first["next_step"]
    everything = check_lean(await client.call_tool("list_plans", {"limit": 45}))
    assert everything["plans"][:10] == first["plans"]
    assert "limit=" not in everything["next_step"]
