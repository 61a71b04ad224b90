"""The ledger: one SQLite file (WAL) holding rentals, every received message, each rental's
`wait_for_code` cursor, and every purchase from intent to outcome, so nothing is lost across restarts.

All access goes through one worker thread at a time (`anyio.to_thread`), so the event loop never
blocks and in-process calls are serialised; `BEGIN IMMEDIATE` also serialises other processes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal, TypeVar, cast

import anyio
import anyio.to_thread

from smsrent.domain.models import Message, Rental, RentalStatus
from smsrent.observe.tracing import traced_write

T = TypeVar("T")
DAY = 86400.0
OWNER = "owner"  # the agent of every purchase, rental and refusal until agents exist

PurchaseState = Literal["reserved", "bought", "failed", "uncertain", "not_bought"]
PurchaseKind = Literal["rent", "extend", "renew"]
UNSETTLED: tuple[PurchaseState, ...] = ("reserved", "uncertain")

# Each entry moves the schema one version up; `PRAGMA user_version` records how far a file has come.
MIGRATIONS = (
    """
    CREATE TABLE rentals (
        rental_id TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        status TEXT NOT NULL,
        data TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL UNIQUE,
        rental_id TEXT NOT NULL,
        data TEXT NOT NULL,
        stored_at REAL NOT NULL,
        returned_at REAL
    );
    CREATE INDEX messages_by_rental ON messages (rental_id, seq);
    CREATE TABLE purchases (
        purchase_id INTEGER PRIMARY KEY AUTOINCREMENT,
        provider TEXT NOT NULL,
        kind TEXT NOT NULL,
        plan_id TEXT,
        rental_id TEXT,
        max_price TEXT NOT NULL,
        price TEXT,
        refunded TEXT,
        state TEXT NOT NULL,
        balance_before TEXT,
        note TEXT,
        created_at REAL NOT NULL,
        settled_at REAL
    );
    CREATE INDEX purchases_by_time ON purchases (created_at);
    """,
    # The rental a purchase extends or re-rents (`source_rental_id`) apart from the one it produced
    # (`rental_id`), and whether a bought purchase was verified. Before, a re-rent carried its source as
    # `rental_id`: still unsettled, or bought again after the source's own purchase, it had not learned its own.
    """
    ALTER TABLE purchases ADD COLUMN source_rental_id TEXT;
    ALTER TABLE purchases ADD COLUMN verified INTEGER NOT NULL DEFAULT 1;
    UPDATE purchases SET source_rental_id = rental_id WHERE kind IN ('extend', 'renew');
    UPDATE purchases SET source_rental_id = rental_id, rental_id = NULL
     WHERE kind = 'rent' AND rental_id IS NOT NULL AND (state IN ('reserved', 'uncertain') OR EXISTS (
        SELECT 1 FROM purchases AS earlier WHERE earlier.kind = 'rent' AND earlier.rental_id = purchases.rental_id
         AND earlier.purchase_id < purchases.purchase_id));
    """,
    """
    CREATE TABLE refusals (
        refusal_id INTEGER PRIMARY KEY AUTOINCREMENT,
        provider TEXT,
        amount TEXT NOT NULL,
        note TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX refusals_by_time ON refusals (created_at);
    CREATE INDEX messages_by_return ON messages (returned_at);
    """,
)


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
    agent: str = OWNER


@dataclass(frozen=True)
class Refusal:
    """A purchase the money guard refused before anything was sent; `provider` is None when none was chosen yet."""

    provider: str | None
    amount: Decimal
    note: str
    created_at: float
    agent: str = OWNER


@dataclass(frozen=True)
class RentalRecord:
    """A rental with when the ledger first recorded it and how many messages it received."""

    rental: Rental
    recorded_at: float
    messages: int
    agent: str = OWNER


@dataclass(frozen=True)
class Handover:
    """A message `wait_for_code` returned: the provider's `received_at` and the moment the waiter got it."""

    rental_id: str
    received_at: datetime | None
    returned_at: float
    agent: str = OWNER

    @property
    def delay(self) -> float:
        """Seconds from the SMS's arrival at the provider to the waiter, clamped at zero (clocks differ)."""
        arrived = self.returned_at if self.received_at is None else self.received_at.timestamp()
        return max(0.0, self.returned_at - arrived)


class Ledger:
    """Async facade over one SQLite connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path | str) -> Ledger:
        """Open (creating and migrating as needed) the ledger at `path`; `":memory:"` for a throwaway one."""
        return cls(await anyio.to_thread.run_sync(_connect, str(path)))

    async def close(self) -> None:
        await self._run(self._db.close)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    @traced_write
    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one immediate transaction (committed, or rolled back if it raises)."""

        def transaction() -> T:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

        return await self._run(transaction)

    # -- Rentals ------------------------------------------------------------------------------------

    async def save_rental(self, rental: Rental) -> Rental:
        """Record what a provider said about a rental, merged over what was known; returns the merged rental."""

        def save(db: sqlite3.Connection) -> Rental:
            now = time.time()
            row = db.execute("SELECT data FROM rentals WHERE rental_id = ?", (rental.rental_id,)).fetchone()
            merged = _merge(Rental.model_validate_json(row[0]), rental) if row else rental
            db.execute(
                "INSERT INTO rentals (rental_id, provider, status, data, recorded_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rental_id) DO UPDATE SET"
                " status = excluded.status, data = excluded.data, updated_at = excluded.updated_at",
                (merged.rental_id, merged.provider, merged.status, merged.model_dump_json(), now, now),
            )
            return merged

        return await self._write(save)

    async def rental(self, rental_id: str) -> Rental | None:
        def read() -> Rental | None:
            row = self._db.execute("SELECT data FROM rentals WHERE rental_id = ?", (rental_id,)).fetchone()
            return Rental.model_validate_json(row[0]) if row else None

        return await self._run(read)

    async def rentals(self, *, active: bool | None = None, provider: str | None = None) -> list[Rental]:
        """Rentals, newest first; `active=True` only active ones, `False` only ended ones."""

        def read() -> list[Rental]:
            rows = self._db.execute("SELECT data FROM rentals ORDER BY recorded_at DESC").fetchall()
            found = [Rental.model_validate_json(r[0]) for r in rows]
            return [
                r
                for r in found
                if (provider is None or r.provider == provider) and (active is None or active != r.status.ended)
            ]

        return await self._run(read)

    async def rental_ids(self, *, provider: str, recorded_before: float) -> set[str]:
        """Ids of this provider's rentals that the ledger already knew at `recorded_before` (a `time.time()`)."""

        def read() -> set[str]:
            query = "SELECT rental_id FROM rentals WHERE provider = ? AND recorded_at < ?"
            return {row[0] for row in self._db.execute(query, (provider, recorded_before))}

        return await self._run(read)

    # -- Messages -----------------------------------------------------------------------------------

    async def add_messages(self, messages: Sequence[Message]) -> list[Message]:
        """Store messages not seen before, oldest first (providers may list newest first: the cursor hands out
        messages in the order stored); returns the new ones."""

        def add(db: sqlite3.Connection) -> list[Message]:
            now, new = time.time(), []
            first_seen = datetime.fromtimestamp(now, UTC)  # for a message the provider gave no time
            timed = [m if m.received_at else m.model_copy(update={"received_at": first_seen}) for m in messages]
            for message in sorted(timed, key=lambda m: m.received_at or first_seen):
                cursor = db.execute(
                    "INSERT OR IGNORE INTO messages (message_id, rental_id, data, stored_at) VALUES (?, ?, ?, ?)",
                    (message.message_id, message.rental_id, message.model_dump_json(), now),
                )
                if cursor.rowcount:
                    new.append(message)
            return new

        return await self._write(add) if messages else []

    async def known_messages(self, message_ids: Sequence[str]) -> set[str]:
        def read() -> set[str]:
            marks = ",".join("?" * len(message_ids))
            query = f"SELECT message_id FROM messages WHERE message_id IN ({marks})"
            return {row[0] for row in self._db.execute(query, tuple(message_ids))}

        return await self._run(read) if message_ids else set()

    async def messages(self, rental_id: str) -> list[StoredMessage]:
        """Every stored message of a rental, oldest first, with whether `wait_for_code` returned it."""

        def read() -> list[StoredMessage]:
            rows = self._db.execute(
                "SELECT data, stored_at, returned_at FROM messages WHERE rental_id = ? ORDER BY seq", (rental_id,)
            ).fetchall()
            return [StoredMessage(Message.model_validate_json(d), s, r is not None) for d, s, r in rows]

        return await self._run(read)

    async def recent_messages(self, limit: int = 20) -> list[Message]:
        def read() -> list[Message]:
            rows = self._db.execute("SELECT data FROM messages ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
            return [Message.model_validate_json(r[0]) for r in rows]

        return await self._run(read)

    async def claim_next(self, rental_id: str, *, at: float | None = None) -> Message | None:
        """Advance the rental's `wait_for_code` cursor: the oldest message not returned before, now returned
        (`at`: the moment recorded as the hand-over, default now)."""

        def claim(db: sqlite3.Connection) -> Message | None:
            row = db.execute(
                "UPDATE messages SET returned_at = ? WHERE seq = (SELECT MIN(seq) FROM messages"
                " WHERE rental_id = ? AND returned_at IS NULL) RETURNING data",
                (time.time() if at is None else at, rental_id),
            ).fetchone()
            return Message.model_validate_json(row[0]) if row else None

        return await self._write(claim)

    # -- Purchases ----------------------------------------------------------------------------------

    async def reserve(
        self,
        *,
        provider: str,
        kind: PurchaseKind,
        amount: Decimal,
        plan_id: str | None = None,
        source_rental_id: str | None = None,
        check: Callable[[Decimal, int], None] = lambda _committed, _uncertain: None,
    ) -> int:
        """Record a purchase intent reserving `amount`, atomically with `check(committed_24h, uncertain_here)`,
        which may refuse it (uncertain_here: this provider's purchases whose outcome is unknown).
        `source_rental_id`: the rental it extends, renews or re-rents."""

        def insert(db: sqlite3.Connection) -> int:
            now = time.time()
            (uncertain,) = db.execute(
                "SELECT COUNT(*) FROM purchases WHERE provider = ? AND state = 'uncertain'", (provider,)
            ).fetchone()
            check(_committed(db, now), uncertain)
            cursor = db.execute(
                "INSERT INTO purchases (provider, kind, plan_id, source_rental_id, max_price, state, created_at)"
                " VALUES (?, ?, ?, ?, ?, 'reserved', ?)",
                (provider, kind, plan_id, source_rental_id, str(amount), now),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return await self._write(insert)

    async def note_balance_before(self, purchase_id: int, balance: Decimal) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE purchases SET balance_before = ? WHERE purchase_id = ?", (str(balance), purchase_id)
            )
        )

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
        """Record a purchase's outcome (`uncertain` keeps it counted at its reserved amount until reconciled;
        bought but not `verified`, without a price, it stays counted at that amount)."""
        settled_at = None if state in UNSETTLED else time.time()
        await self._write(
            lambda db: db.execute(
                "UPDATE purchases SET state = ?, price = COALESCE(?, price), rental_id = COALESCE(?, rental_id),"
                " note = COALESCE(?, note), verified = ?, settled_at = ? WHERE purchase_id = ?",
                (state, None if price is None else str(price), rental_id, note, verified, settled_at, purchase_id),
            )
        )

    async def note_refund(self, rental_id: str, amount: Decimal) -> None:
        """Credit a refund against the latest purchase that bought the rental, up to what it cost."""

        def credit(db: sqlite3.Connection) -> None:
            row = db.execute(
                "SELECT purchase_id, COALESCE(price, max_price) FROM purchases WHERE rental_id = ? AND kind = 'rent'"
                " AND state = 'bought' ORDER BY purchase_id DESC LIMIT 1",
                (rental_id,),
            ).fetchone()
            if row:
                purchase_id, cost = row
                credited = min(amount, Decimal(cost))
                db.execute("UPDATE purchases SET refunded = ? WHERE purchase_id = ?", (str(credited), purchase_id))

        await self._write(credit)

    async def bought_rental_ids(self, provider: str) -> set[str]:
        """Rentals this provider's settled purchases bought (a reconciliation must not give them to another)."""

        def read() -> set[str]:
            query = "SELECT rental_id FROM purchases WHERE provider = ? AND state = 'bought' AND rental_id IS NOT NULL"
            return {row[0] for row in self._db.execute(query, (provider,))}

        return await self._run(read)

    async def unsettled(self, provider: str | None = None) -> list[Purchase]:
        """Purchases still reserved or uncertain, oldest first."""

        def read() -> list[Purchase]:
            rows = self._db.execute(
                f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE state IN ('reserved', 'uncertain')"
                " AND (? IS NULL OR provider = ?) ORDER BY purchase_id",
                (provider, provider),
            ).fetchall()
            return [_purchase(row) for row in rows]

        return await self._run(read)

    async def purchase(self, purchase_id: int) -> Purchase | None:
        def read() -> Purchase | None:
            query = f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE purchase_id = ?"
            row = self._db.execute(query, (purchase_id,)).fetchone()
            return _purchase(row) if row else None

        return await self._run(read)

    async def purchases(self) -> list[Purchase]:
        def read() -> list[Purchase]:
            rows = self._db.execute(f"SELECT {_PURCHASE_COLUMNS} FROM purchases ORDER BY purchase_id").fetchall()
            return [_purchase(row) for row in rows]

        return await self._run(read)

    async def committed(self) -> Decimal:
        """Money spent or reserved in the last 24 h: bought (less refunds), plus reserved and uncertain at their cap."""
        return await self._run(lambda: _committed(self._db, time.time()))

    # -- Figures (metrics, report, dashboard) ---------------------------------------------------------

    async def note_refusal(self, *, provider: str | None, amount: Decimal, note: str) -> None:
        """Record a purchase of up to `amount` that the money guard refused (nothing was sent to a provider)."""
        await self._write(
            lambda db: db.execute(
                "INSERT INTO refusals (provider, amount, note, created_at) VALUES (?, ?, ?, ?)",
                (provider, str(amount), note, time.time()),
            )
        )

    async def charges(self, since: float = 0.0) -> list[Charge]:
        """Every purchase made since `since` (a `time.time()`), oldest first; a bought one charged its price
        (its reserved cap when the provider gave none), any other nothing."""

        def read() -> list[Charge]:
            rows = self._db.execute(
                "SELECT provider, kind, state, max_price, price, refunded, created_at FROM purchases"
                " WHERE created_at >= ? ORDER BY purchase_id",
                (since,),
            ).fetchall()
            return [
                Charge(
                    provider=provider,
                    kind=kind,
                    state=state,
                    charged=Decimal(price or max_price) if state == "bought" else Decimal(0),
                    refunded=Decimal(refunded or 0),
                    created_at=created,
                )
                for provider, kind, state, max_price, price, refunded, created in rows
            ]

        return await self._run(read)

    async def refusals(self, since: float = 0.0) -> list[Refusal]:
        def read() -> list[Refusal]:
            rows = self._db.execute(
                "SELECT provider, amount, note, created_at FROM refusals WHERE created_at >= ? ORDER BY refusal_id",
                (since,),
            ).fetchall()
            return [Refusal(provider, Decimal(amount), note, created) for provider, amount, note, created in rows]

        return await self._run(read)

    async def rental_records(self, since: float = 0.0) -> list[RentalRecord]:
        """Rentals first recorded since `since`, oldest first, with their message counts."""

        def read() -> list[RentalRecord]:
            rows = self._db.execute(
                "SELECT r.data, r.recorded_at, (SELECT COUNT(*) FROM messages m WHERE m.rental_id = r.rental_id)"
                " FROM rentals r WHERE r.recorded_at >= ? ORDER BY r.recorded_at",
                (since,),
            ).fetchall()
            return [RentalRecord(Rental.model_validate_json(data), at, count) for data, at, count in rows]

        return await self._run(read)

    async def handovers(self, since: float = 0.0) -> list[Handover]:
        """Messages `wait_for_code` returned since `since`, in the order it returned them."""

        def read() -> list[Handover]:
            rows = self._db.execute(
                "SELECT data, returned_at FROM messages WHERE returned_at >= ? ORDER BY returned_at, seq", (since,)
            ).fetchall()
            handed = [(Message.model_validate_json(data), at) for data, at in rows]
            return [Handover(m.rental_id, m.received_at, at) for m, at in handed]

        return await self._run(read)


_PURCHASE_COLUMNS = (
    "purchase_id, provider, kind, plan_id, rental_id, max_price, price, state, balance_before, note, created_at,"
    " source_rental_id, verified"
)


def _purchase(row: tuple[object, ...]) -> Purchase:
    pid, provider, kind, plan_id, rental_id, max_price, price, state, before, note, created, source, verified = row
    return Purchase(
        purchase_id=int(str(pid)),
        provider=str(provider),
        kind=cast(PurchaseKind, kind),
        plan_id=None if plan_id is None else str(plan_id),
        rental_id=None if rental_id is None else str(rental_id),
        max_price=Decimal(str(max_price)),
        price=None if price is None else Decimal(str(price)),
        state=cast(PurchaseState, state),
        balance_before=None if before is None else Decimal(str(before)),
        note=None if note is None else str(note),
        created_at=float(str(created)),
        source_rental_id=None if source is None else str(source),
        verified=bool(verified),
    )


def _committed(db: sqlite3.Connection, now: float) -> Decimal:
    rows = db.execute(
        "SELECT state, max_price, price, refunded FROM purchases WHERE created_at >= ? AND state IN"
        " ('reserved', 'uncertain', 'bought')",
        (now - DAY,),
    ).fetchall()
    total = Decimal(0)
    for state, max_price, price, refunded in rows:
        if state == "bought":
            total += Decimal(price or max_price) - Decimal(refunded or 0)
        else:
            total += Decimal(max_price)
    return total


def _merge(known: Rental, update: Rental) -> Rental:
    """Fields the new answer carries win, except that an answer without a status keeps the known one,
    and a refund or cancellation we recorded is not replaced by the provider's generic "finished"."""
    fields = {name: value for name in Rental.model_fields if (value := getattr(update, name)) is not None}
    keep_status = (update.status is RentalStatus.UNKNOWN and update.provider_status is None) or (
        known.status in (RentalStatus.REFUNDED, RentalStatus.CANCELLED) and update.status is RentalStatus.COMPLETED
    )
    if keep_status:
        fields.pop("status")
    return known.model_copy(update=fields)


def _connect(path: str) -> sqlite3.Connection:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        db.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;")
    return db
