"""Golden tests of the GotSMS pure parsers against every example answer of gotsms-api.txt (kept verbatim)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from smsrent.domain.models import NumberStatus, PublicPrice, Rental, RentalStatus, ServiceInfo
from smsrent.domain.values import to_decimal
from smsrent.providers import gotsms
from smsrent.providers.gotsms import (
    _data,
    _message,
    _meta,
    _to_message,
    _to_number_status,
    _to_plan,
    _to_public_price,
    _to_rental,
    _to_service,
)
from tests.providers.expected import GOTSMS_MESSAGE, GOTSMS_PLAN, GOTSMS_RENT, GOTSMS_TRANSITIONED, NOON
from tests.providers.fixtures import fixture_names, fixture_text, load

RENT_UUID = "9d3f8f6a-1b2c-4d5e-8f90-1a2b3c4d5e6f"

EXPECTED_FIXTURES = {
    "pricelist",
    "account",
    "services",
    "rents_plans",
    "rents",
    "rent_created",
    "transition_200",
    "transition_422",
    "renewal_toggle_200",
    "renewal_toggle_422",
    "refund_200",
    "refund_422",
    "messages",
    "messages_unread",
    "wake_up",
    "number_messages",
    "number_status",
}


def test_every_documented_example_has_a_verbatim_fixture() -> None:
    assert fixture_names("gotsms") == EXPECTED_FIXTURES
    for name in EXPECTED_FIXTURES:
        text = fixture_text("gotsms", name)
        # As the document prints them: one key per line, no indentation, valid JSON.
        assert text.startswith("{\n")
        assert not any(line.startswith(" ") for line in text.splitlines())
        json.loads(text)


# -- Pricelist, account, services ---------------------------------------------------------------------


def test_pricelist_rows() -> None:
    groups = _data(load("gotsms", "pricelist"))
    rows = [_to_public_price(plan) for group in groups for plan in group["plans"]]
    assert rows == [
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
    # A JSON float is read through its repr: exactly 4.99, never 4.9900000000000002131628...
    assert str(rows[1].price) == "4.99"
    assert rows[1].model_dump(mode="json")["price"] == "4.99"
    assert rows[0].model_dump(mode="json")["price"] == "1.00"


def test_account_balance_is_read_as_decimal() -> None:
    assert _data(load("gotsms", "account")) == {"balance": 125.5}
    assert to_decimal(_data(load("gotsms", "account"))["balance"]) == Decimal("125.5")


def test_services() -> None:
    payload = load("gotsms", "services")
    assert [_to_service(item) for item in _data(payload)] == [ServiceInfo(service_id="uuid", name="Telegram")]
    assert _meta(payload) == {"current_page": 1, "last_page": 1, "per_page": 25, "total": 1}


# -- Rents ------------------------------------------------------------------------------------------------


def test_rent_plans() -> None:
    (plan,) = (_to_plan(item) for item in _data(load("gotsms", "rents_plans")))
    assert plan == GOTSMS_PLAN
    assert plan.currency == "USD"


def test_monthly_plan_supports_auto_renew() -> None:
    item = {**_data(load("gotsms", "rents_plans"))[0], "duration_type": "month", "duration_translation": "1 month"}
    assert _to_plan(item).auto_renew_supported is True


@pytest.mark.parametrize("name", ["rents", "rent_created"])
def test_rent(name: str) -> None:
    data = _data(load("gotsms", name))
    item = data[0] if isinstance(data, list) else data
    rental = _to_rental(item)
    assert rental == GOTSMS_RENT
    assert rental.started_at is not None
    assert rental.started_at.utcoffset() is not None


def test_rent_created_note() -> None:
    assert _message(load("gotsms", "rent_created")) == "Rent created successfully."


def test_transition_answer() -> None:
    payload = load("gotsms", "transition_200")
    assert _to_rental(_data(payload)) == GOTSMS_TRANSITIONED
    assert _message(payload) == "Plan transitioned successfully."


def test_refund_answer_finished() -> None:
    payload = load("gotsms", "refund_200")
    rental = _to_rental(_data(payload))
    # The document answers a refund with status "finished": the rent has ended.
    assert rental.status is RentalStatus.COMPLETED
    assert rental.status.ended
    assert rental.provider_status == "finished"
    assert _message(payload) == "Rent has been refunded successfully."


def test_renewal_toggle_answer() -> None:
    payload = load("gotsms", "renewal_toggle_200")
    assert _data(payload) == {"id": "uuid", "is_included_for_next_renewal": True}
    assert _message(payload) == "Auto renewal enabled."


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("transition_422", "Current rent plan must be daily for this transition endpoint."),
        ("renewal_toggle_422", "Auto renewal can be toggled only for monthly 1/3/6/12 plans."),
        ("refund_422", "Refund not available for this rent."),
    ],
)
def test_error_examples(name: str, text: str) -> None:
    payload = load("gotsms", name)
    assert payload["success"] is False
    assert _message(payload) == text


def test_wake_up_answer() -> None:
    assert _message(load("gotsms", "wake_up")) == "Wake up request sent."


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("active", RentalStatus.ACTIVE),
        ("ACTIVE", RentalStatus.ACTIVE),
        ("finished", RentalStatus.COMPLETED),
        ("expired", RentalStatus.EXPIRED),
        ("refunded", RentalStatus.REFUNDED),
        ("canceled", RentalStatus.CANCELLED),
        ("cancelled", RentalStatus.CANCELLED),
        ("sleeping_in_queue", RentalStatus.UNKNOWN),
        (None, RentalStatus.UNKNOWN),
        ("", RentalStatus.UNKNOWN),
    ],
)
def test_rent_status_mapping(raw: str | None, status: RentalStatus) -> None:
    rental = _to_rental({"id": "r1", "status": raw})
    assert rental.status is status
    assert rental.provider_status == (raw or None)


def test_unseen_status_keeps_the_provider_word() -> None:
    rental = _to_rental({"id": "r1", "status": "on_hold"})
    assert rental.status is RentalStatus.UNKNOWN
    assert not rental.status.ended
    assert rental.provider_status == "on_hold"


def test_rent_with_only_an_id() -> None:
    assert _to_rental({"id": "r1"}) == Rental(rental_id="gotsms:r1", provider="gotsms")


@pytest.mark.parametrize("item", [{}, {"id": None}, {"id": "null"}, "uuid", None, []])
def test_rent_without_an_id_is_refused(item: object) -> None:
    with pytest.raises(ValueError, match="without an id"):
        _to_rental(item)


@pytest.mark.parametrize(
    ("price", "expected"),
    [(1, Decimal("1")), (4.99, Decimal("4.99")), ("4.99", Decimal("4.99")), ("0.10", Decimal("0.10")), (None, None)],
)
def test_prices_as_numbers_or_strings(price: object, expected: Decimal | None) -> None:
    assert _to_rental({"id": "r1", "price": price}).price == expected
    plan = {**_data(load("gotsms", "rents_plans"))[0], "price": price, "renew_price": price}
    assert _to_plan(plan).price == expected
    assert _to_plan(plan).renew_price == expected


@pytest.mark.parametrize(
    ("phone", "e164"),
    [
        ("+1 800 123 4567", "+18001234567"),
        ("+18001234567", "+18001234567"),
        ("18001234567", "+18001234567"),
        ("8001234567", "+18001234567"),
        ("+44 20 7946 0958", "+442079460958"),
        ("", None),
        (None, None),
    ],
)
def test_phone_in_e164(phone: str | None, e164: str | None) -> None:
    assert _to_rental({"id": "r1", "phone": phone}).phone == e164


def test_rent_flags_as_strings() -> None:
    rental = _to_rental({"id": "r1", "can_wake_up": "false", "is_included_for_next_renewal": 1})
    assert rental.can_wake_up is False
    assert rental.auto_renew is True


def test_plan_without_service_or_country() -> None:
    plan = _to_plan({"id": "p1", "price": "2.50"})
    assert plan.plan_id == "gotsms:p1"
    assert plan.service == "unknown"
    assert plan.country is None
    assert plan.price == Decimal("2.50")
    assert plan.duration_minutes is None


# -- Messages ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["messages", "messages_unread"])
def test_account_messages(name: str) -> None:
    (message,) = (_to_message(item) for item in _data(load("gotsms", name)))
    assert message == GOTSMS_MESSAGE


def test_number_messages_take_the_rent_from_the_path() -> None:
    payload = load("gotsms", "number_messages")
    (message,) = (_to_message(item, rent_uuid=RENT_UUID) for item in _data(payload))
    assert message.rental_id == f"gotsms:{RENT_UUID}"
    assert message.message_id == "gotsms:uuid"
    assert message.code == "123456"
    assert message.received_at == NOON
    assert _meta(payload) == {"next_before_id": "uuid", "count": 1}


def test_message_code_keeps_leading_zeros() -> None:
    item = {"id": "m1", "body": "Code: 004521", "code": "004521", "received_at": "2026-03-11T12:00:00+00:00"}
    assert _to_message(item, rent_uuid="r1").code == "004521"


def test_message_without_code_or_id_gets_a_stable_id() -> None:
    item = {"from": "Telegram", "body": "hello", "received_at": "2026-03-11T12:00:00+00:00"}
    first = _to_message(item, rent_uuid="r1")
    assert first.code is None
    assert first.message_id.startswith("gotsms:")
    assert len(first.message_id) == len("gotsms:") + 16
    assert _to_message(dict(item), rent_uuid="r1").message_id == first.message_id
    assert _to_message({**item, "body": "other"}, rent_uuid="r1").message_id != first.message_id


def test_message_without_any_rent_is_refused() -> None:
    with pytest.raises(ValueError, match="rent id"):
        _to_message({"id": "m1", "body": "x"})


def test_message_time_with_other_offset_stays_aware() -> None:
    message = _to_message({"id": "m1", "rent_id": "r1", "received_at": "2026-03-11T08:00:00-04:00"})
    assert message.received_at == NOON


# -- Number status ----------------------------------------------------------------------------------------


def test_number_status() -> None:
    status = _to_number_status(_data(load("gotsms", "number_status")), rent_uuid=RENT_UUID)
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


def test_number_status_without_rent_id_uses_the_path() -> None:
    status = _to_number_status({"status": "waking"}, rent_uuid=RENT_UUID)
    assert status.rental_id == f"gotsms:{RENT_UUID}"
    assert status.status is RentalStatus.UNKNOWN
    assert status.online_till is None


def test_number_status_not_an_object() -> None:
    with pytest.raises(ValueError, match="not an object"):
        _to_number_status(["active"], rent_uuid=RENT_UUID)


def test_status_map_values_are_domain_statuses() -> None:
    assert set(gotsms.STATUS_MAP.values()) <= set(RentalStatus)
