"""Rentals: plans across providers, purchases under the money guard, refunds and rental changes.

A purchase is recorded as an intent (reserving its max price) before the request, and as an outcome
after. A purchase whose outcome is unknown is never retried: it stays counted as spent and blocks
further purchases on that provider until `reconcile` finds out what happened. A balance can prove a
charge but never its absence, nor its amount: a purchase settled from the balance is bought, unverified,
and counted at its max price until its rental is found.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal, TypeVar

import anyio

from smsrent.config import SETTLE_AFTER
from smsrent.domain.errors import (
    CancelNotAllowed,
    GuardRefusal,
    InvalidInput,
    NotConfigured,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    PurchaseUnsettled,
    UnknownRental,
    Unsupported,
)
from smsrent.domain.ids import ProviderName, Ref, parse_plan_id, parse_rental_id
from smsrent.domain.models import (
    Balance,
    Message,
    NumberStatus,
    Plan,
    Receipt,
    Rental,
    RentalStatus,
    format_money,
)
from smsrent.providers.base import (
    Extendable,
    Finishable,
    FlipsAutoRenew,
    Provider,
    RentListing,
    SetsAutoRenew,
    Wakeable,
)
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger import (
    DAY,
    HEARTBEAT_EVERY,
    STALE_AFTER,
    Ledger,
    Purchase,
    PurchaseKind,
    StoredMessage,
)

log = logging.getLogger("smsrent.rentals")
T = TypeVar("T")

PLAN_CACHE_SECONDS = 30.0
REFRESH_LIMIT = 25  # active rentals no rent listing shows, re-checked one by one per list_rentals call
_COUNTRY_ALIASES = {
    "us": "usa",
    "united states": "usa",
    "united states of america": "usa",
    "america": "usa",
    "uk": "united kingdom",
    "gb": "united kingdom",
    "great britain": "united kingdom",
    "de": "germany",
    "deutschland": "germany",
}
RentalFilter = Literal["active", "ended", "all"]
Settlement = Literal["listing", "balance", "none"]


@dataclass(frozen=True)
class Outcome:
    """What an action did to a rental, with a note for the caller when something needs attention."""

    rental: Rental
    note: str | None = None


@dataclass(frozen=True)
class Extension:
    """What extending a rental would buy and cost, before anything is bought."""

    ref: Ref
    rental: Rental
    price: Decimal
    plan: Plan | None  # the longer plan to move to (a `longer_plan` extension)


@dataclass(frozen=True)
class RefundOutcome:
    rental: Rental
    refunded: Decimal | None
    balance_after: Decimal | None


class Rentals:
    """The rental service over the configured providers, the ledger and the money guard."""

    def __init__(
        self, providers: Sequence[Provider], ledger: Ledger, guard: MoneyGuard, *, settle_after: float = SETTLE_AFTER
    ) -> None:
        self.providers: dict[str, Provider] = {p.name: p for p in providers}
        self.ledger = ledger
        self.guard = guard
        self.settle_after = settle_after
        self._inflight: dict[int, str] = {}  # purchase id -> provider, while its call runs
        self._plans: dict[str, tuple[float, list[Plan]]] = {}
        self.observers: list[Callable[[Sequence[Message]], Awaitable[None]]] = []

    def provider(self, name: str) -> Provider:
        found = self.providers.get(name)
        if found is None:
            configured = ", ".join(self.providers) or "none"
            env = "GOTSMS_API_TOKEN" if name == "gotsms" else "GETATEXT_API_KEY"
            raise NotConfigured(f"Provider {name} is not configured (configured: {configured}); set {env} to use it.")
        return found

    def _selected(self, provider: ProviderName | None) -> list[Provider]:
        return [self.provider(provider)] if provider else list(self.providers.values())

    # -- Reading --------------------------------------------------------------------------------------

    async def _each(
        self, provider: ProviderName | None, ask: Callable[[Provider], Awaitable[T]]
    ) -> tuple[list[T], dict[str, str]]:
        """Ask every selected provider at once; one that fails is reported, unless all fail (then it raises)."""
        targets = self._selected(provider)
        answers: dict[str, T] = {}
        failures: dict[str, ProviderError] = {}

        async def one(p: Provider) -> None:
            try:
                answers[p.name] = await ask(p)
            except ProviderError as err:
                failures[p.name] = err

        async with anyio.create_task_group() as tg:
            for p in targets:
                tg.start_soon(one, p)
        if not answers:
            raise next(iter(failures.values()))
        return [answers[n] for n in sorted(answers)], {n: e.message for n, e in sorted(failures.items())}

    async def balances(self, provider: ProviderName | None = None) -> tuple[list[Balance], dict[str, str]]:
        """Each selected provider's balance, and the providers that could not say."""
        return await self._each(provider, lambda p: p.get_balance())

    async def offers(
        self,
        *,
        service: str | None = None,
        country: str | None = None,
        provider: ProviderName | None = None,
        max_price: Decimal | None = None,
    ) -> tuple[list[Plan], dict[str, str]]:
        """Every plan of the selected providers that matches, cheapest first (unknown prices last), and the
        providers that could not list theirs."""
        lists, failures = await self._each(provider, self._provider_plans)
        matches = [
            plan
            for plan in itertools.chain.from_iterable(lists)
            if _service_matches(plan, service)
            and _country_matches(plan, country)
            and (max_price is None or (plan.price is not None and plan.price <= max_price))
        ]
        ordered = sorted(matches, key=lambda p: (p.price is None, p.price or 0, p.provider, p.service, p.plan_id))
        return ordered, failures

    async def plans(
        self,
        *,
        service: str | None = None,
        country: str | None = None,
        provider: ProviderName | None = None,
        max_price: Decimal | None = None,
    ) -> list[Plan]:
        """The matching plans of `offers`, without the report of providers that failed."""
        found, _ = await self.offers(service=service, country=country, provider=provider, max_price=max_price)
        return found

    async def _provider_plans(self, provider: Provider, *, fresh: bool = False) -> list[Plan]:
        """The provider's plans, from a short cache for browsing; `fresh` for a price about to be paid."""
        cached = self._plans.get(provider.name)
        if cached and not fresh and time.monotonic() - cached[0] < PLAN_CACHE_SECONDS:
            return cached[1]
        plans = await provider.list_plans()
        self._plans[provider.name] = (time.monotonic(), plans)
        return plans

    async def rental(self, rental_id: str | Ref) -> Rental:
        """A rental from the ledger; one it does not know is refused before any network call (list_rentals
        adopts rentals made elsewhere, on the provider's website say)."""
        ref = rental_id if isinstance(rental_id, Ref) else parse_rental_id(rental_id)
        known = await self.ledger.rental(str(ref))
        if known is None:
            raise UnknownRental(
                f"No rental {ref} is known here; call list_rentals to see your rentals (it also picks up rentals"
                " made on the provider's website).",
                provider=ref.provider,
            )
        return known

    async def list_rentals(
        self, status: RentalFilter = "active", provider: ProviderName | None = None
    ) -> tuple[list[Rental], dict[str, str]]:
        """Rentals from the ledger after refreshing them from the providers; failures to refresh are reported."""
        stale: dict[str, str] = {}
        for p in self._selected(provider):
            try:
                await self.reconcile(p.name)
                await self._refresh(p)
            except ProviderError as err:
                stale[p.name] = err.message
        active = {"active": True, "ended": False, "all": None}[status]
        return await self.ledger.rentals(active=active, provider=provider), stale

    async def _refresh(self, provider: Provider) -> None:
        """Bring the ledger's rentals of one provider up to date, adopting active ones made elsewhere."""
        known = {r.rental_id: r for r in await self.ledger.rentals(provider=provider.name)}
        listing = provider if isinstance(provider, RentListing) else None
        listed = await listing.rent_listing() if listing else []
        unlisted = [
            ref
            for ref in (parse_rental_id(r.rental_id) for r in known.values() if not r.status.ended)
            if listing is None or not listing.listed(ref)
        ]
        for ref in unlisted[:REFRESH_LIMIT]:
            try:
                await self.record(await provider.get_rental(ref))
            except ProviderNotFound:
                log.info("%s no longer knows %s; keeping what the ledger has", provider.display_name, ref)
        for rental in listed:
            if rental.rental_id in known or not rental.status.ended:
                await self.ledger.save_rental(rental)

    async def messages(self, rental_id: str) -> tuple[Rental, list[StoredMessage]]:
        """Every message of a rental: fetched from the provider, stored, then read back from the ledger."""
        ref = parse_rental_id(rental_id)
        rental = await self.rental(ref)
        await self.record_messages(await self.provider(ref.provider).get_messages(ref))
        return rental, await self.ledger.messages(str(ref))

    async def record_messages(self, messages: Sequence[Message]) -> list[Message]:
        """The one way messages are stored: ledger first (a provider may show a message only once), then the
        observers (waiters, subscribers) hear of the new ones."""
        new = await self.ledger.add_messages(messages)
        if new:
            for observer in self.observers:
                await observer(new)
        return new

    async def record(self, receipt: Receipt) -> Rental:
        """A provider's answer about a rental: its messages first, then the rental."""
        await self.record_messages(receipt.messages)
        return await self.ledger.save_rental(receipt.rental)

    # -- Buying ---------------------------------------------------------------------------------------

    async def quote(
        self,
        *,
        max_price: Decimal,
        plan_id: str | None = None,
        service: str | None = None,
        country: str | None = None,
        provider: ProviderName | None = None,
    ) -> Plan:
        """The plan a purchase would buy: the given one, or the cheapest match within `max_price`, at the price
        the provider lists right now."""
        if (plan_id is None) == (service is None):
            raise InvalidInput("Give either plan_id (from list_plans) or service (optionally with country), not both.")
        async with self._refusal_noted(provider, max_price):
            self.guard.check_cap(max_price)
        if plan_id is not None:
            ref = parse_plan_id(plan_id)
            if provider is not None and provider != ref.provider:
                raise InvalidInput(f"plan_id {plan_id} belongs to {ref.provider}, not {provider}; drop provider.")
            listed = await self._provider_plans(self.provider(ref.provider), fresh=True)
            plan = next((p for p in listed if p.plan_id == plan_id), None)
            if plan is None:
                raise InvalidInput(f"No plan {plan_id} is offered now; call list_plans for the current plans.")
        else:
            for p in self._selected(provider):
                self._plans.pop(p.name, None)  # a purchase pays today's price, not a cached one
            matches = await self.plans(service=service, country=country, provider=provider)
            priced = [p for p in matches if p.price is not None]
            where = f" in {country}" if country else ""
            if not priced:
                raise InvalidInput(
                    f"No plan matches service {service!r}{where}; call list_plans to see what is offered."
                )
            plan = next((p for p in priced if p.price is not None and p.price <= max_price), priced[0])
        if plan.price is None:
            raise InvalidInput(
                f"{plan.plan_id} has no published price, so it cannot be bought under a price cap; the owner can set"
                " GETATEXT_LONG_RENTAL_PRICES from the Getatext website."
            )
        async with self._refusal_noted(plan.provider, max_price):
            self.guard.check_price(plan.price, max_price, f"plan {plan.plan_id}")
        return plan

    async def buy(self, plan: Plan, max_price: Decimal) -> Outcome:
        """Rent a number on `plan` (already quoted), spending at most `max_price`."""
        assert plan.price is not None
        async with self._refusal_noted(plan.provider, max_price):
            self.guard.check_price(plan.price, max_price, f"plan {plan.plan_id}")
        provider = self.provider(plan.provider)
        ref = parse_plan_id(plan.plan_id)
        outcome = await self._spend(provider, "rent", max_price, lambda: provider.rent(ref), plan_id=plan.plan_id)
        rental = await self._fill_in(outcome.rental, plan_id=plan.plan_id, price=plan.price, service=plan.service)
        return Outcome(rental, outcome.note)

    async def _fill_in(self, rental: Rental, **known: object) -> Rental:
        """What the purchase itself tells about a new rental, where the provider's answer left it out."""
        defaults = {**known, "started_at": _now()}
        missing = {k: v for k, v in defaults.items() if v is not None and getattr(rental, k) is None}
        return await self.ledger.save_rental(rental.model_copy(update=missing)) if missing else rental

    async def _spend(
        self,
        provider: Provider,
        kind: PurchaseKind,
        max_price: Decimal,
        call: Callable[[], Awaitable[Receipt]],
        *,
        plan_id: str | None = None,
        source_rental_id: str | None = None,
        price: Decimal | None = None,
    ) -> Outcome:
        """Reserve, record the intent, make the one call that spends, and record its outcome.

        `source_rental_id`: the rental extended, renewed or re-rented. `price`: what the purchase costs when the
        provider's answer does not say (a GotSMS transition answers with the rent alone, whose price is not what
        this step charged)."""
        try:
            await self.reconcile(provider.name)
        except ProviderError as err:
            # Still unsettled: the reservation below refuses, saying why.
            log.warning("could not reconcile %s before buying: %s", provider.name, err.message)
        async with self._purchase_lock(provider):
            purchase_id = await self._reserve(
                provider, kind, max_price, plan_id=plan_id, source_rental_id=source_rental_id
            )
            self._inflight[purchase_id] = provider.name
            by_balance = settlement(provider, kind, plan_id) == "balance"
            try:
                return await self._execute(provider, purchase_id, call, price, max_price, note_balance=by_balance)
            finally:
                del self._inflight[purchase_id]
                with anyio.CancelScope(shield=True):
                    await self._release(purchase_id)

    async def _reserve(
        self,
        provider: Provider,
        kind: PurchaseKind,
        max_price: Decimal,
        *,
        plan_id: str | None,
        source_rental_id: str | None,
    ) -> int:
        """Reserve `max_price` for a purchase, atomically with the daily budget check."""
        async with self._refusal_noted(provider.name, max_price):
            return await self.ledger.reserve(
                provider=provider.name,
                kind=kind,
                amount=max_price,
                plan_id=plan_id,
                source_rental_id=source_rental_id,
                check=self.guard.daily_check(max_price, provider.display_name),
            )

    @asynccontextmanager
    async def _refusal_noted(self, provider: str | None, max_price: Decimal) -> AsyncIterator[None]:
        """A money-guard refusal of a purchase of up to `max_price` is recorded in the ledger (for the figures and
        the audit), then raised."""
        try:
            yield
        except GuardRefusal as err:
            await self.ledger.note_refusal(provider=provider, amount=max_price, note=err.message)
            raise

    async def _release(self, purchase_id: int) -> None:
        """Hand a purchase whose call is over to whoever reconciles it; if the ledger cannot say so now, the
        next `recover` does (the purchase is no longer in `_inflight`)."""
        try:
            await self.ledger.release(purchase_id)
        except sqlite3.Error as err:
            log.warning("could not release purchase %d in the ledger (%s); recovery will", purchase_id, err)

    def _purchase_lock(self, provider: Provider) -> AbstractAsyncContextManager[object]:
        """A provider's serialized purchases run one at a time, across every process on this ledger (the balance
        can settle an unknown outcome only then)."""
        if provider.capabilities.serialized_purchases:
            return self.ledger.lock(f"purchase:{provider.name}")
        return nullcontext()

    def _settle_lock(self, provider_name: str) -> AbstractAsyncContextManager[None]:
        """One reconciliation per provider at a time, across every process on this ledger."""
        return self.ledger.lock(f"settle:{provider_name}")

    async def _in_flight(self, provider_name: str, own: int | None = None) -> bool:
        """Whether a purchase call on this provider (other than `own`) is under way, here or in another process."""
        here = any(name == provider_name and pid != own for pid, name in self._inflight.items())
        return here or await self.ledger.in_other_hands(provider_name)

    async def _execute(
        self,
        provider: Provider,
        purchase_id: int,
        call: Callable[[], Awaitable[Receipt]],
        price: Decimal | None,
        max_price: Decimal,
        *,
        note_balance: bool,
    ) -> Outcome:
        """Make the call that spends and record its outcome; `note_balance`: note the balance first, to settle the
        purchase from it should the answer be lost."""
        try:
            if note_balance:
                await self.ledger.note_balance_before(purchase_id, (await provider.get_balance()).amount)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.ledger.settle(purchase_id, "failed", note="the balance check before buying failed")
            raise
        try:
            receipt = await call()
        except ProviderError as err:
            if not err.uncertain:
                await self.ledger.settle(purchase_id, "failed", note=err.message)
                raise
            await self.ledger.settle(purchase_id, "uncertain", note=err.message)
            return await self._recover_now(provider, purchase_id, err)
        except BaseException:
            # Cancelled while the request may have been on its way: keep it counted, settle it later.
            with anyio.CancelScope(shield=True):
                await self.ledger.settle(purchase_id, "uncertain", note="interrupted before the answer arrived")
            raise
        # The provider answered: the outcome is written first, even if the caller is cancelled now.
        charged = price if price is not None else receipt.rental.price
        with anyio.CancelScope(shield=True):
            await self.ledger.settle(purchase_id, "bought", price=charged, rental_id=receipt.rental.rental_id)
            rental = await self.record(receipt)
        if charged is not None and charged > max_price:
            log.warning("%s charged %s for %s, above max_price %s", provider.name, charged, rental.rental_id, max_price)
            note = f"{provider.display_name} charged {charged}, more than max_price {max_price}: its price changed."
            return Outcome(rental, note)
        return Outcome(rental)

    async def _recover_now(self, provider: Provider, purchase_id: int, err: ProviderError) -> Outcome:
        """Right after an unknown outcome, ask the provider once (the caller holds the purchase lock): the rental
        found, or an error saying what is now known; an error while asking leaves the purchase unsettled."""
        try:
            settled = await self._settle_uncertain(provider, own=purchase_id)
        except ProviderError as failure:
            log.warning("could not reconcile %s at once: %s", provider.name, failure.message)
            settled = []
        for purchase, rental in settled:
            if purchase.purchase_id == purchase_id and rental is not None:
                note = "The answer to this purchase was lost, but the rental was found at the provider and recorded."
                return Outcome(rental, note)
        after = await self.ledger.purchase(purchase_id)
        if after is not None and after.state == "not_bought":
            raise ProviderError(
                f"{provider.display_name} did not confirm the purchase and did not make it ({after.note}), so"
                " nothing was bought; you may try again.",
                provider=provider.name,
                status_code=err.status_code,
            ) from err
        if after is not None and after.state == "bought":
            raise ProviderError(
                f"{after.note} It counts as spent; do not buy again for the same code.",
                provider=provider.name,
                status_code=err.status_code,
            ) from err
        raise PurchaseUnsettled(
            f"{err.message} The purchase may or may not have gone through: it counts as spent, and nothing more"
            f" is bought on {provider.display_name} until it is settled. Call list_rentals to check; do not"
            " retry blindly.",
            provider=provider.name,
        ) from err

    # -- Reconciliation -------------------------------------------------------------------------------

    async def recover(self) -> int:
        """What a process that is gone left mid-purchase (this one's predecessor, or another server on this data
        dir that died) has an unknown outcome: uncertain, for reconciliation to settle. Purchases a live process
        is handling are left to it. Returns how many were taken over."""
        taken = await self.ledger.recover_orphans(self._inflight, note="the server stopped mid-purchase")
        if taken:
            log.warning("took over %d purchase(s) left unsettled by a server that stopped", taken)
        return taken

    async def heartbeat(self, every: float = HEARTBEAT_EVERY) -> None:
        """Until cancelled: tell the other processes on this ledger that this one is alive, and settle what those
        that are gone left mid-purchase. After a gap in this process's own beats (a suspended machine) the others
        are not judged at once: their beats paused too."""
        last = time.time()
        while True:
            await self.ledger.beat()
            now = time.time()
            if now - last < every + STALE_AFTER / 2 and await self.recover():
                await self.reconcile_all()
            last = now
            await anyio.sleep(every)

    async def reconcile_all(self) -> None:
        """Settle every provider's uncertain purchases (in the background: at start-up, and when a server that died
        left some)."""
        for name in self.providers:
            try:
                await self.reconcile(name)
            except ProviderError as err:
                log.warning("background reconciliation with %s failed: %s", name, err.message)

    async def reconcile(self, provider_name: str) -> list[tuple[Purchase, Rental | None]]:
        """Settle this provider's uncertain purchases from what it reports; returns what was settled."""
        if not await self._uncertain(provider_name):
            return []
        provider = self.provider(provider_name)
        async with self._purchase_lock(provider):
            return await self._settle_uncertain(provider)

    async def _uncertain(self, provider_name: str, own: int | None = None) -> list[Purchase]:
        """Uncertain purchases to settle: not those a purchase call is still handling (in this process, or in
        another that owns it), except the caller's `own`."""
        return [
            p
            for p in await self.ledger.unsettled(provider_name)
            if p.state == "uncertain"
            and p.owner in (None, self.ledger.owner)
            and (p.purchase_id == own or p.purchase_id not in self._inflight)
        ]

    async def _settle_uncertain(
        self, provider: Provider, own: int | None = None
    ) -> list[tuple[Purchase, Rental | None]]:
        """Settle what `_uncertain` lists, one reconciliation per provider at a time (so two never match the same
        rental); the caller holds the purchase lock."""
        settled: list[tuple[Purchase, Rental | None]] = []
        async with self._settle_lock(provider.name):
            pending = await self._uncertain(provider.name, own)
            if not pending or await self._in_flight(provider.name, own):
                return []  # with other purchases on their way, a new rental could be theirs: settle later
            # Not the purchase's: rentals other purchases bought, and rentals known before it was made. A rental
            # recorded since (adopted by list_rentals while the purchase was in flight) may well be its own.
            taken = await self.ledger.bought_rental_ids(provider.name)
            for purchase in pending:
                known = await self.ledger.rental_ids(provider=provider.name, recorded_before=purchase.created_at)
                rental = await self._settle(provider, purchase, taken | known)
                if rental is not False:
                    settled.append((purchase, rental))
                if isinstance(rental, Rental):
                    taken.add(rental.rental_id)
        return settled

    async def _settle(self, provider: Provider, purchase: Purchase, taken: set[str]) -> Rental | Literal[False] | None:
        """Settle one purchase: the rental it bought, None if nothing (or nothing usable) was bought,
        False if the provider's answer does not decide it yet."""
        pid = purchase.purchase_id
        # Not seeing it yet is no proof: a provider may finish a purchase after the answer was lost.
        window_passed = time.time() - purchase.created_at >= self.settle_after
        how = settlement(provider, purchase.kind, purchase.plan_id)
        if how == "none":
            return False  # nothing can prove it: it stays uncertain, counted as spent
        if isinstance(provider, RentListing) and how == "listing":
            match = _find_bought(purchase, await provider.rent_listing(), taken)
            if match is None:
                if not window_passed:
                    return False
                await self.ledger.settle(pid, "not_bought", note="not found in the provider's list")
                return None
            taken.add(match.rental_id)
            rental = await self.ledger.save_rental(match)
            await self.ledger.settle(pid, "bought", price=match.price, rental_id=match.rental_id, note="reconciled")
            return rental
        if purchase.balance_before is None:
            await self.ledger.settle(pid, "not_bought", note="stopped before the request was sent")
            return None
        # A balance proves a charge, never its absence (a credit may hide it), nor its amount (other debits and
        # credits move it): short of proof that the request never left, the purchase was bought.
        charged = (await provider.get_balance()).amount < purchase.balance_before
        if not charged and not window_passed:
            return False
        seen = "went down meanwhile" if charged else f"showed no charge within {self.settle_after:g} s"
        produced = purchase.source_rental_id if purchase.kind == "renew" else None
        note = (
            f"Unverified: {provider.display_name} never answered and the balance {seen}; counted at its max_price"
            f" {format_money(purchase.max_price)}{'' if produced else ' until its rental is found'}."
        )
        await self.ledger.settle(pid, "bought", rental_id=produced, note=note, verified=False)
        return None

    async def adopt(self, rental_id: str) -> Receipt | None:
        """A rental first heard of by a pushed code (Getatext's webhook): recorded if the provider shows it on this
        account and exactly one purchase can be its own: a rent or re-rent for the same service, made before the
        rental ended, whose answer was lost (uncertain, or bought, unverified, by what the balance showed). Its real
        price then replaces its max_price. None otherwise (a rental its rent listing shows is settled from there),
        and never while a purchase on that provider is in flight (the rental could be that one's)."""
        ref = parse_rental_id(rental_id)
        provider = self.providers.get(ref.provider)
        if provider is None or not provider.capabilities.settle_from_balance:
            return None
        if isinstance(provider, RentListing) and provider.listed(ref):
            return None
        async with self._settle_lock(ref.provider):  # purchases are settled only under this lock
            orphans = await self._orphans(provider)
            if not orphans:
                return None
            receipt = await provider.get_rental(ref)
            found = receipt.rental
            candidates = [
                p
                for p in orphans
                if _same_service(p.plan_id, found.service)
                and (found.ends_at is None or found.ends_at.timestamp() > p.created_at)
            ]
            if len(candidates) != 1 or await self._in_flight(ref.provider) or await self._reserved(ref.provider):
                return None
            (purchase,) = candidates
            rental = await self.ledger.save_rental(
                _with(found, plan_id=found.plan_id or purchase.plan_id, price=found.price or purchase.price)
            )
            await self.ledger.settle(
                purchase.purchase_id, "bought", price=rental.price, rental_id=rental.rental_id, note="found by a push"
            )
            return receipt.model_copy(update={"rental": rental})

    async def _orphans(self, provider: Provider) -> list[Purchase]:
        """Rents and re-rents on `provider`, settled from the balance, that may have bought a rental whose id is not
        known: sent (`balance_before` is noted just before), then their answer was lost."""
        return [
            p
            for p in await self.ledger.purchases()
            if (p.provider, p.kind, p.rental_id) == (provider.name, "rent", None)
            and (p.state == "uncertain" or (p.state, p.verified) == ("bought", False))
            and p.balance_before is not None
            and settlement(provider, p.kind, p.plan_id) == "balance"
        ]

    async def _reserved(self, provider: str) -> bool:
        """Whether a purchase on `provider` is on its way (here, or in another process sharing the ledger)."""
        return any(p.state == "reserved" for p in await self.ledger.unsettled(provider))

    # -- Changing rentals -----------------------------------------------------------------------------

    async def refund(self, rental_id: str) -> RefundOutcome:
        """Give a rental back (GotSMS refund, Getatext cancel-rental or long-rental cancel)."""
        ref = parse_rental_id(rental_id)
        rental = await self.rental(ref)
        provider = self.provider(ref.provider)
        # Not during a serialized purchase: a refund's credit would hide the purchase's charge if its answer were
        # lost, and a long rental's refund is measured on the balance.
        async with self._purchase_lock(provider):
            before = (await provider.get_balance()).amount if ref.long else None
            try:
                receipt = await provider.refund(ref)
            except ProviderError as err:
                if not err.uncertain:
                    raise
                return await self._refund_lost(provider, rental, err)
            updated = await self.record(receipt.model_copy(update={"rental": _given_back_as(provider, receipt.rental)}))
            balance_after = receipt.balance_after
            if balance_after is None:
                balance_after = (await provider.get_balance()).amount
            refunded = balance_after - before if before is not None else receipt.rental.price or rental.price
            if refunded is not None and refunded > 0:
                await self.ledger.note_refund(str(ref), refunded)
        return RefundOutcome(updated, refunded, balance_after)

    async def _refund_lost(self, provider: Provider, rental: Rental, err: ProviderError) -> RefundOutcome:
        """A refund whose answer never came: done if the provider now shows the rental given back, asked at once
        and again after the adapter's timeout (an answer that was only slow has landed by then)."""
        for delay in (0.0, provider.answer_timeout):
            await anyio.sleep(delay)
            try:
                now = (await provider.get_rental(parse_rental_id(rental.rental_id))).rental
            except ProviderError:
                break
            if _given_back(provider, now):
                updated = await self.ledger.save_rental(_given_back_as(provider, rental))
                if rental.price is not None:
                    await self.ledger.note_refund(rental.rental_id, rental.price)
                return RefundOutcome(updated, rental.price, None)
        raise ProviderError(
            f"{err.message} The refund may or may not have gone through (the provider does not show it yet);"
            " check list_rentals later. Asking for the refund again is safe.",
            provider=provider.name,
            status_code=err.status_code,
        ) from err

    async def extension(self, rental_id: str, max_price: Decimal, plan_id: str | None = None) -> Extension:
        """What extending a rental would buy and cost (reads only): a move to the longer `plan_id` (GotSMS), a
        renewal in place (Getatext long rentals), or a new rental of the same number (Getatext re-rent)."""
        ref = parse_rental_id(rental_id)
        async with self._refusal_noted(ref.provider, max_price):
            self.guard.check_cap(max_price)
        rental = await self.rental(ref)
        provider = self.provider(ref.provider)
        style = provider.extension(ref) if isinstance(provider, Extendable) else None
        target: Plan | None = None
        if style is None:
            raise Unsupported(f"{provider.display_name} cannot extend {ref}.")
        if style == "longer_plan":
            if plan_id is None:
                raise InvalidInput(
                    f"{provider.display_name} extends a rental by moving it to a longer plan: pass plan_id of a"
                    " weekly or monthly plan for the same service and country (see list_plans)."
                )
            target = await self.quote(max_price=max_price, plan_id=plan_id)
            price = target.price
        elif plan_id is not None:
            raise InvalidInput(
                f"{provider.display_name} renews or re-rents the same number; call extend_rental without plan_id."
            )
        else:
            price = rental.price if style == "renewal" else await self._current_price(provider, rental)
        if price is None:
            raise InvalidInput(f"The price of extending {ref} is unknown, so it cannot be bought under a price cap.")
        async with self._refusal_noted(ref.provider, max_price):
            self.guard.check_price(price, max_price, f"extending {ref}")
        return Extension(ref, rental, price, target)

    async def extend_quoted(self, extension: Extension, max_price: Decimal) -> Outcome:
        """Buy an extension already quoted (and, where needed, approved)."""
        ref, rental, price, target = extension.ref, extension.rental, extension.price, extension.plan
        provider = self.provider(ref.provider)
        async with self._refusal_noted(ref.provider, max_price):
            self.guard.check_price(price, max_price, f"extending {ref}")
        assert isinstance(provider, Extendable)
        style = provider.extension(ref)
        plan = parse_plan_id(target.plan_id) if target is not None else None

        async def call() -> Receipt:
            return await provider.extend(ref, plan)

        if style == "longer_plan":
            assert target is not None
            outcome = await self._spend(
                provider, "extend", max_price, call, plan_id=target.plan_id, source_rental_id=str(ref), price=price
            )
            try:  # the move's answer has the id and status only; the rent list has the new end and price
                current = (await provider.get_rental(ref)).rental
            except ProviderError:
                current = outcome.rental
            return Outcome(await self.ledger.save_rental(_with(current, plan_id=target.plan_id)), outcome.note)
        kind: PurchaseKind = "renew" if style == "renewal" else "rent"
        outcome = await self._spend(provider, kind, max_price, call, plan_id=rental.plan_id, source_rental_id=str(ref))
        if style == "renewal":
            return outcome
        renewed = await self._fill_in(outcome.rental, plan_id=rental.plan_id, price=price, service=rental.service)
        return Outcome(renewed, outcome.note)

    async def _current_price(self, provider: Provider, rental: Rental) -> Decimal | None:
        """Today's price of the plan a rental was bought on (or of its service)."""
        plans = await self._provider_plans(provider, fresh=True)
        plan = next((p for p in plans if p.plan_id == rental.plan_id or p.service == rental.service), None)
        return plan.price if plan else None

    async def set_auto_renew(self, rental_id: str, enabled: bool) -> Outcome:
        """Set auto-renewal to the wanted state (where it can only be flipped: see `_switch_renewal`)."""
        if enabled:
            self.guard.check_auto_renew()
        ref = parse_rental_id(rental_id)
        provider = self.provider(ref.provider)
        if isinstance(provider, FlipsAutoRenew) and provider.auto_renews(ref):
            await self.rental(ref)
            async with self.ledger.lock(f"rental:{ref}"):  # two switches at once would undo each other
                return await self._switch_renewal(provider, ref, enabled)
        if isinstance(provider, SetsAutoRenew) and provider.auto_renews(ref):
            await self.rental(ref)
            return Outcome(await self.record(await provider.set_auto_renew(ref, enabled)))
        renewing = [p for p in self.providers.values() if isinstance(p, FlipsAutoRenew | SetsAutoRenew)]
        raise Unsupported(_only([f"{p.display_name} {p.auto_renewing}" for p in renewing], "can auto-renew"))

    async def _switch_renewal(self, provider: FlipsAutoRenew, ref: Ref, enabled: bool) -> Outcome:
        """Flip auto-renewal if the rental shows the other state; never from a state it does not show. A flip that
        lands on the wrong state (it was changed elsewhere since it was read) is flipped back, and the ledger keeps
        the state the provider last reported."""
        who = provider.display_name
        wanted = "on" if enabled else "off"
        current = (await provider.get_rental(ref)).rental
        if current.auto_renew is None:
            raise ProviderError(
                f"{who} does not show whether auto-renew is on for {ref}, and it can only flip it, so nothing was"
                f" changed; turn it {wanted} on the {who} website.",
                provider=provider.name,
            )
        if current.auto_renew is enabled:
            return Outcome(await self.ledger.save_rental(current))
        landed = await provider.flip_auto_renew(ref)
        if landed is enabled:
            return Outcome(await self.ledger.save_rental(_with(current, auto_renew=landed)))
        after = (await provider.get_rental(ref)).rental.auto_renew
        if after is not None and after is not enabled:
            after = await provider.flip_auto_renew(ref)  # flip back what this call flipped
        saved = await self.ledger.save_rental(_with(current, auto_renew=after))
        if after is enabled:
            return Outcome(saved, f"{who} first answered that auto-renew was {_on_off(landed)}; it is {wanted} now.")
        raise ProviderError(
            f"{who} did not turn auto-renew {wanted} for {ref} (it is {_on_off(after)} now); check it with"
            " list_rentals before trying again.",
            provider=provider.name,
        )

    async def finish(self, rental_id: str) -> Outcome:
        """Mark a rental completed (the code was used), where the provider has that."""
        ref = parse_rental_id(rental_id)
        provider = self.provider(ref.provider)
        if not (isinstance(provider, Finishable) and provider.finishes(ref)):
            able = [p for p in self.providers.values() if isinstance(p, Finishable)]
            finishing = [f"{p.display_name} {p.finishing}" for p in able]
            raise Unsupported(
                f"{_only(finishing, 'can be marked completed')}; other rentals end on their own, or with refund"
                " while they are refundable."
            )
        await self.rental(ref)
        return Outcome(await self.record(await provider.finish_rental(ref)))

    async def wake_up(self, rental_id: str) -> NumberStatus:
        """Wake a sleeping number; an already awake or queued number just reports its windows."""
        ref = parse_rental_id(rental_id)
        provider = self.provider(ref.provider)
        if not isinstance(provider, Wakeable):
            sleeping = [p.display_name for p in self.providers.values() if isinstance(p, Wakeable)]
            raise Unsupported(
                f"{_only([f'{name} numbers' for name in sleeping], 'sleep')}; {provider.display_name} numbers are"
                " always online."
            )
        await self.rental(ref)
        status = await provider.number_state(ref)
        if status.can_wake_up:
            try:
                await provider.wake_number(ref)
            except (ProviderRejected, CancelNotAllowed) as err:  # woken meanwhile (another call, the website)
                log.info("wake-up of %s refused: %s", ref, err.message)
            status = await provider.number_state(ref)
        await self.ledger.save_rental(
            Rental(
                rental_id=str(ref),
                provider=ref.provider,
                wake_from=status.wake_from,
                wake_till=status.wake_till,
                can_wake_up=status.can_wake_up,
            )
        )
        return status


def settlement(provider: Provider, kind: PurchaseKind, plan_id: str | None) -> Settlement:
    """How a purchase whose answer was lost is settled: from the provider's rent listing where it shows what the
    purchase makes (a new rental on its plan, or its rental moved to that plan; not a renewal in place), else from
    the balance where the provider allows it, else not at all: it stays uncertain, counted as spent."""
    listing = isinstance(provider, RentListing) and plan_id is not None and provider.listed(parse_plan_id(plan_id))
    if listing and kind != "renew":
        return "listing"
    return "balance" if provider.capabilities.settle_from_balance else "none"


def _find_bought(purchase: Purchase, listed: Sequence[Rental], taken: set[str]) -> Rental | None:
    """The rental a purchase made: a new rental on its plan, or (an extension) its source now on the new plan."""
    if purchase.kind != "rent":
        wanted = (purchase.source_rental_id, purchase.plan_id)
        return next((r for r in listed if (r.rental_id, r.plan_id) == wanted), None)
    slack = DAY if ":long:" in (purchase.plan_id or "") else 300.0  # long rentals only carry a start date
    since = datetime.fromtimestamp(purchase.created_at - slack, UTC)
    fresh = [
        r
        for r in listed
        if r.rental_id not in taken
        and r.plan_id == purchase.plan_id
        and (r.started_at is None or r.started_at >= since)
    ]
    return min(fresh, key=lambda r: r.started_at or since, default=None)


def _now() -> datetime:
    return datetime.now(UTC)


def _given_back_as(provider: Provider, rental: Rental) -> Rental:
    """A rental given back, with the status the provider shows for a refund."""
    return _with(rental, status=provider.capabilities.refund_status)


def _given_back(provider: Provider, rental: Rental) -> bool:
    """Whether the provider shows a refund: refunded or cancelled, or (where it does so) finished before its time."""
    if rental.status in (RentalStatus.REFUNDED, RentalStatus.CANCELLED):
        return True
    early = rental.ends_at is not None and rental.ends_at > _now()
    return provider.capabilities.refund_ends_early and rental.status is RentalStatus.COMPLETED and early


def _with(rental: Rental, **changes: object) -> Rental:
    return rental.model_copy(update=changes)


def _only(which: Sequence[str], can: str) -> str:
    """`Only GotSMS numbers sleep`, from what the configured providers offer."""
    return f"Only {' and '.join(which)} {can}" if which else f"No configured provider's rentals {can}"


def _on_off(state: bool | None) -> str:
    return "unknown" if state is None else "on" if state else "off"


def _same_service(plan_id: str | None, service: str | None) -> bool:
    """Whether a rental of `service` (the provider's display name) can be one bought on `plan_id`; an unknown
    service does not rule it out."""
    if plan_id is None or service is None:
        return service is None

    def norm(text: str) -> str:
        return "".join(c for c in text.casefold() if c.isalnum())

    code, name = norm(parse_plan_id(plan_id).local_id), norm(service)
    return bool(code and name) and (code in name or name in code)


def _service_matches(plan: Plan, wanted: str | None) -> bool:
    if not wanted:
        return True
    want = wanted.strip().casefold()
    names = [n.casefold() for n in (plan.service, plan.service_code) if n]
    return any(want == n for n in names) or want in plan.service.casefold()


def _country_matches(plan: Plan, wanted: str | None) -> bool:
    if not wanted:
        return True
    if plan.country is None:
        return False

    def norm(text: str) -> str:
        key = text.strip().casefold()
        return _COUNTRY_ALIASES.get(key, key)

    return norm(plan.country) == norm(wanted)
