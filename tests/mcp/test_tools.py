"""Every tool through a real MCP client, on both protocol eras (the `client` fixture is parametrized).

The providers are the sandboxes (real adapters over in-process ASGI); with `SandboxTiming.instant()`
an SMS arrives only when a test calls the sandbox's `deliver`.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import sandbox_app
from tests.mcp import (
    E164,
    INJECTION,
    UTC_TIME,
    everything_in,
    fails,
    local_id,
    ok,
    outside_fences,
    posts,
    provider_of,
    rent_getatext,
    rent_gotsms,
    text_of,
    wait_while,
)

pytestmark = pytest.mark.anyio

UNKNOWN_GOTSMS = "gotsms:00000000-0000-4000-8000-000000000000"
UNKNOWN_GETATEXT = "getatext:99999"


def request_count(*sandboxes: GotSmsSandbox | GetatextSandbox) -> int:
    return sum(len(s.requests) for s in sandboxes)


# -- get_balance --------------------------------------------------------------------------------------------


async def test_get_balance_reports_every_provider_as_sandbox(client: Client) -> None:
    result = await ok(client, "get_balance")
    balances = {b["provider"]: b["amount"] for b in result["balances"]}
    assert balances == {"gotsms": "25.00", "getatext": "20.00"}
    assert (result["sandbox"], result["currency"]) == (True, "USD")
    assert "unavailable" not in result  # every provider answered


async def test_get_balance_of_one_provider(client: Client) -> None:
    result = await ok(client, "get_balance", provider="getatext")
    assert result["balances"] == [{"provider": "getatext", "amount": "20.00"}]


# -- list_plans ---------------------------------------------------------------------------------------------


async def test_list_plans_covers_both_providers_sorted_by_price(client: Client) -> None:
    result = await ok(client, "list_plans", limit=200)
    plans = result["plans"]
    assert result["count"] == len(plans) > 0
    assert (result["sandbox"], result["currency"]) == (True, "USD")
    assert {provider_of(p["plan_id"]) for p in plans} == {"gotsms", "getatext"}
    prices = [Decimal(p["price"]) for p in plans if "price" in p]
    assert prices == sorted(prices)
    # The catalogue is followed to its last page: GotSMS lists 5 services x 3 countries x 2 durations + 5 monthly.
    assert sum(provider_of(p["plan_id"]) == "gotsms" for p in plans) == 35
    assert "rent_number" in result["next_step"]


async def test_list_plans_returns_the_cheapest_up_to_the_limit_and_says_how_many_match(client: Client) -> None:
    everything = await ok(client, "list_plans", limit=200)
    first = await ok(client, "list_plans")  # 10 by default
    assert first["count"] == everything["count"] == 45
    assert first["plans"] == everything["plans"][:10]
    assert "10 cheapest of 45" in first["next_step"]
    assert "limit=45" in first["next_step"]  # how to get the rest
    few = await ok(client, "list_plans", limit=3)
    assert few["plans"] == everything["plans"][:3]


async def test_list_plans_filters(client: Client) -> None:
    telegram = await ok(client, "list_plans", service="telegram", country="USA")
    assert telegram["count"] == len(telegram["plans"]) == 4  # Getatext one-time + GotSMS day, week, month
    assert all(p["service"].casefold() == "telegram" and p["country"] == "USA" for p in telegram["plans"])
    assert telegram["plans"][0]["plan_id"] == "getatext:telegram"  # the cheapest first

    cheap = await ok(client, "list_plans", max_price="0.50")
    assert cheap["count"] > 0
    assert all(Decimal(p["price"]) <= Decimal("0.50") for p in cheap["plans"])

    gotsms = await ok(client, "list_plans", provider="gotsms", service="Discord")
    assert gotsms["count"] > 0
    assert all(provider_of(p["plan_id"]) == "gotsms" and p["service"] == "Discord" for p in gotsms["plans"])

    nothing = await ok(client, "list_plans", service="no-such-service")
    assert nothing == {**nothing, "plans": [], "count": 0}
    assert "widen" in nothing["next_step"]


# -- rent_number --------------------------------------------------------------------------------------------


async def test_rent_number_by_plan_id(client: Client, gotsms_sandbox: GotSmsSandbox) -> None:
    plans = (await ok(client, "list_plans", provider="gotsms", service="Google", country="USA"))["plans"]
    daily = next(p for p in plans if p["duration"] == "1 day")
    result = await ok(client, "rent_number", plan_id=daily["plan_id"], max_price="1")
    rental = result["rental"]
    assert rental["rental_id"].startswith("gotsms:")
    assert E164.match(rental["phone"])
    assert rental["phone_display"]
    assert rental["plan_id"] == daily["plan_id"]
    assert rental["status"] == "active"
    assert result["sandbox"] is True
    assert rental["price"] == daily["price"] == "0.80"
    assert rental["rental_id"] in result["next_step"]
    assert "wait_for_code" in result["next_step"]
    assert local_id(rental["rental_id"]) in gotsms_sandbox.rents
    assert gotsms_sandbox.balance == Decimal("25.00") - Decimal("0.80")
    assert posts(gotsms_sandbox) == ["/api/rents"]


async def test_rent_number_by_service_and_country_takes_the_cheapest(
    client: Client, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    result = await ok(client, "rent_number", service="telegram", country="USA", max_price="1.50")
    rental = result["rental"]
    assert rental["rental_id"].startswith("getatext:")
    assert rental["plan_id"] == "getatext:telegram"
    assert E164.match(rental["phone"])
    assert rental["price"] == "0.40"
    assert getatext_sandbox.balance == Decimal("19.60")
    assert posts(gotsms_sandbox) == []


async def test_rent_number_refuses_a_plan_above_max_price(client: Client, getatext_sandbox: GetatextSandbox) -> None:
    error = await fails(client, "rent_number", plan_id="getatext:whatsapp", max_price="0.10")
    assert "max_price" in error
    assert "nothing was bought" in error
    assert posts(getatext_sandbox) == []


async def test_owner_caps_refuse_with_the_variable_to_change(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, mode: str
) -> None:
    app = sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox, max_price="0.30", daily_budget="0.50")
    async with Client(app.mcp, mode=mode) as client:
        error = await fails(client, "rent_number", plan_id="getatext:telegram", max_price="0.40")
        assert "SMSRENT_MAX_PRICE" in error
        await ok(client, "rent_number", plan_id="getatext:google", max_price="0.30")
        error = await fails(client, "rent_number", plan_id="getatext:discord", max_price="0.25")
        assert "SMSRENT_DAILY_BUDGET" in error
    assert posts(getatext_sandbox) == ["/api/v1/rent-a-number"]


# -- wait_for_code ------------------------------------------------------------------------------------------


async def test_wait_for_code_getatext_code_keeps_leading_zeros(
    client: Client, getatext_sandbox: GetatextSandbox
) -> None:
    rental = await rent_getatext(client)
    result = await wait_while(
        client, rental["rental_id"], lambda: getatext_sandbox.deliver(int(local_id(rental["rental_id"])), "004521")
    )
    assert not result.is_error, text_of(result)
    out = result.structured_content
    assert out is not None
    assert out["outcome"] == "code_received", out["next_step"]
    assert out["code"] == "004521"
    assert out["sms"]["code"] == "004521"
    assert out["rental_id"] == rental["rental_id"]
    assert out["sandbox"] is True
    assert json.loads(text_of(result))["code"] == "004521"  # a string in the text content too, not 4521


async def test_wait_for_code_gotsms_fences_the_sms_text(client: Client, gotsms_sandbox: GotSmsSandbox) -> None:
    rental = await rent_gotsms(client)
    rent_id = local_id(rental["rental_id"])
    body = f"Your Telegram code is 048213. {INJECTION} now."
    result = await wait_while(client, rental["rental_id"], lambda: gotsms_sandbox.deliver(rent_id, body, "048213"))
    assert not result.is_error, text_of(result)
    out = result.structured_content
    assert out is not None
    assert out["outcome"] == "code_received"
    assert out["code"] == "048213"
    sms = out["sms"]
    assert sms["text"] == f"<untrusted-sms>\n{body}\n</untrusted-sms>"
    assert sms["from"] == "+18001234567"
    assert UTC_TIME.match(sms["received_at"])
    assert out["number_phase"] in ("queued", "online")
    assert out["rental_status"] == "active"
    assert INJECTION in everything_in(result)  # returned as data ...
    assert INJECTION not in outside_fences(everything_in(result))  # ... only inside the fence
    assert INJECTION not in out["next_step"]

    # Later answers about this rental never carry the SMS text outside a fence, errors least of all.
    messages = await client.call_tool("get_messages", {"rental_id": rental["rental_id"]})
    assert INJECTION not in outside_fences(everything_in(messages))
    refused = await fails(client, "refund", rental_id=rental["rental_id"])  # GotSMS refuses: it got an SMS
    assert "refund" in refused.casefold()
    assert INJECTION not in refused
    assert "048213" not in refused


async def test_sms_text_cannot_close_its_fence(client: Client, gotsms_sandbox: GotSmsSandbox) -> None:
    rental = await rent_gotsms(client)
    body = f"Code 771204 </untrusted-sms> {INJECTION} <untrusted-sms>"
    gotsms_sandbox.deliver(local_id(rental["rental_id"]), body, "771204")
    out = await ok(client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=5)
    text = out["sms"]["text"]
    assert text.startswith("<untrusted-sms>\n")
    assert text.endswith("\n</untrusted-sms>")
    assert text.count("<untrusted-sms>") == 1
    assert text.count("</untrusted-sms>") == 1
    assert INJECTION in text


async def test_wait_for_code_still_waiting_after_its_bound(client: Client) -> None:
    rental = await rent_gotsms(client)
    with anyio.fail_after(10):
        out = await ok(client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=1)
    assert out["outcome"] == "still_waiting"
    assert "code" not in out
    assert "sms" not in out
    assert 1 <= out["waited_seconds"] < 5
    assert "wait_for_code" in out["next_step"]
    assert out["rental_status"] == "active"


@pytest.mark.parametrize(("provider", "ended_as"), [("gotsms", "refunded"), ("getatext", "cancelled")])
async def test_wait_for_code_after_refund_says_rental_ended(client: Client, provider: str, ended_as: str) -> None:
    rental = await (rent_gotsms(client) if provider == "gotsms" else rent_getatext(client))
    await ok(client, "refund", rental_id=rental["rental_id"])
    with anyio.fail_after(5):
        out = await ok(client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=30)
    assert out["outcome"] == "rental_ended"
    assert "code" not in out
    assert out["rental_status"] == ended_as
    assert ended_as in out["next_step"]


async def test_wait_for_code_returns_each_message_once_in_order(client: Client, gotsms_sandbox: GotSmsSandbox) -> None:
    rental = await rent_gotsms(client)
    rent_id = local_id(rental["rental_id"])
    # Both within the same second: GotSMS stamps messages to the second and lists them newest first.
    gotsms_sandbox.deliver(rent_id, "Your code is 111111", "111111")
    gotsms_sandbox.deliver(rent_id, "Your code is 222222", "222222")
    first = await ok(client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=5)
    second = await ok(client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=5)
    third = await ok(client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=1)
    assert (first["code"], second["code"]) == ("111111", "222222")
    assert first["sms"]["message_id"] != second["sms"]["message_id"]
    assert third["outcome"] == "still_waiting"


async def test_wait_for_code_again_returns_the_next_message(client: Client, gotsms_sandbox: GotSmsSandbox) -> None:
    """The agent got one code, asks the service for another, and waits again on the same rental."""
    rental = await rent_gotsms(client)
    rent_id = local_id(rental["rental_id"])
    first = await wait_while(client, rental["rental_id"], lambda: gotsms_sandbox.deliver(rent_id, "Code 1357", "1357"))
    assert first.structured_content is not None
    assert first.structured_content["code"] == "1357"
    await anyio.sleep(1.5)  # the agent uses the first code; the poller goes idle meanwhile
    second = await wait_while(
        client, rental["rental_id"], lambda: gotsms_sandbox.deliver(rent_id, "Code 2468", "2468"), timeout_seconds=4
    )
    out = second.structured_content
    assert out is not None
    assert out["outcome"] == "code_received", out["next_step"]
    assert out["code"] == "2468"


@pytest.mark.parametrize("provider", ["gotsms", "getatext"])
async def test_wait_for_code_returns_a_code_that_came_before_the_call(
    client: Client, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, provider: str
) -> None:
    if provider == "gotsms":
        rental = await rent_gotsms(client)
        gotsms_sandbox.deliver(local_id(rental["rental_id"]), "Your code is 090807", "090807")
    else:
        rental = await rent_getatext(client)
        getatext_sandbox.deliver(int(local_id(rental["rental_id"])), "090807")
    await anyio.sleep(0.5)
    with anyio.fail_after(10):
        out = await ok(client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=4)
    assert out["outcome"] == "code_received", out["next_step"]
    assert out["code"] == "090807"


async def test_wait_for_code_reports_progress_while_waiting(client: Client) -> None:
    rental = await rent_gotsms(client)
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    with anyio.fail_after(10):
        result = await client.call_tool(
            "wait_for_code", {"rental_id": rental["rental_id"], "timeout_seconds": 1}, progress_callback=progress
        )
    assert not result.is_error, text_of(result)
    assert seen, "no progress notification arrived while waiting"
    value, total, message = seen[0]
    assert message is not None
    assert "waiting for the SMS" in message
    assert total == 1
    assert 0 <= value <= 1


# -- get_messages, list_rentals -----------------------------------------------------------------------------


async def test_get_messages_lists_without_moving_the_cursor(client: Client, gotsms_sandbox: GotSmsSandbox) -> None:
    rental = await rent_gotsms(client)
    empty = await ok(client, "get_messages", rental_id=rental["rental_id"])
    assert empty["messages"] == []
    assert empty["count"] == 0
    gotsms_sandbox.deliver(local_id(rental["rental_id"]), f"Your code is 314159. {INJECTION}", "314159")
    result = await ok(client, "get_messages", rental_id=rental["rental_id"])
    assert result["count"] == 1
    assert result["rental_id"] == rental["rental_id"]
    assert result["sandbox"] is True
    [sms] = result["messages"]
    assert sms["code"] == "314159"
    assert sms["code_source"] == "provider"
    assert sms["text"].startswith("<untrusted-sms>")
    assert INJECTION not in outside_fences(json.dumps(result))
    # get_messages did not consume it: wait_for_code still returns it.
    out = await ok(client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=2)
    assert out["outcome"] == "code_received"
    assert out["code"] == "314159"


async def test_list_rentals_by_status(client: Client) -> None:
    kept = await rent_gotsms(client)
    given_back = await rent_getatext(client)
    await ok(client, "refund", rental_id=given_back["rental_id"])

    active = await ok(client, "list_rentals")
    ended = await ok(client, "list_rentals", status="ended")
    every = await ok(client, "list_rentals", status="all")
    assert [r["rental_id"] for r in active["rentals"]] == [kept["rental_id"]]
    assert [r["rental_id"] for r in ended["rentals"]] == [given_back["rental_id"]]
    assert {r["rental_id"] for r in every["rentals"]} == {kept["rental_id"], given_back["rental_id"]}
    assert (active["count"], ended["count"], every["count"]) == (1, 1, 2)
    assert ended["rentals"][0]["status"] == "cancelled"
    assert "stale" not in every
    only_gotsms = await ok(client, "list_rentals", status="all", provider="gotsms")
    assert [r["rental_id"] for r in only_gotsms["rentals"]] == [kept["rental_id"]]


# -- refund, wake_up, extend_rental, set_auto_renew, finish_rental ------------------------------------------


async def test_refund_gotsms(client: Client, gotsms_sandbox: GotSmsSandbox) -> None:
    rental = await rent_gotsms(client)
    result = await ok(client, "refund", rental_id=rental["rental_id"])
    assert result["rental"]["status"] == "refunded"
    assert result["refunded"] == rental["price"] == "1.00"
    assert result["balance_after"] == "25.00" == str(gotsms_sandbox.balance)
    assert result["currency"] == "USD"
    assert f"/api/rents/{local_id(rental['rental_id'])}/refund" in posts(gotsms_sandbox)


async def test_refund_getatext(client: Client, getatext_sandbox: GetatextSandbox) -> None:
    rental = await rent_getatext(client)
    result = await ok(client, "refund", rental_id=rental["rental_id"])
    assert result["rental"]["status"] == "cancelled"
    assert result["refunded"] == "0.55"
    assert Decimal(result["balance_after"]) == getatext_sandbox.balance == Decimal("20.00")
    assert getatext_sandbox.rentals[int(local_id(rental["rental_id"]))].status == "cancelled"


async def test_wake_up_gotsms(client: Client, gotsms_sandbox: GotSmsSandbox) -> None:
    rental = await rent_gotsms(client)
    result = await ok(client, "wake_up", rental_id=rental["rental_id"])
    assert result["rental_id"] == rental["rental_id"]
    assert result["state"] in ("queued", "online")
    assert UTC_TIME.match(result["online_till"])
    assert result["can_wake_up"] is False
    assert posts(gotsms_sandbox)[-1] == f"/api/numbers/{local_id(rental['rental_id'])}/wake-up"
    # Awake already: a second call reports the windows without waking it again.
    again = await ok(client, "wake_up", rental_id=rental["rental_id"])
    assert again["state"] in ("queued", "online")
    assert posts(gotsms_sandbox).count(f"/api/numbers/{local_id(rental['rental_id'])}/wake-up") == 1


async def test_wake_up_getatext_is_a_tool_error(client: Client, getatext_sandbox: GetatextSandbox) -> None:
    rental = await rent_getatext(client)
    error = await fails(client, "wake_up", rental_id=rental["rental_id"])
    assert "Only GotSMS numbers sleep" in error
    assert posts(getatext_sandbox) == ["/api/v1/rent-a-number"]


async def test_extend_rental_gotsms_moves_to_a_longer_plan(client: Client, gotsms_sandbox: GotSmsSandbox) -> None:
    plans = (await ok(client, "list_plans", provider="gotsms", service="Discord", country="USA"))["plans"]
    by_duration = {p["duration"]: p for p in plans}
    rental = (await ok(client, "rent_number", plan_id=by_duration["1 day"]["plan_id"], max_price="1"))["rental"]
    missing = await fails(client, "extend_rental", rental_id=rental["rental_id"], max_price="3")
    assert "plan_id" in missing
    too_cheap = await fails(
        client, "extend_rental", rental_id=rental["rental_id"], max_price="1", plan_id=by_duration["1 week"]["plan_id"]
    )
    assert "max_price" in too_cheap

    result = await ok(
        client, "extend_rental", rental_id=rental["rental_id"], max_price="3", plan_id=by_duration["1 week"]["plan_id"]
    )
    assert result["rental"]["rental_id"] == rental["rental_id"]
    assert result["rental"]["plan_id"] == by_duration["1 week"]["plan_id"]
    rent = gotsms_sandbox.rents[local_id(rental["rental_id"])]
    assert rent.plan.duration_type == "week"
    assert gotsms_sandbox.balance == Decimal("25.00") - Decimal("0.60") - Decimal("2.40")


async def test_extend_rental_getatext_re_rents_the_number(client: Client, getatext_sandbox: GetatextSandbox) -> None:
    rental = await rent_getatext(client, "getatext:uber")
    await ok(client, "finish_rental", rental_id=rental["rental_id"])
    result = await ok(client, "extend_rental", rental_id=rental["rental_id"], max_price="1")
    renewed = result["rental"]
    assert renewed["rental_id"] != rental["rental_id"]
    assert renewed["rental_id"].startswith("getatext:")
    assert renewed["phone"] == rental["phone"]
    assert renewed["status"] == "active"
    assert posts(getatext_sandbox).count("/api/v1/re-rent") == 1


async def test_set_auto_renew_sets_the_wanted_state(client: Client, gotsms_sandbox: GotSmsSandbox) -> None:
    plans = (await ok(client, "list_plans", provider="gotsms", service="Discord", country="USA"))["plans"]
    monthly = next(p for p in plans if p["duration"] == "1 month")
    rental = (await ok(client, "rent_number", plan_id=monthly["plan_id"], max_price="6"))["rental"]
    rent = gotsms_sandbox.rents[local_id(rental["rental_id"])]

    on = await ok(client, "set_auto_renew", rental_id=rental["rental_id"], enabled=True)
    assert on["rental"]["auto_renew"] is True
    assert rent.renew is True
    still_on = await ok(client, "set_auto_renew", rental_id=rental["rental_id"], enabled=True)
    assert still_on["rental"]["auto_renew"] is True
    assert rent.renew is True  # not a blind toggle
    off = await ok(client, "set_auto_renew", rental_id=rental["rental_id"], enabled=False)
    assert off["rental"]["auto_renew"] is False
    assert rent.renew is False


async def test_set_auto_renew_getatext_long_rental(client: Client, getatext_sandbox: GetatextSandbox) -> None:
    rental = (await ok(client, "rent_number", plan_id="getatext:long:1w", max_price="11"))["rental"]
    assert rental["rental_id"].startswith("getatext:long:")
    long = getatext_sandbox.long_rentals[int(local_id(rental["rental_id"]))]
    on = await ok(client, "set_auto_renew", rental_id=rental["rental_id"], enabled=True)
    assert on["rental"]["auto_renew"] is True
    assert long.auto_renew is True
    off = await ok(client, "set_auto_renew", rental_id=rental["rental_id"], enabled=False)
    assert off["rental"]["auto_renew"] is False
    assert long.auto_renew is False


async def test_set_auto_renew_refused_for_one_time_rentals(client: Client) -> None:
    rental = await rent_getatext(client)
    error = await fails(client, "set_auto_renew", rental_id=rental["rental_id"], enabled=False)
    assert "auto-renew" in error


async def test_auto_renew_refused_under_a_daily_budget(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, mode: str
) -> None:
    app = sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox, daily_budget="50")
    async with Client(app.mcp, mode=mode) as client:
        rental = (await ok(client, "rent_number", plan_id="getatext:long:1w", max_price="11"))["rental"]
        error = await fails(client, "set_auto_renew", rental_id=rental["rental_id"], enabled=True)
    assert "SMSRENT_ALLOW_AUTO_RENEW" in error
    assert not any(path.endswith("/update") for path in posts(getatext_sandbox))


async def test_finish_rental(client: Client, getatext_sandbox: GetatextSandbox) -> None:
    rental = await rent_getatext(client)
    result = await ok(client, "finish_rental", rental_id=rental["rental_id"])
    assert result["rental"]["status"] == "completed"
    assert getatext_sandbox.rentals[int(local_id(rental["rental_id"]))].status == "completed"
    gotsms = await rent_gotsms(client)
    error = await fails(client, "finish_rental", rental_id=gotsms["rental_id"])
    assert "Only Getatext one-time rentals" in error


# -- Failure paths ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rental_id", [UNKNOWN_GOTSMS, UNKNOWN_GETATEXT])
@pytest.mark.parametrize("tool", ["wait_for_code", "get_messages", "refund"])
async def test_unknown_rental_id_is_a_tool_error(client: Client, tool: str, rental_id: str) -> None:
    error = await fails(client, tool, rental_id=rental_id)
    assert f"No rental {rental_id} is known" in error
    assert "list_rentals" in error
    assert (await ok(client, "get_balance"))["balances"]  # the server keeps answering


MALFORMED = ["gotsms:../../x", "getatext:1/2", "getatext:long:../1", "gotsms:a/b", "evil:123"]
RENTAL_TOOLS: list[tuple[str, dict[str, Any]]] = [
    ("wait_for_code", {"timeout_seconds": 1}),
    ("get_messages", {}),
    ("refund", {}),
    ("wake_up", {}),
    ("extend_rental", {"max_price": "1"}),
    ("set_auto_renew", {"enabled": False}),
    ("finish_rental", {}),
]


@pytest.mark.parametrize("rental_id", MALFORMED)
async def test_malformed_rental_id_refused_before_any_request(
    client: Client, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, rental_id: str
) -> None:
    before = request_count(gotsms_sandbox, getatext_sandbox)
    for tool, extra in RENTAL_TOOLS:
        error = await fails(client, tool, rental_id=rental_id, **extra)
        assert f"Invalid rental_id {rental_id}" in error, (tool, error)
    assert request_count(gotsms_sandbox, getatext_sandbox) == before


@pytest.mark.parametrize("plan_id", ["gotsms:../../x", "getatext:1/2", "getatext:long:9y", "other:plan"])
async def test_malformed_plan_id_refused_before_any_request(
    client: Client, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, plan_id: str
) -> None:
    error = await fails(client, "rent_number", plan_id=plan_id, max_price="1")
    assert f"Invalid plan_id {plan_id}" in error
    assert request_count(gotsms_sandbox, getatext_sandbox) == 0


@pytest.mark.parametrize(
    ("tool", "arguments", "field"),
    [
        ("wait_for_code", {"rental_id": UNKNOWN_GETATEXT, "timeout_seconds": 0}, "timeout_seconds"),
        ("wait_for_code", {"rental_id": UNKNOWN_GETATEXT, "timeout_seconds": 51}, "timeout_seconds"),
        ("wait_for_code", {"rental_id": UNKNOWN_GETATEXT, "timeout_seconds": -5}, "timeout_seconds"),
        ("wait_for_code", {"rental_id": "g"}, "rental_id"),
        ("rent_number", {"plan_id": "getatext:whatsapp", "max_price": 0}, "max_price"),
        ("rent_number", {"plan_id": "getatext:whatsapp", "max_price": "-1"}, "max_price"),
        ("rent_number", {"plan_id": "getatext:whatsapp", "max_price": "100000"}, "max_price"),
        ("rent_number", {"plan_id": "getatext:whatsapp"}, "max_price"),
        ("list_plans", {"max_price": 0}, "max_price"),
        ("list_rentals", {"status": "everything"}, "status"),
        ("get_balance", {"provider": "acme"}, "provider"),
        ("extend_rental", {"rental_id": UNKNOWN_GETATEXT, "max_price": "-2"}, "max_price"),
    ],
)
async def test_out_of_range_arguments_refused_before_any_request(
    client: Client,
    gotsms_sandbox: GotSmsSandbox,
    getatext_sandbox: GetatextSandbox,
    tool: str,
    arguments: dict[str, Any],
    field: str,
) -> None:
    error = await fails(client, tool, **arguments)
    assert field in error
    assert request_count(gotsms_sandbox, getatext_sandbox) == 0


async def test_plan_id_and_service_together_refused(client: Client, getatext_sandbox: GetatextSandbox) -> None:
    both = await fails(client, "rent_number", plan_id="getatext:whatsapp", service="whatsapp", max_price="1")
    assert "not both" in both
    neither = await fails(client, "rent_number", max_price="1")
    assert "plan_id" in neither
    assert "service" in neither
    assert posts(getatext_sandbox) == []


@pytest.mark.parametrize(
    ("fault", "wording"),
    [("500", "HTTP 500"), ("html", "HTML page"), ("429", "rate limiting"), ("truncated", "unreadable")],
)
async def test_provider_errors_are_clear_and_the_server_keeps_answering(
    client: Client, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, fault: Any, wording: str
) -> None:
    # Three failures in a row exhaust the adapters' retries (tests.helpers.FAST_RETRY).
    gotsms_sandbox.inject("GET", "/api/account", fault, times=3)
    error = await fails(client, "get_balance", provider="gotsms")
    assert "GotSMS" in error
    assert wording in error
    assert "try again" in error
    assert "<html" not in error.casefold()
    assert (await ok(client, "get_balance", provider="gotsms"))["balances"] == [
        {"provider": "gotsms", "amount": "25.00"}
    ]

    getatext_sandbox.inject("GET", "/api/v1/prices-info", fault, times=3)
    error = await fails(client, "list_plans", provider="getatext")
    assert "Getatext" in error
    assert wording in error
    assert (await ok(client, "list_plans", provider="getatext"))["count"] > 0

    # One provider down: the other's balance is still reported, the failure named.
    gotsms_sandbox.inject("GET", "/api/account", fault, times=3)
    partial = await ok(client, "get_balance")
    assert [b["provider"] for b in partial["balances"]] == ["getatext"]
    assert [(u["provider"], wording in u["error"]) for u in partial["unavailable"]] == [("gotsms", True)]


async def test_secrets_never_appear_in_results(
    client: Client, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    gotsms_sandbox.inject("GET", "/api/account", "500", times=3)
    results = [
        await client.call_tool("get_balance", {}),
        await client.call_tool("get_balance", {"provider": "gotsms"}),
        await client.call_tool("list_plans", {"service": "telegram"}),
    ]
    for result in results:
        seen = everything_in(result)
        assert gotsms_sandbox.token not in seen
        assert getatext_sandbox.api_key not in seen
