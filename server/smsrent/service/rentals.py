"""Rentals: reads and changes of the rentals on the configured providers (balances, the rental list, messages,
purchases through the purchase protocol, refunds, extensions, auto-renewal, finishing, wake-ups).

Every rental belongs to an agent (the one whose purchase bought it; the owner for rentals from before agents and
for those adopted from a provider's listing). A caller (`Principal`) sees and acts on its own rentals only; to it,
another agent's rental is exactly an unknown one. An admin sees every rental, and acts on any with `spend`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

import anyio

from smsrent.config import SETTLE_AFTER
from smsrent.domain.errors import (
    CancelNotAllowed,
    InvalidInput,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    UnknownRental,
    Unsupported,
)
from smsrent.domain.ids import ProviderName, Ref, parse_plan_id, parse_rental_id
from smsrent.domain.models import Balance, Message, NumberStatus, Plan, Receipt, Rental, RentalStatus
from smsrent.domain.principal import OWNER, Principal
from smsrent.providers.base import (
    Extendable,
    Finishable,
    FlipsAutoRenew,
    Provider,
    RentListing,
    SetsAutoRenew,
    Wakeable,
)
from smsrent.service.accounts import Accounts
from smsrent.service.catalogue import Catalogue
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger import Ledger, PurchaseKind, StoredMessage
from smsrent.service.purchases import Outcome, Purchases

log = logging.getLogger("smsrent.rentals")

REFRESH_LIMIT = 25  # active rentals no rent listing shows, re-checked one by one per list_rentals call
RentalFilter = Literal["active", "ended", "all"]


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
        self.providers = Accounts(providers)
        self.ledger = ledger
        self.guard = guard
        self.observers: list[Callable[[Sequence[Message]], Awaitable[None]]] = []
        self.catalogue = Catalogue(self.providers)
        self.purchases = Purchases(self.providers, ledger, guard, record=self.record, settle_after=settle_after)

    def provider(self, name: str) -> Provider:
        return self.providers.require(name)

    # -- Reading --------------------------------------------------------------------------------------

    async def balances(self, provider: ProviderName | None = None) -> tuple[list[Balance], dict[str, str]]:
        """Each selected provider's balance, and the providers that could not say."""
        return await self.providers.each(provider, lambda p: p.get_balance())

    async def budget_left(self, caller: Principal = OWNER) -> Decimal | None:
        """What `caller` may still commit in the rolling 24 h under the server's and its own daily budget; None
        (and no ledger read) when neither is set."""
        if self.guard.daily_budget is None and caller.daily_budget is None:
            return None
        committed, by_caller = await self.ledger.committed(), await self.ledger.committed(caller.name)
        return self.guard.remaining(committed, by_caller, caller)

    async def rental(self, rental_id: str | Ref, caller: Principal = OWNER) -> Rental:
        """A rental of the caller's from the ledger; one it does not know, or another agent's, is refused (in the
        same words) before any network call (list_rentals adopts rentals made elsewhere, on the provider's website
        say)."""
        ref = rental_id if isinstance(rental_id, Ref) else parse_rental_id(rental_id)
        known = await self.ledger.rental(str(ref))
        if known is not None and not caller.is_admin:
            known = known if (await self.ledger.agents([known.rental_id])).get(known.rental_id) == caller.name else None
        if known is None:
            raise UnknownRental(
                f"No rental {ref} is known here; call list_rentals to see your rentals (it also picks up rentals"
                " made on the provider's website).",
                provider=ref.provider,
            )
        return known

    async def list_rentals(
        self, status: RentalFilter = "active", provider: ProviderName | None = None, caller: Principal = OWNER
    ) -> tuple[list[Rental], dict[str, str]]:
        """The caller's rentals (an admin's: all) from the ledger after refreshing them from the providers; failures
        to refresh are reported."""
        stale: dict[str, str] = {}
        for p in self.providers.selected(provider):
            try:
                await self.purchases.reconcile(p.name)
                await self._refresh(p)
            except ProviderError as err:
                stale[p.name] = err.message
        active = {"active": True, "ended": False, "all": None}[status]
        agent = None if caller.is_admin else caller.name
        return await self.ledger.rentals(active=active, provider=provider, agent=agent), stale

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

    async def messages(self, rental_id: str, caller: Principal = OWNER) -> tuple[Rental, list[StoredMessage]]:
        """Every message of a caller's rental: fetched from the provider, stored, then read back from the ledger."""
        ref = parse_rental_id(rental_id)
        rental = await self.rental(ref, caller)
        await self.record_messages(await self.provider(ref.provider).get_messages(ref))
        return rental, await self.ledger.messages(str(ref))

    async def record_messages(self, messages: Sequence[Message]) -> list[Message]:
        """The one way messages are stored: ledger first (a provider may show a message only once), then the
        observers (waiters, subscribers) hear of the new ones."""
        new = await self.ledger.add_messages(messages)
        await self.heard(new)
        return new

    async def heard(self, messages: Sequence[Message]) -> None:
        """The observers hear of newly stored messages: stored here, or by another process on the ledger (each
        process tells its own waiters and subscribers, so each hears once)."""
        if messages:
            for observer in self.observers:
                await observer(messages)

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
        caller: Principal = OWNER,
    ) -> Plan:
        """The plan a purchase would buy: the given one, or the cheapest match within `max_price`, at the price
        the provider lists right now."""
        if (plan_id is None) == (service is None):
            raise InvalidInput("Give either plan_id (from list_plans) or service (optionally with country), not both.")
        async with self.purchases.refusal_noted(provider, max_price, caller):
            self.guard.check_cap(max_price, caller)
        if plan_id is not None:
            ref = parse_plan_id(plan_id)
            if provider is not None and provider != ref.provider:
                raise InvalidInput(f"plan_id {plan_id} belongs to {ref.provider}, not {provider}; drop provider.")
            plan = await self.catalogue.offered(plan_id)
        else:
            assert service is not None
            plan = await self.catalogue.cheapest(service, country, provider, max_price)
        if plan.price is None:
            raise InvalidInput(
                f"{plan.plan_id} has no published price, so it cannot be bought under a price cap; the owner can set"
                " GETATEXT_LONG_RENTAL_PRICES from the Getatext website."
            )
        async with self.purchases.refusal_noted(plan.provider, max_price, caller):
            self.guard.check_price(plan.price, max_price, f"plan {plan.plan_id}", caller)
        return plan

    async def buy(self, plan: Plan, max_price: Decimal, caller: Principal = OWNER) -> Outcome:
        """Rent a number on `plan` (already quoted) for the caller, spending at most `max_price`."""
        assert plan.price is not None
        async with self.purchases.refusal_noted(plan.provider, max_price, caller):
            self.guard.check_price(plan.price, max_price, f"plan {plan.plan_id}", caller)
        provider = self.provider(plan.provider)
        ref = parse_plan_id(plan.plan_id)
        outcome = await self.purchases.spend(
            provider, "rent", max_price, lambda: provider.rent(ref), plan_id=plan.plan_id, caller=caller
        )
        rental = await self._fill_in(outcome.rental, plan_id=plan.plan_id, price=plan.price, service=plan.service)
        return Outcome(rental, outcome.note)

    async def _fill_in(self, rental: Rental, **known: object) -> Rental:
        """What the purchase itself tells about a new rental, where the provider's answer left it out."""
        defaults = {**known, "started_at": _now()}
        missing = {k: v for k, v in defaults.items() if v is not None and getattr(rental, k) is None}
        return await self.ledger.save_rental(rental.model_copy(update=missing)) if missing else rental

    # -- Changing rentals -----------------------------------------------------------------------------

    async def refund(self, rental_id: str, caller: Principal = OWNER) -> RefundOutcome:
        """Give a caller's rental back (GotSMS refund, Getatext cancel-rental or long-rental cancel)."""
        ref = parse_rental_id(rental_id)
        rental = await self.rental(ref, caller)
        provider = self.provider(ref.provider)
        # Not during a serialized purchase: a refund's credit would hide the purchase's charge if its answer were
        # lost, and a long rental's refund is measured on the balance.
        async with self.purchases.purchase_lock(provider):
            before = (await provider.get_balance()).amount if ref.long else None
            try:
                receipt = await provider.refund(ref)
            except ProviderError as err:
                if not err.uncertain:
                    raise
                return await self._refund_lost(provider, rental, err)
            # Given back: a one-time rental's credit and the rental are written whatever happens to the call now.
            refunded = None if before is not None else receipt.rental.price or rental.price
            given_back = receipt.model_copy(update={"rental": _given_back_as(provider, receipt.rental)})
            with anyio.CancelScope(shield=True):
                await self._credit(ref, refunded)
                updated = await self.record(given_back)
            balance_after = receipt.balance_after
            if balance_after is None:
                try:
                    balance_after = (await provider.get_balance()).amount
                except ProviderError as err:  # the refund went through: it is credited all the same
                    log.warning("could not read the %s balance after a refund: %s", provider.name, err.message)
            if before is not None:  # a long rental's refund is what the balance shows: unknown, it stays counted
                refunded = None if balance_after is None else balance_after - before
                await self._credit(ref, refunded)
        return RefundOutcome(updated, refunded, balance_after)

    async def _credit(self, ref: Ref, refunded: Decimal | None) -> None:
        if refunded is not None and refunded > 0:
            await self.ledger.note_refund(str(ref), refunded)

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

    async def extension(
        self, rental_id: str, max_price: Decimal, plan_id: str | None = None, caller: Principal = OWNER
    ) -> Extension:
        """What extending a caller's rental would buy and cost (reads only): a move to the longer `plan_id`
        (GotSMS), a renewal in place (Getatext long rentals), or a new rental of the same number (Getatext
        re-rent)."""
        ref = parse_rental_id(rental_id)
        async with self.purchases.refusal_noted(ref.provider, max_price, caller):
            self.guard.check_cap(max_price, caller)
        rental = await self.rental(ref, caller)
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
            target = await self.quote(max_price=max_price, plan_id=plan_id, caller=caller)
            price = target.price
        elif plan_id is not None:
            raise InvalidInput(
                f"{provider.display_name} renews or re-rents the same number; call extend_rental without plan_id."
            )
        else:
            price = rental.price if style == "renewal" else await self._current_price(provider, rental)
        if price is None:
            raise InvalidInput(f"The price of extending {ref} is unknown, so it cannot be bought under a price cap.")
        async with self.purchases.refusal_noted(ref.provider, max_price, caller):
            self.guard.check_price(price, max_price, f"extending {ref}", caller)
        return Extension(ref, rental, price, target)

    async def extend_quoted(self, extension: Extension, max_price: Decimal, caller: Principal = OWNER) -> Outcome:
        """Buy an extension already quoted (and, where needed, approved) for the caller."""
        ref, rental, price, target = extension.ref, extension.rental, extension.price, extension.plan
        provider = self.provider(ref.provider)
        async with self.purchases.refusal_noted(ref.provider, max_price, caller):
            self.guard.check_price(price, max_price, f"extending {ref}", caller)
        assert isinstance(provider, Extendable)
        style = provider.extension(ref)
        plan = parse_plan_id(target.plan_id) if target is not None else None

        async def call() -> Receipt:
            return await provider.extend(ref, plan)

        if style == "longer_plan":
            assert target is not None
            outcome = await self.purchases.spend(
                provider,
                "extend",
                max_price,
                call,
                plan_id=target.plan_id,
                source_rental_id=str(ref),
                price=price,
                caller=caller,
            )
            try:  # the move's answer has the id and status only; the rent list has the new end and price
                current = (await provider.get_rental(ref)).rental
            except ProviderError:
                current = outcome.rental
            return Outcome(await self.ledger.save_rental(_with(current, plan_id=target.plan_id)), outcome.note)
        kind: PurchaseKind = "renew" if style == "renewal" else "rent"
        outcome = await self.purchases.spend(
            provider, kind, max_price, call, plan_id=rental.plan_id, source_rental_id=str(ref), caller=caller
        )
        if style == "renewal":
            return outcome
        renewed = await self._fill_in(outcome.rental, plan_id=rental.plan_id, price=price, service=rental.service)
        return Outcome(renewed, outcome.note)

    async def _current_price(self, provider: Provider, rental: Rental) -> Decimal | None:
        """Today's price of the plan a rental was bought on (or of its service)."""
        plans = await self.catalogue.listed(provider, fresh=True)
        plan = next((p for p in plans if p.plan_id == rental.plan_id or p.service == rental.service), None)
        return plan.price if plan else None

    async def set_auto_renew(self, rental_id: str, enabled: bool, caller: Principal = OWNER) -> Outcome:
        """Set auto-renewal to the wanted state (where it can only be flipped: see `_switch_renewal`)."""
        if enabled:
            self.guard.check_auto_renew(caller)
        ref = parse_rental_id(rental_id)
        provider = self.provider(ref.provider)
        if isinstance(provider, FlipsAutoRenew) and provider.auto_renews(ref):
            await self.rental(ref, caller)
            async with self.ledger.lock(f"rental:{ref}"):  # two switches at once would undo each other
                return await self._switch_renewal(provider, ref, enabled)
        if isinstance(provider, SetsAutoRenew) and provider.auto_renews(ref):
            await self.rental(ref, caller)
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

    async def finish(self, rental_id: str, caller: Principal = OWNER) -> Outcome:
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
        await self.rental(ref, caller)
        return Outcome(await self.record(await provider.finish_rental(ref)))

    async def wake_up(self, rental_id: str, caller: Principal = OWNER) -> NumberStatus:
        """Wake a sleeping number; an already awake or queued number just reports its windows."""
        ref = parse_rental_id(rental_id)
        provider = self.provider(ref.provider)
        if not isinstance(provider, Wakeable):
            sleeping = [p.display_name for p in self.providers.values() if isinstance(p, Wakeable)]
            raise Unsupported(
                f"{_only([f'{name} numbers' for name in sleeping], 'sleep')}; {provider.display_name} numbers are"
                " always online."
            )
        await self.rental(ref, caller)
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
