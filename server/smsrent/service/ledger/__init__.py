"""The ledger: rentals, every received message, each rental's `wait_for_code` cursor, every purchase from intent
to outcome, the processes sharing it and their locks, so nothing is lost across restarts or between servers.

One interface (`Ledger`), two backends: an SQLite file (`sqlite.SqliteLedger`, the embedded default, shared by
the servers of one machine) and PostgreSQL (`postgres.PostgresLedger`, for replicas on any number of machines,
when SMSRENT_DATABASE_URL is set). This module holds what both share: the record types, the money rules, and
`open_ledger`. Times are seconds since the epoch (`time.time()` values); on PostgreSQL they come from the
database's clock, so `now()` is the one to compare them with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal, Protocol, cast

import anyio
from pydantic import SecretStr

from smsrent.domain.models import Message, Rental, RentalStatus

DAY = 86400.0
HEARTBEAT_EVERY = 5.0  # seconds between a process's heartbeats
STALE_AFTER = 30.0  # a process whose heartbeat is older than this is gone (crashed, or its machine did)
LEAD_POLL = 1.0  # seconds between a follower's attempts at a leadership (failover takes about this long)
LEAD_CHECK = 1.0  # seconds between a leader's checks that it still leads
DEFAULT_AGENT = "owner"  # the agent (the owner) of every purchase, rental and refusal until agents exist

PurchaseState = Literal["reserved", "bought", "failed", "uncertain", "not_bought"]
PurchaseKind = Literal["rent", "extend", "renew"]
UNSETTLED: tuple[PurchaseState, ...] = ("reserved", "uncertain")
Check = Callable[[Decimal, int, Decimal], None]
"""What a reservation checks, atomically with it: (money committed in 24 h by everyone, this provider's uncertain
purchases, money committed in 24 h by the purchase's agent); it may refuse by raising."""


class LedgerUnusable(Exception):
    """The ledger cannot be used safely (the server refuses to start); the message says what to do."""


@dataclass(frozen=True)
class Purchase:
    purchase_id: int
    provider: str
    kind: PurchaseKind
    plan_id: str | None
    rental_id: str | None  # the rental it produced (an extension or a renewal: its source), once known
    max_price: Decimal
    price: Decimal | None
    state: PurchaseState
    balance_before: Decimal | None
    note: str | None
    created_at: float
    source_rental_id: str | None  # the rental it extends, renews or re-rents
    verified: bool  # False: bought by what the balance showed, counted at max_price until its rental is found
    owner: str | None = None  # the process whose purchase call is handling it, while it runs


@dataclass(frozen=True)
class Wait:
    """A rental some process wants codes for, in epoch seconds (scheduling hints, never money): the rental's start
    when a `wait_for_code` waits on it (how far back the poller reads; None: nobody waits, a code only became
    expected), and when a code last became expected (a rent, a wake-up, a first wait), by that process's clock."""

    started: float | None
    expected: float


Heard = Callable[[Sequence[Message]], Awaitable[None]]


@dataclass(frozen=True)
class StoredMessage:
    message: Message
    stored_at: float
    returned: bool


@dataclass(frozen=True)
class Charge:
    """A purchase as the figures count it: what it charged (`bought` only) and what was refunded of it."""

    provider: str
    kind: PurchaseKind
    state: PurchaseState
    charged: Decimal
    refunded: Decimal
    created_at: float
    agent: str = DEFAULT_AGENT


@dataclass(frozen=True)
class Refusal:
    """A purchase the money guard refused before anything was sent; `provider` is None when none was chosen yet."""

    provider: str | None
    amount: Decimal
    note: str
    created_at: float
    agent: str = DEFAULT_AGENT


@dataclass(frozen=True)
class RentalRecord:
    """A rental with when the ledger first recorded it and how many messages it received."""

    rental: Rental
    recorded_at: float
    messages: int
    agent: str = DEFAULT_AGENT


@dataclass(frozen=True)
class AuditEntry:
    """Something done with money or a credential: a purchase, refund, extension, renewal change, refusal, or a
    failed authentication (no agent then: the presented credential's fingerprint, never the credential)."""

    at: float
    agent: str | None
    action: str  # the tool, or `authenticate`
    outcome: str  # ok, refused, failed, unauthenticated
    rental_id: str | None = None
    amount: Decimal | None = None
    detail: str | None = None
    credential: str | None = None  # the fingerprint of a refused credential


@dataclass(frozen=True)
class Handover:
    """A message `wait_for_code` returned: the provider's `received_at` and the moment the waiter got it."""

    rental_id: str
    received_at: datetime | None
    returned_at: float
    agent: str = DEFAULT_AGENT

    @property
    def delay(self) -> float:
        """Seconds from the SMS's arrival at the provider to the waiter, clamped at zero (clocks differ)."""
        arrived = self.returned_at if self.received_at is None else self.received_at.timestamp()
        return max(0.0, self.returned_at - arrived)


class Ledger(Protocol):
    """What the services need of a ledger; each open ledger is one process of it (`owner`, a random token)."""

    owner: str

    async def close(self) -> None:
        """Unregister this process (what it still held is taken over by the others) and let go of the store."""

    async def now(self) -> float:
        """The ledger's clock (the database's, on PostgreSQL): what stored times are measured against."""
        ...

    # -- Processes and locks
    async def beat(self) -> None:
        """Tell the other processes on this ledger that this one is alive (registering it if it was not)."""

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Hold the ledger lock `name`: one holder at a time among this process's tasks and every process on this
        ledger (a holder that is gone loses it)."""
        ...

    async def release(self, purchase_id: int) -> None:
        """This process's purchase call is over: the purchase is no longer in its hands."""

    async def recover_orphans(self, busy: Collection[int], note: str) -> int:
        """Take over the unsettled purchases no live process is handling (see `is_orphan`): each becomes uncertain
        (a reserved one with `note`) without an owner. Forgets the processes that are gone; returns how many
        purchases were taken over."""
        ...

    async def in_other_hands(self, provider: str) -> bool:
        """Whether another process is handling a purchase of `provider`."""
        ...

    # -- One poller per provider account
    async def lead(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Wait until this process leads `name` among every process on this ledger (one leader at a time; a leader
        that is gone loses it), then run `work` while leading. Returns when `work` does; if the leadership is
        lost (the database went away), `work` is cancelled and LedgerUnavailable raised."""

    async def publish_waits(self, waits: Mapping[str, Wait]) -> None:
        """Replace this process's waits with `waits` (by rental id), so that whichever process polls learns of
        them."""

    async def waits(self) -> dict[str, Wait]:
        """Every other live process's waits, merged per rental (`merge_waits`)."""
        ...

    async def pause(self, provider: str, seconds: float) -> None:
        """A rate limit (429): `provider`'s account pauses for `seconds` from now (the ledger's clock), for
        whichever process polls it (a new leader too)."""

    async def paused(self, provider: str) -> float:
        """Seconds left of `provider`'s pause (0 when none)."""
        ...

    async def listen(self, heard: Heard, waits_changed: Callable[[], Awaitable[None]]) -> None:
        """Until cancelled: `heard` hears of the messages other processes store (each once, after its commit),
        `waits_changed` of their waits changing (where the backend can tell). Reconnects by itself."""

    # -- Rentals
    async def save_rental(self, rental: Rental) -> Rental:
        """Record what a provider said about a rental, merged over what was known (`merge`); returns the result."""
        ...

    async def rental(self, rental_id: str) -> Rental | None: ...

    async def rentals(
        self, *, active: bool | None = None, provider: str | None = None, agent: str | None = None
    ) -> list[Rental]:
        """Rentals, newest first; `active=True` only active ones, `False` only ended ones; `agent`: only its."""
        ...

    async def agents(self, rental_ids: Collection[str]) -> dict[str, str]:
        """The agent each known rental belongs to: the agent of the purchase that bought it, else the owner (a
        rental from before agents, or adopted from a provider's listing)."""
        ...

    async def rental_ids(self, *, provider: str, recorded_before: float) -> set[str]:
        """Ids of this provider's rentals that the ledger already knew at `recorded_before`."""
        ...

    # -- Messages
    async def add_messages(self, messages: Sequence[Message]) -> list[Message]:
        """Store messages not seen before (by message id), oldest first; returns the new ones."""
        ...

    async def known_messages(self, message_ids: Sequence[str]) -> set[str]: ...

    async def messages(self, rental_id: str) -> list[StoredMessage]:
        """Every stored message of a rental, oldest first, with whether `wait_for_code` returned it."""
        ...

    async def recent_messages(self, limit: int = 20, agent: str | None = None) -> list[Message]:
        """The latest messages, newest first; `agent`: only those of its rentals."""
        ...

    async def claim_next(self, rental_id: str, *, at: float | None = None) -> Message | None:
        """Advance the rental's `wait_for_code` cursor: the oldest message not returned before, now returned (`at`:
        the moment recorded as the hand-over, default now). Two claims never return the same message."""
        ...

    # -- Purchases
    async def reserve(
        self,
        *,
        provider: str,
        kind: PurchaseKind,
        amount: Decimal,
        plan_id: str | None = None,
        source_rental_id: str | None = None,
        agent: str = DEFAULT_AGENT,
        check: Check = ...,
    ) -> int:
        """Record `agent`'s purchase intent reserving `amount`, handled by this process, atomically (against every
        process) with `check` (see `Check`), which may refuse it."""
        ...

    async def note_balance_before(self, purchase_id: int, balance: Decimal) -> None: ...

    async def settle(
        self,
        purchase_id: int,
        state: PurchaseState,
        *,
        price: Decimal | None = None,
        rental_id: str | None = None,
        note: str | None = None,
        verified: bool = True,
    ) -> None:
        """Record a purchase's outcome (what earlier steps recorded is kept where this one says nothing)."""

    async def note_refund(self, rental_id: str, amount: Decimal) -> None:
        """Credit a refund against the latest purchase that bought the rental, up to what it cost."""

    async def bought_rental_ids(self, provider: str) -> set[str]: ...

    async def unsettled(self, provider: str | None = None) -> list[Purchase]:
        """Purchases still reserved or uncertain, oldest first."""
        ...

    async def purchase(self, purchase_id: int) -> Purchase | None: ...

    async def purchases(self) -> list[Purchase]: ...

    async def committed(self, agent: str | None = None) -> Decimal:
        """Money spent or reserved in the last 24 h (`committed_sum`); `agent`: by that agent only."""
        ...

    # -- Figures (metrics, report, dashboard) and the audit
    async def note_refusal(
        self, *, provider: str | None, amount: Decimal, note: str, agent: str = DEFAULT_AGENT
    ) -> None: ...

    async def charges(self, since: float = 0.0) -> list[Charge]:
        """Every purchase made since `since`, oldest first (`charge`)."""
        ...

    async def refusals(self, since: float = 0.0) -> list[Refusal]: ...

    async def rental_records(self, since: float = 0.0) -> list[RentalRecord]:
        """Rentals first recorded since `since`, oldest first, with their message counts."""
        ...

    async def handovers(self, since: float = 0.0) -> list[Handover]:
        """Messages `wait_for_code` returned since `since`, in the order it returned them."""
        ...

    async def audit(self, entry: AuditEntry) -> None:
        """Append to the audit trail (`entry.at` is replaced by the ledger's clock)."""

    async def audit_entries(self, since: float = 0.0, agent: str | None = None) -> list[AuditEntry]:
        """The audit trail since `since`, oldest first; `agent`: only its entries."""
        ...


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


async def open_ledger(path: Path | str, database_url: SecretStr | None = None) -> Ledger:
    """The PostgreSQL ledger at `database_url` if one is given (its schema must be current: see `smsrent-mcp
    migrate`), else the SQLite ledger at `path` (created and migrated as needed; `":memory:"` for a throwaway one).
    psycopg is imported only here, when a database URL is configured."""
    if database_url is not None:
        from smsrent.service.ledger.postgres import PostgresLedger

        return await PostgresLedger.open(database_url)
    from smsrent.service.ledger.sqlite import SqliteLedger

    return await SqliteLedger.open(path)


# -- The rules both backends apply ------------------------------------------------------------------------


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
