"""The simulated Getatext follows `getatext-api.txt`, driven by the real adapter over real HTTP on loopback.

The `Auth` header (and `api_key` on the handler API), the all-null-but-`errors` error envelope, naive
`YYYY-MM-DD HH:MM:SS` times, the one-minute cancel rule (scaled by `cancel_after`), codes in
`rental-status`, completion and re-rent, long rentals, every handler-API action, and the webhook
push (a POST with the code as a JSON number) to a URL served here.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smsrent.domain.errors import (
    CancelNotAllowed,
    InsufficientBalance,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
)
from smsrent.domain.models import RentalStatus
from smsrent.providers.getatext import GetatextProvider, parse_webhook
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.base import SandboxTiming
from smsrent.sandbox.getatext import TZ, GetatextSandbox
from tests.helpers import FAST_RETRY, getatext_adapter

pytestmark = pytest.mark.anyio
BOUND = 20.0

NAIVE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
NULL_ENVELOPE_KEYS = {"id", "status", "message", "code", "end_time", "number", "service_name", "price", "new_balance"}
RENTAL_KEYS = {"id", "status", "code", "errors", "end_time", "number", "service_name", "cost", "balance"}


@pytest.fixture(autouse=True)
async def bounded() -> AsyncIterator[None]:
    """Every test here, with its fixtures, ends within BOUND seconds (the runner task holds the scope)."""
    with anyio.fail_after(BOUND):
        yield


@dataclass
class Live:
    """A sandbox served on loopback, the real adapter over it (REST and handler API) and a raw client."""

    sandbox: GetatextSandbox
    base: str
    adapter: GetatextProvider
    handler: GetatextProvider
    raw: httpx.AsyncClient

    def count(self, method: str, path: str) -> int:
        return sum(1 for _, m, p in self.sandbox.requests if (m, p) == (method, path))

    async def rent(self, service: str = "whatsapp") -> int:
        receipt = await self.adapter.rent_a_number(service)
        return int(receipt.rental.rental_id.removeprefix("getatext:"))


@pytest.fixture
async def live(getatext_sandbox: GetatextSandbox) -> AsyncIterator[Live]:
    async with serve_loopback(getatext_sandbox.app) as base:
        adapter = getatext_adapter(getatext_sandbox, base_url=base)
        handler = getatext_adapter(getatext_sandbox, base_url=base, use_handler_api=True)
        headers = {"Auth": getatext_sandbox.api_key, "Accept": "application/json"}
        async with httpx.AsyncClient(base_url=base, headers=headers) as raw:
            try:
                yield Live(getatext_sandbox, base, adapter, handler, raw)
            finally:
                await adapter.aclose()
                await handler.aclose()


def instant(**changes: Any) -> SandboxTiming:
    values = {**SandboxTiming.instant().__dict__, **changes}
    return SandboxTiming(**values)


def eastern(naive: str) -> datetime:
    return datetime.strptime(naive, "%Y-%m-%d %H:%M:%S").replace(tzinfo=TZ)


# -- Authentication and the error envelope ---------------------------------------------------------------


PROTECTED = (
    ("POST", "/api/v1/rent-a-number"),
    ("POST", "/api/v1/cancel-rental"),
    ("POST", "/api/v1/rental-status"),
    ("POST", "/api/v1/rental-status/12346/completed"),
    ("GET", "/api/v1/prices-info"),
    ("POST", "/api/v1/re-rent"),
    ("GET", "/api/v1/balance"),
    ("GET", "/api/v1/long-rentals"),
    ("POST", "/api/v1/long-rentals"),
    ("POST", "/api/v1/long-rentals/1/update"),
    ("GET", "/api/v1/long-rentals/1/messages"),
    ("GET", "/stubs/handler_api?action=getBalance"),
)


async def test_every_endpoint_needs_the_auth_header_and_answers_the_error_envelope(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.base) as anonymous:
        for method, path in PROTECTED:
            missing = await anonymous.request(method, path, json={"service": "whatsapp"})
            wrong = await anonymous.request(method, path, headers={"Auth": "sk_wrong"}, json={"service": "whatsapp"})
            for answer in (missing, wrong):
                assert (method, path, answer.status_code) == (method, path, 401)
                body = answer.json()
                assert body == {**dict.fromkeys(NULL_ENVELOPE_KEYS), "errors": "Auth is not presented or is invalid."}
        wrong_key = await anonymous.get("/stubs/handler_api", params={"api_key": "sk_wrong", "action": "getBalance"})
        assert wrong_key.status_code == 401
    assert live.sandbox.balance == Decimal("20.00")
    assert live.sandbox.rentals == {}


async def test_adapter_with_a_wrong_key_gets_an_auth_error(live: Live) -> None:
    for handler_api in (False, True):
        wrong = GetatextProvider(
            SecretStr("sk_wrong"), base_url=live.base, use_handler_api=handler_api, retry=FAST_RETRY
        )
        try:
            with pytest.raises(ProviderAuthError) as caught:
                await wrong.balance()
        finally:
            await wrong.aclose()
        assert "GETATEXT_API_KEY" in caught.value.message
        assert "sk_wrong" not in caught.value.message


# -- Balance, prices, renting ---------------------------------------------------------------------------


async def test_balance_and_prices_follow_the_document(live: Live) -> None:
    balance = await live.raw.get("/api/v1/balance")
    assert balance.json() == {"status": "success", "balance": "20.00", "errors": "null"}
    assert (await live.adapter.balance()).amount == Decimal("20.00")
    prices = (await live.raw.get("/api/v1/prices-info")).json()
    assert {"service_name": "Whatsapp", "api_name": "whatsapp", "multiple_sms": "true", "price": "0.55", "ttl": 15} in (
        prices
    )
    plans = await live.adapter.prices()
    assert {p.plan_id for p in plans} == {f"getatext:{item['api_name']}" for item in prices}
    assert all(isinstance(p.price, Decimal) for p in plans)


async def test_rent_a_number_answers_201_and_charges(live: Live) -> None:
    answer = await live.raw.post("/api/v1/rent-a-number", json={"service": "whatsapp"})
    assert answer.status_code == 201
    body = answer.json()
    assert set(body) == {
        "id",
        "status",
        "message",
        "errors",
        "end_time",
        "number",
        "service_name",
        "price",
        "new_balance",
    }
    assert isinstance(body["id"], int)
    assert (body["status"], body["message"], body["errors"]) == ("success", "Number rented successfully.", None)
    assert (body["service_name"], body["price"], body["new_balance"]) == ("Whatsapp", "0.55", "19.45")
    assert re.fullmatch(r"[2-9]\d{9}", body["number"])
    assert NAIVE.fullmatch(body["end_time"])
    lifetime = live.sandbox.timing.rental_lifetime
    assert abs((eastern(body["end_time"]) - datetime.now(TZ)).total_seconds() - lifetime) < 2

    receipt = await live.adapter.rent_a_number("telegram")
    assert receipt.balance_after == Decimal("19.05")
    assert receipt.rental.ends_at is not None
    assert receipt.rental.ends_at.utcoffset() == timedelta(hours=-4)
    assert live.sandbox.balance == Decimal("19.05")


async def test_renting_an_unknown_service_or_without_funds_charges_nothing(live: Live) -> None:
    unknown = await live.raw.post("/api/v1/rent-a-number", json={"service": "myspace"})
    assert unknown.status_code == 400
    assert unknown.json() == {**dict.fromkeys(NULL_ENVELOPE_KEYS), "errors": "Service not found."}
    with pytest.raises(ProviderError):
        await live.adapter.rent_a_number("myspace")
    live.sandbox.balance = Decimal("0.10")
    with pytest.raises(InsufficientBalance):
        await live.adapter.rent_a_number("whatsapp")
    assert live.sandbox.balance == Decimal("0.10")
    assert live.sandbox.rentals == {}
    assert live.count("POST", "/api/v1/rent-a-number") == 3  # purchases are never retried


# -- rental-status, codes and the cancel rule -------------------------------------------------------------


async def test_rental_status_shows_the_code_as_a_string(live: Live) -> None:
    rental = await live.rent()
    before = (await live.raw.post("/api/v1/rental-status", json={"id": rental})).json()
    assert set(before) == RENTAL_KEYS
    assert (before["id"], before["status"], before["code"], before["errors"]) == (rental, "active", None, None)
    assert (await live.adapter.rental_status(str(rental))).messages == ()

    live.sandbox.deliver(rental, "004521")
    after = (await live.raw.post("/api/v1/rental-status", json={"id": rental})).json()
    assert after["code"] == "004521"
    receipt = await live.adapter.rental_status(str(rental))
    assert [m.code for m in receipt.messages] == ["004521"]
    assert receipt.rental.status is RentalStatus.ACTIVE

    missing = await live.raw.post("/api/v1/rental-status", json={"id": 1})
    assert missing.status_code == 404
    assert missing.json()["errors"] == "Rental not found."
    with pytest.raises(ProviderNotFound):
        await live.adapter.rental_status("1")


@pytest.mark.parametrize("timing", [instant(auto_code=True, code_delay=0.3)], ids=["auto-code"])
async def test_a_code_arrives_by_itself_after_code_delay(live: Live) -> None:
    rental = await live.rent()
    assert (await live.adapter.rental_status(str(rental))).messages == ()
    await anyio.sleep(0.4)
    [message] = (await live.adapter.rental_status(str(rental))).messages
    assert message.code is not None
    assert re.fullmatch(r"\d{6}", message.code)


@pytest.mark.parametrize("timing", [instant(rental_lifetime=0.3)], ids=["short-lifetime"])
async def test_a_rental_ends_after_its_lifetime(live: Live) -> None:
    plain, with_code = await live.rent(), await live.rent()
    live.sandbox.deliver(with_code, "123456")
    await anyio.sleep(0.4)
    assert (await live.adapter.rental_status(str(plain))).rental.status is RentalStatus.EXPIRED
    assert (await live.adapter.rental_status(str(with_code))).rental.status is RentalStatus.COMPLETED


@pytest.mark.parametrize("timing", [instant(cancel_after=0.5)], ids=["cancel-after-0.5s"])
async def test_cancel_only_after_cancel_after_and_before_a_code(live: Live) -> None:
    rental = await live.rent()
    used = await live.rent("telegram")
    live.sandbox.deliver(used, "777777")
    rented_at = time.time()
    early = await live.raw.post("/api/v1/cancel-rental", json={"id": rental})
    assert early.status_code == 400
    assert early.json() == {
        **dict.fromkeys(NULL_ENVELOPE_KEYS),
        "errors": "You must wait 1 min before request a cancellation.",
    }
    with pytest.raises(CancelNotAllowed):
        await live.adapter.cancel_rental(str(rental))
    assert live.sandbox.balance == Decimal("20.00") - Decimal("0.55") - Decimal("0.40")

    await anyio.sleep(max(0.0, rented_at + 0.55 - time.time()))
    answer = await live.raw.post("/api/v1/cancel-rental", json={"id": rental})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == RENTAL_KEYS
    assert (body["id"], body["status"], body["code"], body["cost"], body["balance"]) == (
        rental,
        "cancelled",
        None,
        "0.55",
        "19.60",
    )
    with pytest.raises(ProviderRejected):  # "Rental is not active."
        await live.adapter.cancel_rental(str(rental))

    with pytest.raises(CancelNotAllowed) as caught:  # a code came: never refundable
        await live.adapter.cancel_rental(str(used))
    assert "received a code" in caught.value.message
    assert live.sandbox.balance == Decimal("19.60")


async def test_mark_completed_and_re_rent(live: Live) -> None:
    rental = await live.rent()
    still = await live.raw.post("/api/v1/re-rent", json={"rental_id": rental})
    assert still.status_code == 400
    assert still.json()["errors"] == "Rental is still active."

    done = await live.raw.post(f"/api/v1/rental-status/{rental}/completed")
    body = done.json()
    assert (body["status"], body["message"], body["errors"]) == (
        "success",
        "Rental marked as completed successfully.",
        "null",
    )
    assert set(body["rental"]) == {"id", "end_time", "number", "service_name", "price", "new_balance"}
    assert body["rental"]["id"] == rental
    with pytest.raises(ProviderRejected):
        await live.adapter.complete_rental(str(rental))
    assert (await live.adapter.rental_status(str(rental))).rental.status is RentalStatus.COMPLETED

    number = live.sandbox.rentals[rental].number
    again = await live.adapter.re_rent(str(rental))
    assert again.rental.rental_id != f"getatext:{rental}"
    assert again.rental.phone_display == number
    assert again.balance_after == Decimal("20.00") - 2 * Decimal("0.55")
    assert live.sandbox.balance == again.balance_after


# -- Long rentals -----------------------------------------------------------------------------------------


async def test_long_rentals_create_list_renew_cancel(live: Live) -> None:
    invalid = await live.raw.post("/api/v1/long-rentals", json={"rental_time": "3d"})
    assert invalid.status_code == 400
    assert invalid.json()["errors"] == "Invalid rental time."

    created = (await live.raw.post("/api/v1/long-rentals", json={"auto_renew": True, "rental_time": "1w"})).json()
    assert (created["status"], created["errors"]) == ("success", "null")
    long = created["long_rental"]
    assert set(long) == {"id", "number", "end_time", "rented_at", "price", "status", "period", "auto_renew"}
    assert (long["price"], long["status"], long["period"], long["auto_renew"]) == ("10.55", "Active", "1 Week", True)
    assert DAY.fullmatch(long["end_time"])
    assert DAY.fullmatch(long["rented_at"])
    assert live.sandbox.balance == Decimal("9.45")

    listed = (await live.raw.get("/api/v1/long-rentals")).json()
    assert listed == {"status": "success", "long_rentals": [long], "errors": "null"}
    [rental] = await live.adapter.long_rentals()
    assert rental.rental_id == f"getatext:long:{long['id']}"
    assert rental.plan_id == "getatext:long:1w"

    with pytest.raises(InsufficientBalance):  # 9.45 left, a week costs 10.55
        await live.adapter.update_long_rental(str(long["id"]), "renew")
    off = await live.adapter.update_long_rental(str(long["id"]), "auto_renew", auto_renew=False)
    assert off.rental.auto_renew is False
    bad = await live.raw.post(f"/api/v1/long-rentals/{long['id']}/update", json={"action": "explode"})
    assert bad.status_code == 400
    assert bad.json()["errors"] == "Invalid action."

    live.sandbox.deliver_long(long["id"], "Your code is 5150", sender="8888")
    messages = (await live.raw.get(f"/api/v1/long-rentals/{long['id']}/messages")).json()
    assert messages["status"] == "success"
    [item] = messages["messages"]
    assert (item["message"], item["sender"], item["number"]) == ("Your code is 5150", "8888", long["number"])
    assert datetime.fromisoformat(item["rented_at"]).utcoffset() == timedelta(hours=-4)
    [message] = await live.adapter.long_rental_messages(str(long["id"]))
    assert message.text == "Your code is 5150"

    cancelled = await live.adapter.update_long_rental(str(long["id"]), "cancel")
    assert cancelled.rental.status is RentalStatus.CANCELLED
    assert live.sandbox.balance == Decimal("9.45")  # it received a message: no credit
    with pytest.raises(ProviderRejected):
        await live.adapter.update_long_rental(str(long["id"]), "cancel")

    live.sandbox.balance = Decimal("50.00")
    unused = await live.adapter.create_long_rental("2w", auto_renew=False)
    local = unused.rental.rental_id.removeprefix("getatext:long:")
    assert live.sandbox.balance == Decimal("32.00")
    ends = live.sandbox.long_rentals[int(local)].ends
    await live.adapter.update_long_rental(local, "renew")
    assert live.sandbox.balance == Decimal("14.00")
    assert live.sandbox.long_rentals[int(local)].ends == ends + 14 * 86400
    await live.adapter.update_long_rental(local, "cancel")
    assert live.sandbox.balance == Decimal("32.00")  # no message: the price comes back


# -- The handler API ---------------------------------------------------------------------------------------


async def test_handler_api_actions(live: Live) -> None:
    assert (await live.handler.balance()).amount == Decimal("20.00")
    assert {p.plan_id for p in await live.handler.prices()} == {p.plan_id for p in await live.adapter.prices()}
    receipt = await live.handler.rent_a_number("google")
    local = receipt.rental.rental_id.removeprefix("getatext:")
    assert receipt.balance_after == Decimal("19.70")
    assert (await live.handler.rental_status(local)).messages == ()
    live.sandbox.deliver(int(local), "090909")
    assert [m.code for m in (await live.handler.rental_status(local)).messages] == ["090909"]
    fresh = await live.handler.rent_a_number("discord")
    cancelled = await live.handler.cancel_rental(fresh.rental.rental_id.removeprefix("getatext:"))
    assert cancelled.rental.status is RentalStatus.CANCELLED
    assert live.sandbox.balance == Decimal("19.70")

    handler_requests = [(m, p) for _, m, p in live.sandbox.requests]
    assert set(handler_requests) == {("GET", "/stubs/handler_api"), ("GET", "/api/v1/prices-info")}

    query = {"api_key": live.sandbox.api_key}
    async with httpx.AsyncClient(base_url=live.base) as anonymous:  # the key in the query is enough
        balance = await anonymous.get("/stubs/handler_api", params={**query, "action": "getBalance"})
        assert balance.json() == {"status": "success", "balance": "19.70", "errors": "null"}
        unknown = await anonymous.get("/stubs/handler_api", params={**query, "action": "getEverything"})
        assert unknown.status_code == 400
        assert unknown.json()["errors"] == "Unknown action."
        status = await anonymous.get(
            "/stubs/handler_api", params={**query, "action": "getRentalStatus", "rental_id": local}
        )
        assert status.json()["code"] == "090909"


# -- Webhook pushes ----------------------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    bodies: list[dict[str, Any]]

    async def first(self, seconds: float = 3.0) -> dict[str, Any]:
        with anyio.fail_after(seconds):
            while not self.bodies:
                await anyio.sleep(0.01)
        return self.bodies[0]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    bodies: list[dict[str, Any]] = []

    async def hook(request: Request) -> Response:
        assert request.headers["content-type"] == "application/json"
        bodies.append(await request.json())
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/hooks/getatext/s3cret", hook, methods=["POST"])])
    async with serve_loopback(app) as base:
        yield Receiver(f"{base}/hooks/getatext/s3cret", bodies)


async def test_webhook_push_posts_the_code_as_a_json_number(
    getatext_sandbox: GetatextSandbox, receiver: Receiver
) -> None:
    getatext_sandbox.webhook_url = receiver.url
    async with serve_loopback(getatext_sandbox.app) as base:
        adapter = getatext_adapter(getatext_sandbox, base_url=base)
        try:
            receipt = await adapter.rent_a_number("whatsapp")
        finally:
            await adapter.aclose()
        rental = int(receipt.rental.rental_id.removeprefix("getatext:"))
        before = time.time()
        getatext_sandbox.deliver(rental, "004521")
        body = await receiver.first()
    assert set(body) == {"id", "code", "received_at", "number", "service_name"}
    assert type(body["code"]) is int
    assert body["code"] == 4521
    assert (body["id"], body["number"], body["service_name"]) == (rental, receipt.rental.phone_display, "Whatsapp")
    assert NAIVE.fullmatch(body["received_at"])  # naive, in the provider's zone
    assert abs(eastern(body["received_at"]).timestamp() - before) < 2
    assert getatext_sandbox.pushed[-1]["answer"] == 200
    pushed = parse_webhook(body, TZ)
    assert (pushed.rental_id, pushed.code, pushed.code_was_number) == (f"getatext:{rental}", "4521", True)


@pytest.mark.parametrize("timing", [instant(auto_code=True, code_delay=0.2)], ids=["auto-code"])
async def test_webhook_push_of_an_automatic_code_needs_no_request(
    getatext_sandbox: GetatextSandbox, receiver: Receiver
) -> None:
    getatext_sandbox.webhook_url = receiver.url
    async with serve_loopback(getatext_sandbox.app) as base:
        adapter = getatext_adapter(getatext_sandbox, base_url=base)
        try:
            receipt = await adapter.rent_a_number("uber")
        finally:
            await adapter.aclose()
        served = len(getatext_sandbox.requests)
        body = await receiver.first()
        assert len(getatext_sandbox.requests) == served  # the sandbox's own loop sent it on time
    rental = getatext_sandbox.rentals[int(receipt.rental.rental_id.removeprefix("getatext:"))]
    assert rental.code is not None
    assert body["code"] == int(rental.code)
    assert body["id"] == rental.id


async def test_webhook_push_to_an_unreachable_url_is_recorded_and_harmless(getatext_sandbox: GetatextSandbox) -> None:
    getatext_sandbox.webhook_url = "http://127.0.0.1:9/hook"  # the discard port: nothing listens
    async with serve_loopback(getatext_sandbox.app) as base:
        adapter = getatext_adapter(getatext_sandbox, base_url=base)
        try:
            local = (await adapter.rent_a_number("whatsapp")).rental.rental_id.removeprefix("getatext:")
            getatext_sandbox.deliver(int(local), "123456")
            with anyio.fail_after(5):
                while not getatext_sandbox.pushed:
                    await anyio.sleep(0.01)
            assert getatext_sandbox.pushed[0]["answer"] is None
            assert [m.code for m in (await adapter.rental_status(local)).messages] == ["123456"]
        finally:
            await adapter.aclose()


async def test_without_a_webhook_url_nothing_is_pushed(getatext_sandbox: GetatextSandbox) -> None:
    async with serve_loopback(getatext_sandbox.app) as base:
        adapter = getatext_adapter(getatext_sandbox, base_url=base)
        try:
            local = (await adapter.rent_a_number("whatsapp")).rental.rental_id.removeprefix("getatext:")
        finally:
            await adapter.aclose()
        getatext_sandbox.deliver(int(local), "123456")
        await anyio.sleep(0.1)
    assert getatext_sandbox.pushed == []


# -- Faults on Getatext paths ------------------------------------------------------------------------------


async def test_fault_commit_then_500_on_a_rental_charges_and_fails_the_answer(live: Live) -> None:
    live.sandbox.inject("POST", "/api/v1/rent-a-number", "commit_then_500")
    with pytest.raises(ProviderUnavailable) as caught:
        await live.adapter.rent_a_number("whatsapp")
    assert caught.value.uncertain
    assert live.sandbox.commits == 1
    assert len(live.sandbox.rentals) == 1
    assert (await live.adapter.balance()).amount == Decimal("19.45")  # the balance tells what happened


async def test_fault_on_the_handler_api_path(live: Live) -> None:
    live.sandbox.inject("GET", "/stubs/handler_api", "html")
    with pytest.raises(ProviderUnavailable):
        await live.handler.rent_a_number("whatsapp")
    assert live.sandbox.rentals == {}
    live.sandbox.inject("GET", "/stubs/handler_api", "429")
    assert (await live.handler.balance()).amount == Decimal("20.00")  # a read: retried after the 429
    assert live.count("GET", "/stubs/handler_api") == 3
