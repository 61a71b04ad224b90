"""The SQLite ledger's processes and locks: heartbeats, ledger locks, purchases in a process's hands."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

import anyio

from smsrent.service.ledger import HOST, LOCK_POLL
from smsrent.service.ledger.rules import is_orphan, queued
from smsrent.service.ledger.sqlite.base import SqliteBase, forget, live_tokens, take


class SqliteProcesses(SqliteBase):
    """Processes and locks: this process's heartbeat, ledger locks, and the purchases in a process's hands."""

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
        async with queued(self._locks, name):
            while True:
                with anyio.CancelScope(shield=True):  # a lock taken is always known, even if cancelled now
                    taken = await self._write(lambda db: take(db, name, self.owner))
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
            live = live_tokens(db, time.time())
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
                    forget(db, token)
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
