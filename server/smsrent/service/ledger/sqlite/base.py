"""What the SQLite ledger's parts share: the connection and its one worker thread (`SqliteBase`), transactions,
and the processes registered on the file (who is alive, who holds a lock)."""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from smsrent.observe.tracing import traced_write
from smsrent.service.ledger import HOST, STALE_AFTER

T = TypeVar("T")
OPEN: set[str] = set()  # tokens of the ledgers open in this process (a pid alone does not tell them apart)
# The agent a rental belongs to (its id the one parameter): the agent of the latest purchase that bought it.
BUYER = (
    "COALESCE((SELECT agent FROM purchases WHERE rental_id = ? AND kind = 'rent' AND state = 'bought'"
    " ORDER BY purchase_id DESC LIMIT 1), 'owner')"
)


class SqliteBase:
    """One SQLite connection, used by one worker thread at a time, registered as one process of the ledger."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._limiter = anyio.CapacityLimiter(1)
        self._locks: dict[str, anyio.Lock] = {}
        self.owner = secrets.token_hex(8)
        OPEN.add(self.owner)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    @traced_write("sqlite")
    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one immediate transaction (committed, or rolled back if it or the commit raises)."""
        return await self._run(lambda: transaction(self._db, fn))

    async def now(self) -> float:
        return time.time()


def transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
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


def live_tokens(db: sqlite3.Connection, now: float) -> set[str]:
    """Tokens of the processes still alive: this process's open ledgers, and others whose heartbeat is fresh and,
    on this host, whose pid still runs (a pid is checked only on POSIX)."""
    rows = db.execute("SELECT token, host, pid, heartbeat_at FROM processes").fetchall()
    return {
        token
        for token, host, pid, heartbeat_at in rows
        if token in OPEN
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


def take(db: sqlite3.Connection, name: str, owner: str) -> bool:
    """Take the lock `name` for `owner` if it is free, already `owner`'s, or held by a process that is gone."""
    row = db.execute("SELECT holder FROM locks WHERE name = ?", (name,)).fetchone()
    if row is not None and row[0] != owner and row[0] in live_tokens(db, time.time()):
        return False
    db.execute(
        "INSERT INTO locks (name, holder, taken_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, taken_at = excluded.taken_at",
        (name, owner, time.time()),
    )
    return True


def forget(db: sqlite3.Connection, token: str) -> None:
    """A process is gone: its registration and its locks go with it (its purchases are taken over apart)."""
    db.execute("DELETE FROM processes WHERE token = ?", (token,))
    db.execute("DELETE FROM locks WHERE holder = ?", (token,))
