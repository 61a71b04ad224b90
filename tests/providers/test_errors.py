"""Error mapping and retry behaviour of both adapters (the shared `HttpProvider` base and each provider's wording)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr

from smsrent.domain.errors import (
    CancelNotAllowed,
    InsufficientBalance,
    NoNumbersAvailable,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    ProviderTimeout,
    ProviderTransportError,
    ProviderUnavailable,
    RateLimited,
)
from smsrent.providers.base import HttpProvider, RetryPolicy, _Progress, parse_retry_after
from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider
from tests.providers.fixtures import fixture_text, load
from tests.providers.transport import Router, Step, json_response, raw_response

pytestmark = pytest.mark.anyio

TOKEN = "gs_live_T0k3n-very-secret-0123456789"
KEY = "sk_live_G3tAtext-very-secret-key-98765"
RENT = "9d3f8f6a-1b2c-4d5e-8f90-1a2b3c4d5e6f"
PLAN = "5c2b7e10-aaaa-4bbb-8ccc-0123456789ab"
ONCE = RetryPolicy(attempts=1)
NO_WAIT = RetryPolicy(attempts=3, base_delay=0, max_retry_after=0)
Call = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Side:
    """One provider as the error tests see it: a read-only call, a purchase, its secret and its wording."""

    name: str
    secret: str
    env: str
    read: tuple[str, str, Call]
    buy: tuple[str, str, Call]
    ok_read: Callable[[], httpx.Response]
    ok_buy: Callable[[], httpx.Response]

    def make(self, router: Router, retry: RetryPolicy, **options: Any) -> HttpProvider:
        if self.name == "gotsms":
            return GotSmsProvider(SecretStr(TOKEN), transport=router.transport, retry=retry)
        return GetatextProvider(SecretStr(KEY), transport=router.transport, retry=retry, **options)

    def rejected(self, text: str) -> dict[str, Any]:
        """The provider's error envelope around `text`."""
        if self.name == "gotsms":
            return {"success": False, "message": text}
        return {"id": None, "status": None, "message": None, "errors": text, "number": None}


GOTSMS = Side(
    name="gotsms",
    secret=TOKEN,
    env="GOTSMS_API_TOKEN",
    read=("GET", "/api/account", lambda provider: provider.account()),
    buy=("POST", "/api/rents", lambda provider: provider.create_rent(PLAN)),
    ok_read=lambda: raw_response(200, fixture_text("gotsms", "account")),
    ok_buy=lambda: raw_response(201, fixture_text("gotsms", "rent_created")),
)
GETATEXT = Side(
    name="getatext",
    secret=KEY,
    env="GETATEXT_API_KEY",
    read=("GET", "/api/v1/balance", lambda provider: provider.balance()),
    buy=("POST", "/api/v1/rent-a-number", lambda provider: provider.rent_a_number("whatsapp")),
    ok_read=lambda: raw_response(200, fixture_text("getatext", "balance")),
    ok_buy=lambda: raw_response(201, fixture_text("getatext", "rent_a_number")),
)


@pytest.fixture(params=[GOTSMS, GETATEXT], ids=lambda side: side.name)
def side(request: pytest.FixtureRequest) -> Side:
    side: Side = request.param
    return side


@pytest.fixture
def router() -> Router:
    return Router()


@pytest.fixture
async def opened(router: Router) -> AsyncIterator[list[HttpProvider]]:
    made: list[HttpProvider] = []
    yield made
    for provider in made:
        await provider.aclose()


async def fail_read(side: Side, router: Router, opened: list[HttpProvider], *steps: Step) -> ProviderError:
    """Serve `steps` to the side's read-only call (no retries) and return the error it raised."""
    method, path, call = side.read
    router.add(method, path, *steps)
    provider = side.make(router, ONCE)
    opened.append(provider)
    with pytest.raises(ProviderError) as caught:
        await call(provider)
    return caught.value


async def fail_buy(side: Side, router: Router, opened: list[HttpProvider], *steps: Step) -> ProviderError:
    method, path, call = side.buy
    router.add(method, path, *steps)
    provider = side.make(router, NO_WAIT)
    opened.append(provider)
    with pytest.raises(ProviderError) as caught:
        await call(provider)
    return caught.value


def assert_clean(err: ProviderError, side: Side) -> None:
    """Short, one line, and no secret anywhere in what a caller could show."""
    assert err.message == str(err)
    assert len(err.message) <= 300
    assert "\n" not in err.message
    assert "\r" not in err.message
    for shown in (err.message, str(err), repr(err)):
        assert side.secret not in shown
    assert err.provider == side.name


# -- Status families ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize(
    "body",
    [
        {"message": "Unauthenticated."},
        {"errors": "Auth is not presented"},
        None,
    ],
    ids=["message", "errors", "empty"],
)
async def test_auth_errors_name_the_credential(
    side: Side, router: Router, opened: list[HttpProvider], status: int, body: Any
) -> None:
    answer = json_response(status, body) if body is not None else httpx.Response(status)
    err = await fail_read(side, router, opened, answer)
    assert type(err) is ProviderAuthError
    assert err.status_code == status
    assert side.env in err.message
    assert f"HTTP {status}" in err.message
    if body is not None:
        assert next(iter(body.values())).rstrip(".") in err.message
    assert_clean(err, side)


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_error_as_an_html_page(side: Side, router: Router, opened: list[HttpProvider], status: int) -> None:
    page = raw_response(status, "<!DOCTYPE html><html><body><h1>Forbidden</h1></body></html>", "text/html")
    err = await fail_read(side, router, opened, page)
    assert type(err) is ProviderAuthError
    assert side.env in err.message
    assert_clean(err, side)


async def test_not_found(side: Side, router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(side, router, opened, json_response(404, {"message": "No query results."}))
    assert type(err) is ProviderNotFound
    assert err.status_code == 404
    assert "list_rentals" in err.message
    assert "No query results" in err.message
    assert_clean(err, side)


async def test_not_found_without_body(side: Side, router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(side, router, opened, httpx.Response(404))
    assert type(err) is ProviderNotFound
    assert "Not Found" in err.message


@pytest.mark.parametrize("status", [400, 422])
async def test_laravel_validation_errors(side: Side, router: Router, opened: list[HttpProvider], status: int) -> None:
    body = {"message": "The given data was invalid.", "errors": {"plan_id": ["The selected plan id is invalid."]}}
    err = await fail_buy(side, router, opened, json_response(status, body))
    assert type(err) is ProviderRejected
    assert err.status_code == status
    assert "The given data was invalid." in err.message
    assert "The selected plan id is invalid." in err.message
    assert_clean(err, side)
    assert len(router.requests) == 1


@pytest.mark.parametrize("status", [400, 422])
async def test_getatext_errors_envelope(router: Router, opened: list[HttpProvider], status: int) -> None:
    body = GETATEXT.rejected("The selected service is invalid.")
    err = await fail_buy(GETATEXT, router, opened, json_response(status, body))
    assert type(err) is ProviderRejected
    assert "The selected service is invalid." in err.message
    assert_clean(err, GETATEXT)


@pytest.mark.parametrize(
    "text",
    ["Insufficient balance.", "Not enough funds on your balance", "Your balance is too low to rent this number."],
)
@pytest.mark.parametrize("status", [400, 402, 422])
async def test_insufficient_balance(
    side: Side, router: Router, opened: list[HttpProvider], text: str, status: int
) -> None:
    err = await fail_buy(side, router, opened, json_response(status, side.rejected(text)))
    assert type(err) is InsufficientBalance
    assert text.rstrip(".") in err.message
    assert "top up" in err.message
    assert_clean(err, side)
    assert len(router.requests) == 1


@pytest.mark.parametrize("text", ["Insufficient balance.", "No numbers available right now.", "Account locked."])
@pytest.mark.parametrize("status", [200, 201])
async def test_a_2xx_purchase_answer_that_reports_an_error_is_uncertain(
    side: Side, router: Router, opened: list[HttpProvider], text: str, status: int
) -> None:
    """Neither document shows an error inside a 2xx: the provider may have charged, so it is reconciled."""
    err = await fail_buy(side, router, opened, json_response(status, side.rejected(text)))
    assert type(err) is ProviderUnavailable
    assert err.uncertain
    assert err.status_code == status
    assert text.rstrip(".") in err.message
    assert "outcome is unknown" in err.message
    assert_clean(err, side)
    assert len(router.requests) == 1


async def test_no_numbers(side: Side, router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_buy(side, router, opened, json_response(400, side.rejected("No numbers available right now.")))
    assert type(err) is NoNumbersAvailable
    assert_clean(err, side)


async def test_gotsms_refund_not_available(router: Router, opened: list[HttpProvider]) -> None:
    router.add("POST", f"/api/rents/{RENT}/refund", raw_response(422, fixture_text("gotsms", "refund_422")))
    provider = GotSmsProvider(SecretStr(TOKEN), transport=router.transport, retry=NO_WAIT)
    opened.append(provider)
    with pytest.raises(CancelNotAllowed) as caught:
        await provider.refund_rent(RENT)
    assert caught.value.status_code == 422
    assert "Refund not available for this rent" in caught.value.message
    assert_clean(caught.value, GOTSMS)
    assert len(router.requests) == 1


@pytest.mark.parametrize(("name", "status"), [("transition_422", 422), ("renewal_toggle_422", 422)])
async def test_gotsms_documented_422s_are_rejections(
    router: Router, opened: list[HttpProvider], name: str, status: int
) -> None:
    router.add("POST", f"/api/rents/{RENT}/transition", raw_response(status, fixture_text("gotsms", name)))
    provider = GotSmsProvider(SecretStr(TOKEN), transport=router.transport, retry=NO_WAIT)
    opened.append(provider)
    with pytest.raises(ProviderRejected) as caught:
        await provider.transition(RENT, PLAN)
    assert "refused the request (HTTP 422)" in caught.value.message


@pytest.mark.parametrize("status", [400, 403])
async def test_getatext_cancel_too_early(router: Router, opened: list[HttpProvider], status: int) -> None:
    text = "You must wait 1 min before request a cancellation."
    router.add("POST", "/api/v1/cancel-rental", json_response(status, GETATEXT.rejected(text)))
    provider = GetatextProvider(SecretStr(KEY), transport=router.transport, retry=NO_WAIT)
    opened.append(provider)
    with pytest.raises(CancelNotAllowed, match="You must wait 1 min") as caught:
        await provider.cancel_rental("12345")
    assert caught.value.status_code == status
    assert_clean(caught.value, GETATEXT)


async def test_getatext_cancel_refused_inside_a_200_is_uncertain(router: Router, opened: list[HttpProvider]) -> None:
    text = "You must wait 1 min before request a cancellation."
    router.add("POST", "/api/v1/cancel-rental", json_response(200, GETATEXT.rejected(text)))
    provider = GetatextProvider(SecretStr(KEY), transport=router.transport, retry=NO_WAIT)
    opened.append(provider)
    with pytest.raises(ProviderUnavailable, match="You must wait 1 min") as caught:
        await provider.cancel_rental("12345")
    assert caught.value.uncertain


async def test_gotsms_success_false_with_200(router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(GOTSMS, router, opened, json_response(200, {"success": False, "message": "Account locked."}))
    assert type(err) is ProviderRejected
    assert err.status_code == 200
    assert "Account locked." in err.message
    assert_clean(err, GOTSMS)


async def test_gotsms_success_false_without_message(router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(GOTSMS, router, opened, json_response(200, {"success": "false"}))
    assert type(err) is ProviderRejected
    assert "request failed" in err.message


@pytest.mark.parametrize("data", [None, {}, "none", 0])
async def test_gotsms_list_answer_without_its_list_is_unreadable(
    router: Router, opened: list[HttpProvider], data: Any
) -> None:
    """An empty rent list proves no rent was made (a purchase is settled as not bought on it): `data: null` is
    no such proof."""
    router.add("GET", "/api/rents", json_response(200, {"success": True, "data": data}))
    provider = GotSmsProvider(SecretStr(TOKEN), transport=router.transport, retry=ONCE)
    opened.append(provider)
    with pytest.raises(ProviderUnavailable, match="without its list"):
        await provider.rents()


@pytest.mark.parametrize(
    ("path", "call"),
    [
        ("/api/v1/long-rentals", lambda provider: provider.long_rentals()),
        ("/api/v1/long-rentals/7/messages", lambda provider: provider.long_rental_messages("7")),
        ("/api/v1/prices-info", lambda provider: provider.prices()),
    ],
)
async def test_getatext_list_answer_without_its_list_is_unreadable(
    router: Router, opened: list[HttpProvider], path: str, call: Call
) -> None:
    router.add("GET", path, json_response(200, {"status": "success", "errors": "null"}))
    provider = GETATEXT.make(router, ONCE)
    opened.append(provider)
    with pytest.raises(ProviderUnavailable, match="cannot read"):
        await call(provider)


async def test_getatext_errors_string_with_200(router: Router, opened: list[HttpProvider]) -> None:
    body = {"status": "success", "balance": None, "errors": "Account suspended."}
    err = await fail_read(GETATEXT, router, opened, json_response(200, body))
    assert type(err) is ProviderRejected
    assert err.status_code == 200
    assert "Account suspended." in err.message
    assert_clean(err, GETATEXT)


async def test_getatext_status_error_with_200(router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(GETATEXT, router, opened, json_response(200, {"status": "error", "errors": None}))
    assert type(err) is ProviderRejected


NO_ERRORS = [None, "null", "NULL", "", False, 0, "0", "false", "False", [], {}, [None, ""], {"service": []}]


@pytest.mark.parametrize("errors", NO_ERRORS)
async def test_getatext_null_errors_are_success(router: Router, opened: list[HttpProvider], errors: Any) -> None:
    router.add("GET", "/api/v1/balance", json_response(200, {"status": "success", "balance": "1.5", "errors": errors}))
    provider = GETATEXT.make(router, ONCE)
    opened.append(provider)
    assert str((await provider.balance()).amount) == "1.5"  # type: ignore[attr-defined]


@pytest.mark.parametrize("errors", NO_ERRORS)
async def test_getatext_purchase_with_errors_false_is_bought(
    router: Router, opened: list[HttpProvider], errors: Any
) -> None:
    """`"errors": false` (or 0, or empty) says nothing failed: the purchase was made and charged."""
    answer = {**load("getatext", "rent_a_number"), "errors": errors}
    router.add("POST", "/api/v1/rent-a-number", json_response(201, answer))
    provider = GETATEXT.make(router, ONCE)
    opened.append(provider)
    receipt = await provider.rent_a_number("whatsapp")  # type: ignore[attr-defined]
    assert receipt.rental.rental_id == "getatext:12345"
    assert str(receipt.rental.price) == "0.55"


@pytest.mark.parametrize("errors", [True, 1, "true", "Service unavailable.", ["Service unavailable."]])
async def test_getatext_errors_that_say_failed_are_errors(
    router: Router, opened: list[HttpProvider], errors: Any
) -> None:
    err = await fail_read(GETATEXT, router, opened, json_response(200, {"status": "success", "errors": errors}))
    assert type(err) is ProviderRejected


async def test_getatext_not_found_wording(router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(GETATEXT, router, opened, json_response(400, {"errors": "Rental not found."}))
    assert type(err) is ProviderNotFound
    assert "list_rentals" in err.message


# -- 429 ---------------------------------------------------------------------------------------------------


async def test_rate_limited_with_seconds(side: Side, router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(
        side, router, opened, json_response(429, {"message": "Too Many Attempts."}, {"Retry-After": "7"})
    )
    assert type(err) is RateLimited
    assert err.retry_after == 7
    assert err.status_code == 429
    assert "in 7 s" in err.message
    assert_clean(err, side)


async def test_rate_limited_with_an_http_date(side: Side, router: Router, opened: list[HttpProvider]) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    err = await fail_read(side, router, opened, json_response(429, {}, {"Retry-After": when}))
    assert isinstance(err, RateLimited)
    assert err.retry_after is not None
    assert 50 <= err.retry_after <= 61


async def test_rate_limited_without_header(side: Side, router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(side, router, opened, httpx.Response(429))
    assert isinstance(err, RateLimited)
    assert err.retry_after is None
    assert "shortly" in err.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), ("0", 0.0), ("-3", 0.0), ("1.5", 1.5), ("", None), (None, None), ("soon", None)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_dates() -> None:
    past = format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(past) == 0.0
    future = format_datetime(datetime.fromtimestamp(time.time() + 120, UTC), usegmt=True)
    seconds = parse_retry_after(future)
    assert seconds is not None
    assert 110 <= seconds <= 121


def test_retry_policy_delays() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0, max_retry_after=30.0)
    assert policy.delay(0, retry_after=7) == 7
    assert policy.delay(0, retry_after=300) == 30
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (5, 8.0), (10, 8.0)]:
        assert ceiling / 2 <= policy.delay(attempt) <= ceiling
    assert RetryPolicy(base_delay=0).delay(3) == 0


# -- 5xx, HTML, broken JSON ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_unavailable_and_uncertain(
    side: Side, router: Router, opened: list[HttpProvider], status: int
) -> None:
    err = await fail_read(side, router, opened, json_response(status, {"message": "Server Error"}))
    assert type(err) is ProviderUnavailable
    assert err.status_code == status
    assert err.request_sent
    assert err.uncertain
    assert f"HTTP {status}" in err.message
    assert "Server Error" in err.message
    assert_clean(err, side)


@pytest.mark.parametrize("status", [200, 502])
async def test_html_page_is_unavailable(side: Side, router: Router, opened: list[HttpProvider], status: int) -> None:
    page = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>nginx</body>\n</html>\n"
    err = await fail_read(side, router, opened, raw_response(status, page, "text/html; charset=utf-8"))
    assert type(err) is ProviderUnavailable
    assert "HTML" in err.message
    assert "nginx" not in err.message
    assert_clean(err, side)


async def test_html_page_with_a_json_content_type(side: Side, router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(side, router, opened, raw_response(200, "<!doctype html><p>Maintenance</p>"))
    assert type(err) is ProviderUnavailable


@pytest.mark.parametrize("status", [200, 201, 500])
async def test_truncated_json_is_unavailable(
    side: Side, router: Router, opened: list[HttpProvider], status: int
) -> None:
    err = await fail_read(side, router, opened, raw_response(status, '{"success": true, "data": {"balance": 12'))
    assert type(err) is ProviderUnavailable
    assert_clean(err, side)


async def test_truncated_json_from_the_handler_api(router: Router, opened: list[HttpProvider]) -> None:
    router.add("GET", "/stubs/handler_api", raw_response(200, '{"status": "success", "bal'))
    provider = GETATEXT.make(router, ONCE, use_handler_api=True)
    opened.append(provider)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.balance()  # type: ignore[attr-defined]
    assert_clean(caught.value, GETATEXT)


async def test_unreadable_error_body_keeps_the_status_mapping(
    side: Side, router: Router, opened: list[HttpProvider]
) -> None:
    err = await fail_read(side, router, opened, raw_response(422, "validation failed", "text/plain"))
    assert type(err) is ProviderRejected
    assert "validation failed" in err.message


def bodies(side: Side) -> dict[str, httpx.Response]:
    """Answers whose body cannot be read, each carrying (where readable at all) a valid answer."""
    valid = side.ok_read().content

    def streamed(header: str, value: str) -> httpx.Response:  # not decoded on construction, as `content=` is
        return httpx.Response(200, stream=httpx.ByteStream(valid), headers={header: value})

    return {
        "gzip": streamed("content-encoding", "gzip"),
        "deflate": streamed("content-encoding", "deflate"),
        "gzip, deflate": streamed("content-encoding", "gzip, deflate"),
        "nested": raw_response(200, "[" * 100_000),
        "nested errors": raw_response(200, '{"errors": ' + "[" * 5000 + '"no"' + "]" * 5000 + "}"),
        "charset": streamed("content-type", "application/json; charset=rot13"),
        "digits": raw_response(200, '{"data": {"balance": ' + "9" * 5000 + "}}"),
    }


@pytest.mark.parametrize("body", ["gzip", "deflate", "gzip, deflate", "nested", "nested errors", "charset", "digits"])
async def test_an_unreadable_body_is_a_provider_failure(
    side: Side, router: Router, opened: list[HttpProvider], body: str
) -> None:
    """Not an httpx or decoding exception, which no caller expects (in a poller, it stopped the server)."""
    err = await fail_read(side, router, opened, bodies(side)[body])
    assert type(err) is ProviderUnavailable
    assert_clean(err, side)


@pytest.mark.parametrize("body", ["gzip", "nested", "charset"])
async def test_an_unreadable_purchase_answer_is_uncertain(
    side: Side, router: Router, opened: list[HttpProvider], body: str
) -> None:
    err = await fail_buy(side, router, opened, bodies(side)[body])
    assert type(err) is ProviderUnavailable
    assert err.uncertain
    assert len(router.requests) == 1


async def test_a_deeply_nested_error_body_is_a_provider_error(
    side: Side, router: Router, opened: list[HttpProvider]
) -> None:
    err = await fail_read(side, router, opened, raw_response(422, '{"message": ' + "[" * 900 + "]" * 900 + "}"))
    assert isinstance(err, ProviderError)
    assert_clean(err, side)


async def test_binary_in_an_error_body_is_not_quoted(side: Side, router: Router, opened: list[HttpProvider]) -> None:
    garbage = httpx.Response(422, content=bytes(range(256)) * 4, headers={"content-type": "text/plain"})
    err = await fail_read(side, router, opened, garbage)
    assert type(err) is ProviderRejected
    assert err.message.endswith("(HTTP 422): Unprocessable Entity.")


# -- Transport failures --------------------------------------------------------------------------------------


async def test_connect_error_was_not_sent(side: Side, router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(side, router, opened, httpx.ConnectError)
    assert type(err) is ProviderTransportError
    assert err.request_sent is False
    assert err.uncertain is False
    assert "not sent" in err.message
    assert_clean(err, side)


async def test_connect_timeout_was_not_sent(side: Side, router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(side, router, opened, httpx.ConnectTimeout)
    assert type(err) is ProviderTimeout
    assert err.request_sent is False


async def test_read_timeout_is_uncertain(side: Side, router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(side, router, opened, httpx.ReadTimeout)
    assert type(err) is ProviderTimeout
    assert err.request_sent is True
    assert err.uncertain is True
    assert "outcome is unknown" in err.message
    assert_clean(err, side)


@pytest.mark.parametrize(
    ("events", "left"),
    [
        ([], True),  # an in-process transport reports nothing: assume the worst
        (["connection.connect_tcp.started"], False),
        (["connection.connect_tcp.started", "connection.connect_tcp.complete", "connection.start_tls.started"], False),
        (["connection.connect_tcp.complete", "http11.send_request_headers.started"], True),
        (["http11.send_request_headers.started", "http11.send_request_headers.complete"], True),
        (["http2.send_request_headers.started"], True),
    ],
)
async def test_a_deadline_met_before_any_header_was_sent_means_not_sent(events: list[str], left: bool) -> None:
    """A request the attempt deadline cut off while connecting never left: it may be sent again, even a purchase."""
    progress = _Progress()
    for event in events:
        await progress(event, {})
    assert progress.may_have_left is left


@pytest.mark.parametrize("error", [httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError])
async def test_broken_connection_is_uncertain(
    side: Side, router: Router, opened: list[HttpProvider], error: type[httpx.TransportError]
) -> None:
    err = await fail_read(side, router, opened, error)
    assert type(err) is ProviderTransportError
    assert err.request_sent is True
    assert err.uncertain is True
    assert error.__name__ in err.message


async def test_transport_error_text_with_the_url_never_leaks_the_handler_key(
    router: Router, opened: list[HttpProvider]
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)

    router.add("GET", "/stubs/handler_api", refuse)
    provider = GETATEXT.make(router, ONCE, use_handler_api=True)
    opened.append(provider)
    with pytest.raises(ProviderTransportError) as caught:
        await provider.balance()  # type: ignore[attr-defined]
    assert KEY in str(caught.value.__cause__)  # httpx's own text has it: it must not reach our message
    assert_clean(caught.value, GETATEXT)


# -- Secrets echoed by the provider ---------------------------------------------------------------------------


def echoes(secret: str) -> list[tuple[httpx.Response, bool]]:
    """Error answers that repeat the secret, and whether the adapter quotes the provider's text."""
    return [
        (json_response(401, {"message": f"Invalid token {secret}."}), True),
        (json_response(403, {"errors": f"Key {secret} is banned"}), True),
        (json_response(404, {"message": f"No rent for {secret}"}), True),
        (json_response(422, {"message": "Invalid.", "errors": {"token": [f"{secret} is malformed"]}}), True),
        (json_response(400, {"errors": f"Insufficient balance for key {secret}"}), True),
        (json_response(500, {"message": f"SQLSTATE: token={secret}\nat line 3"}), True),
        (json_response(200, {"success": False, "message": f"bad {secret}", "errors": f"bad {secret}"}), True),
        (raw_response(418, "x" * 140 + secret + "y" * 5000, "text/plain"), True),
        (raw_response(503, f"upstream error\nAuthorization: Bearer {secret}\n", "text/plain"), False),
        (json_response(429, {"message": secret}, {"Retry-After": "1"}), False),
    ]


@pytest.mark.parametrize("index", range(10))
async def test_secret_echoed_in_an_error_body_is_masked(
    side: Side, router: Router, opened: list[HttpProvider], index: int
) -> None:
    answer, quoted = echoes(side.secret)[index]
    err = await fail_read(side, router, opened, answer)
    assert_clean(err, side)
    if quoted:
        assert "***" in err.message


async def test_long_error_body_is_bounded(side: Side, router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(side, router, opened, json_response(422, {"message": "word " * 2000}))
    assert type(err) is ProviderRejected
    assert len(err.message) <= 300
    assert "…" in err.message


@pytest.mark.parametrize("odd", ["\x85", "\u2028", "\u202e", "\u200b", "\x9b", "\ufffd"])
async def test_an_error_body_shows_as_printable_text_only(
    side: Side, router: Router, opened: list[HttpProvider], odd: str
) -> None:
    """C1 controls, line separators, bidi overrides and the marks of undecodable bytes never reach a message."""
    err = await fail_read(side, router, opened, json_response(422, {"message": f"plan{odd}id is invalid{odd}"}))
    assert "plan id is invalid" in err.message
    assert err.message.isprintable()
    assert "\ufffd" not in err.message


async def test_multiline_error_body_becomes_one_line(side: Side, router: Router, opened: list[HttpProvider]) -> None:
    err = await fail_read(side, router, opened, json_response(400, {"message": "first line\n\tsecond line\r\n"}))
    assert "first line second line" in err.message
    assert_clean(err, side)


# -- Retries ---------------------------------------------------------------------------------------------------

FAILURES: dict[str, Callable[[], Step]] = {
    "503": lambda: json_response(503, {"message": "Service Unavailable"}),
    "429": lambda: json_response(429, {"message": "Too Many Attempts."}, {"Retry-After": "7"}),
    "ConnectError": lambda: httpx.ConnectError,
    "ReadTimeout": lambda: httpx.ReadTimeout,
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_safe_read_is_retried_until_it_succeeds(
    side: Side, router: Router, opened: list[HttpProvider], failure: str
) -> None:
    method, path, call = side.read
    router.add(method, path, FAILURES[failure](), FAILURES[failure](), side.ok_read())
    provider = side.make(router, NO_WAIT)
    opened.append(provider)
    await call(provider)
    assert len(router.requests) == 3
    assert {f"{request.method} {request.url.path}" for request in router.requests} == {f"{method} {path}"}


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_safe_read_gives_up_after_the_attempts(
    side: Side, router: Router, opened: list[HttpProvider], failure: str
) -> None:
    method, path, call = side.read
    router.add(method, path, FAILURES[failure]())
    provider = side.make(router, NO_WAIT)
    opened.append(provider)
    with pytest.raises(ProviderError):
        await call(provider)
    assert len(router.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_safe_read_is_not_retried_on_client_errors(
    side: Side, router: Router, opened: list[HttpProvider], status: int
) -> None:
    method, path, call = side.read
    router.add(method, path, json_response(status, {"message": "no"}), side.ok_read())
    provider = side.make(router, NO_WAIT)
    opened.append(provider)
    with pytest.raises(ProviderError):
        await call(provider)
    assert len(router.requests) == 1


async def test_retry_after_is_honoured(
    side: Side, router: Router, opened: list[HttpProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(anyio, "sleep", sleep)  # base.py calls anyio.sleep
    method, path, call = side.read
    router.add(method, path, FAILURES["429"](), side.ok_read())
    provider = side.make(router, RetryPolicy(attempts=3, base_delay=0, max_retry_after=30))
    opened.append(provider)
    await call(provider)
    assert slept == [7]


Purchase = tuple[Side, str, str, Call, Callable[[], httpx.Response]]

PURCHASES: dict[str, Purchase] = {
    "gotsms.create_rent": (
        GOTSMS,
        "POST",
        "/api/rents",
        lambda provider: provider.create_rent(PLAN),
        lambda: raw_response(201, fixture_text("gotsms", "rent_created")),
    ),
    "gotsms.transition": (
        GOTSMS,
        "POST",
        f"/api/rents/{RENT}/transition",
        lambda provider: provider.transition(RENT, PLAN),
        lambda: raw_response(200, fixture_text("gotsms", "transition_200")),
    ),
    "getatext.rent_a_number": (
        GETATEXT,
        "POST",
        "/api/v1/rent-a-number",
        lambda provider: provider.rent_a_number("whatsapp"),
        lambda: raw_response(201, fixture_text("getatext", "rent_a_number")),
    ),
    "getatext.re_rent": (
        GETATEXT,
        "POST",
        "/api/v1/re-rent",
        lambda provider: provider.re_rent("1234"),
        lambda: raw_response(201, fixture_text("getatext", "re_rent")),
    ),
    "getatext.create_long_rental": (
        GETATEXT,
        "POST",
        "/api/v1/long-rentals",
        lambda provider: provider.create_long_rental("1w", auto_renew=False),
        lambda: raw_response(200, fixture_text("getatext", "long_rental_created")),
    ),
    "getatext.handler.getNumber": (
        GETATEXT,
        "GET",
        "/stubs/handler_api",
        lambda provider: provider.rent_a_number("whatsapp"),
        lambda: raw_response(200, "ACCESS_NUMBER:77:1234567890", "text/plain"),
    ),
}

UNCERTAIN: dict[str, Callable[[], Step]] = {
    "500": lambda: json_response(500, {"message": "Server Error"}),
    "ReadTimeout": lambda: httpx.ReadTimeout,
    "RemoteProtocolError": lambda: httpx.RemoteProtocolError,
}


def open_purchase(name: str, router: Router, opened: list[HttpProvider], *steps: Step) -> tuple[HttpProvider, Call]:
    side, method, path, call, _ = PURCHASES[name]
    router.add(method, path, *steps)
    options = {"use_handler_api": True} if ".handler." in name else {}
    provider = side.make(router, NO_WAIT, **options)
    opened.append(provider)
    return provider, call


@pytest.mark.parametrize("failure", sorted(UNCERTAIN))
@pytest.mark.parametrize("purchase", sorted(PURCHASES))
async def test_purchase_is_never_retried_once_it_may_have_been_sent(
    router: Router, opened: list[HttpProvider], purchase: str, failure: str
) -> None:
    ok = PURCHASES[purchase][4]
    provider, call = open_purchase(purchase, router, opened, UNCERTAIN[failure](), ok())
    with pytest.raises(ProviderError) as caught:
        await call(provider)
    assert len(router.requests) == 1
    assert caught.value.request_sent is True
    assert caught.value.uncertain is True
    assert_clean(caught.value, PURCHASES[purchase][0])


@pytest.mark.parametrize("purchase", sorted(PURCHASES))
async def test_purchase_is_retried_when_the_connection_failed(
    router: Router, opened: list[HttpProvider], purchase: str
) -> None:
    ok = PURCHASES[purchase][4]
    provider, call = open_purchase(purchase, router, opened, httpx.ConnectError, ok())
    receipt = await call(provider)
    assert receipt is not None
    assert len(router.requests) == 2


@pytest.mark.parametrize("purchase", sorted(PURCHASES))
async def test_purchase_gives_up_when_the_connection_keeps_failing(
    router: Router, opened: list[HttpProvider], purchase: str
) -> None:
    provider, call = open_purchase(purchase, router, opened, httpx.ConnectError)
    with pytest.raises(ProviderTransportError) as caught:
        await call(provider)
    assert len(router.requests) == 3
    assert caught.value.request_sent is False
    assert caught.value.uncertain is False


@pytest.mark.parametrize("purchase", sorted(PURCHASES))
async def test_purchase_is_not_retried_on_a_rejection(
    router: Router, opened: list[HttpProvider], purchase: str
) -> None:
    provider, call = open_purchase(purchase, router, opened, json_response(422, {"message": "Invalid plan."}))
    with pytest.raises(ProviderRejected):
        await call(provider)
    assert len(router.requests) == 1


@pytest.mark.parametrize("failure", ["503", "ReadTimeout", "ConnectError"])
async def test_getatext_rental_status_post_is_retried(router: Router, opened: list[HttpProvider], failure: str) -> None:
    ok = raw_response(200, fixture_text("getatext", "rental_status"))
    router.add("POST", "/api/v1/rental-status", FAILURES[failure](), FAILURES[failure](), ok)
    provider = GetatextProvider(SecretStr(KEY), transport=router.transport, retry=NO_WAIT)
    opened.append(provider)
    receipt = await provider.rental_status("12345")
    assert receipt.rental.rental_id == "getatext:12345"
    assert [request.method for request in router.requests] == ["POST"] * 3


async def test_getatext_rental_status_without_retry(router: Router, opened: list[HttpProvider]) -> None:
    router.add("POST", "/api/v1/rental-status", FAILURES["503"]())
    provider = GetatextProvider(SecretStr(KEY), transport=router.transport, retry=NO_WAIT)
    opened.append(provider)
    with pytest.raises(ProviderUnavailable):
        await provider.rental_status("12345", retry=False)
    assert len(router.requests) == 1


async def test_getatext_handler_rental_status_is_retried(router: Router, opened: list[HttpProvider]) -> None:
    ok = raw_response(200, "STATUS_OK:004521", "text/plain")
    router.add("GET", "/stubs/handler_api", FAILURES["503"](), ok)
    provider = GetatextProvider(SecretStr(KEY), transport=router.transport, retry=NO_WAIT, use_handler_api=True)
    opened.append(provider)
    receipt = await provider.rental_status("77")
    assert [message.code for message in receipt.messages] == ["004521"]
    assert len(router.requests) == 2


async def test_gotsms_message_page_is_not_retried(router: Router, opened: list[HttpProvider]) -> None:
    router.add("GET", "/api/messages", FAILURES["429"](), raw_response(200, fixture_text("gotsms", "messages")))
    provider = GotSmsProvider(SecretStr(TOKEN), transport=router.transport, retry=NO_WAIT)
    opened.append(provider)
    with pytest.raises(RateLimited):
        await provider.message_page(1)
    assert len(router.requests) == 1


@pytest.mark.parametrize(
    ("label", "call", "method", "path"),
    [
        ("wake_up", lambda provider: provider.wake_up(RENT), "POST", f"/api/numbers/{RENT}/wake-up"),
        ("toggle_renewal", lambda provider: provider.toggle_renewal(RENT), "POST", f"/api/rents/{RENT}/renewal/toggle"),
        ("refund_rent", lambda provider: provider.refund_rent(RENT), "POST", f"/api/rents/{RENT}/refund"),
    ],
)
async def test_gotsms_state_changes_are_not_retried_after_a_5xx(
    router: Router, opened: list[HttpProvider], label: str, call: Call, method: str, path: str
) -> None:
    router.add(method, path, FAILURES["503"]())
    provider = GotSmsProvider(SecretStr(TOKEN), transport=router.transport, retry=NO_WAIT)
    opened.append(provider)
    with pytest.raises(ProviderUnavailable):
        await call(provider)
    assert len(router.requests) == 1


@pytest.mark.parametrize(
    ("label", "call", "method", "path"),
    [
        ("cancel_rental", lambda provider: provider.cancel_rental("12345"), "POST", "/api/v1/cancel-rental"),
        ("complete_rental", lambda p: p.complete_rental("12345"), "POST", "/api/v1/rental-status/12345/completed"),
        ("update_long_rental", lambda p: p.update_long_rental("1", "renew"), "POST", "/api/v1/long-rentals/1/update"),
    ],
)
async def test_getatext_state_changes_are_not_retried_after_a_5xx(
    router: Router, opened: list[HttpProvider], label: str, call: Call, method: str, path: str
) -> None:
    router.add(method, path, FAILURES["503"]())
    provider = GetatextProvider(SecretStr(KEY), transport=router.transport, retry=NO_WAIT)
    opened.append(provider)
    with pytest.raises(ProviderUnavailable):
        await call(provider)
    assert len(router.requests) == 1


@pytest.mark.parametrize("status", [302, 303, 307])
async def test_a_redirected_purchase_is_uncertain_and_not_followed(
    side: Side, router: Router, opened: list[HttpProvider], status: int
) -> None:
    """Redirects are not followed; after a purchase POST the provider may have acted before redirecting."""
    err = await fail_buy(side, router, opened, httpx.Response(status, headers={"location": "https://elsewhere/"}))
    assert type(err) is ProviderUnavailable
    assert err.uncertain
    assert "redirected" in err.message
    assert len(router.requests) == 1
    assert_clean(err, side)
