"""The PostgreSQL ledger's processes and locks: presence locks and heartbeats, ledger locks, purchases in a
process's hands."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

import anyio
import psycopg

from smsrent.service.ledger import HOST, LOCK_POLL, STALE_AFTER, LedgerUnusable
from smsrent.service.ledger.postgres.base import (
    Connection,
    PostgresBase,
    advisory_key,
    connect,
    try_lock,
    unavailable_when_down,
)
from smsrent.service.ledger.rules import is_orphan, queued

# A process's presence lock shows in pg_locks as two 32-bit halves of its bigint key (objsubid 1).
LIVE = """
SELECT token FROM processes p
 WHERE p.heartbeat_at > clock_timestamp() - make_interval(secs => %s)
   AND (p.heartbeat_at < pg_postmaster_start_time() OR EXISTS (
        SELECT 1 FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.classid::bigint = (p.presence_key >> 32) & 4294967295
           AND l.objid::bigint = p.presence_key & 4294967295))
"""


class PostgresProcesses(PostgresBase):
    """Processes and locks: presence locks and heartbeats, ledger locks, and the purchases in a process's hands."""

    async def beat(self) -> None:
        """Hold this process's presence lock (on a new connection if the last one was lost, say by a database
        restart), then its heartbeat: a heartbeat newer than the server's start always comes with the lock."""
        if self._presence is not None:
            try:
                await self._take_presence(self._presence)
            except psycopg.Error:
                await self._presence.close()
                self._presence = None
        if self._presence is None:
            with unavailable_when_down():
                self._presence = await connect(self._url, self.owner)
            await self._take_presence(self._presence)

        async def beat(conn: Connection) -> None:
            await conn.execute(
                "INSERT INTO processes (token, host, pid, presence_key, started_at, heartbeat_at)"
                " VALUES (%s, %s, %s, %s, clock_timestamp(), clock_timestamp())"
                " ON CONFLICT (token) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                (self.owner, HOST, os.getpid(), self._presence_key),
            )

        await self._write(beat)

    async def _take_presence(self, conn: Connection) -> None:
        """Take (or, held already, take once more: it stacks harmlessly) this process's presence lock."""
        if not await try_lock(conn, self._presence_key):
            raise LedgerUnusable("another session holds this process's presence lock (a token collision)")

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        """Hold the ledger lock `name`: a session advisory lock on a connection of its own, closed (so released)
        when done or when this process dies. This process's tasks queue for it locally first, so one connection
        per name waits, trying every LOCK_POLL seconds (a blocking `pg_advisory_lock` would leave its session
        waiting, and then holding the lock, after its task was cancelled)."""
        async with queued(self._locks, name):
            with unavailable_when_down():
                conn = await connect(self._url, self.owner)
            try:
                while True:
                    if await try_lock(conn, advisory_key(name)):
                        break
                    await anyio.sleep(LOCK_POLL)
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await conn.close()

    async def release(self, purchase_id: int) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE purchases SET owner = NULL WHERE purchase_id = %s AND owner = %s", (purchase_id, self.owner)
            )
        )

    async def recover_orphans(self, busy: Collection[int], note: str) -> int:
        async def recover(conn: Connection) -> int:
            live = {row[0] for row in await (await conn.execute(LIVE, (STALE_AFTER,))).fetchall()}
            cur = await conn.execute(
                "SELECT purchase_id, state, owner FROM purchases WHERE state IN ('reserved', 'uncertain')"
                " ORDER BY purchase_id FOR UPDATE"
            )
            orphans = [
                purchase_id
                for purchase_id, state, owner in await cur.fetchall()
                if is_orphan(purchase_id, state, owner, me=self.owner, busy=busy, live=live)
            ]
            if orphans:
                await conn.execute(
                    "UPDATE purchases SET owner = NULL, state = 'uncertain', note = CASE WHEN state = 'reserved'"
                    " THEN %s ELSE note END WHERE purchase_id = ANY(%s)",
                    (note, orphans),
                )
            await conn.execute("DELETE FROM processes WHERE token <> ALL(%s)", (list(live),))
            return len(orphans)

        return await self._write(recover)

    async def in_other_hands(self, provider: str) -> bool:
        rows = await self._rows(
            "SELECT 1 FROM purchases WHERE provider = %s AND state IN ('reserved', 'uncertain')"
            " AND owner IS NOT NULL AND owner <> %s LIMIT 1",
            (provider, self.owner),
        )
        return bool(rows)
