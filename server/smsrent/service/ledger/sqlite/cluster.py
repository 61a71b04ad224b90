"""The SQLite ledger's part in one poller per provider account: leaderships, published waits, pauses, and
hearing of the messages other processes store."""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping

import anyio

from smsrent.domain.errors import LedgerUnavailable
from smsrent.domain.models import Message
from smsrent.service.ledger import LEAD_CHECK, LEAD_POLL, Heard, Wait
from smsrent.service.ledger.rules import merge_waits, while_held
from smsrent.service.ledger.sqlite.base import SqliteBase, live_tokens, take

LISTEN_POLL = 1.0  # seconds between reads of the messages other processes stored


class SqliteCluster(SqliteBase):
    """One poller per provider account: leaderships, published waits, pauses, and hearing of stored messages."""

    async def lead(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        lock = f"lead:{name}"
        while True:  # a row, not an event: the holder may be another process
            if await self._write(lambda db: take(db, lock, self.owner)):
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
            live = live_tokens(self._db, time.time()) - {self.owner}
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
