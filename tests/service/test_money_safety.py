"""Money safety, measured: concurrent purchases against the daily budget, purchases whose answer is lost,
purchases cancelled in flight, and what a dead process left behind. Each test prints the figures it measured
(run pytest with -s to see them)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import anyio
import anyio.lowlevel
import httpx
import pytest

from smsrent.domain.errors import BudgetExceeded, ProviderError, PurchaseUnsettled, SmsRentError
from smsrent.domain.ids import Ref, parse_plan_id, parse_rental_id
from smsrent.domain.models import Balance, Message, Plan, Receipt
from smsrent.providers.base import Capabilities, Provider
from smsrent.providers.getatext import parse_webhook
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.base import Fault, SandboxServer
from smsrent.sandbox.getatext import TZ, GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.delivery import Delivery
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger import Ledger
from smsrent.service.ledger.sqlite import SqliteLedger
from smsrent.service.purchases import Outcome
from smsrent.service.rentals import Rentals
from tests.faults import LoseAnswer, OnAnswer, Outage
from tests.helpers import getatext_adapter, gotsms_adapter, request_log, requests

pytestmark = pytest.mark.anyio

D = Decimal
RENTS = "/api/rents"
RENT_A_NUMBER = "/api/v1/rent-a-number"
RE_RENT = "/api/v1/re-rent"
CANCEL = "/api/v1/cancel-rental"
TOP_UP = D("5.00")
ATTEMPTS, FITS = 50, 10


def report(label: str, **figures: object) -> None:
    print(f"\n[money-safety] {label}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))  # noqa: T201


@asynccontextmanager
async def service(
    ledger: Ledger, *providers: Provider, guard: MoneyGuard | None = None, settle_after: float = 0.0
) -> AsyncIterator[Rentals]:
    """Rentals over the given adapters, closed afterwards. `settle_after=0`: the provider's answer decides at
    once (the grace period before "not there" counts as proof is tested on its own)."""
    try:
        yield Rentals(list(providers), ledger, guard or MoneyGuard(), settle_after=settle_after)
    finally:
        for provider in providers:
            await provider.aclose()


async def discord_day(rentals: Rentals) -> Plan:
    """GotSMS's cheapest plan: Discord, USA, one day, 0.60."""
    plans = await rentals.catalogue.plans(service="Discord", country="USA", provider="gotsms")
    plan = plans[0]
    assert (plan.duration, plan.price) == ("1 day", D("0.60"))
    return plan


async def uber(rentals: Rentals) -> Plan:
    """Getatext's cheapest plan: Uber, 0.20."""
    plan = (await rentals.catalogue.plans(service="uber", provider="getatext"))[0]
    assert plan.price == D("0.20")
    return plan


def local(rental_id: str) -> str:
    return parse_rental_id(rental_id).local_id


async def states(ledger: Ledger) -> list[str]:
    return [p.state for p in await ledger.purchases()]


# -- 1. Concurrent purchases against the daily budget --------------------------------------------------------


async def race_for_the_budget(rentals: Rentals, sandbox: GotSmsSandbox, label: str) -> None:
    """50 concurrent purchases of a plan of price P, each with max_price P, against a budget of 10 x P."""
    plan = await discord_day(rentals)
    assert plan.price is not None
    price, start = plan.price, sandbox.balance
    made: list[Outcome] = []
    refused: list[BudgetExceeded] = []
    other: list[BaseException] = []

    async def attempt() -> None:
        try:
            made.append(await rentals.buy(plan, price))
        except BudgetExceeded as err:
            refused.append(err)
        except SmsRentError as err:
            other.append(err)

    async with anyio.create_task_group() as tg:
        for _ in range(ATTEMPTS):
            tg.start_soon(attempt)

    purchases = await rentals.ledger.purchases()
    recorded = await rentals.ledger.rentals()
    posts = requests(sandbox, "POST", RENTS)
    committed = await rentals.ledger.committed()
    charged = start - sandbox.balance
    report(
        label,
        attempted=ATTEMPTS,
        succeeded=len(made),
        refused_budget=len(refused),
        other_errors=len(other),
        provider_post_rents=posts,
        provider_rents=len(sandbox.rents),
        ledger_purchases=len(purchases),
        ledger_bought=sum(p.state == "bought" for p in purchases),
        ledger_rentals=len(recorded),
        budget=f"{FITS * price:.2f}",
        ledger_committed=f"{committed:.2f}",
        provider_charged=f"{charged:.2f}",
    )
    assert other == []
    assert (len(made), len(refused)) == (FITS, ATTEMPTS - FITS)
    assert posts == len(sandbox.rents) == FITS
    assert [p.state for p in purchases] == ["bought"] * FITS
    assert all(p.price == price for p in purchases)
    assert len(recorded) == FITS
    ids = {f"gotsms:{rent_id}" for rent_id in sandbox.rents}
    assert {o.rental.rental_id for o in made} == {r.rental_id for r in recorded} == ids
    assert committed == FITS * price == charged
    for err in refused:
        assert "SMSRENT_DAILY_BUDGET" in err.message
        assert "nothing was bought" in err.message


def budget_for_ten() -> MoneyGuard:
    return MoneyGuard(max_price=D("0.60"), daily_budget=FITS * D("0.60"))


async def test_fifty_concurrent_purchases_buy_exactly_what_the_budget_allows(
    ledger: Ledger, gotsms_sandbox: GotSmsSandbox
) -> None:
    async with service(ledger, gotsms_adapter(gotsms_sandbox), guard=budget_for_ten()) as rentals:
        await race_for_the_budget(rentals, gotsms_sandbox, "50 concurrent buys, in-process ASGI")


@pytest.mark.e2e
async def test_fifty_concurrent_purchases_over_loopback_http(ledger: Ledger, gotsms_sandbox: GotSmsSandbox) -> None:
    async with serve_loopback(gotsms_sandbox.app) as url:
        adapter = gotsms_adapter(gotsms_sandbox, base_url=f"{url}/api")
        async with service(ledger, adapter, guard=budget_for_ten()) as rentals:
            await race_for_the_budget(rentals, gotsms_sandbox, "50 concurrent buys, loopback HTTP")


# -- 2. A purchase whose answer is lost after the request was sent --------------------------------------------


def gotsms_losing(sandbox: GotSmsSandbox, how: str) -> httpx.AsyncBaseTransport:
    inner = httpx.ASGITransport(app=sandbox.app)
    if how == "commit_then_500":
        sandbox.inject("POST", RENTS, "commit_then_500")
        return inner
    return LoseAnswer(inner, "POST", RENTS, "timeout" if how == "ReadTimeout" else "disconnect")


@pytest.mark.parametrize("how", ["ReadTimeout", "RemoteProtocolError", "commit_then_500"])
async def test_gotsms_lost_answer_is_found_in_the_rent_list_and_never_bought_twice(
    ledger: Ledger, gotsms_sandbox: GotSmsSandbox, how: str
) -> None:
    adapter = gotsms_adapter(gotsms_sandbox, transport=gotsms_losing(gotsms_sandbox, how))
    async with service(ledger, adapter, guard=MoneyGuard(daily_budget=D("5"))) as rentals:
        plan = await discord_day(rentals)
        start = gotsms_sandbox.balance
        outcome = await rentals.buy(plan, D("1.00"))
        (purchase,) = await ledger.purchases()
        committed, charged = await ledger.committed(), start - gotsms_sandbox.balance
        posts = requests(gotsms_sandbox, "POST", RENTS)
        report(
            f"GotSMS answer lost ({how})",
            provider_post_rents=posts,
            provider_rents=len(gotsms_sandbox.rents),
            ledger_state=purchase.state,
            ledger_rental=purchase.rental_id is not None,
            max_price="1.00",
            ledger_committed=f"{committed:.2f}",
            provider_charged=f"{charged:.2f}",
        )
        assert posts == 1
        (rent_id,) = gotsms_sandbox.rents
        assert outcome.rental.rental_id == f"gotsms:{rent_id}"
        assert outcome.note is not None
        assert "found at the provider" in outcome.note
        assert (outcome.rental.plan_id, outcome.rental.price) == (plan.plan_id, D("0.60"))
        assert outcome.rental.started_at is not None
        assert await ledger.rental(outcome.rental.rental_id) == outcome.rental
        assert (purchase.state, purchase.rental_id, purchase.price) == ("bought", f"gotsms:{rent_id}", D("0.60"))
        assert purchase.note is not None
        assert committed == charged == D("0.60")
        # Nothing is blocked afterwards: the next purchase goes through.
        await rentals.buy(plan, D("1.00"))
        assert requests(gotsms_sandbox, "POST", RENTS) == 2
        assert await ledger.committed() == D("1.20") == start - gotsms_sandbox.balance


@pytest.mark.parametrize("fault", ["500", "html", "truncated"])
async def test_gotsms_failure_before_it_acted_is_settled_not_bought_and_released(
    ledger: Ledger, gotsms_sandbox: GotSmsSandbox, fault: Fault
) -> None:
    """A 5xx, an HTML page or a truncated body answering the purchase: unknown outcome, so the rent list decides;
    GotSMS did not act, so nothing is counted, nothing was retried, and the next purchase is allowed."""
    gotsms_sandbox.inject("POST", RENTS, fault)
    async with service(ledger, gotsms_adapter(gotsms_sandbox), guard=MoneyGuard(daily_budget=D("1"))) as rentals:
        plan = await discord_day(rentals)
        with pytest.raises(ProviderError, match="nothing was bought") as failed:
            await rentals.buy(plan, D("1.00"))
        assert not isinstance(failed.value, PurchaseUnsettled)
        (purchase,) = await ledger.purchases()
        assert (purchase.state, purchase.note) == ("not_bought", "not found in the provider's list")
        assert await ledger.committed() == 0
        assert (requests(gotsms_sandbox, "POST", RENTS), len(gotsms_sandbox.rents)) == (1, 0)
        assert requests(gotsms_sandbox, "GET", RENTS) == 1  # the reconciliation
        await rentals.buy(plan, D("1.00"))  # the whole budget is available again
        assert await ledger.committed() == D("0.60") == D("25.00") - gotsms_sandbox.balance


async def test_not_finding_a_fresh_purchase_is_no_proof_it_failed(
    ledger: Ledger, gotsms_sandbox: GotSmsSandbox
) -> None:
    """A provider may finish a purchase after the answer was lost: until `settle_after` has passed since the
    purchase, its absence from the rent list keeps it uncertain (counted, blocking), never "not bought"."""
    gotsms_sandbox.inject("POST", RENTS, "500")
    async with service(ledger, gotsms_adapter(gotsms_sandbox), settle_after=0.5) as rentals:
        plan = await discord_day(rentals)
        with pytest.raises(PurchaseUnsettled):
            await rentals.buy(plan, D("1.00"))
        (purchase,) = await ledger.purchases()
        assert purchase.state == "uncertain"
        assert await ledger.committed() == D("1.00")
        with pytest.raises(PurchaseUnsettled):
            await rentals.buy(plan, D("1.00"))  # blocked, and not sent
        assert requests(gotsms_sandbox, "POST", RENTS) == 1
        await anyio.sleep(0.6)
        await rentals.purchases.reconcile("gotsms")
        (purchase,) = await ledger.purchases()
        assert (purchase.state, purchase.note) == ("not_bought", "not found in the provider's list")
        await rentals.buy(plan, D("1.00"))
        assert requests(gotsms_sandbox, "POST", RENTS) == 2


async def test_gotsms_unsettled_purchase_counts_at_max_price_and_blocks_the_provider_until_reconciled(
    ledger: Ledger, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    outage = Outage(httpx.ASGITransport(app=gotsms_sandbox.app), "GET", RENTS)
    lossy = LoseAnswer(outage, "POST", RENTS, "timeout", then=outage.start)  # the rent list fails from then on
    gotsms = gotsms_adapter(gotsms_sandbox, transport=lossy)
    async with service(ledger, gotsms, getatext_adapter(getatext_sandbox)) as rentals:
        plan = await discord_day(rentals)
        start = gotsms_sandbox.balance
        with pytest.raises(PurchaseUnsettled) as unsettled:
            await rentals.buy(plan, D("1.00"))
        assert "do not retry" in unsettled.value.message
        assert await states(ledger) == ["uncertain"]
        assert await ledger.committed() == D("1.00")  # counted at its max price while unknown
        assert len(gotsms_sandbox.rents) == 1  # it did go through

        # Further purchases on GotSMS are refused and send no purchase request: each only tries to reconcile
        # first (reading the rent list, which still fails), then the reservation refuses.
        seen, list_attempts = len(gotsms_sandbox.requests), outage.refused
        refusals = 0
        for _ in range(3):
            with pytest.raises(PurchaseUnsettled) as refused:
                await rentals.buy(plan, D("1.00"))
            assert "nothing was bought" in refused.value.message
            refusals += 1
        reached = request_log(gotsms_sandbox, seen)
        list_attempts = outage.refused - list_attempts
        assert reached == []  # nothing reached GotSMS while it was unsettled
        assert list_attempts >= 3  # the reconciliation was tried before each refusal (and failed)
        assert lossy.lost == 1
        assert requests(gotsms_sandbox, "POST", RENTS) == 1
        # Another provider is not blocked.
        other = await rentals.buy(await uber(rentals), D("0.20"))
        assert other.rental.provider == "getatext"

        # The rent list is back: a later reconciliation settles it as bought.
        outage.down = False
        settled = await rentals.purchases.reconcile("gotsms")
        (rent_id,) = gotsms_sandbox.rents
        assert [(p.state, r.rental_id if r else None) for p, r in settled] == [("uncertain", f"gotsms:{rent_id}")]
        purchase = (await ledger.purchases())[0]
        assert (purchase.state, purchase.price, purchase.note) == ("bought", D("0.60"), "reconciled")
        assert await ledger.rental(f"gotsms:{rent_id}") is not None
        committed, charged = await ledger.committed(), start - gotsms_sandbox.balance
        report(
            "GotSMS answer lost and rent list down",
            provider_post_rents=requests(gotsms_sandbox, "POST", RENTS),
            refused_while_unsettled=refusals,
            requests_reaching_provider_during_refusals=len(reached),
            failed_rent_list_reads_during_refusals=list_attempts,
            committed_while_unsettled="1.00",
            ledger_committed_gotsms=f"{committed - D('0.20'):.2f}",
            provider_charged=f"{charged:.2f}",
        )
        assert committed - D("0.20") == charged == D("0.60")
        await rentals.buy(plan, D("1.00"))
        assert requests(gotsms_sandbox, "POST", RENTS) == 2


async def test_two_concurrent_lost_answers_are_matched_to_two_different_rents(
    ledger: Ledger, gotsms_sandbox: GotSmsSandbox
) -> None:
    lossy = LoseAnswer(httpx.ASGITransport(app=gotsms_sandbox.app), "POST", RENTS, "timeout", times=2)
    async with service(ledger, gotsms_adapter(gotsms_sandbox, transport=lossy)) as rentals:
        plan = await discord_day(rentals)
        outcomes: list[Outcome] = []
        unsettled: list[PurchaseUnsettled] = []

        async def buy() -> None:
            try:
                outcomes.append(await rentals.buy(plan, D("0.60")))
            except PurchaseUnsettled as err:  # settled later: another purchase was on its way meanwhile
                unsettled.append(err)

        async with anyio.create_task_group() as tg:
            tg.start_soon(buy)
            tg.start_soon(buy)
        await rentals.purchases.reconcile("gotsms")
        assert lossy.lost == 2
        assert len(outcomes) + len(unsettled) == 2
        rents = {f"gotsms:{rent_id}" for rent_id in gotsms_sandbox.rents}
        assert len(rents) == 2
        assert {p.rental_id for p in await ledger.purchases()} == rents  # one rent each, never the same one
        assert len({o.rental.rental_id for o in outcomes}) == len(outcomes)
        assert await states(ledger) == ["bought", "bought"]
        assert await ledger.committed() == D("1.20")


async def test_a_rent_listed_while_its_purchase_is_in_flight_is_still_matched_to_it(
    ledger: Ledger, gotsms_sandbox: GotSmsSandbox
) -> None:
    """list_rentals adopts the new rent while the purchase waits for its answer, which is then lost: the rent is
    still the purchase's (not "someone else's"), so the purchase is not settled as not bought and retried."""
    hold = anyio.Event()
    lossy = LoseAnswer(httpx.ASGITransport(app=gotsms_sandbox.app), "POST", RENTS, "timeout", hold=hold)
    async with service(ledger, gotsms_adapter(gotsms_sandbox, transport=lossy)) as rentals:
        plan = await discord_day(rentals)
        outcomes: list[Outcome] = []

        async def buy() -> None:
            outcomes.append(await rentals.buy(plan, D("1.00")))

        async with anyio.create_task_group() as tg:
            tg.start_soon(buy)
            with anyio.fail_after(5):
                while not lossy.lost:
                    await anyio.sleep(0.005)
            listed, _ = await rentals.list_rentals()
            (rent_id,) = gotsms_sandbox.rents
            assert [r.rental_id for r in listed] == [f"gotsms:{rent_id}"]  # adopted while the purchase waits
            hold.set()
        (outcome,) = outcomes
        assert outcome.rental.rental_id == f"gotsms:{rent_id}"
        (purchase,) = await ledger.purchases()
        assert (purchase.state, purchase.rental_id) == ("bought", f"gotsms:{rent_id}")
        assert await ledger.committed() == D("0.60") == D("25.00") - gotsms_sandbox.balance


async def test_a_lost_answer_is_not_matched_to_a_rent_the_ledger_already_knew(
    ledger: Ledger, gotsms: GotSmsProvider, gotsms_sandbox: GotSmsSandbox
) -> None:
    """A rent of the same plan made on the website a minute earlier (and adopted by list_rentals) is not the
    purchase's: the reconciliation must pick the rent that the lost purchase made."""
    lossy = LoseAnswer(httpx.ASGITransport(app=gotsms_sandbox.app), "POST", RENTS, "timeout")
    async with service(ledger, gotsms_adapter(gotsms_sandbox, transport=lossy)) as rentals:
        plan = await discord_day(rentals)
        website = (await gotsms.create_rent(parse_plan_id(plan.plan_id).local_id)).rental
        gotsms_sandbox.rents[local(website.rental_id)].active_from -= 60
        listed, _ = await rentals.list_rentals()
        assert [r.rental_id for r in listed] == [website.rental_id]
        outcome = await rentals.buy(plan, D("1.00"))
        (ours,) = set(gotsms_sandbox.rents) - {local(website.rental_id)}
        assert outcome.rental.rental_id == f"gotsms:{ours}"
        (purchase,) = await ledger.purchases()
        assert (purchase.state, purchase.rental_id) == ("bought", f"gotsms:{ours}")


@pytest.mark.parametrize("charged", [True, False], ids=["charged", "not-charged"])
async def test_getatext_lost_answer_is_counted_at_max_price_until_its_rental_is_found(
    ledger: Ledger, getatext_sandbox: GetatextSandbox, charged: bool
) -> None:
    """Getatext has no list of one-time rentals, only the balance, which proves a charge but never its absence
    or its amount: the purchase is bought, unverified, at its max_price (here at once: `settle_after=0`)."""
    lossy = LoseAnswer(httpx.ASGITransport(app=getatext_sandbox.app), "POST", RENT_A_NUMBER, "timeout", deliver=charged)
    async with service(ledger, getatext_adapter(getatext_sandbox, transport=lossy)) as rentals:
        plan = await uber(rentals)
        start = getatext_sandbox.balance
        with pytest.raises(ProviderError) as failed:
            await rentals.buy(plan, D("0.50"))
        (purchase,) = await ledger.purchases()
        committed, spent = await ledger.committed(), start - getatext_sandbox.balance
        report(
            f"Getatext answer lost ({'charged' if charged else 'never arrived'})",
            provider_rentals=len(getatext_sandbox.rentals),
            ledger_state=purchase.state,
            verified=purchase.verified,
            max_price="0.50",
            ledger_committed=f"{committed:.2f}",
            provider_charged=f"{spent:.2f}",
        )
        assert purchase.balance_before == start
        assert lossy.lost == 1  # sent once, never retried (reaching the provider only when charged)
        assert requests(getatext_sandbox, "POST", RENT_A_NUMBER) == int(charged)
        assert (purchase.state, purchase.verified, purchase.price, purchase.rental_id) == ("bought", False, None, None)
        assert purchase.note is not None
        seen = "the balance went down meanwhile" if charged else "the balance showed no charge within 0 s"
        assert seen in purchase.note
        assert "counted at its max_price 0.50" in failed.value.message
        assert not isinstance(failed.value, PurchaseUnsettled)
        assert committed == D("0.50") >= spent == (D("0.20") if charged else 0)
        # Settled either way: the next purchase is not blocked.
        await rentals.buy(plan, D("0.50"))
        assert requests(getatext_sandbox, "POST", RENT_A_NUMBER) == int(charged) + 1
        assert await ledger.committed() == D("0.70")


async def test_getatext_unsettled_purchase_blocks_until_the_balance_can_be_read(
    ledger: Ledger, getatext_sandbox: GetatextSandbox
) -> None:
    outage = Outage(httpx.ASGITransport(app=getatext_sandbox.app), "GET", "/api/v1/balance")
    lossy = LoseAnswer(outage, "POST", RENT_A_NUMBER, "disconnect", then=outage.start)
    async with service(ledger, getatext_adapter(getatext_sandbox, transport=lossy)) as rentals:
        plan = await uber(rentals)
        start = getatext_sandbox.balance
        with pytest.raises(PurchaseUnsettled):
            await rentals.buy(plan, D("0.50"))
        assert await states(ledger) == ["uncertain"]
        assert await ledger.committed() == D("0.50")
        with pytest.raises(PurchaseUnsettled):
            await rentals.buy(plan, D("0.50"))
        assert requests(getatext_sandbox, "POST", RENT_A_NUMBER) == 1
        outage.down = False
        assert [r for _, r in await rentals.purchases.reconcile("getatext")] == [None]  # bought, but its id is unknown
        (purchase,) = await ledger.purchases()
        assert (purchase.state, purchase.verified, purchase.price) == ("bought", False, None)
        assert await ledger.committed() == D("0.50")  # at its max_price: the balance cannot tell what it cost
        assert start - getatext_sandbox.balance == D("0.20")


# -- 2b. A Getatext purchase settled from the balance: a credit never frees it ------------------------------


def top_up(sandbox: GetatextSandbox, amount: Decimal = TOP_UP) -> Callable[[], None]:
    """The owner's top-up, landing at Getatext when called."""

    def credit() -> None:
        sandbox.balance += amount

    return credit


class RefundLandsLate(httpx.AsyncBaseTransport):
    """Forwards every request to `inner`, except that a cancel-rental loses its answer and Getatext carries it out
    only later: right after the next rent-a-number, whose answer is lost too."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.queued: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        late = request.url.path == CANCEL or (request.url.path == RENT_A_NUMBER and self.queued)
        if request.method != "POST" or not late:
            return await self.inner.handle_async_request(request)
        await request.aread()
        if request.url.path == CANCEL:
            self.queued.append(request)
        else:
            for sent in (request, *self.queued):
                response = await self.inner.handle_async_request(sent)
                await response.aread()
            self.queued.clear()
        raise httpx.ReadTimeout("timed out waiting for the answer", request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_top_up_landing_before_settlement_leaves_a_lost_purchase_counted_at_max_price(
    ledger: Ledger, getatext_sandbox: GetatextSandbox
) -> None:
    """Getatext charges the purchase, its answer is lost, and the owner's top-up lands before it is settled: the
    balance went up, which proves nothing. The purchase stays counted at its max_price (bought, unverified), so the
    daily budget still covers the real charge; it no longer blocks Getatext."""
    lossy = LoseAnswer(
        httpx.ASGITransport(app=getatext_sandbox.app), "POST", RENT_A_NUMBER, "timeout", then=top_up(getatext_sandbox)
    )
    guard = MoneyGuard(daily_budget=D("0.70"))
    async with service(ledger, getatext_adapter(getatext_sandbox, transport=lossy), guard=guard) as rentals:
        plan = await uber(rentals)
        start = getatext_sandbox.balance
        with pytest.raises(ProviderError, match=r"counted at its max_price 0\.50") as lost:
            await rentals.buy(plan, D("0.50"))
        assert not isinstance(lost.value, PurchaseUnsettled)
        assert "do not buy again" in lost.value.message
        (purchase,) = await ledger.purchases()
        charged, committed = start + TOP_UP - getatext_sandbox.balance, await ledger.committed()
        report(
            "Getatext answer lost, owner's top-up landed before settlement",
            provider_rentals=len(getatext_sandbox.rentals),
            balance_change=f"{getatext_sandbox.balance - start:+.2f}",
            ledger_state=purchase.state,
            verified=purchase.verified,
            max_price="0.50",
            ledger_committed=f"{committed:.2f}",
            provider_charged=f"{charged:.2f}",
        )
        assert (purchase.state, purchase.verified, purchase.price, purchase.rental_id) == ("bought", False, None, None)
        assert purchase.note is not None
        assert purchase.note.startswith("Unverified: Getatext never answered")
        assert charged == D("0.20")  # a real rental was bought
        assert committed == D("0.50") >= charged
        with pytest.raises(BudgetExceeded):
            await rentals.buy(plan, D("0.50"))  # 0.50 more would exceed 0.70: the lost purchase still counts
        await rentals.buy(plan, D("0.20"))  # Getatext is not blocked
        assert requests(getatext_sandbox, "POST", RENT_A_NUMBER) == 2
        assert await ledger.committed() == D("0.70")


async def test_this_servers_own_refund_landing_meanwhile_does_not_free_a_lost_purchase(
    ledger: Ledger, getatext_sandbox: GetatextSandbox
) -> None:
    """A refund whose answer was lost (so the server does not know it happened) is carried out by Getatext while
    the next purchase's answer is lost: the refund's credit cancels the purchase's debit on the balance. The
    purchase is still counted, at its max_price."""
    late = RefundLandsLate(httpx.ASGITransport(app=getatext_sandbox.app))
    async with service(ledger, getatext_adapter(getatext_sandbox, transport=late, timeout=0.1)) as rentals:
        plan = await uber(rentals)
        start = getatext_sandbox.balance
        first = (await rentals.buy(plan, D("0.50"))).rental
        with pytest.raises(ProviderError, match="may or may not have gone through"):
            await rentals.refund(first.rental_id)
        assert late.queued  # Getatext has it, and will carry it out later
        with pytest.raises(ProviderError, match=r"counted at its max_price 0\.50"):
            await rentals.buy(plan, D("0.50"))
        assert getatext_sandbox.rentals[int(local(first.rental_id))].status == "cancelled"
        assert len(getatext_sandbox.rentals) == 2
        charged, committed = start - getatext_sandbox.balance, await ledger.committed()
        first_purchase, lost = await ledger.purchases()
        report(
            "Getatext answer lost, this server's lost refund landed meanwhile",
            provider_rentals=len(getatext_sandbox.rentals),
            ledger_states=[first_purchase.state, lost.state],
            verified=lost.verified,
            ledger_committed=f"{committed:.2f}",
            provider_charged=f"{charged:.2f}",
        )
        assert (lost.state, lost.verified, lost.rental_id) == ("bought", False, None)
        assert charged == D("0.20")  # the second rental's charge, the first one refunded
        assert committed == D("0.20") + D("0.50")  # the refund is unknown here; the lost purchase at its max_price
        assert committed >= charged


async def test_a_lost_purchase_the_balance_never_shows_is_counted_at_max_price_once_the_window_passes(
    ledger: Ledger, getatext_sandbox: GetatextSandbox
) -> None:
    """The request never reached Getatext, but nothing proves it: within the settle window the purchase is
    uncertain and blocks Getatext; then it is bought, unverified, counted at its max_price, and blocks no more."""
    lossy = LoseAnswer(httpx.ASGITransport(app=getatext_sandbox.app), "POST", RENT_A_NUMBER, "timeout", deliver=False)
    guard = MoneyGuard(daily_budget=D("0.70"))
    adapter = getatext_adapter(getatext_sandbox, transport=lossy)
    async with service(ledger, adapter, guard=guard, settle_after=0.3) as rentals:
        plan = await uber(rentals)
        with pytest.raises(PurchaseUnsettled):
            await rentals.buy(plan, D("0.50"))
        with pytest.raises(PurchaseUnsettled):
            await rentals.buy(plan, D("0.20"))  # blocked within the window, and not sent
        assert await states(ledger) == ["uncertain"]
        await anyio.sleep(0.4)
        assert [rental for _, rental in await rentals.purchases.reconcile("getatext")] == [None]
        (purchase,) = await ledger.purchases()
        committed = await ledger.committed()
        report(
            "Getatext answer lost, balance unchanged past the settle window",
            provider_rentals=len(getatext_sandbox.rentals),
            ledger_state=purchase.state,
            verified=purchase.verified,
            ledger_committed=f"{committed:.2f}",
            provider_charged=f"{D('20.00') - getatext_sandbox.balance:.2f}",
        )
        assert (purchase.state, purchase.verified, purchase.price) == ("bought", False, None)
        assert purchase.note is not None
        assert "counted at its max_price 0.50" in purchase.note
        assert committed == D("0.50")
        with pytest.raises(BudgetExceeded):
            await rentals.buy(plan, D("0.50"))  # the budget still counts it
        await rentals.buy(plan, D("0.20"))  # but it no longer blocks Getatext
        assert requests(getatext_sandbox, "POST", RENT_A_NUMBER) == 1


async def test_an_unverified_purchase_found_by_a_push_records_its_real_price(
    ledger: Ledger, getatext_sandbox: GetatextSandbox
) -> None:
    """The top-up case again; then the rental's first code is pushed: the push names the rental, which is recorded
    and given to the purchase, whose real price replaces its max_price."""
    lossy = LoseAnswer(
        httpx.ASGITransport(app=getatext_sandbox.app), "POST", RENT_A_NUMBER, "timeout", then=top_up(getatext_sandbox)
    )
    async with service(ledger, getatext_adapter(getatext_sandbox, transport=lossy)) as rentals:
        delivery = Delivery(rentals)
        start = getatext_sandbox.balance
        with pytest.raises(ProviderError, match="counted at its max_price"):
            await rentals.buy(await uber(rentals), D("0.50"))
        assert await ledger.committed() == D("0.50")
        (number,) = getatext_sandbox.rentals
        getatext_sandbox.deliver(number, "004521")
        assert await delivery.push(parse_webhook({"id": number, "code": 4521}, TZ)) is True
        (purchase,) = await ledger.purchases()
        rental_id = f"getatext:{number}"
        assert (purchase.state, purchase.rental_id, purchase.price) == ("bought", rental_id, D("0.20"))
        assert purchase.verified
        assert await ledger.committed() == D("0.20") == start + TOP_UP - getatext_sandbox.balance
        rental, messages = await rentals.messages(rental_id)
        assert (rental.price, rental.plan_id) == (D("0.20"), "getatext:uber")
        assert [m.message.code for m in messages] == ["004521"]


# -- 2c. A re-rent keeps the rental it came from apart from the one it made ---------------------------------


async def test_a_refund_of_the_old_rental_after_a_lost_re_rent_credits_the_old_rentals_purchase(
    ledger: Ledger, ledger_path: Path, getatext_sandbox: GetatextSandbox
) -> None:
    lossy = LoseAnswer(httpx.ASGITransport(app=getatext_sandbox.app), "POST", RE_RENT, "timeout")
    async with service(ledger, getatext_adapter(getatext_sandbox, transport=lossy)) as rentals:
        old = (await rentals.buy(await uber(rentals), D("0.50"))).rental
        await rentals.finish(old.rental_id)
        with pytest.raises(ProviderError, match="counted at its max_price"):
            await rentals.extend_quoted(await rentals.extension(old.rental_id, D("0.50")), D("0.50"))
        assert len(getatext_sandbox.rentals) == 2  # the re-rent was made; its id never arrived
        await ledger.note_refund(old.rental_id, D("0.20"))
    with sqlite3.connect(ledger_path) as db:
        credited = db.execute("SELECT refunded FROM purchases ORDER BY purchase_id").fetchall()
    assert credited == [("0.20",), (None,)]  # the old rental's purchase, not the re-rent's
    bought, re_rent = await ledger.purchases()
    assert (bought.rental_id, bought.source_rental_id) == (old.rental_id, None)
    assert (re_rent.rental_id, re_rent.source_rental_id, re_rent.state) == (None, old.rental_id, "bought")
    assert await ledger.committed() == D("0.50")  # the re-rent, unverified, at its max_price


async def test_a_getatext_cancel_whose_answer_is_lost_is_found_cancelled(
    ledger: Ledger, getatext_sandbox: GetatextSandbox
) -> None:
    async with service(ledger, getatext_adapter(getatext_sandbox)) as rentals:
        outcome = await rentals.buy(await uber(rentals), D("0.50"))
        getatext_sandbox.inject("POST", "/api/v1/cancel-rental", "commit_then_500")
        refund = await rentals.refund(outcome.rental.rental_id)
        assert (refund.refunded, refund.rental.status) == (D("0.20"), "cancelled")
        assert requests(getatext_sandbox, "POST", "/api/v1/cancel-rental") == 1
        assert await ledger.committed() == 0 == D("20.00") - getatext_sandbox.balance


@pytest.mark.parametrize("use_handler_api", [False, True])
async def test_a_getatext_cancel_answered_without_confirming_it_credits_nothing(
    ledger: Ledger, getatext_sandbox: GetatextSandbox, use_handler_api: bool
) -> None:
    """Found by the soak: Getatext answered a cancel with a 200 reporting success but no cancelled rental, and did
    not cancel; the adapter took any object for the rental, so the ledger credited a refund never made. Now the
    answer is uncertain, and the rental's status (still active) tells."""
    adapter = getatext_adapter(getatext_sandbox, use_handler_api=use_handler_api, timeout=0.2)
    async with service(ledger, adapter) as rentals:
        outcome = await rentals.buy(await uber(rentals), D("0.50"))
        path = "/stubs/handler_api" if use_handler_api else CANCEL
        getatext_sandbox.inject("GET" if use_handler_api else "POST", path, "contradiction")
        with pytest.raises(ProviderError, match="may or may not have gone through"):
            await rentals.refund(outcome.rental.rental_id)
        stored = await ledger.rental(outcome.rental.rental_id)
    assert getatext_sandbox.rentals[int(local(outcome.rental.rental_id))].status == "active"
    assert stored is not None
    assert stored.status == "active"
    assert await ledger.committed() == D("0.20") == D("20.00") - getatext_sandbox.balance


async def test_a_refund_answered_after_the_timeout_is_found_by_the_second_look(
    ledger: Ledger, gotsms_sandbox: GotSmsSandbox
) -> None:
    """Over real HTTP: GotSMS refunds 0.8 s after the request, the adapter gave up at 0.5 s; the look after the
    timeout finds the rent finished before its time."""
    gotsms_sandbox.slow_seconds = 0.8
    async with serve_loopback(gotsms_sandbox.app) as base:
        adapter = gotsms_adapter(gotsms_sandbox, base_url=f"{base}/api", timeout=0.5)
        async with service(ledger, adapter) as rentals:
            outcome = await rentals.buy(await discord_day(rentals), D("1.00"))
            gotsms_sandbox.inject("POST", f"{RENTS}/{local(outcome.rental.rental_id)}/refund", "slow")
            refund = await rentals.refund(outcome.rental.rental_id)
    assert (refund.refunded, refund.rental.status) == (D("0.60"), "refunded")
    assert await ledger.committed() == 0 == D("25.00") - gotsms_sandbox.balance


@pytest.mark.parametrize("fault", ["commit_then_500", "500"])
async def test_a_refund_whose_answer_is_lost_is_settled_by_the_rent_status(
    ledger: Ledger, gotsms_sandbox: GotSmsSandbox, fault: Fault
) -> None:
    """The provider refunded (or did not) but its answer never came: the rent's status tells (GotSMS: finished
    before its time), and the ledger's spend follows what the provider really did."""
    async with service(ledger, gotsms_adapter(gotsms_sandbox, timeout=0.2)) as rentals:
        outcome = await rentals.buy(await discord_day(rentals), D("1.00"))
        rent_id = local(outcome.rental.rental_id)
        gotsms_sandbox.inject("POST", f"{RENTS}/{rent_id}/refund", fault)
        if fault == "commit_then_500":
            refund = await rentals.refund(outcome.rental.rental_id)
            assert (refund.refunded, refund.rental.status) == (D("0.60"), "refunded")
        else:
            with pytest.raises(ProviderError, match="may or may not have gone through"):
                await rentals.refund(outcome.rental.rental_id)
        refunded = gotsms_sandbox.rents[rent_id].status != "active"
        assert refunded == (fault == "commit_then_500")
        assert requests(gotsms_sandbox, "POST", f"{RENTS}/{rent_id}/refund") == 1  # never retried
        assert await ledger.committed() == D("25.00") - gotsms_sandbox.balance == (0 if refunded else D("0.60"))


async def test_getatext_long_rental_lost_answer_is_found_in_the_long_rental_list(
    ledger: Ledger, getatext_sandbox: GetatextSandbox
) -> None:
    lossy = LoseAnswer(httpx.ASGITransport(app=getatext_sandbox.app), "POST", "/api/v1/long-rentals", "timeout")
    async with service(ledger, getatext_adapter(getatext_sandbox, transport=lossy)) as rentals:
        plan = await rentals.quote(max_price=D("11"), plan_id="getatext:long:1w")
        outcome = await rentals.buy(plan, D("11"))
        (long_id,) = getatext_sandbox.long_rentals
        assert outcome.rental.rental_id == f"getatext:long:{long_id}"
        assert outcome.note is not None
        (purchase,) = await ledger.purchases()
        assert (purchase.state, purchase.price) == ("bought", D("10.55"))
        assert await ledger.committed() == D("10.55") == D("20.00") - getatext_sandbox.balance


# -- 2d. A provider that can prove nothing about a lost purchase ---------------------------------------------


class Unproven:
    """The GotSMS adapter behind the bare `Provider` protocol: no rent listing, no settling from the balance (the
    default capabilities), so nothing can tell whether a purchase whose answer was lost went through."""

    capabilities = Capabilities()
    display_name = "Unproven"

    def __init__(self, inner: GotSmsProvider) -> None:
        self.inner = inner
        self.name, self.sandbox, self.answer_timeout = inner.name, inner.sandbox, inner.answer_timeout

    async def get_balance(self) -> Balance:
        return await self.inner.get_balance()

    async def list_plans(self) -> list[Plan]:
        return await self.inner.list_plans()

    async def rent(self, plan: Ref) -> Receipt:
        return await self.inner.rent(plan)

    async def get_rental(self, rental: Ref) -> Receipt:
        return await self.inner.get_rental(rental)

    async def get_messages(self, rental: Ref) -> list[Message]:
        return await self.inner.get_messages(rental)

    async def poll(self, rental: Ref) -> Receipt:
        return await self.inner.poll(rental)

    async def refund(self, rental: Ref) -> Receipt:
        return await self.inner.refund(rental)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_lost_purchase_nothing_can_prove_stays_uncertain_and_blocks_the_provider(
    ledger: Ledger, gotsms_sandbox: GotSmsSandbox
) -> None:
    """Before providers declared what can settle a purchase, one the service did not know was settled as "not
    bought" (no balance noted: "stopped before the request was sent") and the guard let the agent buy again."""
    lossy = LoseAnswer(httpx.ASGITransport(app=gotsms_sandbox.app), "POST", RENTS, "timeout")
    async with service(ledger, Unproven(gotsms_adapter(gotsms_sandbox, transport=lossy))) as rentals:
        plan = await discord_day(rentals)
        with pytest.raises(PurchaseUnsettled):
            await rentals.buy(plan, D("1.00"))
        assert len(gotsms_sandbox.rents) == 1  # it did go through
        assert await rentals.purchases.reconcile("gotsms") == []  # nothing decides it, however often asked
        assert await states(ledger) == ["uncertain"]
        assert await ledger.committed() == D("1.00")  # counted at its max price
        with pytest.raises(PurchaseUnsettled, match="nothing was bought"):
            await rentals.buy(plan, D("1.00"))
        assert requests(gotsms_sandbox, "POST", RENTS) == 1
        report(
            "Answer lost at a provider that can prove nothing",
            provider_rents=len(gotsms_sandbox.rents),
            ledger_state=(await ledger.purchases())[0].state,
            second_purchase="refused",
        )


# -- 3. A purchase cancelled while its request is in flight ----------------------------------------------


async def buy_and_cancel_once_committed(
    rentals: Rentals, plan: Plan, sandbox: SandboxServer, hang: LoseAnswer | None
) -> None:
    """Buy, and cancel the caller (as a client cancelling a tool call would) once the provider has acted and
    the request hangs (in the sandbox's `commit_then_hang`, or in the `hang` transport)."""
    with anyio.move_on_after(10) as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_when_committed() -> None:
                while not (sandbox.commits or (hang is not None and hang.lost)):
                    await anyio.sleep(0.005)
                await anyio.sleep(0.05)  # let the caller sit in the hung request
                scope.cancel()

            tg.start_soon(cancel_when_committed)
            await rentals.buy(plan, D("1.00"))
            pytest.fail("the purchase answered although its request hangs")
    assert scope.cancelled_caught


async def restart_and_reconcile(ledger_path: Path, sandbox: GotSmsSandbox) -> tuple[Ledger, Rentals]:
    ledger = await SqliteLedger.open(ledger_path)
    rentals = Rentals([gotsms_adapter(sandbox)], ledger, MoneyGuard(daily_budget=D("5")))
    await rentals.purchases.recover()
    await rentals.purchases.reconcile_all()
    return ledger, rentals


@pytest.mark.parametrize(
    "where",
    [pytest.param("loopback commit_then_hang", marks=pytest.mark.e2e), "in-process hanging transport"],
)
async def test_purchase_cancelled_in_flight_is_uncertain_and_reconciled_after_a_restart(
    ledger_path: Path, gotsms_sandbox: GotSmsSandbox, where: str
) -> None:
    ledger = await SqliteLedger.open(ledger_path)
    start = gotsms_sandbox.balance
    if where.startswith("loopback"):
        gotsms_sandbox.inject("POST", RENTS, "commit_then_hang")
        async with serve_loopback(gotsms_sandbox.app) as url:
            adapter = gotsms_adapter(gotsms_sandbox, base_url=f"{url}/api")
            async with service(ledger, adapter, guard=MoneyGuard(daily_budget=D("5"))) as rentals:
                plan = await discord_day(rentals)
                await buy_and_cancel_once_committed(rentals, plan, gotsms_sandbox, None)
    else:
        hang = LoseAnswer(httpx.ASGITransport(app=gotsms_sandbox.app), "POST", RENTS, "hang")
        async with service(ledger, gotsms_adapter(gotsms_sandbox, transport=hang)) as rentals:
            plan = await discord_day(rentals)
            await buy_and_cancel_once_committed(rentals, plan, gotsms_sandbox, hang)
    (purchase,) = await ledger.purchases()
    assert purchase.state == "uncertain"  # never left "reserved"
    assert purchase.note == "interrupted before the answer arrived"
    assert await ledger.committed() == D("1.00")
    assert len(gotsms_sandbox.rents) == 1
    await ledger.close()

    restarted, rentals = await restart_and_reconcile(ledger_path, gotsms_sandbox)
    try:
        (purchase,) = await restarted.purchases()
        (rent_id,) = gotsms_sandbox.rents
        committed, charged = await restarted.committed(), start - gotsms_sandbox.balance
        report(
            f"cancelled in flight ({where}), then restart",
            provider_post_rents=requests(gotsms_sandbox, "POST", RENTS),
            provider_rents=len(gotsms_sandbox.rents),
            state_before_restart="uncertain",
            state_after_reconcile=purchase.state,
            ledger_committed=f"{committed:.2f}",
            provider_charged=f"{charged:.2f}",
        )
        assert (purchase.state, purchase.rental_id, purchase.price) == ("bought", f"gotsms:{rent_id}", D("0.60"))
        assert await restarted.rental(f"gotsms:{rent_id}") is not None
        assert committed == charged == D("0.60")
        assert requests(gotsms_sandbox, "POST", RENTS) == 1
    finally:
        for provider in rentals.providers.values():
            await provider.aclose()
        await restarted.close()


async def test_cancelled_just_after_the_answer_the_purchase_is_still_recorded(
    ledger: Ledger, gotsms_sandbox: GotSmsSandbox
) -> None:
    with anyio.CancelScope() as scope:
        answered = OnAnswer(httpx.ASGITransport(app=gotsms_sandbox.app), "POST", RENTS, scope.cancel)
        async with service(ledger, gotsms_adapter(gotsms_sandbox, transport=answered)) as rentals:
            plan = await discord_day(rentals)
            await rentals.buy(plan, D("1.00"))
            await anyio.lowlevel.checkpoint()  # where the cancellation is delivered, at the latest
    assert scope.cancelled_caught
    (purchase,) = await ledger.purchases()
    (rent_id,) = gotsms_sandbox.rents
    assert purchase.state != "reserved"
    assert (purchase.state, purchase.rental_id) == ("bought", f"gotsms:{rent_id}")
    assert await ledger.rental(f"gotsms:{rent_id}") is not None
    assert await ledger.committed() == D("0.60")


# -- 4. What a dead process left behind -----------------------------------------------------------------


async def test_stale_reservations_become_uncertain_on_recover_and_are_settled(
    ledger_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    gotsms, getatext = gotsms_adapter(gotsms_sandbox), getatext_adapter(getatext_sandbox)
    plan_uuid = next(
        uuid for uuid, p in gotsms_sandbox.plans.items() if (p.service, p.duration_type) == ("Discord", "day")
    )
    plan_id = f"gotsms:{plan_uuid}"
    # The process that died: it reserved four purchases and got this far with each.
    dead = await SqliteLedger.open(ledger_path)
    sent = await dead.reserve(provider="gotsms", kind="rent", amount=D("1.00"), plan_id=plan_id)
    await gotsms.create_rent(plan_uuid)  # the request went out; the process died before the answer
    never_sent = await dead.reserve(provider="gotsms", kind="rent", amount=D("1.00"), plan_id=plan_id)
    charged = await dead.reserve(provider="getatext", kind="rent", amount=D("0.50"), plan_id="getatext:uber")
    await dead.note_balance_before(charged, getatext_sandbox.balance)
    await getatext.rent_a_number("uber")
    before_balance = await dead.reserve(provider="getatext", kind="rent", amount=D("0.50"), plan_id="getatext:uber")
    assert await dead.committed() == D("3.00")
    await dead.close()  # no outcome recorded for any of them
    await gotsms.aclose()
    await getatext.aclose()

    ledger = await SqliteLedger.open(ledger_path)
    async with service(ledger, gotsms_adapter(gotsms_sandbox), getatext_adapter(getatext_sandbox)) as rentals:
        await rentals.purchases.recover()
        assert await states(ledger) == ["uncertain"] * 4
        assert await ledger.committed() == D("3.00")
        await rentals.purchases.reconcile_all()
        by_id = {p.purchase_id: p for p in await ledger.purchases()}
        (rent_id,) = gotsms_sandbox.rents
        report(
            "stale reservations after a crash",
            reserved_before_restart=4,
            settled={pid: by_id[pid].state for pid in (sent, never_sent, charged, before_balance)},
            ledger_committed=f"{await ledger.committed():.2f}",
            provider_charged=f"{D('25.00') - gotsms_sandbox.balance + D('20.00') - getatext_sandbox.balance:.2f}",
        )
        assert (by_id[sent].state, by_id[sent].rental_id) == ("bought", f"gotsms:{rent_id}")
        assert by_id[never_sent].state == "not_bought"
        assert (by_id[charged].state, by_id[charged].verified, by_id[charged].price) == ("bought", False, None)
        assert by_id[before_balance].state == "not_bought"
        assert await ledger.unsettled() == []
        assert await ledger.rental(f"gotsms:{rent_id}") is not None
        assert await ledger.committed() == D("0.60") + D("0.50")  # Getatext's at its max_price, unverified
    await ledger.close()


async def test_recover_leaves_settled_and_uncertain_purchases_alone(
    ledger: Ledger, gotsms_sandbox: GotSmsSandbox
) -> None:
    bought = await ledger.reserve(provider="gotsms", kind="rent", amount=D("1"))
    await ledger.settle(bought, "bought", price=D("0.60"), rental_id="gotsms:x")
    failed = await ledger.reserve(provider="gotsms", kind="rent", amount=D("1"))
    await ledger.settle(failed, "failed", note="422")
    uncertain = await ledger.reserve(provider="gotsms", kind="rent", amount=D("1"))
    await ledger.settle(uncertain, "uncertain", note="timed out")
    async with service(ledger, gotsms_adapter(gotsms_sandbox)) as rentals:
        await rentals.purchases.recover()
    assert await states(ledger) == ["bought", "failed", "uncertain"]
    (still,) = await ledger.unsettled()
    assert still.note == "timed out"
    assert gotsms_sandbox.requests == []
