"""The ledger: rentals, every received message, each rental's `wait_for_code` cursor, every purchase from intent
to outcome, the processes sharing it and their locks, so nothing is lost across restarts or between servers.

One interface (`Ledger`), two backends: an SQLite file (`sqlite.SqliteLedger`, the embedded default, shared by
the servers of one machine) and PostgreSQL (`postgres.PostgresLedger`, for replicas on any number of machines,
when SMSRENT_DATABASE_URL is set). This module holds what both share: the record types, the protocol, and
`open_ledger`; `rules` holds the rules both apply. Times are seconds since the epoch (`time.time()` values); on
PostgreSQL they come from the database's clock, so `now()` is the one to compare them with.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal, Protocol

from pydantic import SecretStr

from smsrent.domain.models import Message, Rental

DAY = 86400.0
HEARTBEAT_EVERY = 5.0  # seconds between a process's heartbeats
STALE_AFTER = 30.0  # a process whose heartbeat is older than this is gone (crashed, or its machine did)
LEAD_POLL = 1.0  # seconds between a follower's attempts at a leadership (failover takes about this long)
LEAD_CHECK = 1.0  # seconds between a leader's checks that it still leads
LOCK_POLL = 0.05  # seconds between attempts at a ledger lock another process holds
HOST = socket.gethostname()
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
        """Take over the unsettled purchases no live process is handling (see `rules.is_orphan`): each becomes uncertain
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
        """Every other live process's waits, merged per rental (`rules.merge_waits`)."""
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
        """Record what a provider said about a rental, merged over what was known (`rules.merge`); returns the
        result."""
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
        """Money spent or reserved in the last 24 h (`rules.committed_sum`); `agent`: by that agent only."""
        ...

    # -- Figures (metrics, report, dashboard) and the audit
    async def note_refusal(
        self, *, provider: str | None, amount: Decimal, note: str, agent: str = DEFAULT_AGENT
    ) -> None: ...

    async def charges(self, since: float = 0.0) -> list[Charge]:
        """Every purchase made since `since`, oldest first (`rules.charge`)."""
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


async def open_ledger(path: Path | str, database_url: SecretStr | None = None) -> Ledger:
    """The PostgreSQL ledger at `database_url` if one is given (its schema must be current: see `smsrent-mcp
    migrate`), else the SQLite ledger at `path` (created and migrated as needed; `":memory:"` for a throwaway one).
    psycopg is imported only here, when a database URL is configured."""
    if database_url is not None:
        from smsrent.service.ledger.postgres import PostgresLedger

        return await PostgresLedger.open(database_url)
    from smsrent.service.ledger.sqlite import SqliteLedger

    return await SqliteLedger.open(path)
