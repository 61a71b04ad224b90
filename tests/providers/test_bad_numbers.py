"""Numbers no price or balance can be (negative, NaN, Infinity, `1e400`, absurdly large, a free plan) are refused at
the adapter: never a plan that passes the price check, a charge recorded as less than nothing, or a balance that
makes a refund look larger than it was."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from smsrent.domain.errors import ProviderUnavailable
from smsrent.domain.values import MAX_AMOUNT, to_int, to_money
from smsrent.providers.base import HttpProvider, RetryPolicy
from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider
from tests.providers.fixtures import load
from tests.providers.transport import Router, json_response, raw_response

pytestmark = pytest.mark.anyio

ONCE = RetryPolicy(attempts=1)
# As JSON text, so that `1e400` reaches the adapter as the JSON number it is (json.loads makes it inf).
BAD = ['"-0.55"', "-1", '"NaN"', '"Infinity"', "1e400", '"1e400"', '"-Infinity"', '"sNaN"', '"2000000000"']


@pytest.fixture
async def opened() -> AsyncIterator[list[HttpProvider]]:
    made: list[HttpProvider] = []
    yield made
    for provider in made:
        await provider.aclose()


def gotsms(router: Router, opened: list[HttpProvider]) -> GotSmsProvider:
    provider = GotSmsProvider(SecretStr("token"), transport=router.transport, retry=ONCE)
    opened.append(provider)
    return provider


def getatext(router: Router, opened: list[HttpProvider]) -> GetatextProvider:
    provider = GetatextProvider(SecretStr("key"), transport=router.transport, retry=ONCE)
    opened.append(provider)
    return provider


def with_number(fixture: Any, path: tuple[str | int, ...], number: str) -> httpx.Response:
    """The fixture as JSON text with the value at `path` replaced by `number` (JSON text too)."""
    marker = "__NUMBER__"
    target = fixture
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = marker
    return raw_response(200, httpx.Response(200, json=fixture).text.replace(f'"{marker}"', number))


# -- The reader ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [-1, "-0.01", float("nan"), float("inf"), "NaN", "-Infinity", "sNaN", "1e400", MAX_AMOUNT + 1]
)
def test_to_money_refuses_what_no_amount_can_be(value: object) -> None:
    with pytest.raises(ValueError, match="amount"):
        to_money(value)
    with pytest.raises(ValueError, match="amount"):
        to_money(value, zero=True)


@pytest.mark.parametrize("value", [0, "0", "0.00", 0.0])
def test_to_money_refuses_a_free_price_but_not_an_empty_balance(value: object) -> None:
    with pytest.raises(ValueError, match="zero"):
        to_money(value)
    assert to_money(value, zero=True) == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.55", Decimal("0.55")), (4.99, Decimal("4.99")), (1, Decimal(1)), ("1,250.50", Decimal("1250.50"))],
)
def test_to_money_reads_real_amounts(value: object, expected: Decimal) -> None:
    assert to_money(value) == expected


@pytest.mark.parametrize("value", [None, "null", "", "soon", True, [], {}])
def test_to_money_leaves_a_missing_or_unreadable_amount_out(value: object) -> None:
    assert to_money(value) is None


@pytest.mark.parametrize("value", ["1e100000", "-1e30", 10**30, "NaN"])
def test_to_int_refuses_numbers_no_count_can_be(value: object) -> None:
    """Not built at all: `int(Decimal("1e999999999"))` would take minutes and a gigabyte, so a provider sending
    it as a page number or a time to live could stall the server."""
    assert to_int(value) is None


# -- Balances -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", BAD)
async def test_a_gotsms_balance_no_account_can_have_is_a_provider_error(
    opened: list[HttpProvider], number: str
) -> None:
    router = Router().add("GET", "/api/account", with_number(load("gotsms", "account"), ("data", "balance"), number))
    with pytest.raises(ProviderUnavailable, match="cannot read"):
        await gotsms(router, opened).get_balance()


@pytest.mark.parametrize("number", BAD)
async def test_a_getatext_balance_no_account_can_have_is_a_provider_error(
    opened: list[HttpProvider], number: str
) -> None:
    router = Router().add("GET", "/api/v1/balance", with_number(load("getatext", "balance"), ("balance",), number))
    with pytest.raises(ProviderUnavailable, match="cannot read"):
        await getatext(router, opened).get_balance()


async def test_an_empty_balance_is_read(opened: list[HttpProvider]) -> None:
    router = Router().add("GET", "/api/account", json_response(200, {"success": True, "data": {"balance": 0}}))
    assert (await gotsms(router, opened).get_balance()).amount == 0


# -- Prices -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [*BAD, "0", '"0.00"'])
async def test_a_gotsms_plan_at_a_price_no_plan_can_have_is_skipped(opened: list[HttpProvider], number: str) -> None:
    page = load("gotsms", "rents_plans")
    good = dict(page["data"][0], id="good")
    page["data"][0]["id"] = "bad"
    page["data"].append(good)
    router = Router().add("GET", "/api/rents/plans", with_number(page, ("data", 0, "price"), number))
    plans = await gotsms(router, opened).list_plans()
    assert [plan.plan_id for plan in plans] == ["gotsms:good"]


@pytest.mark.parametrize("number", [*BAD, "0"])
async def test_a_getatext_plan_at_a_price_no_plan_can_have_is_skipped(opened: list[HttpProvider], number: str) -> None:
    good = dict(load("getatext", "prices_info"), api_name="telegram")
    prices = with_number({"data": [load("getatext", "prices_info"), good]}, ("data", 0, "price"), number)
    router = Router().add("GET", "/api/v1/prices-info", prices)
    plans = await getatext(router, opened).prices()
    assert [plan.plan_id for plan in plans] == ["getatext:telegram"]


@pytest.mark.parametrize(("field", "number"), [("price", n) for n in [*BAD, "0"]] + [("new_balance", n) for n in BAD])
async def test_a_getatext_purchase_answer_with_an_amount_no_rental_can_have_is_uncertain(
    opened: list[HttpProvider], field: str, number: str
) -> None:
    """Never a charge recorded as nothing (or less), nor a balance a refund is measured from: reconciled instead."""
    rent = with_number(load("getatext", "rent_a_number"), (field,), number)
    router = Router().add("POST", "/api/v1/rent-a-number", rent)
    with pytest.raises(ProviderUnavailable) as caught:
        await getatext(router, opened).rent_a_number("whatsapp")
    assert caught.value.uncertain


@pytest.mark.parametrize("number", [*BAD, "0"])
async def test_a_gotsms_rent_at_a_price_no_rent_can_have_is_uncertain(opened: list[HttpProvider], number: str) -> None:
    rent = with_number(load("gotsms", "rent_created"), ("data", "price"), number)
    router = Router().add("POST", "/api/rents", rent)
    with pytest.raises(ProviderUnavailable) as caught:
        await gotsms(router, opened).create_rent("plan")
    assert caught.value.uncertain
