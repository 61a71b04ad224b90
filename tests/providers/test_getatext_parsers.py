"""Golden tests of the Getatext pure parsers and `parse_webhook` against every example of getatext-api.txt.

The document's examples are not valid JSON; the fixtures are the corrected objects, and
`as_printed.txt` keeps the printed text, which is repaired here and compared with them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from smsrent.domain.models import Message, Plan, Receipt, Rental, RentalStatus
from smsrent.providers.getatext import (
    DEFAULT_TIMEZONE,
    STATUS_MAP,
    WebhookCode,
    _from_handler_text,
    _long_plan,
    _price_items,
    _to_balance,
    _to_completed,
    _to_long_message,
    _to_long_receipt,
    _to_long_rental,
    _to_plan,
    _to_receipt,
    parse_webhook,
)
from tests.providers.expected import (
    END,
    GETATEXT_COMPLETED,
    GETATEXT_LONG_RENTAL,
    GETATEXT_RENTED,
    GETATEXT_WHATSAPP,
)
from tests.providers.fixtures import fixture_names, getatext_as_printed, load, repair_printed

PLUS3 = timezone(timedelta(hours=3))

EXPECTED_FIXTURES = {
    "rent_a_number",
    "cancel_rental",
    "rental_status",
    "rental_completed",
    "prices_info",
    "re_rent",
    "balance",
    "long_rentals",
    "long_rental_created",
    "long_rental_updated",
    "long_rental_messages",
    "webhook",
}


# -- The fixtures are the document's examples --------------------------------------------------------------


def test_every_documented_example_has_a_fixture() -> None:
    assert fixture_names("getatext") == EXPECTED_FIXTURES
    assert set(getatext_as_printed()) == EXPECTED_FIXTURES


@pytest.mark.parametrize("name", sorted(EXPECTED_FIXTURES - {"long_rental_created", "long_rental_updated"}))
def test_fixture_is_the_printed_example_repaired(name: str) -> None:
    assert repair_printed(getatext_as_printed()[name]) == load("getatext", name)


@pytest.mark.parametrize("name", ["long_rental_created", "long_rental_updated"])
def test_long_rental_fixture_nests_the_printed_fields(name: str) -> None:
    corrected = load("getatext", name)
    flat = repair_printed(getatext_as_printed()[name])
    outer = {key: value for key, value in corrected.items() if key != "long_rental"}
    assert flat == {**outer, **corrected["long_rental"]}
    assert corrected["errors"] == "null"


def test_fixtures_keep_the_documents_loose_values() -> None:
    assert load("getatext", "rent_a_number")["errors"] is None
    assert load("getatext", "balance")["errors"] == "null"
    assert load("getatext", "rental_completed")["errors"] == "null"
    assert load("getatext", "webhook")["code"] == 654321
    assert load("getatext", "prices_info")["multiple_sms"] == "true"


# -- One-time rentals ---------------------------------------------------------------------------------------


def test_rent_a_number() -> None:
    receipt = _to_receipt(load("getatext", "rent_a_number"), tz=DEFAULT_TIMEZONE, service_code="whatsapp")
    assert receipt == GETATEXT_RENTED
    assert receipt.rental.ends_at is not None
    assert receipt.rental.ends_at.isoformat() == "2025-07-06T15:43:37-04:00"
    assert receipt.model_dump(mode="json")["balance_after"] == "113.32"


def test_re_rent() -> None:
    receipt = _to_receipt(load("getatext", "re_rent"), tz=DEFAULT_TIMEZONE)
    assert receipt.rental.rental_id == "getatext:12345"
    assert receipt.rental.plan_id is None
    assert receipt.rental.price == Decimal("0.55")
    assert receipt.rental.ends_at == END
    assert receipt.balance_after == Decimal("113.32")
    assert receipt.note == "Number rented successfully."


def test_cancel_rental() -> None:
    receipt = _to_receipt(load("getatext", "cancel_rental"), tz=DEFAULT_TIMEZONE, fallback_id="12345")
    assert receipt.rental.status is RentalStatus.CANCELLED
    assert receipt.rental.status.ended
    assert receipt.rental.price == Decimal("0.55")  # "cost" in this answer
    assert receipt.balance_after == Decimal("113.87")  # "balance" in this answer
    assert receipt.messages == ()


def test_rental_status_without_code() -> None:
    receipt = _to_receipt(load("getatext", "rental_status"), tz=DEFAULT_TIMEZONE)
    assert receipt.rental.status is RentalStatus.ACTIVE
    assert receipt.rental.phone == "+11234567890"
    assert receipt.rental.price == Decimal("0.55")
    assert receipt.balance_after == Decimal("113.32")
    assert receipt.messages == ()


@pytest.mark.parametrize(
    ("code", "expected"),
    [("004521", "004521"), ("123456", "123456"), (654321, "654321"), ("A1B2C3", "A1B2C3")],
)
def test_rental_status_with_code(code: object, expected: str) -> None:
    payload = {**load("getatext", "rental_status"), "code": code}
    receipt = _to_receipt(payload, tz=DEFAULT_TIMEZONE)
    assert receipt.messages == (
        Message(message_id=f"getatext:12345:{expected}", rental_id="getatext:12345", code=expected),
    )


@pytest.mark.parametrize("code", [None, "null", "", True, False])
def test_rental_status_no_code_values(code: object) -> None:
    payload = {**load("getatext", "rental_status"), "code": code}
    assert _to_receipt(payload, tz=DEFAULT_TIMEZONE).messages == ()


@pytest.mark.parametrize(
    ("tz", "iso"),
    [
        (DEFAULT_TIMEZONE, "2025-07-06T15:43:37-04:00"),
        (UTC, "2025-07-06T15:43:37+00:00"),
        (PLUS3, "2025-07-06T15:43:37+03:00"),
        (ZoneInfo("America/New_York"), "2025-07-06T15:43:37-04:00"),
        (ZoneInfo("Europe/Berlin"), "2025-07-06T15:43:37+02:00"),
    ],
)
def test_naive_times_in_the_provider_zone(tz: timezone | ZoneInfo, iso: str) -> None:
    ends_at = _to_receipt(load("getatext", "rental_status"), tz=tz).rental.ends_at
    assert ends_at is not None
    assert ends_at.utcoffset() is not None
    assert ends_at.isoformat() == iso


def test_default_zone_is_the_documents_offset() -> None:
    assert datetime(2025, 1, 1, tzinfo=DEFAULT_TIMEZONE).utcoffset() == timedelta(hours=-4)


def test_aware_times_keep_their_offset() -> None:
    payload = {**load("getatext", "rental_status"), "end_time": "2025-07-06T19:43:37+00:00"}
    assert _to_receipt(payload, tz=PLUS3).rental.ends_at == END


def test_rental_with_only_an_id() -> None:
    receipt = _to_receipt({"id": "77"}, tz=DEFAULT_TIMEZONE)
    assert receipt == Receipt(rental=Rental(rental_id="getatext:77", provider="getatext"))


def test_rental_id_from_the_request_when_the_answer_has_none() -> None:
    receipt = _to_receipt({"status": "active", "errors": "null"}, tz=DEFAULT_TIMEZONE, fallback_id="1234")
    assert receipt.rental.rental_id == "getatext:1234"


@pytest.mark.parametrize("payload", [{}, {"id": None}, {"id": "abc"}, {"id": "../1"}, "STATUS_OK", None, [1]])
def test_rental_without_a_usable_id_is_refused(payload: object) -> None:
    with pytest.raises(ValueError, match="rental"):
        _to_receipt(payload, tz=DEFAULT_TIMEZONE)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("success", RentalStatus.ACTIVE),
        ("active", RentalStatus.ACTIVE),
        ("Active", RentalStatus.ACTIVE),
        ("pending", RentalStatus.ACTIVE),
        ("completed", RentalStatus.COMPLETED),
        ("cancelled", RentalStatus.CANCELLED),
        ("canceled", RentalStatus.CANCELLED),
        ("expired", RentalStatus.EXPIRED),
        ("timeout", RentalStatus.EXPIRED),
        ("refunded", RentalStatus.REFUNDED),
        ("on_hold", RentalStatus.UNKNOWN),
        (None, RentalStatus.UNKNOWN),
    ],
)
def test_status_mapping(raw: str | None, status: RentalStatus) -> None:
    rental = _to_receipt({"id": 1, "status": raw}, tz=DEFAULT_TIMEZONE).rental
    assert rental.status is status
    assert rental.provider_status == raw


@pytest.mark.parametrize(
    ("price", "expected"),
    [("0.55", Decimal("0.55")), (0.55, Decimal("0.55")), (1, Decimal("1")), ("null", None), (None, None)],
)
def test_rental_price_as_number_or_string(price: object, expected: Decimal | None) -> None:
    assert _to_receipt({"id": 1, "price": price}, tz=DEFAULT_TIMEZONE).rental.price == expected
    assert _to_receipt({"id": 1, "cost": price}, tz=DEFAULT_TIMEZONE).rental.price == expected


def test_rental_completed() -> None:
    receipt = _to_completed(load("getatext", "rental_completed"), tz=DEFAULT_TIMEZONE, fallback_id="12345")
    assert receipt == GETATEXT_COMPLETED


def test_rental_completed_without_the_rental_object() -> None:
    payload = {"status": "success", "message": "Done.", "errors": "null"}
    receipt = _to_completed(payload, tz=DEFAULT_TIMEZONE, fallback_id="42")
    assert receipt.rental.rental_id == "getatext:42"
    assert receipt.rental.status is RentalStatus.COMPLETED
    assert receipt.note == "Done."


# -- Prices --------------------------------------------------------------------------------------------------


def test_prices_info_as_printed_one_object() -> None:
    assert [_to_plan(item) for item in _price_items(load("getatext", "prices_info"))] == [GETATEXT_WHATSAPP]


@pytest.mark.parametrize("wrapper", [None, "data", "prices", "services"])
def test_prices_info_as_list(wrapper: str | None) -> None:
    telegram = {"service_name": "Telegram", "api_name": "telegram", "multiple_sms": False, "price": 0.3, "ttl": "20"}
    items = [load("getatext", "prices_info"), telegram]
    payload = items if wrapper is None else {"status": "success", wrapper: items, "errors": "null"}
    plans = [_to_plan(item) for item in _price_items(payload)]
    assert plans[0] == GETATEXT_WHATSAPP
    assert plans[1].plan_id == "getatext:telegram"
    assert plans[1].price == Decimal("0.3")
    assert plans[1].multiple_sms is False
    assert plans[1].duration_minutes == 20


@pytest.mark.parametrize("payload", [None, "OK", {"status": "success"}, {"data": "x"}, 5])
def test_prices_info_unreadable_shapes_are_refused(payload: object) -> None:
    """Not an empty price list (that would read as "nothing is offered"), but an answer that cannot be read."""
    with pytest.raises(ValueError, match="without prices"):
        _price_items(payload)


def test_prices_info_empty_list_gives_no_plans() -> None:
    assert _price_items([]) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), (True, True), ("false", False), (False, False), (1, True), ("0", False), (None, None)],
)
def test_multiple_sms_flag(value: object, expected: bool | None) -> None:
    assert _to_plan({"api_name": "x", "multiple_sms": value}).multiple_sms is expected


def test_multiple_sms_missing() -> None:
    item = {key: value for key, value in load("getatext", "prices_info").items() if key != "multiple_sms"}
    assert _to_plan(item).multiple_sms is None


@pytest.mark.parametrize(("price", "expected"), [("0.55", Decimal("0.55")), (0.55, Decimal("0.55")), (2, Decimal("2"))])
def test_price_as_number_or_string(price: object, expected: Decimal) -> None:
    assert _to_plan({**load("getatext", "prices_info"), "price": price}).price == expected


def test_price_missing_fields() -> None:
    plan = _to_plan({"api_name": "signal"})
    assert plan.service == "signal"
    assert plan.price is None
    assert plan.duration is None
    assert plan.duration_minutes is None


@pytest.mark.parametrize("api_name", [None, "", "null", "../balance", "a b", "x" * 65, "wh@tsapp"])
def test_price_without_a_usable_api_name(api_name: object) -> None:
    with pytest.raises(ValueError, match="api_name"):
        _to_plan({"service_name": "Whatsapp", "api_name": api_name, "price": "0.55"})


def test_long_plans() -> None:
    assert _long_plan("1w", Decimal("10.55")) == Plan(
        plan_id="getatext:long:1w",
        provider="getatext",
        service="Long-term number (any service)",
        country="USA",
        price=Decimal("10.55"),
        duration="1 week",
        billing_type="long_rental",
        auto_renew_supported=True,
        multiple_sms=True,
    )
    assert _long_plan("1y", None).price is None
    assert _long_plan("2w", None).duration == "2 weeks"


# -- Balance --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "amount"),
    [
        ({"status": "success", "balance": "10.55", "errors": "null"}, Decimal("10.55")),
        ({"balance": 10.55}, Decimal("10.55")),
        ({"balance": 0}, Decimal("0")),
    ],
)
def test_balance(payload: object, amount: Decimal) -> None:
    balance = _to_balance(payload)
    assert balance.amount == amount
    assert balance.provider == "getatext"
    assert balance.currency == "USD"


def test_balance_fixture() -> None:
    assert _to_balance(load("getatext", "balance")).amount == Decimal("10.55")


@pytest.mark.parametrize("payload", [{}, {"balance": "null"}, {"balance": "n/a"}, "10.55", None])
def test_balance_missing(payload: object) -> None:
    with pytest.raises(ValueError, match="balance"):
        _to_balance(payload)


# -- Long rentals ---------------------------------------------------------------------------------------------


def test_long_rentals_list() -> None:
    items = load("getatext", "long_rentals")["long_rentals"]
    assert [_to_long_rental(item, tz=DEFAULT_TIMEZONE) for item in items] == [GETATEXT_LONG_RENTAL]


@pytest.mark.parametrize("name", ["long_rental_created", "long_rental_updated"])
def test_long_rental_answer_nested(name: str) -> None:
    assert _to_long_receipt(load("getatext", name), tz=DEFAULT_TIMEZONE) == Receipt(rental=GETATEXT_LONG_RENTAL)


@pytest.mark.parametrize("name", ["long_rental_created", "long_rental_updated"])
def test_long_rental_answer_flat_as_printed(name: str) -> None:
    flat = repair_printed(getatext_as_printed()[name])
    assert "long_rental" not in flat
    assert _to_long_receipt(flat, tz=DEFAULT_TIMEZONE) == Receipt(rental=GETATEXT_LONG_RENTAL)


def test_long_rental_in_another_zone() -> None:
    rental = _to_long_rental(load("getatext", "long_rentals")["long_rentals"][0], tz=PLUS3)
    assert rental.started_at is not None
    assert rental.started_at.isoformat() == "2025-07-01T00:00:00+03:00"


@pytest.mark.parametrize(
    ("period", "plan_id"),
    [
        ("1 Week", "getatext:long:1w"),
        ("2 Weeks", "getatext:long:2w"),
        ("1 month", "getatext:long:1m"),
        ("1 Year", "getatext:long:1y"),
        ("3 Days", None),
        (None, None),
    ],
)
def test_long_rental_period(period: str | None, plan_id: str | None) -> None:
    rental = _to_long_rental({"id": 9, "period": period}, tz=DEFAULT_TIMEZONE)
    assert rental.plan_id == plan_id
    assert rental.period == period


def test_long_rental_update_without_id_uses_the_path() -> None:
    payload = {"status": "success", "long_rental": {"status": "Cancelled"}, "errors": "null"}
    receipt = _to_long_receipt(payload, tz=DEFAULT_TIMEZONE, fallback_id="7")
    assert receipt.rental.rental_id == "getatext:long:7"
    assert receipt.rental.status is RentalStatus.CANCELLED


@pytest.mark.parametrize("payload", [None, "ok", [], {"long_rental": {}}])
def test_long_rental_unreadable(payload: object) -> None:
    with pytest.raises(ValueError, match=r"long-rental|rental"):
        _to_long_receipt(payload, tz=DEFAULT_TIMEZONE)


def test_long_rental_messages() -> None:
    items = load("getatext", "long_rental_messages")["messages"]
    (message,) = (_to_long_message(item, rental_id="1", tz=DEFAULT_TIMEZONE) for item in items)
    assert message.rental_id == "getatext:long:1"
    assert message.message_id.startswith("getatext:long:1:")
    assert message.sender == "8888"
    assert message.text == "This is a example message"
    assert message.code is None
    assert message.received_at == datetime(2025, 7, 28, 16, 39, 32, tzinfo=UTC)
    assert message.received_at is not None
    assert message.received_at.isoformat() == "2025-07-28T12:39:32-04:00"
    assert _to_long_message(dict(items[0]), rental_id="1", tz=DEFAULT_TIMEZONE).message_id == message.message_id


def test_long_rental_message_naive_time_in_the_provider_zone() -> None:
    item = {"message": "Code 1234", "sender": "8888", "rented_at": "2025-07-28 12:39:32"}
    default = _to_long_message(item, rental_id="1", tz=DEFAULT_TIMEZONE)
    assert default.received_at is not None
    assert default.received_at.isoformat() == "2025-07-28T12:39:32-04:00"
    other = _to_long_message(item, rental_id="1", tz=PLUS3)
    assert other.received_at is not None
    assert other.received_at.isoformat() == "2025-07-28T12:39:32+03:00"


def test_long_rental_message_prefers_received_at() -> None:
    item = {"message": "x", "rented_at": "2025-07-01", "received_at": "2025-07-28T12:00:00+00:00"}
    message = _to_long_message(item, rental_id="1", tz=DEFAULT_TIMEZONE)
    assert message.received_at == datetime(2025, 7, 28, 12, tzinfo=UTC)


def test_long_rental_message_not_an_object() -> None:
    with pytest.raises(ValueError, match="message"):
        _to_long_message("hello", rental_id="1", tz=DEFAULT_TIMEZONE)


# -- Handler-API text answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("ACCESS_BALANCE:12.5", {"balance": "12.5"}),
        ("ACCESS_NUMBER:77:1234567890", {"id": "77", "status": "success", "number": "1234567890"}),
        ("STATUS_OK:004521", {"status": "active", "code": "004521"}),
        ("STATUS_WAIT_CODE", {"status": "active"}),
        ("STATUS_WAIT_RETRY:12", {"status": "active"}),
        ("STATUS_CANCEL", {"status": "cancelled"}),
        ("ACCESS_CANCEL", {"status": "cancelled"}),
        ("  access_balance:0\n", {"balance": "0"}),
        ("SOMETHING_ELSE", "SOMETHING_ELSE"),
    ],
)
def test_handler_text(text: str, shape: object) -> None:
    assert _from_handler_text(text) == shape


def test_handler_status_ok_keeps_leading_zeros() -> None:
    receipt = _to_receipt(_from_handler_text("STATUS_OK:004521"), tz=DEFAULT_TIMEZONE, fallback_id="77")
    assert [message.code for message in receipt.messages] == ["004521"]


# -- Webhook ---------------------------------------------------------------------------------------------------


def test_webhook_as_documented() -> None:
    assert parse_webhook(load("getatext", "webhook")) == WebhookCode(
        rental_id="getatext:12345",
        code="654321",
        code_was_number=True,
        received_at=END,
        phone="+11234567890",
        service="Whatsapp",
    )


def test_webhook_in_another_zone() -> None:
    received = parse_webhook(load("getatext", "webhook"), tz=UTC).received_at
    assert received == datetime(2025, 7, 6, 15, 43, 37, tzinfo=UTC)


def test_webhook_code_as_string_keeps_leading_zeros() -> None:
    pushed = parse_webhook({**load("getatext", "webhook"), "code": "004521"})
    assert pushed.code == "004521"
    assert pushed.code_was_number is False


def test_webhook_code_as_number_lost_its_zeros() -> None:
    pushed = parse_webhook({**load("getatext", "webhook"), "code": 4521})
    assert pushed.code == "4521"
    assert pushed.code_was_number is True


def test_webhook_missing_optional_fields() -> None:
    pushed = parse_webhook({"id": "12345", "code": "1234"})
    assert pushed.received_at is None
    assert pushed.phone is None
    assert pushed.service is None


@pytest.mark.parametrize(
    "payload",
    [
        None,
        "id=1&code=2",
        [],
        {"code": 654321},
        {"id": "x1", "code": 654321},
        {"id": 12345},
        {"id": 12345, "code": None},
        {"id": 12345, "code": "null"},
        {"id": 12345, "code": True},
    ],
)
def test_webhook_refused(payload: object) -> None:
    with pytest.raises(ValueError, match=r"webhook|rental"):
        parse_webhook(payload)


def test_status_map_values_are_domain_statuses() -> None:
    assert set(STATUS_MAP.values()) <= set(RentalStatus)
