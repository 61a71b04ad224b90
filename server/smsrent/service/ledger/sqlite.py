"""The SQLite ledger, the embedded default: one file (WAL) holding rentals, every received message, each
rental's `wait_for_code` cursor, and every purchase from intent to outcome, so nothing is lost across restarts.

All access goes through one worker thread at a time (`anyio.to_thread`), so the event loop never
blocks and in-process calls are serialised; `BEGIN IMMEDIATE` also serialises other processes.

Several servers may share one file (Claude Desktop and Claude Code on the default data dir). Each open
ledger registers its process (host, pid, a random token, a heartbeat); a purchase in flight names the
process handling it, and a ledger lock names its holder. What belongs to a process that is gone (its
heartbeat stale, or on this host its pid ended) is taken over: nothing of a live process is. One of them polls
each provider account (`lead`, a ledger lock, checked every LEAD_CHECK seconds) for the waits all of them
publish; the others hear of stored messages by reading the new rows every LISTEN_POLL seconds (`listen`).
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from smsrent.domain.errors import LedgerUnavailable
from smsrent.domain.models import Message, Rental
from smsrent.observe.tracing import traced_write
from smsrent.service.ledger import (
    DAY,
    DEFAULT_AGENT,
    LEAD_CHECK,
    LEAD_POLL,
    STALE_AFTER,
    UNSETTLED,
    AuditEntry,
    Charge,
    Check,
    Handover,
    Heard,
    LedgerUnusable,
    Purchase,
    PurchaseKind,
    PurchaseState,
    Refusal,
    RentalRecord,
    StoredMessage,
    Wait,
    audit_entry,
    charge,
    committed_split,
    committed_sum,
    in_arrival_order,
    is_orphan,
    merge,
    merge_waits,
    no_check,
    purchase_from_row,
    while_held,
)

T = TypeVar("T")
LOCK_POLL = 0.05  # seconds between attempts at a ledger lock another process holds
LISTEN_POLL = 1.0  # seconds between reads of the messages other processes stored
HOST = socket.gethostname()
_OPEN: set[str] = set()  # tokens of the ledgers open in this process (a pid alone does not tell them apart)

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
    # Servers sharing the file: who is alive, which process handles a purchase in flight, ledger locks.
    """
    ALTER TABLE purchases ADD COLUMN owner TEXT;
    CREATE TABLE processes (
        token TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    );
    CREATE TABLE locks (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        taken_at REAL NOT NULL
    );
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
    # Agents: whose each purchase, rental and refusal is (the owner's before), and the audit trail.
    """
    ALTER TABLE purchases ADD COLUMN agent TEXT NOT NULL DEFAULT 'owner';
    ALTER TABLE rentals ADD COLUMN agent TEXT NOT NULL DEFAULT 'owner';
    ALTER TABLE refusals ADD COLUMN agent TEXT NOT NULL DEFAULT 'owner';
    CREATE TABLE audit (
        audit_id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        agent TEXT,
        credential TEXT,
        action TEXT NOT NULL,
        rental_id TEXT,
        amount TEXT,
        outcome TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX audit_by_time ON audit (at);
    """,
    # One poller per provider account: the rentals each process wants codes for, who stored each message, and
    # the pause of a rate-limited account.
    """
    CREATE TABLE waits (
        owner TEXT NOT NULL,
        rental_id TEXT NOT NULL,
        started_at REAL,
        expected_at REAL NOT NULL,
        PRIMARY KEY (owner, rental_id)
    );
    ALTER TABLE messages ADD COLUMN stored_by TEXT;
    CREATE TABLE pauses (
        provider TEXT PRIMARY KEY,
        until REAL NOT NULL
    );
    """,
)


class SqliteLedger:
    """Async facade over one SQLite connection, registered as one process of the ledger (`owner`)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._limiter = anyio.CapacityLimiter(1)
        self._locks: dict[str, anyio.Lock] = {}
        self.owner = secrets.token_hex(8)
        _OPEN.add(self.owner)

    @classmethod
    async def open(cls, path: Path | str) -> SqliteLedger:
        """Open (creating and migrating as needed) the ledger at `path`; `":memory:"` for a throwaway one."""
        ledger = cls(await anyio.to_thread.run_sync(_connect, str(path)))
        await ledger.beat()
        return ledger

    async def close(self) -> None:
        """Unregister this process (what it still held is taken over by the others) and close the file."""
        _OPEN.discard(self.owner)

        def close() -> None:
            try:
                _transaction(self._db, lambda db: _forget(db, self.owner))
            finally:
                self._db.close()

        with anyio.CancelScope(shield=True):
            await self._run(close)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    @traced_write("sqlite")
    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one immediate transaction (committed, or rolled back if it or the commit raises)."""
        return await self._run(lambda: _transaction(self._db, fn))

    async def now(self) -> float:
        return time.time()

    # -- Processes and locks ------------------------------------------------------------------------

    async def beat(self) -> None:
        """Tell the other processes on this ledger that this one is alive (registering it if it was not)."""

        def beat(db: sqlite3.Connection) -> None:
            now = time.time()
            if not db.execute("UPDATE processes SET heartbeat_at = ? WHERE token = ?", (now, self.owner)).rowcount:
                db.execute(
                    "INSERT INTO processes (token, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
                    (self.owner, HOST, os.getpid(), now, now),
                )

        await self._write(beat)

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        """Hold the ledger lock `name`: one holder at a time among this process's tasks and every process on
        this ledger. A lock whose holder is gone is taken over."""
        local = self._locks.setdefault(name, anyio.Lock())
        async with local:
            try:
                while True:
                    with anyio.CancelScope(shield=True):  # a lock taken is always known, even if cancelled now
                        taken = await self._write(lambda db: _take(db, name, self.owner))
                    if taken:
                        break
                    await anyio.sleep(LOCK_POLL)
                try:
                    yield
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._write(
                            lambda db: db.execute("DELETE FROM locks WHERE name = ? AND holder = ?", (name, self.owner))
                        )
            finally:
                if not local.statistics().tasks_waiting:
                    self._locks.pop(name, None)

    async def release(self, purchase_id: int) -> None:
        """This process's purchase call is over: the purchase is no longer in its hands."""
        await self._write(
            lambda db: db.execute(
                "UPDATE purchases SET owner = NULL WHERE purchase_id = ? AND owner = ?", (purchase_id, self.owner)
            )
        )

    async def recover_orphans(self, busy: Collection[int], note: str) -> int:
        """Take over the unsettled purchases no live process is handling (`is_orphan`): each becomes uncertain (a
        reserved one with `note`) without an owner, for reconciliation to settle. Forgets the processes that are
        gone. Returns how many purchases were taken over."""

        def recover(db: sqlite3.Connection) -> int:
            live = _live(db, time.time())
            rows = db.execute(
                "SELECT purchase_id, state, owner FROM purchases WHERE state IN ('reserved', 'uncertain')"
            ).fetchall()
            taken = 0
            for purchase_id, state, owner in rows:
                if is_orphan(purchase_id, state, owner, me=self.owner, busy=busy, live=live):
                    taken += 1
                    db.execute(
                        "UPDATE purchases SET owner = NULL, state = 'uncertain', note = CASE WHEN state = 'reserved'"
                        " THEN ? ELSE note END WHERE purchase_id = ?",
                        (note, purchase_id),
                    )
            for (token,) in db.execute("SELECT token FROM processes").fetchall():
                if token not in live:
                    _forget(db, token)
            return taken

        return await self._write(recover)

    async def in_other_hands(self, provider: str) -> bool:
        """Whether another process is handling a purchase of `provider` (until it releases it, or `recover_orphans`
        finds it gone)."""

        def read() -> bool:
            row = self._db.execute(
                "SELECT 1 FROM purchases WHERE provider = ? AND state IN ('reserved', 'uncertain')"
                " AND owner IS NOT NULL AND owner != ? LIMIT 1",
                (provider, self.owner),
            ).fetchone()
            return row is not None

        return await self._run(read)

    # -- One poller per provider account ------------------------------------------------------------

    async def lead(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        lock = f"lead:{name}"
        while True:  # a row, not an event: the holder may be another process
            if await self._write(lambda db: _take(db, lock, self.owner)):
                break
            await anyio.sleep(LEAD_POLL)

        def holder() -> str | None:
            row = self._db.execute("SELECT holder FROM locks WHERE name = ?", (lock,)).fetchone()
            return None if row is None else str(row[0])

        async def held() -> None:
            """Returns once another process took the lock over (it found this one gone): a read, not a write."""
            while True:
                await anyio.sleep(LEAD_CHECK)
                if await self._run(holder) != self.owner:
                    return

        try:
            lost = await while_held(work, held)
        finally:
            with anyio.CancelScope(shield=True):
                await self._write(
                    lambda db: db.execute("DELETE FROM locks WHERE name = ? AND holder = ?", (lock, self.owner))
                )
        if lost:
            raise LedgerUnavailable(f"lost the leadership of {name}: another process took it over")

    async def publish_waits(self, waits: Mapping[str, Wait]) -> None:
        def publish(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM waits WHERE owner = ?", (self.owner,))
            db.executemany(
                "INSERT INTO waits (owner, rental_id, started_at, expected_at) VALUES (?, ?, ?, ?)",
                [(self.owner, rental_id, w.started, w.expected) for rental_id, w in waits.items()],
            )

        await self._write(publish)

    async def waits(self) -> dict[str, Wait]:
        def read() -> dict[str, Wait]:
            live = _live(self._db, time.time()) - {self.owner}
            rows = self._db.execute("SELECT owner, rental_id, started_at, expected_at FROM waits").fetchall()
            return merge_waits(
                (rental_id, started, expected) for owner, rental_id, started, expected in rows if owner in live
            )

        return await self._run(read)

    async def pause(self, provider: str, seconds: float) -> None:
        def note(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO pauses (provider, until) VALUES (?, ?)"
                " ON CONFLICT (provider) DO UPDATE SET until = MAX(until, excluded.until)",
                (provider, time.time() + seconds),
            )

        await self._write(note)

    async def paused(self, provider: str) -> float:
        def read() -> float:
            row = self._db.execute("SELECT until FROM pauses WHERE provider = ?", (provider,)).fetchone()
            return 0.0 if row is None else max(0.0, float(row[0]) - time.time())

        return await self._run(read)

    async def listen(self, heard: Heard, waits_changed: Callable[[], Awaitable[None]]) -> None:
        def last() -> int:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM messages").fetchone()[0])

        def since(seq: int) -> list[tuple[int, str]]:
            query = "SELECT seq, data FROM messages WHERE seq > ? AND stored_by IS NOT ? ORDER BY seq"
            return self._db.execute(query, (seq, self.owner)).fetchall()

        seen = await self._run(last)
        while True:
            await anyio.sleep(LISTEN_POLL)
            rows = await self._run(functools.partial(since, seen))
            if rows:
                seen = rows[-1][0]
                await heard([Message.model_validate_json(data) for _, data in rows])

    # -- Rentals ------------------------------------------------------------------------------------

    async def save_rental(self, rental: Rental) -> Rental:
        """Record what a provider said about a rental, merged over what was known; returns the merged rental."""

        def save(db: sqlite3.Connection) -> Rental:
            now = time.time()
            row = db.execute("SELECT data FROM rentals WHERE rental_id = ?", (rental.rental_id,)).fetchone()
            merged = merge(Rental.model_validate_json(row[0]), rental) if row else rental
            db.execute(
                "INSERT INTO rentals (rental_id, provider, status, data, recorded_at, updated_at, agent)"
                f" VALUES (?, ?, ?, ?, ?, ?, {_BUYER}) ON CONFLICT (rental_id) DO UPDATE SET"
                " status = excluded.status, data = excluded.data, updated_at = excluded.updated_at",
                (
                    merged.rental_id,
                    merged.provider,
                    merged.status,
                    merged.model_dump_json(),
                    now,
                    now,
                    merged.rental_id,
                ),
            )
            return merged

        return await self._write(save)

    async def rental(self, rental_id: str) -> Rental | None:
        def read() -> Rental | None:
            row = self._db.execute("SELECT data FROM rentals WHERE rental_id = ?", (rental_id,)).fetchone()
            return Rental.model_validate_json(row[0]) if row else None

        return await self._run(read)

    async def rentals(
        self, *, active: bool | None = None, provider: str | None = None, agent: str | None = None
    ) -> list[Rental]:
        """Rentals, newest first; `active=True` only active ones, `False` only ended ones; `agent`: only its."""

        def read() -> list[Rental]:
            rows = self._db.execute(
                "SELECT data FROM rentals WHERE ? IS NULL OR agent = ? ORDER BY recorded_at DESC", (agent, agent)
            ).fetchall()
            found = [Rental.model_validate_json(r[0]) for r in rows]
            return [
                r
                for r in found
                if (provider is None or r.provider == provider) and (active is None or active != r.status.ended)
            ]

        return await self._run(read)

    async def agents(self, rental_ids: Collection[str]) -> dict[str, str]:
        def read() -> dict[str, str]:
            marks = ",".join("?" * len(rental_ids))
            query = f"SELECT rental_id, agent FROM rentals WHERE rental_id IN ({marks})"
            return dict(self._db.execute(query, tuple(rental_ids)).fetchall())

        return await self._run(read) if rental_ids else {}

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
            for message in in_arrival_order(messages, now):
                cursor = db.execute(
                    "INSERT OR IGNORE INTO messages (message_id, rental_id, data, stored_at, stored_by)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (message.message_id, message.rental_id, message.model_dump_json(), now, self.owner),
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

    async def recent_messages(self, limit: int = 20, agent: str | None = None) -> list[Message]:
        def read() -> list[Message]:
            rows = self._db.execute(
                "SELECT m.data FROM messages m WHERE ? IS NULL OR EXISTS (SELECT 1 FROM rentals r"
                " WHERE r.rental_id = m.rental_id AND r.agent = ?) ORDER BY m.seq DESC LIMIT ?",
                (agent, agent, limit),
            ).fetchall()
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
        agent: str = DEFAULT_AGENT,
        check: Check = no_check,
    ) -> int:
        """Record `agent`'s purchase intent reserving `amount`, handled by this process, atomically with `check`
        (`Check`), which may refuse it. `source_rental_id`: the rental it extends, renews or re-rents."""

        def insert(db: sqlite3.Connection) -> int:
            now = time.time()
            (uncertain,) = db.execute(
                "SELECT COUNT(*) FROM purchases WHERE provider = ? AND state = 'uncertain'", (provider,)
            ).fetchone()
            committed, by_agent = committed_split(_committed_rows(db, now), agent)
            check(committed, uncertain, by_agent)
            cursor = db.execute(
                "INSERT INTO purchases (provider, kind, plan_id, source_rental_id, max_price, state, created_at,"
                " owner, agent) VALUES (?, ?, ?, ?, ?, 'reserved', ?, ?, ?)",
                (provider, kind, plan_id, source_rental_id, str(amount), now, self.owner, agent),
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

        def update(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE purchases SET state = ?, price = COALESCE(?, price), rental_id = COALESCE(?, rental_id),"
                " note = COALESCE(?, note), verified = ?, settled_at = ? WHERE purchase_id = ?",
                (state, None if price is None else str(price), rental_id, note, verified, settled_at, purchase_id),
            )
            if state == "bought" and rental_id is not None:  # a rental recorded before its purchase settled
                db.execute(f"UPDATE rentals SET agent = {_BUYER} WHERE rental_id = ?", (rental_id, rental_id))

        await self._write(update)

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
            return [purchase_from_row(row) for row in rows]

        return await self._run(read)

    async def purchase(self, purchase_id: int) -> Purchase | None:
        def read() -> Purchase | None:
            query = f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE purchase_id = ?"
            row = self._db.execute(query, (purchase_id,)).fetchone()
            return purchase_from_row(row) if row else None

        return await self._run(read)

    async def purchases(self) -> list[Purchase]:
        def read() -> list[Purchase]:
            rows = self._db.execute(f"SELECT {_PURCHASE_COLUMNS} FROM purchases ORDER BY purchase_id").fetchall()
            return [purchase_from_row(row) for row in rows]

        return await self._run(read)

    async def committed(self, agent: str | None = None) -> Decimal:
        """Money spent or reserved in the last 24 h: bought (less refunds), plus reserved and uncertain at their cap;
        `agent`: by that agent only."""
        rows = await self._run(lambda: _committed_rows(self._db, time.time()))
        return committed_sum(row for row in rows if agent in (None, row[4]))

    # -- Figures (metrics, report, dashboard) ---------------------------------------------------------

    async def note_refusal(
        self, *, provider: str | None, amount: Decimal, note: str, agent: str = DEFAULT_AGENT
    ) -> None:
        """Record `agent`'s purchase of up to `amount` that the money guard refused (nothing was sent)."""
        await self._write(
            lambda db: db.execute(
                "INSERT INTO refusals (provider, amount, note, created_at, agent) VALUES (?, ?, ?, ?, ?)",
                (provider, str(amount), note, time.time(), agent),
            )
        )

    async def charges(self, since: float = 0.0) -> list[Charge]:
        """Every purchase made since `since` (a `time.time()`), oldest first; a bought one charged its price
        (its reserved cap when the provider gave none), any other nothing."""

        def read() -> list[Charge]:
            rows = self._db.execute(
                "SELECT provider, kind, state, max_price, price, refunded, created_at, agent FROM purchases"
                " WHERE created_at >= ? ORDER BY purchase_id",
                (since,),
            ).fetchall()
            return [charge(*row) for row in rows]

        return await self._run(read)

    async def refusals(self, since: float = 0.0) -> list[Refusal]:
        def read() -> list[Refusal]:
            rows = self._db.execute(
                "SELECT provider, amount, note, created_at, agent FROM refusals WHERE created_at >= ?"
                " ORDER BY refusal_id",
                (since,),
            ).fetchall()
            return [Refusal(provider, Decimal(amount), note, at, agent) for provider, amount, note, at, agent in rows]

        return await self._run(read)

    async def rental_records(self, since: float = 0.0) -> list[RentalRecord]:
        """Rentals first recorded since `since`, oldest first, with their message counts."""

        def read() -> list[RentalRecord]:
            rows = self._db.execute(
                "SELECT r.data, r.recorded_at, (SELECT COUNT(*) FROM messages m WHERE m.rental_id = r.rental_id),"
                " r.agent FROM rentals r WHERE r.recorded_at >= ? ORDER BY r.recorded_at",
                (since,),
            ).fetchall()
            return [RentalRecord(Rental.model_validate_json(d), at, n, agent) for d, at, n, agent in rows]

        return await self._run(read)

    async def handovers(self, since: float = 0.0) -> list[Handover]:
        """Messages `wait_for_code` returned since `since`, in the order it returned them."""

        def read() -> list[Handover]:
            rows = self._db.execute(
                "SELECT m.data, m.returned_at, COALESCE(r.agent, ?) FROM messages m LEFT JOIN rentals r"
                " ON r.rental_id = m.rental_id WHERE m.returned_at >= ? ORDER BY m.returned_at, m.seq",
                (DEFAULT_AGENT, since),
            ).fetchall()
            handed = [(Message.model_validate_json(data), at, agent) for data, at, agent in rows]
            return [Handover(m.rental_id, m.received_at, at, agent) for m, at, agent in handed]

        return await self._run(read)

    async def audit(self, entry: AuditEntry) -> None:
        amount = None if entry.amount is None else str(entry.amount)
        await self._write(
            lambda db: db.execute(
                f"INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    entry.agent,
                    entry.action,
                    entry.outcome,
                    entry.rental_id,
                    amount,
                    entry.detail,
                    entry.credential,
                ),
            )
        )

    async def audit_entries(self, since: float = 0.0, agent: str | None = None) -> list[AuditEntry]:
        def read() -> list[AuditEntry]:
            rows = self._db.execute(
                f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE at >= ? AND (? IS NULL OR agent = ?) ORDER BY audit_id",
                (since, agent, agent),
            ).fetchall()
            return [audit_entry(row) for row in rows]

        return await self._run(read)


_PURCHASE_COLUMNS = (
    "purchase_id, provider, kind, plan_id, rental_id, max_price, price, state, balance_before, note, created_at,"
    " source_rental_id, verified, owner"
)


_AUDIT_COLUMNS = "at, agent, action, outcome, rental_id, amount, detail, credential"
# The agent a rental belongs to (its id the one parameter): the agent of the latest purchase that bought it.
_BUYER = (
    "COALESCE((SELECT agent FROM purchases WHERE rental_id = ? AND kind = 'rent' AND state = 'bought'"
    " ORDER BY purchase_id DESC LIMIT 1), 'owner')"
)


def _committed_rows(db: sqlite3.Connection, now: float) -> list[tuple[object, ...]]:
    """(state, max_price, price, refunded, agent) of the last 24 h's purchases that commit money."""
    return db.execute(
        "SELECT state, max_price, price, refunded, agent FROM purchases WHERE created_at >= ? AND state IN"
        " ('reserved', 'uncertain', 'bought')",
        (now - DAY,),
    ).fetchall()


def _transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn` in one immediate transaction. If `fn` or the COMMIT raises (disk full, I/O error, busy), the
    transaction is rolled back, so the next one can begin (SQLite may have rolled back already)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def _live(db: sqlite3.Connection, now: float) -> set[str]:
    """Tokens of the processes still alive: this process's open ledgers, and others whose heartbeat is fresh and,
    on this host, whose pid still runs (a pid is checked only on POSIX)."""
    rows = db.execute("SELECT token, host, pid, heartbeat_at FROM processes").fetchall()
    return {
        token
        for token, host, pid, heartbeat_at in rows
        if token in _OPEN
        or (now - heartbeat_at <= STALE_AFTER and (host != HOST or (pid != os.getpid() and _running(pid))))
    }


def _running(pid: int) -> bool:
    if os.name != "posix":
        return True  # signal 0 would terminate it on Windows: the heartbeat decides there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def _take(db: sqlite3.Connection, name: str, owner: str) -> bool:
    """Take the lock `name` for `owner` if it is free, already `owner`'s, or held by a process that is gone."""
    row = db.execute("SELECT holder FROM locks WHERE name = ?", (name,)).fetchone()
    if row is not None and row[0] != owner and row[0] in _live(db, time.time()):
        return False
    db.execute(
        "INSERT INTO locks (name, holder, taken_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, taken_at = excluded.taken_at",
        (name, owner, time.time()),
    )
    return True


def _forget(db: sqlite3.Connection, token: str) -> None:
    """A process is gone: its registration and its locks go with it (its purchases are taken over apart)."""
    db.execute("DELETE FROM processes WHERE token = ?", (token,))
    db.execute("DELETE FROM locks WHERE holder = ?", (token,))


def _connect(path: str) -> sqlite3.Connection:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if path != ":memory:" and str(mode).lower() != "wal":
        db.close()
        raise LedgerUnusable(
            f"The ledger {path} cannot use SQLite's WAL mode (SQLite kept {mode!r}), so it could not be shared"
            " safely; put SMSRENT_DATA_DIR on a local disk."
        )
    db.execute("PRAGMA synchronous = NORMAL")
    _transaction(db, _migrate)  # under the write lock: two servers starting together migrate once
    return db


def _migrate(db: sqlite3.Connection) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in _statements(script):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")


def _statements(script: str) -> list[str]:
    """The statements of a migration script (`executescript` would commit the transaction it runs in)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return [*statements, pending.strip()] if pending.strip() else statements
