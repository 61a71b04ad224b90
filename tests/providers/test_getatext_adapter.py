"""Getatext adapter over an injected MockTransport: every REST endpoint, the five handler actions, the domain calls."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from smsrent import __version__
from smsrent.domain.errors import (
    CancelNotAllowed,
    InsufficientBalance,
    NoNumbersAvailable,
    ProviderAuthError,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
)
from smsrent.domain.ids import parse_plan_id, parse_rental_id
from smsrent.domain.models import Balance, Message, Receipt, Rental, RentalStatus
from smsrent.providers.base import RetryPolicy
from smsrent.providers.getatext import GetatextProvider
from tests.providers.expected import END, GETATEXT_COMPLETED, GETATEXT_LONG_RENTAL, GETATEXT_RENTED, GETATEXT_WHATSAPP
from tests.providers.fixtures import fixture_text, getatext_as_printed, load, repair_printed
from tests.providers.transport import Router, assert_request, json_response, raw_response

pytestmark = pytest.mark.anyio

KEY = "sk_live_G3tAtext-very-secret-key-98765"
AUTH = ("Auth", KEY)
NO_WAIT = RetryPolicy(attempts=3, base_delay=0, max_retry_after=0)
HANDLER = "/stubs/handler_api"

Factory = Callable[..., GetatextProvider]


@pytest.fixture
def router() -> Router:
    return Router()


@pytest.fixture
async def make(router: Router) -> AsyncIterator[Factory]:
    made: list[GetatextProvider] = []

    def factory(**options: Any) -> GetatextProvider:
        provider = GetatextProvider(SecretStr(KEY), transport=router.transport, retry=NO_WAIT, **options)
        made.append(provider)
        return provider

    yield factory
    for provider in made:
        await provider.aclose()


@pytest.fixture
def getatext(make: Factory) -> GetatextProvider:
    return make()


@pytest.fixture
def handler_api(make: Factory) -> GetatextProvider:
    return make(use_handler_api=True)


def serve(name: str, status: int = 200) -> httpx.Response:
    return raw_response(status, fixture_text("getatext", name))


def token(text: str, content_type: str = "text/plain; charset=utf-8") -> httpx.Response:
    """A classic handler-API answer: a bare text token."""
    return raw_response(200, text, content_type)


def expect(request: httpx.Request, method: str, path: str, *, body: Any = None) -> None:
    assert_request(request, method, path, auth=AUTH, secret=KEY, body=body)


def expect_handler(request: httpx.Request, action: str, **params: str) -> None:
    """The doc's handler call: GET with `api_key` and `action` (and the action's parameters) in the query."""
    query = {"api_key": KEY, "action": action, **params}
    assert_request(request, "GET", HANDLER, auth=AUTH, secret=KEY, query=query, secret_in_query=True)


# -- Client setup ---------------------------------------------------------------------------------------


async def test_default_base_url_and_headers(router: Router, getatext: GetatextProvider) -> None:
    router.add("GET", "/api/v1/balance", serve("balance"))
    await getatext.balance()
    request = router.last
    assert str(request.url) == "https://getatext.com/api/v1/balance"
    assert request.headers["auth"] == KEY
    assert "authorization" not in request.headers
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"smsrent/{__version__}"


async def test_custom_base_url(router: Router, make: Factory) -> None:
    router.add("GET", "/api/v1/balance", serve("balance"))
    provider = make(base_url="http://127.0.0.1:9/")
    await provider.balance()
    assert str(router.last.url) == "http://127.0.0.1:9/api/v1/balance"


# -- One-time rentals (REST) ----------------------------------------------------------------------------


async def test_rent_a_number(router: Router, getatext: GetatextProvider) -> None:
    router.add("POST", "/api/v1/rent-a-number", serve("rent_a_number", 201))
    assert await getatext.rent_a_number("whatsapp") == GETATEXT_RENTED
    expect(router.last, "POST", "/api/v1/rent-a-number", body={"service": "whatsapp"})
    assert len(router.requests) == 1


async def test_rent_a_number_naive_time_in_the_configured_zone(router: Router, make: Factory) -> None:
    router.add("POST", "/api/v1/rent-a-number", serve("rent_a_number", 201))
    receipt = await make(tz=UTC).rent_a_number("whatsapp")
    assert receipt.rental.ends_at is not None
    assert receipt.rental.ends_at.isoformat() == "2025-07-06T15:43:37+00:00"


async def test_cancel_rental(router: Router, getatext: GetatextProvider) -> None:
    router.add("POST", "/api/v1/cancel-rental", serve("cancel_rental"))
    receipt = await getatext.cancel_rental("12345")
    expect(router.last, "POST", "/api/v1/cancel-rental", body={"id": 12345})
    assert receipt.rental.rental_id == "getatext:12345"
    assert receipt.rental.status is RentalStatus.CANCELLED
    assert receipt.rental.price == Decimal("0.55")
    assert receipt.balance_after == Decimal("113.87")


async def test_rental_status(router: Router, getatext: GetatextProvider) -> None:
    router.add("POST", "/api/v1/rental-status", serve("rental_status"))
    receipt = await getatext.rental_status("12345")
    expect(router.last, "POST", "/api/v1/rental-status", body={"id": 12345})
    assert receipt.rental.status is RentalStatus.ACTIVE
    assert receipt.rental.ends_at == END
    assert receipt.balance_after == Decimal("113.32")
    assert receipt.messages == ()


async def test_rental_status_with_code(router: Router, getatext: GetatextProvider) -> None:
    router.add(
        "POST", "/api/v1/rental-status", json_response(200, {**load("getatext", "rental_status"), "code": "004521"})
    )
    receipt = await getatext.rental_status("12345")
    assert receipt.messages == (Message(message_id="getatext:12345:004521", rental_id="getatext:12345", code="004521"),)


async def test_complete_rental(router: Router, getatext: GetatextProvider) -> None:
    router.add("POST", "/api/v1/rental-status/12345/completed", serve("rental_completed"))
    receipt = await getatext.complete_rental("12345")
    expect(router.last, "POST", "/api/v1/rental-status/12345/completed")
    assert router.last.content == b""
    assert receipt == GETATEXT_COMPLETED


async def test_prices(router: Router, getatext: GetatextProvider) -> None:
    router.add("GET", "/api/v1/prices-info", serve("prices_info"))
    assert await getatext.prices() == [GETATEXT_WHATSAPP]
    expect(router.last, "GET", "/api/v1/prices-info")


@pytest.mark.parametrize("wrap", [lambda items: items, lambda items: {"data": items, "errors": "null"}])
async def test_prices_as_a_list(router: Router, getatext: GetatextProvider, wrap: Callable[[list[Any]], Any]) -> None:
    telegram = {"service_name": "Telegram", "api_name": "telegram", "multiple_sms": True, "price": 0.25, "ttl": 20}
    router.add("GET", "/api/v1/prices-info", json_response(200, wrap([load("getatext", "prices_info"), telegram])))
    plans = await getatext.prices()
    assert [(plan.plan_id, plan.price, plan.multiple_sms) for plan in plans] == [
        ("getatext:whatsapp", Decimal("0.55"), True),
        ("getatext:telegram", Decimal("0.25"), True),
    ]


async def test_re_rent(router: Router, getatext: GetatextProvider) -> None:
    router.add("POST", "/api/v1/re-rent", serve("re_rent", 201))
    receipt = await getatext.re_rent("1234")
    expect(router.last, "POST", "/api/v1/re-rent", body={"rental_id": 1234})
    assert receipt.rental.rental_id == "getatext:12345"
    assert receipt.rental.price == Decimal("0.55")
    assert receipt.balance_after == Decimal("113.32")


async def test_balance(router: Router, getatext: GetatextProvider) -> None:
    router.add("GET", "/api/v1/balance", serve("balance"))
    assert await getatext.balance() == Balance(provider="getatext", amount=Decimal("10.55"))
    expect(router.last, "GET", "/api/v1/balance")


async def test_balance_without_amount(router: Router, getatext: GetatextProvider) -> None:
    router.add("GET", "/api/v1/balance", json_response(200, {"status": "success", "errors": "null"}))
    with pytest.raises(ProviderUnavailable, match="cannot read"):
        await getatext.balance()


# -- Long rentals -------------------------------------------------------------------------------------------


async def test_long_rentals(router: Router, getatext: GetatextProvider) -> None:
    router.add("GET", "/api/v1/long-rentals", serve("long_rentals"))
    assert await getatext.long_rentals() == [GETATEXT_LONG_RENTAL]
    expect(router.last, "GET", "/api/v1/long-rentals")


@pytest.mark.parametrize("auto_renew", [True, False])
async def test_create_long_rental(router: Router, getatext: GetatextProvider, auto_renew: bool) -> None:
    router.add("POST", "/api/v1/long-rentals", serve("long_rental_created"))
    receipt = await getatext.create_long_rental("1w", auto_renew=auto_renew)
    expect(router.last, "POST", "/api/v1/long-rentals", body={"auto_renew": auto_renew, "rental_time": "1w"})
    assert receipt == Receipt(rental=GETATEXT_LONG_RENTAL)


async def test_create_long_rental_flat_answer_as_printed(router: Router, getatext: GetatextProvider) -> None:
    flat = repair_printed(getatext_as_printed()["long_rental_created"])
    router.add("POST", "/api/v1/long-rentals", json_response(200, flat))
    assert await getatext.create_long_rental("1w", auto_renew=True) == Receipt(rental=GETATEXT_LONG_RENTAL)


@pytest.mark.parametrize(
    ("action", "auto_renew", "body"),
    [
        ("renew", None, {"action": "renew"}),
        ("cancel", None, {"action": "cancel"}),
        ("auto_renew", True, {"action": "auto_renew", "auto_renew": True}),
        ("auto_renew", False, {"action": "auto_renew", "auto_renew": False}),
    ],
)
async def test_update_long_rental(
    router: Router, getatext: GetatextProvider, action: Any, auto_renew: bool | None, body: dict[str, Any]
) -> None:
    router.add("POST", "/api/v1/long-rentals/1/update", serve("long_rental_updated"))
    receipt = await getatext.update_long_rental("1", action, auto_renew=auto_renew)
    expect(router.last, "POST", "/api/v1/long-rentals/1/update", body=body)
    assert receipt == Receipt(rental=GETATEXT_LONG_RENTAL)


async def test_update_long_rental_flat_answer_as_printed(router: Router, getatext: GetatextProvider) -> None:
    flat = repair_printed(getatext_as_printed()["long_rental_updated"])
    router.add("POST", "/api/v1/long-rentals/1/update", json_response(200, flat))
    assert (await getatext.update_long_rental("1", "renew")).rental == GETATEXT_LONG_RENTAL


async def test_long_rental_messages(router: Router, getatext: GetatextProvider) -> None:
    router.add("GET", "/api/v1/long-rentals/1/messages", serve("long_rental_messages"))
    (message,) = await getatext.long_rental_messages("1")
    expect(router.last, "GET", "/api/v1/long-rentals/1/messages")
    assert message.rental_id == "getatext:long:1"
    assert message.sender == "8888"
    assert message.text == "This is a example message"
    assert message.received_at is not None
    assert message.received_at.isoformat() == "2025-07-28T12:39:32-04:00"


# -- The handler API (`use_handler_api=True`) ------------------------------------------------------------


async def test_handler_get_prices_json(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, serve("prices_info"))
    assert await handler_api.prices() == [GETATEXT_WHATSAPP]
    expect_handler(router.last, "getPrices")


async def test_handler_get_rental_status_json(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, serve("rental_status"))
    receipt = await handler_api.rental_status("12345")
    expect_handler(router.last, "getRentalStatus", rental_id="12345")
    assert receipt.rental.rental_id == "getatext:12345"
    assert receipt.rental.status is RentalStatus.ACTIVE
    assert receipt.balance_after == Decimal("113.32")


async def test_handler_get_rental_status_ok_token(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, token("STATUS_OK:004521"))
    receipt = await handler_api.rental_status("77")
    expect_handler(router.last, "getRentalStatus", rental_id="77")
    assert receipt.rental.rental_id == "getatext:77"
    assert receipt.rental.status is RentalStatus.ACTIVE
    assert [message.code for message in receipt.messages] == ["004521"]
    assert receipt.messages[0].rental_id == "getatext:77"


async def test_handler_get_rental_status_wait_token(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, token("STATUS_WAIT_CODE"))
    receipt = await handler_api.rental_status("77")
    assert receipt.rental.status is RentalStatus.ACTIVE
    assert receipt.messages == ()


async def test_handler_get_rental_status_cancel_token(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, token("STATUS_CANCEL"))
    assert (await handler_api.rental_status("77")).rental.status is RentalStatus.CANCELLED


async def test_handler_get_number_json(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, serve("rent_a_number", 201))
    assert await handler_api.rent_a_number("whatsapp") == GETATEXT_RENTED
    expect_handler(router.last, "getNumber", service="whatsapp")


async def test_handler_get_number_token(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, token("ACCESS_NUMBER:77:1234567890"))
    receipt = await handler_api.rent_a_number("whatsapp")
    expect_handler(router.last, "getNumber", service="whatsapp")
    assert receipt.rental == Rental(
        rental_id="getatext:77",
        provider="getatext",
        phone="+11234567890",
        phone_display="1234567890",
        plan_id="getatext:whatsapp",
        status=RentalStatus.ACTIVE,
        provider_status="success",
    )


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("NO_BALANCE", InsufficientBalance),
        ("NO_NUMBERS", NoNumbersAvailable),
        ("BAD_KEY", ProviderAuthError),
        ("BAD_SERVICE", ProviderRejected),
    ],
)
async def test_handler_get_number_error_tokens(
    router: Router, handler_api: GetatextProvider, answer: str, error: type[Exception]
) -> None:
    router.add("GET", HANDLER, token(answer))
    with pytest.raises(error) as caught:
        await handler_api.rent_a_number("whatsapp")
    assert answer in str(caught.value)
    assert KEY not in str(caught.value)
    assert len(router.requests) == 1


async def test_handler_cancel_rental_json(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, serve("cancel_rental"))
    receipt = await handler_api.cancel_rental("12345")
    expect_handler(router.last, "cancelRental", rental_id="12345")
    assert receipt.rental.status is RentalStatus.CANCELLED
    assert receipt.balance_after == Decimal("113.87")


async def test_handler_cancel_rental_token(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, token("ACCESS_CANCEL"))
    receipt = await handler_api.cancel_rental("77")
    assert receipt.rental.rental_id == "getatext:77"
    assert receipt.rental.status is RentalStatus.CANCELLED


async def test_handler_cancel_rental_too_early(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, token("EARLY_CANCEL_DENIED"))
    with pytest.raises(CancelNotAllowed, match="EARLY_CANCEL_DENIED") as caught:
        await handler_api.cancel_rental("77")
    assert caught.value.provider == "getatext"


async def test_handler_get_balance_json(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, serve("balance"))
    assert (await handler_api.balance()).amount == Decimal("10.55")
    expect_handler(router.last, "getBalance")


async def test_handler_get_balance_token(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, token("ACCESS_BALANCE:12.5"))
    assert await handler_api.balance() == Balance(provider="getatext", amount=Decimal("12.5"))
    expect_handler(router.last, "getBalance")


async def test_handler_bad_key(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, token("BAD_KEY"))
    with pytest.raises(ProviderAuthError, match="GETATEXT_API_KEY") as caught:
        await handler_api.balance()
    assert KEY not in caught.value.message


async def test_handler_no_balance(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, token("NO_BALANCE"))
    with pytest.raises(InsufficientBalance, match="top up"):
        await handler_api.rent_a_number("whatsapp")


async def test_handler_unknown_activation(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, token("NO_ACTIVATION"))
    with pytest.raises(ProviderNotFound, match="list_rentals"):
        await handler_api.rental_status("77")


async def test_handler_tokens_sent_as_text_html(router: Router, handler_api: GetatextProvider) -> None:
    """PHP handler stubs usually answer their text tokens with PHP's default `text/html` content type."""
    router.add("GET", HANDLER, token("ACCESS_BALANCE:12.5", "text/html; charset=UTF-8"))
    assert (await handler_api.balance()).amount == Decimal("12.5")


async def test_handler_html_page_is_still_unavailable(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, token("<html><body>Maintenance</body></html>", "text/html"))
    with pytest.raises(ProviderUnavailable, match="HTML"):
        await handler_api.balance()


async def test_handler_unknown_token_is_unreadable(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, token("ERROR_SQL"))
    with pytest.raises(ProviderUnavailable, match="cannot read"):
        await handler_api.balance()


HANDLER_CALLS: dict[str, tuple[Callable[[GetatextProvider], Any], httpx.Response]] = {
    "getPrices": (lambda provider: provider.prices(), serve("prices_info")),
    "getRentalStatus": (lambda provider: provider.rental_status("77"), token("STATUS_WAIT_CODE")),
    "getNumber": (lambda provider: provider.rent_a_number("whatsapp"), token("ACCESS_NUMBER:77:1234567890")),
    "cancelRental": (lambda provider: provider.cancel_rental("77"), token("ACCESS_CANCEL")),
    "getBalance": (lambda provider: provider.balance(), token("ACCESS_BALANCE:12.5")),
}


@pytest.mark.parametrize("action", sorted(HANDLER_CALLS))
async def test_handler_key_is_in_the_query_but_masked_in_httpx_logs(
    router: Router, handler_api: GetatextProvider, caplog: pytest.LogCaptureFixture, action: str
) -> None:
    call, answer = HANDLER_CALLS[action]
    router.add("GET", HANDLER, answer)
    caplog.set_level(logging.INFO, logger="httpx")
    await call(handler_api)
    assert router.last.url.params["api_key"] == KEY
    assert router.last.url.params["action"] == action
    logged = [record.getMessage() for record in caplog.records if record.name == "httpx"]
    assert any("api_key=***" in line and f"action={action}" in line for line in logged), logged
    assert not any(KEY in record.getMessage() for record in caplog.records)
    assert KEY not in caplog.text


async def test_handler_api_is_only_used_for_its_five_actions(router: Router, handler_api: GetatextProvider) -> None:
    router.add("POST", "/api/v1/re-rent", serve("re_rent", 201))
    router.add("GET", "/api/v1/long-rentals", serve("long_rentals"))
    router.add("POST", "/api/v1/rental-status/12345/completed", serve("rental_completed"))
    await handler_api.re_rent("1234")
    await handler_api.long_rentals()
    await handler_api.complete_rental("12345")
    for request in router.requests:
        assert "api_key" not in request.url.params
        assert KEY not in str(request.url)
        assert request.headers["auth"] == KEY


async def test_rest_calls_never_put_the_key_in_the_url(
    router: Router, getatext: GetatextProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    router.add("GET", "/api/v1/balance", serve("balance"))
    router.add("POST", "/api/v1/rent-a-number", serve("rent_a_number", 201))
    await getatext.balance()
    await getatext.rent_a_number("whatsapp")
    assert all(KEY not in str(request.url) for request in router.requests)
    assert KEY not in caplog.text


# -- Domain operations ------------------------------------------------------------------------------------


async def test_get_balance(router: Router, getatext: GetatextProvider) -> None:
    router.add("GET", "/api/v1/balance", serve("balance"))
    balance = await getatext.get_balance()
    assert balance.model_dump(mode="json") == {"provider": "getatext", "amount": "10.55", "currency": "USD"}


async def test_list_plans_with_long_periods(router: Router, getatext: GetatextProvider) -> None:
    router.add("GET", "/api/v1/prices-info", serve("prices_info"))
    plans = await getatext.list_plans()
    expect(router.last, "GET", "/api/v1/prices-info")
    assert plans[0] == GETATEXT_WHATSAPP
    assert [(plan.plan_id, plan.price) for plan in plans[1:]] == [
        ("getatext:long:1w", None),
        ("getatext:long:2w", None),
        ("getatext:long:1m", None),
        ("getatext:long:1y", None),
    ]
    for plan in plans:
        parse_plan_id(plan.plan_id)  # every listed plan id is one that rent() accepts


async def test_list_plans_with_configured_long_prices(router: Router, make: Factory) -> None:
    router.add("GET", "/api/v1/prices-info", serve("prices_info"))
    provider = make(long_prices={"1w": Decimal("10.55"), "1y": Decimal("99")})
    prices = {plan.plan_id: plan.price for plan in await provider.list_plans()}
    assert prices == {
        "getatext:whatsapp": Decimal("0.55"),
        "getatext:long:1w": Decimal("10.55"),
        "getatext:long:2w": None,
        "getatext:long:1m": None,
        "getatext:long:1y": Decimal("99"),
    }


async def test_rent_one_time_plan(router: Router, getatext: GetatextProvider) -> None:
    router.add("POST", "/api/v1/rent-a-number", serve("rent_a_number", 201))
    assert await getatext.rent(parse_plan_id("getatext:whatsapp")) == GETATEXT_RENTED
    expect(router.last, "POST", "/api/v1/rent-a-number", body={"service": "whatsapp"})


async def test_rent_one_time_plan_through_the_handler(router: Router, handler_api: GetatextProvider) -> None:
    router.add("GET", HANDLER, token("ACCESS_NUMBER:77:1234567890"))
    receipt = await handler_api.rent(parse_plan_id("getatext:whatsapp"))
    expect_handler(router.last, "getNumber", service="whatsapp")
    assert receipt.rental.rental_id == "getatext:77"


@pytest.mark.parametrize("period", ["1w", "2w", "1m", "1y"])
async def test_rent_long_plan(router: Router, getatext: GetatextProvider, period: str) -> None:
    router.add("POST", "/api/v1/long-rentals", serve("long_rental_created"))
    receipt = await getatext.rent(parse_plan_id(f"getatext:long:{period}"))
    expect(router.last, "POST", "/api/v1/long-rentals", body={"auto_renew": False, "rental_time": period})
    assert receipt.rental.rental_id == "getatext:long:1"


async def test_get_rental(router: Router, getatext: GetatextProvider) -> None:
    router.add("POST", "/api/v1/rental-status", serve("rental_status"))
    receipt = await getatext.get_rental(parse_rental_id("getatext:12345"))
    expect(router.last, "POST", "/api/v1/rental-status", body={"id": 12345})
    assert receipt.rental.rental_id == "getatext:12345"


async def test_get_long_rental(router: Router, getatext: GetatextProvider) -> None:
    router.add("GET", "/api/v1/long-rentals", serve("long_rentals"))
    assert await getatext.get_rental(parse_rental_id("getatext:long:1")) == Receipt(rental=GETATEXT_LONG_RENTAL)
    expect(router.last, "GET", "/api/v1/long-rentals")


async def test_get_long_rental_unknown(router: Router, getatext: GetatextProvider) -> None:
    router.add("GET", "/api/v1/long-rentals", serve("long_rentals"))
    with pytest.raises(ProviderNotFound, match=r"getatext:long:2.*list_rentals"):
        await getatext.get_rental(parse_rental_id("getatext:long:2"))


async def test_get_messages_one_time(router: Router, getatext: GetatextProvider) -> None:
    answer = {**load("getatext", "rental_status"), "code": "004521"}
    router.add("POST", "/api/v1/rental-status", json_response(200, answer))
    messages = await getatext.get_messages(parse_rental_id("getatext:12345"))
    assert [(message.rental_id, message.code) for message in messages] == [("getatext:12345", "004521")]
    expect(router.last, "POST", "/api/v1/rental-status", body={"id": 12345})


async def test_get_messages_one_time_before_the_code(router: Router, getatext: GetatextProvider) -> None:
    router.add("POST", "/api/v1/rental-status", serve("rental_status"))
    assert await getatext.get_messages(parse_rental_id("getatext:12345")) == []


async def test_get_messages_long(router: Router, getatext: GetatextProvider) -> None:
    router.add("GET", "/api/v1/long-rentals/1/messages", serve("long_rental_messages"))
    messages = await getatext.get_messages(parse_rental_id("getatext:long:1"))
    assert [(message.rental_id, message.text) for message in messages] == [
        ("getatext:long:1", "This is a example message")
    ]
    expect(router.last, "GET", "/api/v1/long-rentals/1/messages")


async def test_refund_one_time(router: Router, getatext: GetatextProvider) -> None:
    router.add("POST", "/api/v1/cancel-rental", serve("cancel_rental"))
    receipt = await getatext.refund(parse_rental_id("getatext:12345"))
    expect(router.last, "POST", "/api/v1/cancel-rental", body={"id": 12345})
    assert receipt.rental.status is RentalStatus.CANCELLED
    assert receipt.balance_after == Decimal("113.87")


async def test_refund_long(router: Router, getatext: GetatextProvider) -> None:
    cancelled = load("getatext", "long_rental_updated")
    cancelled["long_rental"]["status"] = "Cancelled"
    router.add("POST", "/api/v1/long-rentals/1/update", json_response(200, cancelled))
    receipt = await getatext.refund(parse_rental_id("getatext:long:1"))
    expect(router.last, "POST", "/api/v1/long-rentals/1/update", body={"action": "cancel"})
    assert receipt.rental.status is RentalStatus.CANCELLED


async def test_refund_too_early(router: Router, getatext: GetatextProvider) -> None:
    body = {"id": None, "status": None, "errors": "You must wait 1 min before request a cancellation."}
    router.add("POST", "/api/v1/cancel-rental", json_response(400, body))
    with pytest.raises(CancelNotAllowed, match="You must wait 1 min"):
        await getatext.refund(parse_rental_id("getatext:12345"))


async def test_identity() -> None:
    assert GetatextProvider.name == "getatext"
    assert GetatextProvider.credential_env == "GETATEXT_API_KEY"
