"""The rules both ledger backends apply, in Python so that the two cannot drift apart: the money sums, the merges
of what providers and processes say, the records read from stored rows, and the holding of locks and leaderships."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import cast

import anyio

from smsrent.domain.models import Message, Rental, RentalStatus
from smsrent.service.ledger import (
    UNSETTLED,
    AuditEntry,
    Charge,
    Purchase,
    PurchaseKind,
    PurchaseState,
    Wait,
)

# The audit table's columns in the order `audit_entry` reads them.
AUDIT_COLUMNS = "at, agent, action, outcome, rental_id, amount, detail, credential"


async def while_held(work: Callable[[], Awaitable[None]], held: Callable[[], Awaitable[None]]) -> bool:
    """Run `work` beside `held`, which returns once a hold (a leadership) is lost: then `work` is cancelled. True if
    the hold was lost; an exception of `work` propagates as it was raised (not in a group)."""
    lost, failure = False, None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal lost
            await held()
            lost = True
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            await work()
        except Exception as err:
            failure = err
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return lost


def no_check(_committed: Decimal, _uncertain: int, _by_agent: Decimal) -> None:
    """A reservation without limits."""


@asynccontextmanager
async def queued(locks: dict[str, anyio.Lock], name: str) -> AsyncIterator[None]:
    """This process's tasks in turn for the ledger lock `name` (one of them at a time tries the ledger's); the local
    lock is dropped once no task waits for it."""
    local = locks.setdefault(name, anyio.Lock())
    async with local:
        try:
            yield
        finally:
            if not local.statistics().tasks_waiting:
                locks.pop(name, None)


def committed_sum(rows: Iterable[Sequence[object]]) -> Decimal:
    """Money committed by the last 24 h's purchases given as (state, max_price, price, refunded): bought at its
    price (its reserved cap when none is known) less refunds, reserved and uncertain at their cap, others nothing."""
    total = Decimal(0)
    for state, max_price, price, refunded, *_ in rows:
        if state == "bought":
            total += _money(price if price is not None else max_price) - _money(refunded or 0)
        elif state in UNSETTLED:
            total += _money(max_price)
    return total


def charge(
    provider: str,
    kind: PurchaseKind,
    state: PurchaseState,
    max_price: object,
    price: object,
    refunded: object,
    created_at: float,
    agent: str,
) -> Charge:
    """A purchase as the figures count it: a bought one charged its price (its cap when the provider gave none)."""
    charged = _money(price if price is not None else max_price) if state == "bought" else Decimal(0)
    return Charge(provider, kind, state, charged, _money(refunded or 0), created_at, agent)


def committed_split(rows: Sequence[Sequence[object]], agent: str) -> tuple[Decimal, Decimal]:
    """Money committed in 24 h by everyone and by `agent`, from (state, max_price, price, refunded, agent) rows."""
    return committed_sum(rows), committed_sum(row for row in rows if row[4] == agent)


def audit_entry(row: Sequence[object]) -> AuditEntry:
    """An audit entry from (at, agent, action, outcome, rental_id, amount, detail, credential) columns."""
    at, agent, action, outcome, rental_id, amount, detail, credential = row
    return AuditEntry(
        at=float(str(at)),
        agent=None if agent is None else str(agent),
        action=str(action),
        outcome=str(outcome),
        rental_id=None if rental_id is None else str(rental_id),
        amount=None if amount is None else _money(amount),
        detail=None if detail is None else str(detail),
        credential=None if credential is None else str(credential),
    )


def merge(known: Rental, update: Rental) -> Rental:
    """Fields the new answer carries win, except that an answer without a status keeps the known one,
    and a refund or cancellation we recorded is not replaced by the provider's generic "finished"."""
    fields = {name: value for name in Rental.model_fields if (value := getattr(update, name)) is not None}
    keep_status = (update.status is RentalStatus.UNKNOWN and update.provider_status is None) or (
        known.status in (RentalStatus.REFUNDED, RentalStatus.CANCELLED) and update.status is RentalStatus.COMPLETED
    )
    if keep_status:
        fields.pop("status")
    return known.model_copy(update=fields)


def in_arrival_order(messages: Sequence[Message], now: float) -> list[Message]:
    """Messages as stored (`storable`): those without a provider time get `now`, then oldest first (providers may
    list newest first; the cursor hands out messages in the order stored)."""
    first_seen = datetime.fromtimestamp(now, UTC)
    timed = [storable(m if m.received_at else m.model_copy(update={"received_at": first_seen})) for m in messages]
    return sorted(timed, key=lambda m: m.received_at or first_seen)


def merge_waits(rows: Iterable[tuple[str, float | None, float]]) -> dict[str, Wait]:
    """Waits given as (rental_id, started, expected) merged per rental: the earliest start (None if nobody waits),
    the latest expectation."""
    merged: dict[str, Wait] = {}
    for rental_id, started, expected in rows:
        known = merged.get(rental_id)
        if known is not None:
            starts = [s for s in (known.started, started) if s is not None]
            started, expected = min(starts, default=None), max(known.expected, expected)
        merged[rental_id] = Wait(started, expected)
    return merged


def storable(message: Message) -> Message:
    """The message as both backends store it: a NUL (an SMS may carry one; a PostgreSQL text column refuses it)
    becomes U+FFFD in every field."""
    fields = {
        name: value.replace("\x00", "\ufffd")
        for name in Message.model_fields
        if isinstance(value := getattr(message, name), str) and "\x00" in value
    }
    return message.model_copy(update=fields) if fields else message


def is_orphan(
    purchase_id: int, state: str, owner: str | None, *, me: str, busy: Collection[int], live: Collection[str]
) -> bool:
    """Whether recovery takes over an unsettled purchase. Without an owner: a reservation only (a store from before
    owners). This process's own: handled while reserved, or while its call runs (`busy` lists it only once
    `reserve` has returned); an uncertain one outside `busy` kept its owner through a failed `release`. Another
    process's: only when that process is gone."""
    if owner is None:
        return state == "reserved"
    if owner == me:
        return state == "uncertain" and purchase_id not in busy
    return owner not in live


def purchase_from_row(row: Sequence[object]) -> Purchase:
    """A purchase from its columns, in the order of `Purchase`'s fields."""
    (
        pid,
        provider,
        kind,
        plan_id,
        rental_id,
        max_price,
        price,
        state,
        before,
        note,
        created,
        source,
        verified,
        owner,
    ) = row
    return Purchase(
        purchase_id=int(str(pid)),
        provider=str(provider),
        kind=cast(PurchaseKind, kind),
        plan_id=None if plan_id is None else str(plan_id),
        rental_id=None if rental_id is None else str(rental_id),
        max_price=_money(max_price),
        price=None if price is None else _money(price),
        state=cast(PurchaseState, state),
        balance_before=None if before is None else _money(before),
        note=None if note is None else str(note),
        created_at=float(str(created)),
        source_rental_id=None if source is None else str(source),
        verified=bool(verified),
        owner=None if owner is None else str(owner),
    )


def _money(value: object) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))
