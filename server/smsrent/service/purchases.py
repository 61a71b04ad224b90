"""The purchase protocol, the money-critical core: reserve, call, settle, reconcile, adopt.

A purchase is recorded as an intent (reserving its max price) before the request, and as an outcome after. A
purchase whose outcome is unknown is never retried: it stays counted as spent and blocks further purchases on that
provider until `reconcile` finds out what happened, from what the provider declares can prove it (`settlement`):
its rent listing, or its balance, which proves a charge but never its absence, nor its amount (a purchase settled
from the balance is bought, unverified, and counted at its max price until its rental is found). Where nothing can
prove it, it stays uncertain.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

import anyio

from smsrent.config import SETTLE_AFTER
from smsrent.domain.errors import GuardRefusal, LedgerUnavailable, ProviderError, PurchaseUnsettled
from smsrent.domain.ids import parse_plan_id, parse_rental_id
from smsrent.domain.models import Receipt, Rental, format_money
from smsrent.domain.principal import OWNER, Principal
from smsrent.providers.base import Provider, RentListing
from smsrent.service.accounts import Accounts
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger import DAY, HEARTBEAT_EVERY, STALE_AFTER, Ledger, Purchase, PurchaseKind

log = logging.getLogger("smsrent.purchases")

Settlement = Literal["listing", "balance", "none"]
_UNRECORDED = (
    "The ledger's database cannot be reached to record it, so it counts as spent and is recorded once the database"
    " answers (the server reconnects by itself); do not buy again: call list_rentals in a minute."
)


@dataclass(frozen=True)
class Outcome:
    """What an action did to a rental, with a note for the caller when something needs attention."""

    rental: Rental
    note: str | None = None


class Purchases:
    """Purchases on the configured providers, under the money guard, recorded in the ledger."""

    def __init__(
        self,
        accounts: Accounts,
        ledger: Ledger,
        guard: MoneyGuard,
        *,
        record: Callable[[Receipt], Awaitable[Rental]],
        settle_after: float = SETTLE_AFTER,
    ) -> None:
        """`record`: how a provider's answer about a new rental is stored (its messages, then the rental)."""
        self.accounts = accounts
        self.ledger = ledger
        self.guard = guard
        self.record = record
        self.settle_after = settle_after
        self._inflight: dict[int, str] = {}  # purchase id -> provider, while its call runs
        # Outcomes the ledger's database was down for, by purchase id: the heartbeat writes them once it answers
        # (the purchase stays reserved by this process meanwhile, so no other takes it over).
        self._unwritten: dict[int, Callable[[], Awaitable[object]]] = {}

    async def spend(
        self,
        provider: Provider,
        kind: PurchaseKind,
        max_price: Decimal,
        call: Callable[[], Awaitable[Receipt]],
        *,
        plan_id: str | None = None,
        source_rental_id: str | None = None,
        price: Decimal | None = None,
        caller: Principal = OWNER,
    ) -> Outcome:
        """Reserve, record the intent, make the one call that spends, and record its outcome.

        `source_rental_id`: the rental extended, renewed or re-rented. `price`: what the purchase costs when the
        provider's answer does not say (a GotSMS transition answers with the rent alone, whose price is not what
        this step charged). `caller`: whose purchase it is (its budget and the server's both apply)."""
        try:
            await self.reconcile(provider.name)
        except ProviderError as err:
            # Still unsettled: the reservation below refuses, saying why.
            log.warning("could not reconcile %s before buying: %s", provider.name, err.message)
        async with self.purchase_lock(provider):
            purchase_id = await self._reserve(
                provider, kind, max_price, plan_id=plan_id, source_rental_id=source_rental_id, caller=caller
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
        caller: Principal,
    ) -> int:
        """Reserve `max_price` for the caller's purchase, atomically with the daily budget checks."""
        async with self.refusal_noted(provider.name, max_price, caller):
            return await self.ledger.reserve(
                provider=provider.name,
                kind=kind,
                amount=max_price,
                plan_id=plan_id,
                source_rental_id=source_rental_id,
                agent=caller.name,
                check=self.guard.daily_check(max_price, provider.display_name, caller),
            )

    @asynccontextmanager
    async def refusal_noted(
        self, provider: str | None, max_price: Decimal, caller: Principal = OWNER
    ) -> AsyncIterator[None]:
        """A money-guard refusal of the caller's purchase of up to `max_price` is recorded in the ledger (for the
        figures and the audit), then raised."""
        try:
            yield
        except GuardRefusal as err:
            await self.ledger.note_refusal(provider=provider, amount=max_price, note=err.message, agent=caller.name)
            raise

    async def _release(self, purchase_id: int) -> None:
        """Hand a purchase whose call is over to whoever reconciles it; if the ledger cannot say so now, the
        next `recover` does (the purchase is no longer in `_inflight`). Never the caller's error: the outcome is
        what it reports."""
        try:
            await self.ledger.release(purchase_id)
        except Exception as err:
            log.warning("could not release purchase %d in the ledger (%s); recovery will", purchase_id, err)

    async def _write_or_keep(self, purchase_id: int, write: Callable[[], Awaitable[object]]) -> bool:
        """Write a purchase's outcome now, or, the ledger's database being down, keep it for the heartbeat to write
        once the database answers. Whether it was written now."""
        try:
            await write()
        except LedgerUnavailable as err:
            log.warning("purchase %d is recorded once the ledger's database answers: %s", purchase_id, err.why)
            self._unwritten[purchase_id] = write
            return False
        return True

    async def _write_kept(self) -> None:
        """Write the outcomes kept while the ledger's database was down."""
        for purchase_id, write in list(self._unwritten.items()):
            await write()
            del self._unwritten[purchase_id]
            log.warning("purchase %d recorded now that the ledger's database answers", purchase_id)

    def purchase_lock(self, provider: Provider) -> AbstractAsyncContextManager[object]:
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
        settle = functools.partial(self.ledger.settle, purchase_id)
        try:
            receipt = await call()
        except ProviderError as err:
            if not err.uncertain:
                await self._write_or_keep(purchase_id, functools.partial(settle, "failed", note=err.message))
                raise
            if not await self._write_or_keep(purchase_id, functools.partial(settle, "uncertain", note=err.message)):
                raise PurchaseUnsettled(f"{err.message} {_UNRECORDED}", provider=provider.name) from err
            return await self._recover_now(provider, purchase_id, err)
        except BaseException:
            # Cancelled while the request may have been on its way: keep it counted, settle it later.
            with anyio.CancelScope(shield=True):
                note = "interrupted before the answer arrived"
                await self._write_or_keep(purchase_id, functools.partial(settle, "uncertain", note=note))
            raise
        # The provider answered: the outcome is written first, even if the caller is cancelled now.
        charged = price if price is not None else receipt.rental.price
        bought = functools.partial(self._record_bought, purchase_id, charged, receipt)
        with anyio.CancelScope(shield=True):
            try:
                rental = await bought()
            except LedgerUnavailable as err:
                await self._write_or_keep(purchase_id, bought)
                raise PurchaseUnsettled(
                    f"{provider.display_name} sold {receipt.rental.rental_id}. {_UNRECORDED}", provider=provider.name
                ) from err
        if charged is not None and charged > max_price:
            log.warning("%s charged %s for %s, above max_price %s", provider.name, charged, rental.rental_id, max_price)
            note = f"{provider.display_name} charged {charged}, more than max_price {max_price}: its price changed."
            return Outcome(rental, note)
        return Outcome(rental)

    async def _record_bought(self, purchase_id: int, charged: Decimal | None, receipt: Receipt) -> Rental:
        await self.ledger.settle(purchase_id, "bought", price=charged, rental_id=receipt.rental.rental_id)
        return await self.record(receipt)

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
        last, missed = time.time(), 0
        while True:
            try:
                await self.ledger.beat()
                if missed:
                    log.warning("the ledger's database answers again after %d missed heartbeats", missed)
                missed = 0
                await self._write_kept()
                now = time.time()
                if now - last < every + STALE_AFTER / 2 and await self.recover():
                    await self.reconcile_all()
                last = now
            except LedgerUnavailable as err:  # beat again as soon as the database is back, not after a back-off
                if not missed:
                    log.warning("cannot tell the other servers this one is alive: %s", err.why or err.message)
                missed += 1
            await anyio.sleep(every)

    async def reconcile_all(self) -> None:
        """Settle every provider's uncertain purchases (in the background: at start-up, and when a server that died
        left some)."""
        for name in self.accounts:
            try:
                await self.reconcile(name)
            except ProviderError as err:
                log.warning("background reconciliation with %s failed: %s", name, err.message)

    async def reconcile(self, provider_name: str) -> list[tuple[Purchase, Rental | None]]:
        """Settle this provider's uncertain purchases from what it reports; returns what was settled."""
        if not await self._uncertain(provider_name):
            return []
        provider = self.accounts.require(provider_name)
        async with self.purchase_lock(provider):
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
        window_passed = await self.ledger.now() - purchase.created_at >= self.settle_after  # the ledger's clock
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
        provider = self.accounts.get(ref.provider)
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
                found.model_copy(
                    update={"plan_id": found.plan_id or purchase.plan_id, "price": found.price or purchase.price}
                )
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


def _same_service(plan_id: str | None, service: str | None) -> bool:
    """Whether a rental of `service` (the provider's display name) can be one bought on `plan_id`; an unknown
    service does not rule it out."""
    if plan_id is None or service is None:
        return service is None

    def norm(text: str) -> str:
        return "".join(c for c in text.casefold() if c.isalnum())

    code, name = norm(parse_plan_id(plan_id).local_id), norm(service)
    return bool(code and name) and (code in name or name in code)
