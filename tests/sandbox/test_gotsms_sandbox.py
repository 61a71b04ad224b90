"""The simulated GotSMS follows `gotsms-api.txt`, driven by the real adapter over real HTTP on loopback.

Paths under `/api`, the `{success, data, meta}` envelopes, pagination to the last page, the
`before_id` cursor, 401 without the bearer token, Laravel-style 422s, the refund rule, balance
arithmetic, unread marking, the wake-up cycle (asleep, queued, online, wakeable again) and every
fault kind that `inject` offers.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr

from smsrent.domain.errors import (
    CancelNotAllowed,
    InsufficientBalance,
    ProviderAuthError,
    ProviderNotFound,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from smsrent.domain.ids import parse_plan_id
from smsrent.domain.models import RentalStatus
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.base import SandboxTiming
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import FAST_RETRY, gotsms_adapter

pytestmark = pytest.mark.anyio
BOUND = 20.0

UNKNOWN_RENT = "9d3f8f6a-1b2c-4d5e-8f90-1a2b3c4d5e6f"
LIST_KEYS = {"current_page", "last_page", "per_page", "total"}
RENT_KEYS = {
    "id",
    "service",
    "plan",
    "phone",
    "price",
    "status",
    "is_included_for_next_renewal",
    "active_from",
    "active_till",
    "wake_from",
    "wake_till",
    "can_wake_up",
    "transition_options",
}
SMS_KEYS = {"id", "rent_id", "service", "phone", "from", "to", "body", "code", "received_at"}
STATUS_KEYS = {
    "rent_id",
    "status",
    "active_from",
    "active_till",
    "wake_from",
    "wake_till",
    "online_till",
    "wakeup_time_left_seconds",
    "online_time_left_seconds",
    "can_wake_up",
}


@pytest.fixture(autouse=True)
async def bounded() -> AsyncIterator[None]:
    """Every test here, with its fixtures, ends within BOUND seconds (the runner task holds the scope)."""
    with anyio.fail_after(BOUND):
        yield


@dataclass
class Live:
    """A sandbox served on loopback, the real adapter over it, and a raw client with the token."""

    sandbox: GotSmsSandbox
    base: str
    adapter: GotSmsProvider
    raw: httpx.AsyncClient

    def count(self, method: str, path: str) -> int:
        return sum(1 for _, m, p in self.sandbox.requests if (m, p) == (method, path))

    def daily(self, service: str = "Telegram", country: str = "USA") -> str:
        return self.plan(service, country, "day")

    def plan(self, service: str, country: str, kind: str) -> str:
        found = next(
            p
            for p in self.sandbox.plans.values()
            if (p.service, p.country, p.duration_type) == (service, country, kind)
        )
        return found.id

    async def rent(self, plan_uuid: str | None = None) -> str:
        receipt = await self.adapter.create_rent(plan_uuid or self.daily())
        return receipt.rental.rental_id.removeprefix("gotsms:")


@pytest.fixture
async def live(gotsms_sandbox: GotSmsSandbox) -> AsyncIterator[Live]:
    async with serve_loopback(gotsms_sandbox.app) as base:
        adapter = gotsms_adapter(gotsms_sandbox, base_url=f"{base}/api")
        headers = {"Authorization": f"Bearer {gotsms_sandbox.token}", "Accept": "application/json"}
        async with httpx.AsyncClient(base_url=base, headers=headers) as raw:
            try:
                yield Live(gotsms_sandbox, base, adapter, raw)
            finally:
                await adapter.aclose()


def instant(**changes: Any) -> SandboxTiming:
    values = {**SandboxTiming.instant().__dict__, **changes}
    return SandboxTiming(**values)


# -- Authentication and envelopes ---------------------------------------------------------------------


async def test_public_pricelist_needs_no_token(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.base) as anonymous:
        answer = await anonymous.get("/api/pricelist")
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True
    assert {group["name"] for group in body["data"]} == {"Telegram", "WhatsApp", "Google", "Discord", "OpenAI"}
    row = body["data"][0]["plans"][0]
    assert set(row) == {
        "service_name",
        "period",
        "period_type",
        "period_type_label",
        "duration_translation",
        "price",
        "renew_price",
        "country",
        "billing_type",
    }
    assert isinstance(row["price"], int | float)  # a JSON number, as in the document
    prices = await live.adapter.pricelist()
    assert len(prices) == len(live.sandbox.plans)
    assert all(isinstance(p.price, Decimal) for p in prices)


PROTECTED = (
    ("GET", "/api/account"),
    ("GET", "/api/services"),
    ("GET", "/api/rents/plans"),
    ("GET", "/api/rents"),
    ("POST", "/api/rents"),
    ("GET", "/api/messages"),
    ("GET", "/api/messages/unread"),
    ("POST", f"/api/numbers/{UNKNOWN_RENT}/wake-up"),
    ("GET", f"/api/numbers/{UNKNOWN_RENT}/status"),
    ("GET", f"/api/numbers/{UNKNOWN_RENT}/messages"),
    ("POST", f"/api/rents/{UNKNOWN_RENT}/refund"),
    ("POST", f"/api/rents/{UNKNOWN_RENT}/transition"),
    ("POST", f"/api/rents/{UNKNOWN_RENT}/renewal/toggle"),
)


async def test_protected_endpoints_answer_401_without_the_bearer_token(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.base) as anonymous:
        for method, path in PROTECTED:
            missing = await anonymous.request(method, path)
            wrong = await anonymous.request(method, path, headers={"Authorization": "Bearer not-the-token"})
            for answer in (missing, wrong):
                assert (method, path, answer.status_code) == (method, path, 401)
                assert answer.json() == {"message": "Unauthenticated."}
    assert live.sandbox.balance == Decimal("25.00")


async def test_adapter_with_a_wrong_token_gets_an_auth_error(live: Live) -> None:
    wrong = GotSmsProvider(SecretStr("wrong"), base_url=f"{live.base}/api", retry=FAST_RETRY)
    try:
        with pytest.raises(ProviderAuthError) as caught:
            await wrong.account()
    finally:
        await wrong.aclose()
    assert "GOTSMS_API_TOKEN" in caught.value.message
    assert live.count("GET", "/api/account") == 1  # a 401 is not retried


async def test_account_envelope_and_balance(live: Live) -> None:
    answer = await live.raw.get("/api/account")
    assert answer.status_code == 200
    assert answer.json() == {"success": True, "data": {"balance": 25}}
    balance = await live.adapter.get_balance()
    assert (balance.amount, balance.currency, balance.provider) == (Decimal("25"), "USD", "gotsms")
    assert ("GET", "/api/account") in {(m, p) for _, m, p in live.sandbox.requests}


# -- Pagination --------------------------------------------------------------------------------------


async def test_plans_and_services_follow_pages_to_the_last(live: Live) -> None:
    first = (await live.raw.get("/api/rents/plans")).json()
    total = len(live.sandbox.plans)
    assert first["success"] is True
    assert first["meta"] == {"current_page": 1, "last_page": 2, "per_page": 25, "total": total}
    assert len(first["data"]) == 25
    second = (await live.raw.get("/api/rents/plans", params={"page": 2})).json()
    assert second["meta"]["current_page"] == 2
    assert len(second["data"]) == total - 25
    item = first["data"][0]
    assert set(item) >= {"id", "service", "country", "billing_type", "duration_type", "duration_in_minutes", "price"}

    before = live.count("GET", "/api/rents/plans")
    plans = await live.adapter.rent_plans()
    assert live.count("GET", "/api/rents/plans") - before == 2
    assert len({p.plan_id for p in plans}) == total
    assert {p.plan_id for p in plans} == {f"gotsms:{uuid}" for uuid in live.sandbox.plans}
    monthly = [p for p in plans if p.auto_renew_supported]
    assert monthly
    assert all(p.country == "USA" for p in monthly)

    services = (await live.raw.get("/api/services")).json()
    assert services["meta"] == {"current_page": 1, "last_page": 1, "per_page": 25, "total": 5}
    assert {s.name for s in await live.adapter.services()} == {"Telegram", "WhatsApp", "Google", "Discord", "OpenAI"}


async def test_rents_and_messages_are_paginated_by_per_page(live: Live) -> None:
    live.sandbox.per_page = 3
    rents = [await live.rent() for _ in range(7)]
    listed = (await live.raw.get("/api/rents")).json()
    assert listed["meta"] == {"current_page": 1, "last_page": 3, "per_page": 3, "total": 7}
    assert set(listed["data"][0]) == RENT_KEYS
    beyond = (await live.raw.get("/api/rents", params={"page": 9})).json()
    assert beyond["data"] == []

    before = live.count("GET", "/api/rents")
    found = await live.adapter.rents()
    assert live.count("GET", "/api/rents") - before == 3
    assert {r.rental_id for r in found} == {f"gotsms:{r}" for r in rents}

    ids = [live.sandbox.deliver(rents[i % 7], f"Your code is {1000 + i}", f"{1000 + i}") for i in range(8)]
    before = live.count("GET", "/api/messages")
    messages = await live.adapter.messages()
    assert live.count("GET", "/api/messages") - before == 3
    assert [m.message_id for m in messages] == [f"gotsms:{i}" for i in reversed(ids)]  # newest first
    page = (await live.raw.get("/api/messages", params={"page": 3})).json()
    assert page["meta"] == {"current_page": 3, "last_page": 3, "per_page": 3, "total": 8}
    assert [m["id"] for m in page["data"]] == [ids[1], ids[0]]

    one_page, more = await live.adapter.message_page(1)
    assert more is True
    assert len(one_page) == 3
    last_page, more = await live.adapter.message_page(3)
    assert more is False
    assert len(last_page) == 2


async def test_message_fields_follow_the_document(live: Live) -> None:
    rent = await live.rent()
    live.sandbox.deliver(rent, "Your verification code is 123456", "123456", sender="+18001112222")
    item = (await live.raw.get("/api/messages")).json()["data"][0]
    assert set(item) == SMS_KEYS
    assert item["rent_id"] == rent
    assert item["code"] == "123456"
    assert item["from"] == "+18001112222"
    assert re.fullmatch(r"\+1 800 \d{3} \d{4}", item["phone"])
    assert item["to"] == "+" + re.sub(r"\D", "", item["phone"])
    assert item["received_at"].endswith("+00:00")


async def test_number_messages_follow_before_id_to_the_oldest(live: Live) -> None:
    rent = await live.rent()
    other = await live.rent()
    ids = [live.sandbox.deliver(rent, f"Code {i:04d}", f"{i:04d}") for i in range(23)]
    live.sandbox.deliver(other, "Not mine", "999999")

    first = (await live.raw.get(f"/api/numbers/{rent}/messages")).json()
    assert first["success"] is True
    assert [m["id"] for m in first["data"]] == ids[::-1][:10]
    assert first["meta"] == {"next_before_id": ids[::-1][9], "count": 10}
    assert set(first["data"][0]) == {"id", "from", "to", "body", "code", "received_at"}
    cursor = first["meta"]["next_before_id"]
    second = (await live.raw.get(f"/api/numbers/{rent}/messages", params={"before_id": cursor})).json()
    assert [m["id"] for m in second["data"]] == ids[::-1][10:20]
    third = (
        await live.raw.get(f"/api/numbers/{rent}/messages", params={"before_id": second["meta"]["next_before_id"]})
    ).json()
    assert [m["id"] for m in third["data"]] == ids[::-1][20:]
    assert third["meta"] == {"next_before_id": None, "count": 3}

    path = f"/api/numbers/{rent}/messages"
    before = live.count("GET", path)
    messages = await live.adapter.number_messages(rent)
    assert live.count("GET", path) - before == 3
    assert [m.message_id for m in messages] == [f"gotsms:{i}" for i in reversed(ids)]
    assert {m.rental_id for m in messages} == {f"gotsms:{rent}"}


# -- Renting, validation and money --------------------------------------------------------------------


async def test_create_rent_answers_201_with_the_documented_rent(live: Live) -> None:
    plan = live.sandbox.plans[live.daily()]
    answer = await live.raw.post("/api/rents", json={"plan_id": plan.id})
    assert answer.status_code == 201
    body = answer.json()
    assert body["success"] is True
    assert body["message"] == "Rent created successfully."
    assert set(body["data"]) == RENT_KEYS
    assert body["data"]["status"] == "active"
    assert body["data"]["plan"]["id"] == plan.id
    assert body["data"]["wake_from"] is None
    assert body["data"]["can_wake_up"] is True
    assert live.sandbox.balance == Decimal("25.00") - plan.price


async def test_validation_errors_are_laravel_style_422s(live: Live) -> None:
    missing = await live.raw.post("/api/rents", json={})
    assert missing.status_code == 422
    assert missing.json() == {
        "message": "The plan id field is required.",
        "errors": {"plan_id": ["The plan id field is required."]},
    }
    unknown = await live.raw.post("/api/rents", json={"plan_id": "no-such-plan"})
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == {"plan_id": ["The selected plan id is invalid."]}
    with pytest.raises(ProviderRejected) as caught:
        await live.adapter.create_rent("no-such-plan")
    assert "invalid" in caught.value.message
    assert live.count("POST", "/api/rents") == 3  # a 422 purchase is never retried
    assert live.sandbox.balance == Decimal("25.00")
    assert live.sandbox.rents == {}


async def test_insufficient_balance_is_refused_without_a_charge(live: Live) -> None:
    live.sandbox.balance = Decimal("0.50")
    answer = await live.raw.post("/api/rents", json={"plan_id": live.daily()})
    assert answer.status_code == 422
    assert answer.json() == {"success": False, "message": "Insufficient balance to rent this number."}
    with pytest.raises(InsufficientBalance):
        await live.adapter.create_rent(live.daily())
    assert live.sandbox.balance == Decimal("0.50")
    assert live.sandbox.rents == {}


async def test_rent_charges_and_refund_credits(live: Live) -> None:
    plan = live.sandbox.plans[live.daily("Discord")]
    rent = await live.rent(plan.id)
    assert (await live.adapter.account()).amount == Decimal("25.00") - plan.price
    answer = await live.raw.post(f"/api/rents/{rent}/refund")
    assert answer.status_code == 200
    assert answer.json() == {
        "success": True,
        "message": "Rent has been refunded successfully.",
        "data": {"id": rent, "status": "finished"},
    }
    assert (await live.adapter.account()).amount == Decimal("25.00")
    with pytest.raises(CancelNotAllowed):  # once is enough
        await live.adapter.refund_rent(rent)
    assert (await live.adapter.account()).amount == Decimal("25.00")
    listed = {r.rental_id: r for r in await live.adapter.rents()}
    assert listed[f"gotsms:{rent}"].status is RentalStatus.COMPLETED


async def test_refund_refused_once_an_sms_came(live: Live) -> None:
    rent = await live.rent()
    charged = live.sandbox.balance
    live.sandbox.deliver(rent, "Your code is 424242", "424242")
    answer = await live.raw.post(f"/api/rents/{rent}/refund")
    assert answer.status_code == 422
    assert answer.json() == {"success": False, "message": "Refund not available for this rent."}
    with pytest.raises(CancelNotAllowed) as caught:
        await live.adapter.refund_rent(rent)
    assert "Refund not available" in caught.value.message
    assert live.sandbox.balance == charged


@pytest.mark.parametrize("timing", [instant(refund_window=0.3)], ids=["short-refund-window"])
async def test_refund_refused_after_the_refund_window(live: Live) -> None:
    rent = await live.rent()
    charged = live.sandbox.balance
    await anyio.sleep(0.4)
    with pytest.raises(CancelNotAllowed):
        await live.adapter.refund_rent(rent)
    assert live.sandbox.balance == charged


async def test_transition_only_from_daily_plans(live: Live) -> None:
    daily = live.sandbox.plans[live.daily("Google")]
    weekly = live.sandbox.plans[live.plan("Google", "USA", "week")]
    rent = await live.rent(daily.id)
    start = live.sandbox.rents[rent].active_from

    other = await live.raw.post(f"/api/rents/{rent}/transition", json={"plan_id": live.daily("Discord")})
    assert other.status_code == 422
    assert other.json()["errors"] == {"plan_id": ["The selected plan id is invalid."]}

    receipt = await live.adapter.transition(rent, weekly.id)
    assert receipt.rental.rental_id == f"gotsms:{rent}"
    assert receipt.rental.status is RentalStatus.ACTIVE
    assert receipt.note == "Plan transitioned successfully."
    assert live.sandbox.balance == Decimal("25.00") - daily.price - weekly.price
    assert live.sandbox.rents[rent].active_till == start + weekly.minutes * 60

    again = await live.raw.post(f"/api/rents/{rent}/transition", json={"plan_id": weekly.id})
    assert again.status_code == 422
    assert again.json() == {
        "success": False,
        "message": "Current rent plan must be daily for this transition endpoint.",
    }
    with pytest.raises(ProviderRejected):
        await live.adapter.transition(rent, weekly.id)
    assert live.sandbox.balance == Decimal("25.00") - daily.price - weekly.price


async def test_renewal_toggle_only_for_monthly_plans(live: Live) -> None:
    daily = await live.rent()
    answer = await live.raw.post(f"/api/rents/{daily}/renewal/toggle")
    assert answer.status_code == 422
    assert answer.json() == {
        "success": False,
        "message": "Auto renewal can be toggled only for monthly 1/3/6/12 plans.",
    }
    monthly = await live.rent(live.plan("Discord", "USA", "month"))
    on = await live.raw.post(f"/api/rents/{monthly}/renewal/toggle")
    assert on.json() == {
        "success": True,
        "message": "Auto renewal enabled.",
        "data": {"id": monthly, "is_included_for_next_renewal": True},
    }
    assert await live.adapter.toggle_renewal(monthly) is False
    assert await live.adapter.toggle_renewal(monthly) is True
    listed = {r.rental_id: r for r in await live.adapter.rents()}
    assert listed[f"gotsms:{monthly}"].auto_renew is True


async def test_unknown_rent_is_404(live: Live) -> None:
    answer = await live.raw.post(f"/api/numbers/{UNKNOWN_RENT}/wake-up")
    assert answer.status_code == 404
    assert answer.json() == {"success": False, "message": "Rent not found."}
    for call in (
        live.adapter.refund_rent,
        live.adapter.wake_up,
        live.adapter.number_status,
        live.adapter.number_messages,
    ):
        with pytest.raises(ProviderNotFound):
            await call(UNKNOWN_RENT)


# -- Messages: unread marking ------------------------------------------------------------------------


async def test_unread_lists_each_message_once(live: Live) -> None:
    rent = await live.rent()
    first = [live.sandbox.deliver(rent, f"Code {i}", str(i)) for i in range(3)]
    raw = (await live.raw.get("/api/messages/unread")).json()
    assert raw["success"] is True
    assert raw["meta"]["total"] == 3
    assert [m["id"] for m in raw["data"]] == first[::-1]
    assert await live.adapter.unread_messages() == []
    later = live.sandbox.deliver(rent, "Code 9", "9")
    assert [m.message_id for m in await live.adapter.unread_messages()] == [f"gotsms:{later}"]
    assert len(await live.adapter.messages()) == 4  # reading does not remove anything from /messages


async def test_unread_pages_are_taken_from_what_is_unread_at_each_request(live: Live) -> None:
    """Each answer marks what it shows as read, and the next request pages through what is still unread."""
    live.sandbox.per_page = 2
    rent = await live.rent()
    ids = [live.sandbox.deliver(rent, f"Code {i}", str(i)) for i in range(5)]  # ids[4] is the newest

    async def unread(page: int) -> tuple[list[str], dict[str, int]]:
        body = (await live.raw.get("/api/messages/unread", params={"page": page})).json()
        return [m["id"] for m in body["data"]], body["meta"]

    assert await unread(1) == ([ids[4], ids[3]], {"current_page": 1, "last_page": 3, "per_page": 2, "total": 5})
    assert await unread(2) == ([ids[0]], {"current_page": 2, "last_page": 2, "per_page": 2, "total": 3})
    assert await unread(1) == ([ids[2], ids[1]], {"current_page": 1, "last_page": 1, "per_page": 2, "total": 2})
    assert await unread(1) == ([], {"current_page": 1, "last_page": 1, "per_page": 2, "total": 0})

    more = [live.sandbox.deliver(rent, f"Code {i}", str(i)) for i in range(5, 10)]
    seen: list[str] = []
    for _ in range(5):  # the adapter, called until nothing is unread: each message exactly once
        seen += [m.message_id for m in await live.adapter.unread_messages()]
    assert sorted(seen) == sorted(f"gotsms:{i}" for i in more)
    assert all(m.read for m in live.sandbox.sms)


# -- The wake-up cycle ------------------------------------------------------------------------------


@pytest.mark.parametrize("timing", [instant(wake_queue=0.8, online_window=1.2)], ids=["visible-windows"])
async def test_wake_up_cycle_queue_online_and_again(live: Live) -> None:
    rent = await live.rent()
    asleep = (await live.raw.get(f"/api/numbers/{rent}/status")).json()
    assert asleep["success"] is True
    assert set(asleep["data"]) == STATUS_KEYS
    assert asleep["data"]["wake_from"] is None
    assert asleep["data"]["wakeup_time_left_seconds"] == 0
    assert asleep["data"]["online_time_left_seconds"] == 0
    assert asleep["data"]["can_wake_up"] is True

    woke = await live.raw.post(f"/api/numbers/{rent}/wake-up")
    assert woke.json() == {"success": True, "message": "Wake up request sent."}
    woken_at = time.time()
    queued = await live.adapter.number_status(rent)
    assert queued.wake_seconds_left == 1  # 0.8 s, in whole seconds
    assert queued.online_seconds_left == 1  # 1.2 s once online
    assert queued.can_wake_up is False
    assert queued.wake_from is not None
    assert queued.wake_till is not None
    assert queued.online_till is not None
    assert queued.online_till > queued.wake_till
    assert not live.sandbox.is_online(rent)
    with pytest.raises(ProviderRejected) as caught:
        await live.adapter.wake_up(rent)
    assert "already awake" in caught.value.message

    await anyio.sleep(max(0.0, woken_at + 0.85 - time.time()))
    online = await live.adapter.number_status(rent)
    assert live.sandbox.is_online(rent)
    assert online.wake_seconds_left == 0
    assert online.online_seconds_left is not None
    assert online.online_seconds_left >= 1
    assert online.can_wake_up is False
    listed = {r.rental_id: r for r in await live.adapter.rents()}
    assert listed[f"gotsms:{rent}"].wake_till is not None
    assert listed[f"gotsms:{rent}"].can_wake_up is False

    await anyio.sleep(max(0.0, woken_at + 2.05 - time.time()))
    over = await live.adapter.number_status(rent)
    assert not live.sandbox.is_online(rent)
    assert over.online_seconds_left == 0
    assert over.can_wake_up is True
    assert await live.adapter.wake_up(rent) == "Wake up request sent."
    assert (await live.adapter.number_status(rent)).can_wake_up is False


@pytest.mark.parametrize("timing", [instant(wake_queue=0.3, code_delay=0.5, auto_code=True)], ids=["auto-code"])
async def test_sleeping_number_gets_its_code_only_after_waking(live: Live) -> None:
    rent = await live.rent()
    await anyio.sleep(0.7)
    assert await live.adapter.number_messages(rent) == []  # asleep: nothing comes
    await live.adapter.wake_up(rent)
    woken_at = time.time()
    await anyio.sleep(0.45)
    assert live.sandbox.is_online(rent)
    assert live.sandbox.sms == []  # online, the code is still on its way
    requests = len(live.sandbox.requests)
    with anyio.fail_after(3):
        while not live.sandbox.sms:  # the sandbox's own loop sends it on time, without a request
            await anyio.sleep(0.02)
    assert len(live.sandbox.requests) == requests
    wake_till = live.sandbox.rents[rent].wake_till
    assert wake_till is not None
    assert live.sandbox.sms[0].received_at == pytest.approx(wake_till + 0.5)  # code_delay after coming online
    assert wake_till + 0.5 >= woken_at + 0.7
    [message] = await live.adapter.number_messages(rent)
    assert message.code is not None
    assert re.fullmatch(r"\d{6}", message.code)
    assert message.text is not None
    assert message.code in message.text
    with pytest.raises(CancelNotAllowed):
        await live.adapter.refund_rent(rent)


async def test_wake_up_refused_for_a_finished_rent(live: Live) -> None:
    rent = await live.rent()
    await live.adapter.refund_rent(rent)
    answer = await live.raw.post(f"/api/numbers/{rent}/wake-up")
    assert answer.status_code == 422
    assert answer.json() == {"success": False, "message": "Rent is not active."}
    assert (await live.adapter.number_status(rent)).can_wake_up is False


# -- Injected faults -----------------------------------------------------------------------------------


async def test_fault_500_is_retried_for_reads_only(live: Live) -> None:
    live.sandbox.inject("GET", "/api/account", "500")
    assert (await live.adapter.account()).amount == Decimal("25.00")  # one failure, then the retry
    assert live.count("GET", "/api/account") == 2

    live.sandbox.inject("GET", "/api/account", "500", times=3)
    with pytest.raises(ProviderUnavailable):
        await live.adapter.account()
    assert live.count("GET", "/api/account") == 5

    live.sandbox.inject("POST", "/api/rents", "500")
    raw = await live.raw.post("/api/rents", json={"plan_id": live.daily()})
    assert raw.status_code == 500
    assert raw.json() == {"message": "Server Error"}
    assert live.sandbox.rents == {}  # a plain 500 fails before anything changes
    assert live.sandbox.commits == 0


async def test_fault_html_is_a_gateway_page(live: Live) -> None:
    live.sandbox.inject("GET", "/api/rents", "html")
    raw = await live.raw.get("/api/rents")
    assert raw.status_code == 502
    assert raw.headers["content-type"].startswith("text/html")
    assert "502 Bad Gateway" in raw.text
    live.sandbox.inject("POST", "/api/rents", "html")
    with pytest.raises(ProviderUnavailable) as caught:
        await live.adapter.create_rent(live.daily())
    assert "HTML" in caught.value.message
    assert live.sandbox.rents == {}
    assert (await live.raw.get("/api/rents")).status_code == 200  # the fault is used up


async def test_fault_truncated_json(live: Live) -> None:
    live.sandbox.inject("GET", "/api/account", "truncated")
    raw = await live.raw.get("/api/account")
    assert raw.status_code == 200
    assert raw.text == '{"success": true, "data": {"id": "'
    live.sandbox.inject("POST", "/api/rents", "truncated")
    with pytest.raises(ProviderUnavailable) as caught:
        await live.adapter.create_rent(live.daily())
    assert "unreadable" in caught.value.message
    assert live.sandbox.balance == Decimal("25.00")


async def test_fault_429_carries_retry_after(live: Live) -> None:
    live.sandbox.inject("GET", "/api/messages", "429", times=2)
    raw = await live.raw.get("/api/messages")
    assert raw.status_code == 429
    assert raw.headers["retry-after"] == "1"
    with pytest.raises(RateLimited) as caught:
        await live.adapter.message_page(1)  # the poller's call: not retried, it feels the 429 at once
    assert caught.value.retry_after == 1.0
    assert (await live.adapter.message_page(1)) == ([], False)
    assert live.count("GET", "/api/messages") == 3


async def test_fault_matches_method_and_path_prefix_for_times_requests(live: Live) -> None:
    live.sandbox.inject("POST", "/api/rents", "500", times=2)
    assert (await live.raw.get("/api/rents")).status_code == 200  # another method
    assert (await live.raw.post("/api/rents/x/refund")).status_code == 500  # a longer path: prefix match
    assert (await live.raw.post("/api/rents", json={"plan_id": live.daily()})).status_code == 500
    assert (await live.raw.post("/api/rents", json={"plan_id": live.daily()})).status_code == 201


async def test_fault_commit_then_500_changes_state_and_fails_the_answer(live: Live) -> None:
    plan = live.sandbox.plans[live.daily()]
    live.sandbox.inject("POST", "/api/rents", "commit_then_500")
    with pytest.raises(ProviderUnavailable) as caught:
        await live.adapter.create_rent(plan.id)
    assert caught.value.uncertain
    assert live.count("POST", "/api/rents") == 1  # a purchase is never retried once sent
    assert live.sandbox.commits == 1
    assert live.sandbox.balance == Decimal("25.00") - plan.price
    [rent] = await live.adapter.rents()  # the provider's own list tells what happened
    assert rent.plan_id == f"gotsms:{plan.id}"


async def test_fault_commit_then_hang_changes_state_and_never_answers(gotsms_sandbox: GotSmsSandbox) -> None:
    plan = next(p for p in gotsms_sandbox.plans.values() if p.duration_type == "day")
    gotsms_sandbox.inject("POST", "/api/rents", "commit_then_hang")
    with anyio.fail_after(10):
        async with serve_loopback(gotsms_sandbox.app) as base:
            adapter = GotSmsProvider(
                SecretStr(gotsms_sandbox.token), base_url=f"{base}/api", timeout=httpx.Timeout(0.5), retry=FAST_RETRY
            )
            try:
                with pytest.raises(ProviderTimeout) as caught:
                    await adapter.rent(parse_plan_id(f"gotsms:{plan.id}"))
                assert caught.value.uncertain
                assert gotsms_sandbox.commits == 1
                assert len(gotsms_sandbox.rents) == 1
                assert gotsms_sandbox.balance == Decimal("25.00") - plan.price
                assert len(await adapter.rents()) == 1  # the sandbox still serves other requests
            finally:
                await adapter.aclose()


async def test_heal_stops_chaos_a_rate_limit_burst_and_rules_no_request_has_met(live: Live) -> None:
    live.sandbox.inject("GET", "/api/account", "500", times=5)
    live.sandbox.chaos(1.0, ("429",))
    assert (await live.raw.get("/api/rents")).status_code == 429  # chaos, which starts a one-second burst
    live.sandbox.heal()
    assert (await live.raw.get("/api/rents")).status_code == 200  # neither chaos nor the burst
    assert (await live.raw.get("/api/account")).status_code == 200  # nor the rule
    assert live.sandbox.injected == {"429": 1}
