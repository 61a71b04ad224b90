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

The parts follow the sections of the `Ledger` protocol, one mixin each over `base.SqliteBase`.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.to_thread

from smsrent.service.ledger.sqlite.base import OPEN, forget, transaction
from smsrent.service.ledger.sqlite.cluster import SqliteCluster
from smsrent.service.ledger.sqlite.figures import SqliteFigures
from smsrent.service.ledger.sqlite.messages import SqliteMessages
from smsrent.service.ledger.sqlite.migrations import connect
from smsrent.service.ledger.sqlite.processes import SqliteProcesses
from smsrent.service.ledger.sqlite.purchases import SqlitePurchases
from smsrent.service.ledger.sqlite.rentals import SqliteRentals


class SqliteLedger(SqliteProcesses, SqliteCluster, SqliteRentals, SqliteMessages, SqlitePurchases, SqliteFigures):
    """Async facade over one SQLite connection, registered as one process of the ledger (`owner`)."""

    @classmethod
    async def open(cls, path: Path | str) -> SqliteLedger:
        """Open (creating and migrating as needed) the ledger at `path`; `":memory:"` for a throwaway one."""
        ledger = cls(await anyio.to_thread.run_sync(connect, str(path)))
        await ledger.beat()
        return ledger

    async def close(self) -> None:
        """Unregister this process (what it still held is taken over by the others) and close the file."""
        OPEN.discard(self.owner)

        def close() -> None:
            try:
                transaction(self._db, lambda db: forget(db, self.owner))
            finally:
                self._db.close()

        with anyio.CancelScope(shield=True):
            await self._run(close)
