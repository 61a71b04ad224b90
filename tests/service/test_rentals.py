"""The rental service over the real adapters and both sandboxes: plans and quotes, buying under the guard,
refunds, extensions, auto-renew, finishing, waking, and list_rentals refreshing from the providers."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest

from smsrent.domain.errors import (
    BudgetExceeded,
    CancelNotAllowed,
    InsufficientBalance,
    InvalidInput,
    NotConfigured,
    ProviderUnavailable,
    UnknownRental,
    Unsupported,
)
from smsrent.domain.ids import parse_plan_id, parse_rental_id
from smsrent.domain.models import Plan, RentalStatus
from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.sandbox.getatext import LONG_PRICES, GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.guard import MoneyGuard
from smsrent.service.purchases import Outcome
from smsrent.service.rentals import Rentals
from tests.helpers import requests

pytestmark = pytest.mark.anyio

D = Decimal
GOTSMS_START = D("25.00")
GETATEXT_START = D("20.00")


async def plan_of(rentals: Rentals, provider: str, service: str, country: str = "USA", duration: str = "1 day") -> Plan:
    plans = await rentals.catalogue.plans(service=service, country=country, provider=provider)  # type: ignore[arg-type]
    found = [p for p in plans if provider == "getatext" or p.duration == duration]
    assert found, f"no {provider} plan for {service} in {country} ({duration})"
    return found[0]


async def extend(rentals: Rentals, rental_id: str, max_price: Decimal, plan_id: str | None = None) -> Outcome:
    """What extend_rental does: quote the extension, then buy it."""
    return await rentals.extend_quoted(await rentals.extension(rental_id, max_price, plan_id), max_price)


def local(rental_id: str) -> str:
    return parse_rental_id(rental_id).local_id


# -- Plans ------------------------------------------------------------------------------------------------


async def test_plans_of_both_providers_sorted_cheapest_first(rentals: Rentals) -> None:
    plans = await rentals.catalogue.plans()
    assert {p.provider for p in plans} == {"gotsms", "getatext"}
    prices = [p.price for p in plans if p.price is not None]
    assert len(prices) == len(plans)
    assert prices == sorted(prices)
    assert plans[0].plan_id == "getatext:uber"
    assert plans[0].price == D("0.20")


async def test_plans_filter_by_service_name_or_code_case_insensitively(rentals: Rentals) -> None:
    telegram = await rentals.catalogue.plans(service="  TeLeGrAm ")
    assert {p.provider for p in telegram} == {"gotsms", "getatext"}
    assert {p.service.casefold() for p in telegram} == {"telegram"}
    whatsapp = await rentals.catalogue.plans(service="WHATSAPP")  # GotSMS "WhatsApp", Getatext "Whatsapp"
    assert {p.provider for p in whatsapp} == {"gotsms", "getatext"}
    code = next(p.service_code for p in await rentals.catalogue.plans(provider="gotsms", service="Google"))
    assert code is not None
    by_code = await rentals.catalogue.plans(service=code.upper())
    assert by_code
    assert {(p.provider, p.service) for p in by_code} == {("gotsms", "Google")}
    assert await rentals.catalogue.plans(service="no-such-service") == []


@pytest.mark.parametrize(
    ("asked", "country"),
    [("US", "USA"), ("usa", "USA"), ("United States", "USA"), ("UK", "United Kingdom"), ("gb", "United Kingdom")],
)
async def test_plans_filter_by_country_with_aliases(rentals: Rentals, asked: str, country: str) -> None:
    plans = await rentals.catalogue.plans(country=asked)
    assert plans
    assert {p.country for p in plans} == {country}


async def test_plans_filter_by_provider_and_max_price(rentals: Rentals) -> None:
    getatext = await rentals.catalogue.plans(provider="getatext")
    assert getatext
    assert {p.provider for p in getatext} == {"getatext"}
    cheap = await rentals.catalogue.plans(max_price=D("0.60"))
    assert cheap
    assert all(p.price is not None and p.price <= D("0.60") for p in cheap)
    assert {p.plan_id for p in cheap} >= {"getatext:uber", "getatext:whatsapp"}
    assert any(p.provider == "gotsms" and p.price == D("0.60") for p in cheap)
    combined = await rentals.catalogue.plans(service="discord", country="US", provider="gotsms", max_price=D("1"))
    assert [(p.country, p.duration, p.price) for p in combined] == [("USA", "1 day", D("0.60"))]


async def test_unpriced_plans_sort_last_and_never_fit_a_max_price(
    make_rentals: Callable[..., Rentals], unpriced_getatext: GetatextProvider
) -> None:
    rentals = make_rentals(unpriced_getatext)
    plans = await rentals.catalogue.plans()
    unpriced = [p.plan_id for p in plans if p.price is None]
    assert unpriced == ["getatext:long:1m", "getatext:long:1w", "getatext:long:1y", "getatext:long:2w"]
    assert [p.plan_id for p in plans[-4:]] == unpriced
    assert all(p.price is not None for p in await rentals.catalogue.plans(max_price=D("1000")))


async def test_unconfigured_provider_is_named_with_its_variable(
    make_rentals: Callable[..., Rentals], gotsms: GotSmsProvider
) -> None:
    rentals = make_rentals(gotsms)
    with pytest.raises(NotConfigured, match="GETATEXT_API_KEY"):
        await rentals.catalogue.plans(provider="getatext")


# -- Quotes ---------------------------------------------------------------------------------------------


async def test_quote_by_plan_id(rentals: Rentals) -> None:
    plan = await plan_of(rentals, "gotsms", "Telegram")
    assert await rentals.quote(max_price=D("1.00"), plan_id=plan.plan_id) == plan
    assert await rentals.quote(max_price=D("1.00"), plan_id=plan.plan_id, provider="gotsms") == plan


async def test_quote_by_service_picks_the_cheapest_within_max_price(rentals: Rentals) -> None:
    cheapest = await rentals.quote(max_price=D("1.00"), service="telegram")
    assert (cheapest.plan_id, cheapest.price) == ("getatext:telegram", D("0.40"))
    on_gotsms = await rentals.quote(max_price=D("1.00"), service="telegram", provider="gotsms")
    assert (on_gotsms.provider, on_gotsms.country, on_gotsms.price) == ("gotsms", "USA", D("1.00"))
    in_uk = await rentals.quote(max_price=D("2"), service="Telegram", country="UK")
    assert (in_uk.country, in_uk.price) == ("United Kingdom", D("1.25"))


async def test_quote_refuses_when_no_plan_fits_and_names_the_cheapest_price(
    rentals: Rentals, gotsms_sandbox: GotSmsSandbox
) -> None:
    with pytest.raises(BudgetExceeded) as refused:
        await rentals.quote(max_price=D("1.00"), service="telegram", country="uk")
    assert "1.25 USD" in refused.value.message
    assert "1.00 USD" in refused.value.message
    assert "nothing was bought" in refused.value.message
    assert requests(gotsms_sandbox, "POST", "/api/rents") == 0


async def test_quote_refuses_bad_arguments(rentals: Rentals) -> None:
    with pytest.raises(InvalidInput, match="either plan_id"):
        await rentals.quote(max_price=D("1"))
    with pytest.raises(InvalidInput, match="either plan_id"):
        await rentals.quote(max_price=D("1"), plan_id="getatext:uber", service="uber")
    with pytest.raises(InvalidInput, match="No plan gotsms:00000000-0000-0000-0000-000000000000"):
        await rentals.quote(max_price=D("1"), plan_id="gotsms:00000000-0000-0000-0000-000000000000")
    with pytest.raises(InvalidInput, match="belongs to getatext"):
        await rentals.quote(max_price=D("1"), plan_id="getatext:uber", provider="gotsms")
    with pytest.raises(InvalidInput, match="No plan matches service 'carrier pigeon'"):
        await rentals.quote(max_price=D("1"), service="carrier pigeon")


async def test_malformed_plan_id_is_refused_before_any_request(
    rentals: Rentals, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    for bad in ("gotsms:../account", "getatext:long:3y", "acme:plan"):
        with pytest.raises(InvalidInput, match="Invalid plan_id"):
            await rentals.quote(max_price=D("1"), plan_id=bad)
    assert gotsms_sandbox.requests == []
    assert getatext_sandbox.requests == []


async def test_long_plan_without_a_published_price_cannot_be_quoted(
    make_rentals: Callable[..., Rentals], unpriced_getatext: GetatextProvider, getatext_sandbox: GetatextSandbox
) -> None:
    rentals = make_rentals(unpriced_getatext)
    with pytest.raises(InvalidInput, match="GETATEXT_LONG_RENTAL_PRICES") as refused:
        await rentals.quote(max_price=D("100"), plan_id="getatext:long:1w")
    assert "getatext:long:1w has no published price" in refused.value.message
    assert requests(getatext_sandbox, "POST", "/api/v1/long-rentals") == 0


async def test_long_plan_with_a_configured_price_is_quoted(rentals: Rentals) -> None:
    plan = await rentals.quote(max_price=D("11"), plan_id="getatext:long:1w")
    assert plan.price == LONG_PRICES["1w"]


# -- Buying ---------------------------------------------------------------------------------------------


async def test_buy_on_gotsms_records_the_rental_and_a_bought_purchase(
    rentals: Rentals, gotsms_sandbox: GotSmsSandbox
) -> None:
    plan = await plan_of(rentals, "gotsms", "Discord")
    before = time.time()
    outcome = await rentals.buy(plan, D("1.00"))
    rental = outcome.rental
    assert outcome.note is None
    assert rental.rental_id.startswith("gotsms:")
    assert local(rental.rental_id) in gotsms_sandbox.rents
    assert (rental.plan_id, rental.price, rental.status, rental.service) == (
        plan.plan_id,
        D("0.60"),
        RentalStatus.ACTIVE,
        "Discord",
    )
    assert rental.started_at is not None
    assert before - 2 <= rental.started_at.timestamp() <= time.time() + 1
    assert rental.phone is not None
    assert rental.phone.startswith("+1800")
    assert await rentals.ledger.rental(rental.rental_id) == rental
    (purchase,) = await rentals.ledger.purchases()
    assert (purchase.state, purchase.kind, purchase.price, purchase.max_price) == ("bought", "rent", D("0.60"), D("1"))
    assert (purchase.plan_id, purchase.rental_id) == (plan.plan_id, rental.rental_id)
    assert await rentals.ledger.committed() == D("0.60") == GOTSMS_START - gotsms_sandbox.balance
    assert requests(gotsms_sandbox, "POST", "/api/rents") == 1


async def test_a_charge_above_max_price_is_recorded_and_said(rentals: Rentals, gotsms_sandbox: GotSmsSandbox) -> None:
    """Neither API takes a price limit: if the provider's price rises between the quote and the purchase, the
    real charge is what counts against the budget, and the result says so."""
    plan = await plan_of(rentals, "gotsms", "Discord")
    gotsms_sandbox.plans[local(plan.plan_id)].price = D("0.90")  # the price moves after the quote
    outcome = await rentals.buy(plan, D("0.70"))
    assert outcome.note is not None
    assert "charged 0.9" in outcome.note
    assert "more than max_price 0.70" in outcome.note
    (purchase,) = await rentals.ledger.purchases()
    assert (purchase.state, purchase.price) == ("bought", D("0.9"))
    assert await rentals.ledger.committed() == D("0.9") == GOTSMS_START - gotsms_sandbox.balance


async def test_a_quote_reads_todays_price_not_a_cached_one(rentals: Rentals, gotsms_sandbox: GotSmsSandbox) -> None:
    plan = await plan_of(rentals, "gotsms", "Discord")  # lists (and caches) the plans
    gotsms_sandbox.plans[local(plan.plan_id)].price = D("0.90")
    with pytest.raises(BudgetExceeded, match=r"costs 0\.90"):
        await rentals.quote(max_price=D("0.70"), plan_id=plan.plan_id)
    assert requests(gotsms_sandbox, "POST", "/api/rents") == 0


async def test_buy_on_getatext_fills_what_the_answer_lacks(rentals: Rentals, getatext_sandbox: GetatextSandbox) -> None:
    plan = await plan_of(rentals, "getatext", "discord")
    before = time.time()
    rental = (await rentals.buy(plan, D("0.25"))).rental
    assert rental.rental_id == f"getatext:{max(getatext_sandbox.rentals)}"
    assert (rental.plan_id, rental.price, rental.service, rental.status) == (
        "getatext:discord",
        D("0.25"),
        "Discord",
        RentalStatus.ACTIVE,
    )
    assert rental.started_at is not None  # Getatext gives no start: the purchase time
    assert before - 1 <= rental.started_at.timestamp() <= time.time() + 1
    (purchase,) = await rentals.ledger.purchases()
    assert (purchase.state, purchase.price, purchase.balance_before) == ("bought", D("0.25"), GETATEXT_START)
    assert await rentals.ledger.committed() == D("0.25") == GETATEXT_START - getatext_sandbox.balance


async def test_buy_a_getatext_long_rental(rentals: Rentals, getatext_sandbox: GetatextSandbox) -> None:
    plan = await rentals.quote(max_price=D("10.55"), plan_id="getatext:long:1w")
    rental = (await rentals.buy(plan, D("10.55"))).rental
    assert rental.rental_id == f"getatext:long:{max(getatext_sandbox.long_rentals)}"
    assert (rental.plan_id, rental.price, rental.status) == ("getatext:long:1w", D("10.55"), RentalStatus.ACTIVE)
    assert await rentals.ledger.committed() == D("10.55") == GETATEXT_START - getatext_sandbox.balance


@pytest.mark.parametrize(
    ("guard", "max_price", "refusal"),
    [
        (MoneyGuard(max_price=D("0.50")), D("1.00"), "SMSRENT_MAX_PRICE"),
        (MoneyGuard(), D("0.50"), "above max_price 0.50 USD"),
        (MoneyGuard(daily_budget=D("0.50")), D("0.60"), "SMSRENT_DAILY_BUDGET"),
    ],
    ids=["per-purchase cap", "max_price", "daily budget"],
)
async def test_a_refused_purchase_sends_no_request(
    make_rentals: Callable[..., Rentals],
    gotsms: GotSmsProvider,
    getatext: GetatextProvider,
    gotsms_sandbox: GotSmsSandbox,
    getatext_sandbox: GetatextSandbox,
    guard: MoneyGuard,
    max_price: Decimal,
    refusal: str,
) -> None:
    rentals = make_rentals(gotsms, getatext, guard=guard)
    gotsms_plan = await plan_of(rentals, "gotsms", "Discord")
    getatext_plan = (await rentals.catalogue.plans(service="whatsapp", provider="getatext"))[0]
    seen = (len(gotsms_sandbox.requests), len(getatext_sandbox.requests))
    for plan in (gotsms_plan, getatext_plan):
        with pytest.raises(BudgetExceeded, match=refusal) as refused:
            await rentals.buy(plan, max_price)
        assert "nothing was bought" in refused.value.message
    assert (len(gotsms_sandbox.requests), len(getatext_sandbox.requests)) == seen
    assert await rentals.ledger.purchases() == []
    assert await rentals.ledger.committed() == 0
    assert (gotsms_sandbox.balance, getatext_sandbox.balance) == (GOTSMS_START, GETATEXT_START)


async def test_the_daily_budget_counts_earlier_purchases(
    make_rentals: Callable[..., Rentals], gotsms: GotSmsProvider, gotsms_sandbox: GotSmsSandbox
) -> None:
    rentals = make_rentals(gotsms, guard=MoneyGuard(daily_budget=D("1.50")))
    plan = await plan_of(rentals, "gotsms", "Discord")
    await rentals.buy(plan, D("0.60"))
    await rentals.buy(plan, D("0.60"))
    seen = len(gotsms_sandbox.requests)
    with pytest.raises(BudgetExceeded) as refused:
        await rentals.buy(plan, D("0.60"))
    assert "1.20 USD of the 1.50 USD daily budget" in refused.value.message
    assert len(gotsms_sandbox.requests) == seen
    assert requests(gotsms_sandbox, "POST", "/api/rents") == 2


async def test_a_rejected_purchase_is_recorded_failed_and_releases_its_reservation(
    make_rentals: Callable[..., Rentals], gotsms: GotSmsProvider, gotsms_sandbox: GotSmsSandbox
) -> None:
    rentals = make_rentals(gotsms)
    plan = await plan_of(rentals, "gotsms", "Discord")
    gotsms_sandbox.balance = D("0.10")
    with pytest.raises(InsufficientBalance):
        await rentals.buy(plan, D("1"))
    (purchase,) = await rentals.ledger.purchases()
    assert purchase.state == "failed"
    assert purchase.note is not None
    assert await rentals.ledger.committed() == 0
    assert requests(gotsms_sandbox, "POST", "/api/rents") == 1  # sent once, never retried


# -- Refunds --------------------------------------------------------------------------------------------


async def test_gotsms_refund_credits_the_spend_and_keeps_the_rental_details(
    rentals: Rentals, gotsms_sandbox: GotSmsSandbox
) -> None:
    bought = (await rentals.buy(await plan_of(rentals, "gotsms", "Discord"), D("0.60"))).rental
    assert await rentals.ledger.committed() == D("0.60")
    outcome = await rentals.refund(bought.rental_id)
    assert (outcome.refunded, outcome.balance_after) == (D("0.60"), GOTSMS_START)
    assert gotsms_sandbox.balance == GOTSMS_START
    assert outcome.rental.status is RentalStatus.REFUNDED
    assert (outcome.rental.phone, outcome.rental.price, outcome.rental.plan_id) == (
        bought.phone,
        bought.price,
        bought.plan_id,
    )
    assert await rentals.ledger.committed() == 0
    # GotSMS then lists the rent as "finished": it stays refunded in the ledger.
    ended, stale = await rentals.list_rentals("ended")
    assert stale == {}
    assert [(r.rental_id, r.status) for r in ended] == [(bought.rental_id, RentalStatus.REFUNDED)]


async def test_getatext_cancel_credits_the_spend(rentals: Rentals, getatext_sandbox: GetatextSandbox) -> None:
    bought = (await rentals.buy(await plan_of(rentals, "getatext", "google"), D("0.30"))).rental
    outcome = await rentals.refund(bought.rental_id)
    assert (outcome.refunded, outcome.balance_after) == (D("0.30"), GETATEXT_START)
    assert outcome.rental.status is RentalStatus.CANCELLED
    assert outcome.rental.phone == bought.phone
    assert getatext_sandbox.rentals[int(local(bought.rental_id))].status == "cancelled"
    assert await rentals.ledger.committed() == 0


async def test_getatext_long_cancel_credits_what_the_balance_shows(
    rentals: Rentals, getatext_sandbox: GetatextSandbox
) -> None:
    plan = await rentals.quote(max_price=D("10.55"), plan_id="getatext:long:1w")
    bought = (await rentals.buy(plan, D("10.55"))).rental
    outcome = await rentals.refund(bought.rental_id)
    assert (outcome.refunded, outcome.balance_after) == (D("10.55"), GETATEXT_START)
    assert outcome.rental.status is RentalStatus.CANCELLED
    assert await rentals.ledger.committed() == 0


async def test_a_refused_refund_credits_nothing(rentals: Rentals, gotsms_sandbox: GotSmsSandbox) -> None:
    bought = (await rentals.buy(await plan_of(rentals, "gotsms", "Discord"), D("0.60"))).rental
    gotsms_sandbox.deliver(local(bought.rental_id), "Your code is 123456", "123456")
    with pytest.raises(CancelNotAllowed):
        await rentals.refund(bought.rental_id)
    assert await rentals.ledger.committed() == D("0.60") == GOTSMS_START - gotsms_sandbox.balance
    stored = await rentals.ledger.rental(bought.rental_id)
    assert stored is not None
    assert stored.status is RentalStatus.ACTIVE


async def test_a_refund_that_went_through_is_credited_when_the_balance_after_it_cannot_be_read(
    rentals: Rentals, gotsms_sandbox: GotSmsSandbox
) -> None:
    """Found by the soak: GotSMS refunded, then every read of the balance failed; the refund tool failed after
    marking the rental refunded, and the credit never reached the ledger (spend over-counted for good)."""
    bought = (await rentals.buy(await plan_of(rentals, "gotsms", "Discord"), D("0.60"))).rental
    gotsms_sandbox.inject("GET", "/api/account", "500", times=3)
    outcome = await rentals.refund(bought.rental_id)
    assert (outcome.refunded, outcome.balance_after, outcome.rental.status) == (D("0.60"), None, "refunded")
    assert await rentals.ledger.committed() == 0 == GOTSMS_START - gotsms_sandbox.balance


@pytest.mark.parametrize("rental_id", ["gotsms:../account", "getatext:12/../1", "getatext:long:x", "acme:1", "gotsms:"])
async def test_malformed_rental_ids_are_refused_before_any_request(
    rentals: Rentals, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, rental_id: str
) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: rentals.refund(rental_id),
        lambda: extend(rentals, rental_id, D("1")),
        lambda: rentals.set_auto_renew(rental_id, False),
        lambda: rentals.finish(rental_id),
        lambda: rentals.wake_up(rental_id),
        lambda: rentals.messages(rental_id),
        lambda: rentals.rental(rental_id),
    ]
    for call in calls:
        with pytest.raises(InvalidInput, match="Invalid rental_id"):
            await call()
    assert gotsms_sandbox.requests == getatext_sandbox.requests == []
    assert await rentals.ledger.purchases() == []


# -- Extending ------------------------------------------------------------------------------------------


async def test_gotsms_extend_moves_the_rent_to_a_longer_plan(rentals: Rentals, gotsms_sandbox: GotSmsSandbox) -> None:
    bought = (await rentals.buy(await plan_of(rentals, "gotsms", "Discord"), D("0.60"))).rental
    weekly = await plan_of(rentals, "gotsms", "Discord", duration="1 week")
    with pytest.raises(InvalidInput, match="plan_id of a weekly or monthly plan"):
        await extend(rentals, bought.rental_id, D("5"))
    with pytest.raises(BudgetExceeded, match=re.escape("2.40 USD")):
        await extend(rentals, bought.rental_id, D("2.00"), plan_id=weekly.plan_id)
    assert requests(gotsms_sandbox, "POST", f"/api/rents/{local(bought.rental_id)}/transition") == 0
    outcome = await extend(rentals, bought.rental_id, D("5.00"), plan_id=weekly.plan_id)
    assert outcome.rental.rental_id == bought.rental_id
    assert outcome.rental.plan_id == weekly.plan_id
    assert gotsms_sandbox.rents[local(bought.rental_id)].plan.duration_type == "week"
    extension = (await rentals.ledger.purchases())[-1]
    assert (extension.kind, extension.state, extension.rental_id) == ("extend", "bought", bought.rental_id)
    # The ledger's spend is what GotSMS charged: the daily rent and the weekly plan.
    assert await rentals.ledger.committed() == D("3.00") == GOTSMS_START - gotsms_sandbox.balance


async def test_getatext_long_rental_renewal(rentals: Rentals, getatext_sandbox: GetatextSandbox) -> None:
    getatext_sandbox.balance = D("50.00")
    plan = await rentals.quote(max_price=D("10.55"), plan_id="getatext:long:1w")
    bought = (await rentals.buy(plan, D("10.55"))).rental
    ends = getatext_sandbox.long_rentals[int(local(bought.rental_id))].ends
    with pytest.raises(InvalidInput, match="without plan_id"):
        await extend(rentals, bought.rental_id, D("20"), plan_id="getatext:long:1w")
    with pytest.raises(BudgetExceeded, match=re.escape("10.55 USD")):
        await extend(rentals, bought.rental_id, D("10"))
    outcome = await extend(rentals, bought.rental_id, D("10.55"))
    assert outcome.rental.rental_id == bought.rental_id
    assert getatext_sandbox.long_rentals[int(local(bought.rental_id))].ends == ends + 7 * 86400
    renewal = (await rentals.ledger.purchases())[-1]
    assert (renewal.kind, renewal.state, renewal.price) == ("renew", "bought", D("10.55"))
    assert await rentals.ledger.committed() == D("21.10") == D("50.00") - getatext_sandbox.balance


async def test_getatext_one_time_extension_re_rents_the_same_number(
    rentals: Rentals, getatext_sandbox: GetatextSandbox
) -> None:
    bought = (await rentals.buy(await plan_of(rentals, "getatext", "uber"), D("0.20"))).rental
    finished = await rentals.finish(bought.rental_id)
    assert finished.rental.status is RentalStatus.COMPLETED
    outcome = await extend(rentals, bought.rental_id, D("0.20"))
    assert outcome.rental.rental_id != bought.rental_id
    assert outcome.rental.phone == bought.phone
    assert outcome.rental.status is RentalStatus.ACTIVE
    assert len(getatext_sandbox.rentals) == 2
    assert await rentals.ledger.committed() == D("0.40") == GETATEXT_START - getatext_sandbox.balance


async def an_extendable_rental(rentals: Rentals, kind: str) -> tuple[str, str | None, Decimal, str]:
    """A rental bought without a cap, ready to be extended: its id, the plan to move to (GotSMS), what the
    extension costs, and the path of the request that would buy it."""
    if kind == "renewal":
        long = (await rentals.buy(await rentals.quote(max_price=D("11"), plan_id="getatext:long:1w"), D("11"))).rental
        return long.rental_id, None, LONG_PRICES["1w"], f"/api/v1/long-rentals/{local(long.rental_id)}/update"
    if kind == "re-rent":
        one_time = (await rentals.buy(await plan_of(rentals, "getatext", "whatsapp"), D("1"))).rental
        await rentals.finish(one_time.rental_id)
        return one_time.rental_id, None, D("0.55"), "/api/v1/re-rent"
    daily = (await rentals.buy(await plan_of(rentals, "gotsms", "Discord"), D("1"))).rental
    weekly = await plan_of(rentals, "gotsms", "Discord", duration="1 week")
    assert weekly.price is not None
    return daily.rental_id, weekly.plan_id, weekly.price, f"/api/rents/{local(daily.rental_id)}/transition"


@pytest.mark.parametrize("kind", ["renewal", "re-rent", "transition"])
async def test_an_extension_above_the_per_purchase_cap_is_refused_with_nothing_sent(
    make_rentals: Callable[..., Rentals],
    gotsms: GotSmsProvider,
    getatext: GetatextProvider,
    gotsms_sandbox: GotSmsSandbox,
    getatext_sandbox: GetatextSandbox,
    kind: str,
) -> None:
    """SMSRENT_MAX_PRICE caps each purchase, an extension too (a renewal of 10.55 under a cap of 10, say): refused
    whatever max_price the caller gives, and nothing reaches the provider."""
    rental_id, plan_id, price, path = await an_extendable_rental(make_rentals(gotsms, getatext), kind)
    cap = price - D("0.05")
    capped = make_rentals(gotsms, getatext, guard=MoneyGuard(max_price=cap))
    sandbox = gotsms_sandbox if kind == "transition" else getatext_sandbox
    seen, committed = len(sandbox.requests), await capped.ledger.committed()
    for max_price in (price, cap):
        with pytest.raises(BudgetExceeded, match="per-purchase cap") as refused:
            await extend(capped, rental_id, max_price, plan_id)
        assert "SMSRENT_MAX_PRICE" in refused.value.message
        assert "nothing was bought" in refused.value.message
    assert requests(sandbox, "POST", path) == 0
    assert all(method == "GET" for _, method, _ in sandbox.requests[seen:])  # quotes only
    assert len(await capped.ledger.purchases()) == 1  # the rental's own purchase
    assert await capped.ledger.committed() == committed


async def test_what_one_rental_costs_over_time_is_bounded_by_the_daily_budget_not_the_cap(
    make_rentals: Callable[..., Rentals], getatext: GetatextProvider, getatext_sandbox: GetatextSandbox
) -> None:
    getatext_sandbox.balance = D("50.00")
    rentals = make_rentals(getatext, guard=MoneyGuard(max_price=D("11"), daily_budget=D("25")))
    rental_id, _, price, path = await an_extendable_rental(rentals, "renewal")
    await extend(rentals, rental_id, D("11"))  # each purchase within the cap: 21.10 for the rental so far
    with pytest.raises(BudgetExceeded, match="SMSRENT_DAILY_BUDGET"):
        await extend(rentals, rental_id, D("11"))
    assert requests(getatext_sandbox, "POST", path) == 1
    assert await rentals.ledger.committed() == 2 * price == D("50.00") - getatext_sandbox.balance


# -- Auto-renew, finish, wake-up ------------------------------------------------------------------------


async def test_gotsms_auto_renew_sets_the_wanted_state_and_toggles_only_when_needed(
    make_rentals: Callable[..., Rentals], gotsms: GotSmsProvider, gotsms_sandbox: GotSmsSandbox
) -> None:
    rentals = make_rentals(gotsms, guard=MoneyGuard(daily_budget=D("10"), allow_auto_renew=True))
    monthly = await plan_of(rentals, "gotsms", "Discord", duration="1 month")
    bought = (await rentals.buy(monthly, D("6.00"))).rental
    rent, toggle = gotsms_sandbox.rents[local(bought.rental_id)], f"/api/rents/{local(bought.rental_id)}/renewal/toggle"
    for _ in range(2):
        outcome = await rentals.set_auto_renew(bought.rental_id, True)
        assert outcome.rental.auto_renew is True
    assert (rent.renew, requests(gotsms_sandbox, "POST", toggle)) == (True, 1)
    for _ in range(2):
        outcome = await rentals.set_auto_renew(bought.rental_id, False)
        assert outcome.rental.auto_renew is False
    assert (rent.renew, requests(gotsms_sandbox, "POST", toggle)) == (False, 2)
    stored = await rentals.ledger.rental(bought.rental_id)
    assert stored is not None
    assert stored.auto_renew is False


async def test_auto_renew_is_refused_under_a_daily_budget_without_any_request(
    make_rentals: Callable[..., Rentals], gotsms: GotSmsProvider, gotsms_sandbox: GotSmsSandbox
) -> None:
    rentals = make_rentals(gotsms, guard=MoneyGuard(daily_budget=D("10")))
    bought = (await rentals.buy(await plan_of(rentals, "gotsms", "Discord", duration="1 month"), D("6"))).rental
    seen = len(gotsms_sandbox.requests)
    with pytest.raises(BudgetExceeded, match="SMSRENT_ALLOW_AUTO_RENEW"):
        await rentals.set_auto_renew(bought.rental_id, True)
    assert len(gotsms_sandbox.requests) == seen
    # Turning it off is always allowed.
    assert (await rentals.set_auto_renew(bought.rental_id, False)).rental.auto_renew is False


async def test_getatext_auto_renew_only_for_long_rentals(rentals: Rentals, getatext_sandbox: GetatextSandbox) -> None:
    long = (await rentals.buy(await rentals.quote(max_price=D("11"), plan_id="getatext:long:1w"), D("11"))).rental
    outcome = await rentals.set_auto_renew(long.rental_id, True)
    assert outcome.rental.auto_renew is True
    assert getatext_sandbox.long_rentals[int(local(long.rental_id))].auto_renew is True
    one_time = (await rentals.buy(await plan_of(rentals, "getatext", "uber"), D("0.20"))).rental
    seen = len(getatext_sandbox.requests)
    with pytest.raises(Unsupported):
        await rentals.set_auto_renew(one_time.rental_id, True)
    assert len(getatext_sandbox.requests) == seen


async def test_finish_only_for_getatext_one_time_rentals(
    rentals: Rentals, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    one_time = (await rentals.buy(await plan_of(rentals, "getatext", "uber"), D("0.20"))).rental
    outcome = await rentals.finish(one_time.rental_id)
    assert outcome.rental.status is RentalStatus.COMPLETED
    assert outcome.rental.phone == one_time.phone
    assert getatext_sandbox.rentals[int(local(one_time.rental_id))].status == "completed"
    gotsms_rent = (await rentals.buy(await plan_of(rentals, "gotsms", "Discord"), D("0.60"))).rental
    seen = (len(gotsms_sandbox.requests), len(getatext_sandbox.requests))
    with pytest.raises(Unsupported):
        await rentals.finish(gotsms_rent.rental_id)
    with pytest.raises(Unsupported):
        await rentals.finish("getatext:long:12345")
    assert (len(gotsms_sandbox.requests), len(getatext_sandbox.requests)) == seen


async def test_wake_up_only_for_gotsms_and_only_when_asleep(
    rentals: Rentals, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    rent = (await rentals.buy(await plan_of(rentals, "gotsms", "Discord"), D("0.60"))).rental
    wake = f"/api/numbers/{local(rent.rental_id)}/wake-up"
    status = await rentals.wake_up(rent.rental_id)
    assert status.wake_till is not None
    assert status.can_wake_up is False
    assert gotsms_sandbox.rents[local(rent.rental_id)].wake_from is not None
    stored = await rentals.ledger.rental(rent.rental_id)
    assert stored is not None
    assert (stored.wake_till, stored.can_wake_up, stored.phone) == (status.wake_till, False, rent.phone)
    await rentals.wake_up(rent.rental_id)  # queued or online already: no second wake-up
    assert requests(gotsms_sandbox, "POST", wake) == 1
    one_time = (await rentals.buy(await plan_of(rentals, "getatext", "uber"), D("0.20"))).rental
    seen = len(getatext_sandbox.requests)
    with pytest.raises(Unsupported):
        await rentals.wake_up(one_time.rental_id)
    assert len(getatext_sandbox.requests) == seen


# -- Reading rentals and messages -----------------------------------------------------------------------


async def test_list_rentals_adopts_active_rents_made_elsewhere_and_refreshes_statuses(
    rentals: Rentals,
    gotsms: GotSmsProvider,
    getatext: GetatextProvider,
    gotsms_sandbox: GotSmsSandbox,
    getatext_sandbox: GetatextSandbox,
) -> None:
    ours = (await rentals.buy(await plan_of(rentals, "gotsms", "Discord"), D("0.60"))).rental
    one_time = (await rentals.buy(await plan_of(rentals, "getatext", "uber"), D("0.20"))).rental
    # Made on the providers' websites (directly, not through the service):
    google = await plan_of(rentals, "gotsms", "Google")
    elsewhere = (await gotsms.create_rent(parse_plan_id(google.plan_id).local_id)).rental
    long = (await getatext.create_long_rental("1w", auto_renew=False)).rental
    gone = (await gotsms.create_rent(parse_plan_id(google.plan_id).local_id)).rental
    gotsms_sandbox.rents[local(gone.rental_id)].active_till = time.time() - 1  # ended before we ever saw it

    active, stale = await rentals.list_rentals()
    assert stale == {}
    assert {r.rental_id for r in active} == {ours.rental_id, one_time.rental_id, elsewhere.rental_id, long.rental_id}
    adopted = await rentals.ledger.rental(elsewhere.rental_id)
    assert adopted is not None
    assert (adopted.plan_id, adopted.price, adopted.phone) == (google.plan_id, google.price, elsewhere.phone)
    assert await rentals.ledger.rental(gone.rental_id) is None

    # The providers move on: our GotSMS rent expires, the Getatext rental gets its code and completes.
    gotsms_sandbox.rents[local(ours.rental_id)].active_till = time.time() - 1
    getatext_sandbox.deliver(int(local(one_time.rental_id)), "012345")
    getatext_sandbox.rentals[int(local(one_time.rental_id))].status = "completed"
    active, _ = await rentals.list_rentals()
    assert {r.rental_id for r in active} == {elsewhere.rental_id, long.rental_id}
    ended, _ = await rentals.list_rentals("ended")
    assert {(r.rental_id, r.status) for r in ended} == {
        (ours.rental_id, RentalStatus.EXPIRED),
        (one_time.rental_id, RentalStatus.COMPLETED),
    }
    (code,) = await rentals.ledger.messages(one_time.rental_id)
    assert code.message.code == "012345"
    everything, _ = await rentals.list_rentals("all", provider="gotsms")
    assert {r.rental_id for r in everything} == {ours.rental_id, elsewhere.rental_id}


async def test_list_rentals_reports_a_provider_it_could_not_refresh(
    rentals: Rentals, gotsms_sandbox: GotSmsSandbox
) -> None:
    bought = (await rentals.buy(await plan_of(rentals, "gotsms", "Discord"), D("0.60"))).rental
    gotsms_sandbox.inject("GET", "/api/rents", "500", times=10)
    active, stale = await rentals.list_rentals()
    assert [r.rental_id for r in active] == [bought.rental_id]
    assert set(stale) == {"gotsms"}
    assert "GotSMS" in stale["gotsms"]


async def test_a_rental_unknown_here_is_refused_without_asking_until_list_rentals_adopts_it(
    rentals: Rentals, gotsms: GotSmsProvider, gotsms_sandbox: GotSmsSandbox
) -> None:
    plan = await plan_of(rentals, "gotsms", "Discord")
    made = (await gotsms.create_rent(parse_plan_id(plan.plan_id).local_id)).rental  # rented on the website, say
    asked = len(gotsms_sandbox.requests)
    with pytest.raises(UnknownRental, match="list_rentals"):
        await rentals.rental(made.rental_id)
    assert len(gotsms_sandbox.requests) == asked  # refused before any network call
    await rentals.list_rentals()
    found = await rentals.rental(made.rental_id)
    assert found.phone == made.phone
    with pytest.raises(UnknownRental, match="list_rentals"):
        await rentals.rental("gotsms:00000000-0000-0000-0000-000000000000")
    with pytest.raises(InvalidInput):
        await rentals.rental("gotsms:../../account")


async def test_messages_are_stored_oldest_first_whatever_order_the_provider_lists_them(
    rentals: Rentals, gotsms_sandbox: GotSmsSandbox
) -> None:
    rent = (await rentals.buy(await plan_of(rentals, "gotsms", "Discord"), D("0.60"))).rental
    first = gotsms_sandbox.deliver(local(rent.rental_id), "Your code is 111111", "111111")
    gotsms_sandbox.sms[-1].received_at -= 5
    second = gotsms_sandbox.deliver(local(rent.rental_id), "Your code is 222222", "222222")
    _, stored = await rentals.messages(rent.rental_id)
    assert [s.message.message_id for s in stored] == [f"gotsms:{first}", f"gotsms:{second}"]
    claimed = await rentals.ledger.claim_next(rent.rental_id)
    assert claimed is not None
    assert claimed.code == "111111"


async def test_balances_report_each_provider_and_the_ones_that_failed(
    rentals: Rentals, getatext_sandbox: GetatextSandbox
) -> None:
    balances, unavailable = await rentals.balances()
    assert [(b.provider, b.amount) for b in balances] == [("getatext", GETATEXT_START), ("gotsms", GOTSMS_START)]
    assert unavailable == {}
    getatext_sandbox.inject("GET", "/api/v1/balance", "500", times=10)
    balances, unavailable = await rentals.balances()
    assert [b.provider for b in balances] == ["gotsms"]
    assert set(unavailable) == {"getatext"}
    with pytest.raises(ProviderUnavailable):
        await rentals.balances("getatext")


async def test_offers_list_the_providers_that_answered_and_report_the_others(
    rentals: Rentals, gotsms_sandbox: GotSmsSandbox
) -> None:
    gotsms_sandbox.inject("GET", "/api/rents/plans", "500", times=10)
    plans, unavailable = await rentals.catalogue.offers(service="telegram")
    assert {p.provider for p in plans} == {"getatext"}
    assert set(unavailable) == {"gotsms"}
    assert "GotSMS" in unavailable["gotsms"]
    with pytest.raises(ProviderUnavailable):
        await rentals.catalogue.offers(service="telegram", provider="gotsms")
