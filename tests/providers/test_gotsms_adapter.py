"""GotSMS adapter over an injected MockTransport: every endpoint's wire request, answer, and pagination."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from smsrent import __version__
from smsrent.domain.errors import CancelNotAllowed, ProviderNotFound, ProviderRejected, ProviderUnavailable
from smsrent.domain.ids import parse_plan_id, parse_rental_id
from smsrent.domain.models import Balance, NumberStatus, PublicPrice, RentalStatus, ServiceInfo
from smsrent.providers.base import RetryPolicy
from smsrent.providers.gotsms import GotSmsProvider
from tests.providers.expected import GOTSMS_MESSAGE, GOTSMS_PLAN, GOTSMS_RENT, GOTSMS_TRANSITIONED, NOON
from tests.providers.fixtures import fixture_text, load
from tests.providers.transport import Router, assert_request, json_response, raw_response

pytestmark = pytest.mark.anyio

TOKEN = "gs_live_T0k3n-very-secret-0123456789"
AUTH = ("Authorization", f"Bearer {TOKEN}")
RENT = "9d3f8f6a-1b2c-4d5e-8f90-1a2b3c4d5e6f"
PLAN = "5c2b7e10-aaaa-4bbb-8ccc-0123456789ab"
NO_WAIT = RetryPolicy(attempts=3, base_delay=0, max_retry_after=0)


@pytest.fixture
def router() -> Router:
    return Router()


@pytest.fixture
async def gotsms(router: Router) -> AsyncIterator[GotSmsProvider]:
    provider = GotSmsProvider(SecretStr(TOKEN), transport=router.transport, retry=NO_WAIT)
    yield provider
    await provider.aclose()


def serve(name: str, status: int = 200) -> httpx.Response:
    """The document's example answer, byte for byte."""
    return raw_response(status, fixture_text("gotsms", name))


def expect(
    request: httpx.Request, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None
) -> None:
    assert_request(request, method, f"/api{path}", auth=AUTH, secret=TOKEN, query=query, body=body)


# -- Client setup ---------------------------------------------------------------------------------------


async def test_default_base_url_and_headers(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/account", serve("account"))
    await gotsms.account()
    request = router.last
    assert str(request.url) == "https://app.gotsms.org/api/account"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"] == f"smsrent/{__version__}"


async def test_custom_base_url_keeps_its_path(router: Router) -> None:
    router.add("GET", "/proxy/api/account", serve("account"))
    provider = GotSmsProvider(SecretStr(TOKEN), base_url="http://127.0.0.1:9/proxy/api/", transport=router.transport)
    try:
        assert (await provider.account()).amount == Decimal("125.5")
    finally:
        await provider.aclose()
    assert str(router.last.url) == "http://127.0.0.1:9/proxy/api/account"


def test_token_is_not_in_the_repr_of_the_secret() -> None:
    assert TOKEN not in repr(SecretStr(TOKEN))


# -- Pricelist, account, services -----------------------------------------------------------------------


async def test_pricelist(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/pricelist", serve("pricelist"))
    prices = await gotsms.pricelist()
    expect(router.last, "GET", "/pricelist")
    assert prices == [
        PublicPrice(
            service="Telegram",
            country="USA",
            duration="1 day",
            price=Decimal("1"),
            renew_price=Decimal("1"),
            billing_type="duration",
        ),
        PublicPrice(
            service="WhatsApp",
            country="USA",
            duration="1 month",
            price=Decimal("4.99"),
            renew_price=Decimal("4.99"),
            billing_type="duration",
        ),
    ]


async def test_account(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/account", serve("account"))
    assert await gotsms.account() == Balance(provider="gotsms", amount=Decimal("125.5"))
    expect(router.last, "GET", "/account")


async def test_account_without_balance_is_unavailable(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/account", json_response(200, {"success": True, "data": {}}))
    with pytest.raises(ProviderUnavailable, match="without a balance"):
        await gotsms.account()


async def test_services(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/services", serve("services"))
    assert await gotsms.services() == [ServiceInfo(service_id="uuid", name="Telegram")]
    expect(router.last, "GET", "/services", query={"page": "1"})
    assert len(router.requests) == 1


# -- Rents ----------------------------------------------------------------------------------------------


async def test_rent_plans(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/rents/plans", serve("rents_plans"))
    assert await gotsms.rent_plans() == [GOTSMS_PLAN]
    expect(router.last, "GET", "/rents/plans", query={"page": "1"})


async def test_rents(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/rents", serve("rents"))
    assert await gotsms.rents() == [GOTSMS_RENT]
    expect(router.last, "GET", "/rents", query={"page": "1"})


async def test_rents_skip_an_unreadable_item(router: Router, gotsms: GotSmsProvider) -> None:
    payload = load("gotsms", "rents")
    payload["data"].insert(0, {"status": "active"})  # no id
    router.add("GET", "/api/rents", json_response(200, payload))
    assert await gotsms.rents() == [GOTSMS_RENT]


async def test_create_rent(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("POST", "/api/rents", serve("rent_created", 201))
    receipt = await gotsms.create_rent(PLAN)
    expect(router.last, "POST", "/rents", body={"plan_id": PLAN})
    assert receipt.rental == GOTSMS_RENT
    assert receipt.note == "Rent created successfully."
    assert len(router.requests) == 1


async def test_create_rent_unreadable_answer_is_uncertain(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("POST", "/api/rents", json_response(201, {"success": True, "data": {"phone": "+1 800 123 4567"}}))
    with pytest.raises(ProviderUnavailable) as caught:
        await gotsms.create_rent(PLAN)
    assert caught.value.uncertain
    assert len(router.requests) == 1


async def test_transition(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("POST", f"/api/rents/{RENT}/transition", serve("transition_200"))
    receipt = await gotsms.transition(RENT, PLAN)
    expect(router.last, "POST", f"/rents/{RENT}/transition", body={"plan_id": PLAN})
    assert receipt.rental == GOTSMS_TRANSITIONED
    assert receipt.note == "Plan transitioned successfully."


async def test_transition_refused(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("POST", f"/api/rents/{RENT}/transition", serve("transition_422", 422))
    with pytest.raises(ProviderRejected, match="Current rent plan must be daily") as caught:
        await gotsms.transition(RENT, PLAN)
    assert caught.value.status_code == 422
    assert len(router.requests) == 1


async def test_toggle_renewal(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("POST", f"/api/rents/{RENT}/renewal/toggle", serve("renewal_toggle_200"))
    assert await gotsms.toggle_renewal(RENT) is True
    expect(router.last, "POST", f"/rents/{RENT}/renewal/toggle")
    assert router.last.content == b""


async def test_toggle_renewal_off(router: Router, gotsms: GotSmsProvider) -> None:
    answer = {"success": True, "message": "Auto renewal disabled.", "data": {"is_included_for_next_renewal": "false"}}
    router.add("POST", f"/api/rents/{RENT}/renewal/toggle", json_response(200, answer))
    assert await gotsms.toggle_renewal(RENT) is False


async def test_toggle_renewal_refused(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("POST", f"/api/rents/{RENT}/renewal/toggle", serve("renewal_toggle_422", 422))
    with pytest.raises(ProviderRejected, match=r"only for monthly 1/3/6/12 plans"):
        await gotsms.toggle_renewal(RENT)


async def test_toggle_renewal_without_state(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("POST", f"/api/rents/{RENT}/renewal/toggle", json_response(200, {"success": True, "data": {}}))
    with pytest.raises(ProviderUnavailable, match="auto-renewal"):
        await gotsms.toggle_renewal(RENT)


async def test_refund_rent(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("POST", f"/api/rents/{RENT}/refund", serve("refund_200"))
    receipt = await gotsms.refund_rent(RENT)
    expect(router.last, "POST", f"/rents/{RENT}/refund")
    assert receipt.rental.rental_id == "gotsms:uuid"
    assert receipt.rental.status is RentalStatus.COMPLETED
    assert receipt.rental.provider_status == "finished"
    assert receipt.note == "Rent has been refunded successfully."


async def test_refund_rent_not_available(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("POST", f"/api/rents/{RENT}/refund", serve("refund_422", 422))
    with pytest.raises(CancelNotAllowed, match="Refund not available for this rent"):
        await gotsms.refund_rent(RENT)
    assert len(router.requests) == 1


# -- Messages -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "name"), [("messages", "/messages", "messages")])
async def test_messages(router: Router, gotsms: GotSmsProvider, method: str, path: str, name: str) -> None:
    router.add("GET", f"/api{path}", serve(name))
    assert await getattr(gotsms, method)() == [GOTSMS_MESSAGE]
    expect(router.last, "GET", path, query={"page": "1"})


async def test_unread_messages(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/messages/unread", serve("messages_unread"))
    assert await gotsms.unread_messages() == [GOTSMS_MESSAGE]
    expect(router.last, "GET", "/messages/unread", query={"page": "1"})


async def test_message_page_one_at_a_time(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/messages", paged("/messages", [[message_item("m2")], [message_item("m1")]]))
    first, more = await gotsms.message_page(1)
    assert ([message.message_id for message in first], more) == (["gotsms:m2"], True)
    expect(router.last, "GET", "/messages", query={"page": "1"})
    last, more = await gotsms.message_page(2)
    assert ([message.message_id for message in last], more) == (["gotsms:m1"], False)
    expect(router.last, "GET", "/messages", query={"page": "2"})
    assert len(router.requests) == 2


async def test_message_page_documented_answer(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/messages", serve("messages"))
    assert await gotsms.message_page(1) == ([GOTSMS_MESSAGE], False)


# -- Numbers --------------------------------------------------------------------------------------------


async def test_wake_up(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("POST", f"/api/numbers/{RENT}/wake-up", serve("wake_up"))
    assert await gotsms.wake_up(RENT) == "Wake up request sent."
    expect(router.last, "POST", f"/numbers/{RENT}/wake-up")


async def test_wake_up_without_message(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("POST", f"/api/numbers/{RENT}/wake-up", json_response(200, {"success": True}))
    assert await gotsms.wake_up(RENT) == "Wake up request sent."


async def test_number_messages(router: Router, gotsms: GotSmsProvider) -> None:
    payload = load("gotsms", "number_messages")
    payload["meta"]["next_before_id"] = None
    router.add("GET", f"/api/numbers/{RENT}/messages", json_response(200, payload))
    (message,) = await gotsms.number_messages(RENT)
    expect(router.last, "GET", f"/numbers/{RENT}/messages")
    assert message == GOTSMS_MESSAGE.model_copy(update={"rental_id": f"gotsms:{RENT}"})


async def test_number_messages_documented_answer_follows_its_cursor(router: Router, gotsms: GotSmsProvider) -> None:
    """The example's `next_before_id` is "uuid": the adapter asks for the page before it, which is empty."""
    empty = {"success": True, "data": [], "meta": {"next_before_id": None, "count": 0}}
    router.add("GET", f"/api/numbers/{RENT}/messages", serve("number_messages"), json_response(200, empty))
    messages = await gotsms.number_messages(RENT)
    assert [message.message_id for message in messages] == ["gotsms:uuid"]
    expect(router.requests[0], "GET", f"/numbers/{RENT}/messages")
    expect(router.requests[1], "GET", f"/numbers/{RENT}/messages", query={"before_id": "uuid"})


async def test_number_status(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", f"/api/numbers/{RENT}/status", serve("number_status"))
    status = await gotsms.number_status(RENT)
    expect(router.last, "GET", f"/numbers/{RENT}/status")
    assert status == NumberStatus(
        rental_id="gotsms:uuid",
        status=RentalStatus.ACTIVE,
        provider_status="active",
        active_from=NOON,
        active_till=datetime(2026, 3, 12, 12, 0, tzinfo=UTC),
        wake_from=NOON,
        wake_till=datetime(2026, 3, 11, 12, 5, tzinfo=UTC),
        online_till=datetime(2026, 3, 11, 12, 35, tzinfo=UTC),
        wake_seconds_left=120,
        online_seconds_left=1800,
        can_wake_up=False,
    )


async def test_number_status_not_an_object(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", f"/api/numbers/{RENT}/status", json_response(200, {"success": True, "data": ["active"]}))
    with pytest.raises(ProviderUnavailable, match="cannot read"):
        await gotsms.number_status(RENT)


# -- Pagination -----------------------------------------------------------------------------------------


def message_item(message_id: str, rent_id: str | None = "r1") -> dict[str, Any]:
    return {
        "id": message_id,
        "rent_id": rent_id,
        "from": "+18001234567",
        "body": f"Your code is {message_id}",
        "received_at": "2026-03-11T12:00:00+00:00",
    }


def paged(path: str, pages: list[list[dict[str, Any]]]) -> Any:
    """Serves `pages` by the `page` query parameter, with Laravel-style `meta`."""

    def handler(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        meta = {"current_page": number, "last_page": len(pages), "per_page": 2, "total": sum(map(len, pages))}
        return json_response(200, {"success": True, "data": pages[number - 1], "meta": meta})

    return handler


PAGED_LISTS: dict[str, tuple[str, Callable[[int], dict[str, Any]], str, str]] = {
    "services": ("/services", lambda n: {"id": f"s{n}", "name": f"Service {n}"}, "service_id", "s"),
    "rent_plans": ("/rents/plans", lambda n: {"id": f"p{n}", "price": n}, "plan_id", "gotsms:p"),
    "rents": ("/rents", lambda n: {"id": f"r{n}", "status": "active"}, "rental_id", "gotsms:r"),
    "messages": ("/messages", lambda n: message_item(f"m{n}"), "message_id", "gotsms:m"),
}


@pytest.mark.parametrize("method", sorted(PAGED_LISTS))
async def test_lists_follow_pagination_to_the_last_page(router: Router, gotsms: GotSmsProvider, method: str) -> None:
    path, make, field, prefix = PAGED_LISTS[method]
    pages = [[make(1), make(2)], [make(3), make(4)], [make(5)]]
    router.add("GET", f"/api{path}", paged(path, pages))
    found = await getattr(gotsms, method)()
    assert [getattr(item, field) for item in found] == [f"{prefix}{n}" for n in range(1, 6)]
    assert len(router.requests) == 3
    for number, request in enumerate(router.requests, start=1):
        expect(request, "GET", path, query={"page": str(number)})


async def test_unread_messages_follow_pages_that_stay_put(router: Router, gotsms: GotSmsProvider) -> None:
    """A server that does not mark listed messages read: page 1 again shows nothing new, then pages 2 and 3."""
    pages = [[message_item("m1"), message_item("m2")], [message_item("m3"), message_item("m4")], [message_item("m5")]]
    router.add("GET", "/api/messages/unread", paged("/messages/unread", pages))
    found = await gotsms.unread_messages()
    assert [m.message_id for m in found] == [f"gotsms:m{n}" for n in range(1, 6)]
    assert [r.url.params["page"] for r in router.requests] == ["1", "1", "2", "3"]


async def test_unread_messages_reread_page_one_when_listing_marks_read(router: Router, gotsms: GotSmsProvider) -> None:
    """A server that marks what it lists as read: later messages move up to page 1, so nothing is skipped."""
    unread = [message_item(f"m{n}") for n in range(1, 6)]

    def shrinking(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        shown = unread[(number - 1) * 2 : number * 2]
        meta = {"current_page": number, "last_page": max(1, -(-len(unread) // 2)), "per_page": 2}
        for item in shown:
            unread.remove(item)
        return json_response(200, {"success": True, "data": shown, "meta": meta})

    router.add("GET", "/api/messages/unread", shrinking)
    found = await gotsms.unread_messages()
    assert [m.message_id for m in found] == [f"gotsms:m{n}" for n in range(1, 6)]
    assert unread == []


async def test_pagination_stops_without_meta(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/rents", json_response(200, {"success": True, "data": [{"id": "r1"}]}))
    assert [rental.rental_id for rental in await gotsms.rents()] == ["gotsms:r1"]
    assert len(router.requests) == 1


async def test_pagination_ends_when_the_server_repeats_a_stale_page_number(
    router: Router, gotsms: GotSmsProvider
) -> None:
    """A server that ignores `page` and always says "page 1 of 3" must not keep the adapter busy forever."""

    def stale(request: httpx.Request) -> httpx.Response:
        meta = {"current_page": 1, "last_page": 3}
        return json_response(200, {"success": True, "data": [{"id": "s1", "name": "One"}], "meta": meta})

    router.add("GET", "/api/services", stale)
    router.limit = 10
    await gotsms.services()
    assert [request.url.params["page"] for request in router.requests] == ["1", "2", "3"]


async def test_pagination_is_bounded(router: Router, gotsms: GotSmsProvider) -> None:
    def endless(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        meta = {"current_page": number, "last_page": 10**6}
        return json_response(200, {"success": True, "data": [], "meta": meta})

    router.add("GET", "/api/services", endless)
    await gotsms.services()
    assert len(router.requests) == 200


def cursor_pages(pages: dict[str | None, tuple[list[str], Any]]) -> Any:
    """Serves number messages by `before_id`: cursor -> (message ids, next_before_id)."""

    def handler(request: httpx.Request) -> httpx.Response:
        ids, following = pages[request.url.params.get("before_id")]
        data = [{key: value for key, value in message_item(i).items() if key != "rent_id"} for i in ids]
        return json_response(200, {"success": True, "data": data, "meta": {"next_before_id": following}})

    return handler


async def test_number_messages_follow_next_before_id(router: Router, gotsms: GotSmsProvider) -> None:
    pages = {None: (["m5", "m4"], "m4"), "m4": (["m3", "m2"], "m2"), "m2": (["m1"], None)}
    router.add("GET", f"/api/numbers/{RENT}/messages", cursor_pages(pages))
    messages = await gotsms.number_messages(RENT)
    assert [message.message_id for message in messages] == [f"gotsms:m{n}" for n in (5, 4, 3, 2, 1)]
    assert {message.rental_id for message in messages} == {f"gotsms:{RENT}"}
    assert [dict(request.url.params) for request in router.requests] == [{}, {"before_id": "m4"}, {"before_id": "m2"}]
    for request in router.requests:
        assert request.url.path == f"/api/numbers/{RENT}/messages"
        assert TOKEN not in str(request.url)


@pytest.mark.parametrize("end", [None, "", "null"])
async def test_number_messages_stop_on_an_empty_cursor(router: Router, gotsms: GotSmsProvider, end: Any) -> None:
    pages = {None: (["m2"], "m2"), "m2": (["m1"], end)}
    router.add("GET", f"/api/numbers/{RENT}/messages", cursor_pages(pages))
    assert len(await gotsms.number_messages(RENT)) == 2
    assert len(router.requests) == 2


async def test_number_messages_stop_on_an_empty_page(router: Router, gotsms: GotSmsProvider) -> None:
    pages = {None: (["m2"], "m2"), "m2": ([], "m1")}
    router.add("GET", f"/api/numbers/{RENT}/messages", cursor_pages(pages))
    assert len(await gotsms.number_messages(RENT)) == 1
    assert len(router.requests) == 2


async def test_number_messages_stop_on_a_repeated_cursor(router: Router, gotsms: GotSmsProvider) -> None:
    pages = {None: (["m3"], "m3"), "m3": (["m2"], "m3")}
    router.add("GET", f"/api/numbers/{RENT}/messages", cursor_pages(pages))
    assert [message.message_id for message in await gotsms.number_messages(RENT)] == ["gotsms:m3", "gotsms:m2"]
    assert len(router.requests) == 2


async def test_number_messages_stop_on_a_cursor_cycle(router: Router, gotsms: GotSmsProvider) -> None:
    pages = {None: (["m3"], "a"), "a": (["m2"], "b"), "b": (["m1"], "a")}
    router.add("GET", f"/api/numbers/{RENT}/messages", cursor_pages(pages))
    router.limit = 10
    messages = await gotsms.number_messages(RENT)
    assert [message.message_id for message in messages] == ["gotsms:m3", "gotsms:m2", "gotsms:m1"]
    assert len(router.requests) == 3


# -- Domain operations ----------------------------------------------------------------------------------


async def test_get_balance(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/account", serve("account"))
    balance = await gotsms.get_balance()
    assert balance.amount == Decimal("125.5")
    assert balance.model_dump(mode="json") == {"provider": "gotsms", "amount": "125.50", "currency": "USD"}
    expect(router.last, "GET", "/account")


async def test_list_plans(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/rents/plans", serve("rents_plans"))
    plans = await gotsms.list_plans()
    assert [(plan.plan_id, plan.service, plan.price) for plan in plans] == [("gotsms:uuid", "Telegram", Decimal("1"))]
    parse_plan_id(plans[0].plan_id)  # every listed plan id is one that rent() accepts
    expect(router.last, "GET", "/rents/plans", query={"page": "1"})


async def test_rent(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("POST", "/api/rents", serve("rent_created", 201))
    receipt = await gotsms.rent(parse_plan_id(f"gotsms:{PLAN}"))
    expect(router.last, "POST", "/rents", body={"plan_id": PLAN})
    assert receipt.rental == GOTSMS_RENT


async def test_get_rental_finds_it_in_the_list(router: Router, gotsms: GotSmsProvider) -> None:
    other = {"id": "other", "status": "expired"}
    wanted = {**load("gotsms", "rents")["data"][0], "id": RENT}
    router.add(
        "GET",
        "/api/rents",
        paged("/rents", [[other], [wanted]]),
    )
    receipt = await gotsms.get_rental(parse_rental_id(f"gotsms:{RENT}"))
    assert receipt.rental.rental_id == f"gotsms:{RENT}"
    assert receipt.rental.phone == "+18001234567"
    assert len(router.requests) == 2


async def test_get_rental_unknown(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("GET", "/api/rents", serve("rents"))
    with pytest.raises(ProviderNotFound, match=f"gotsms:{RENT}.*list_rentals") as caught:
        await gotsms.get_rental(parse_rental_id(f"gotsms:{RENT}"))
    assert caught.value.status_code == 404
    assert caught.value.provider == "gotsms"


async def test_get_messages_are_oldest_first(router: Router, gotsms: GotSmsProvider) -> None:
    pages = {None: (["m2"], "m2"), "m2": (["m1"], None)}  # the endpoint lists newest first
    router.add("GET", f"/api/numbers/{RENT}/messages", cursor_pages(pages))
    messages = await gotsms.get_messages(parse_rental_id(f"gotsms:{RENT}"))
    assert [(message.message_id, message.rental_id) for message in messages] == [
        ("gotsms:m1", f"gotsms:{RENT}"),
        ("gotsms:m2", f"gotsms:{RENT}"),
    ]
    expect(router.requests[0], "GET", f"/numbers/{RENT}/messages")


async def test_refund(router: Router, gotsms: GotSmsProvider) -> None:
    router.add("POST", f"/api/rents/{RENT}/refund", serve("refund_200"))
    receipt = await gotsms.refund(parse_rental_id(f"gotsms:{RENT}"))
    expect(router.last, "POST", f"/rents/{RENT}/refund")
    assert receipt.rental.status.ended
    assert receipt.note == "Rent has been refunded successfully."


async def test_identity() -> None:
    assert GotSmsProvider.name == "gotsms"
    assert GotSmsProvider.credential_env == "GOTSMS_API_TOKEN"
