"""The PostgreSQL ledger's part in one poller per provider account: leaderships, published waits, pauses, and
hearing (LISTEN) of the messages other replicas store."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping

import anyio
import psycopg

from smsrent.domain.errors import LedgerUnavailable
from smsrent.domain.models import Message
from smsrent.service.ledger import LEAD_CHECK, LEAD_POLL, STALE_AFTER, Heard, Wait
from smsrent.service.ledger.postgres.base import (
    CHANNEL,
    Connection,
    PostgresBase,
    advisory_key,
    connect,
    try_lock,
    unavailable_when_down,
)
from smsrent.service.ledger.rules import merge_waits, while_held

log = logging.getLogger("smsrent.ledger")

LISTEN_BACKOFF = (0.5, 10.0)  # the listener's first and longest wait before reconnecting
SETTLED_CONNECTION = STALE_AFTER  # seconds a holder's connection must be old before its staleness counts
# End the sessions holding an advisory lock (its key the one parameter, twice) for a process whose heartbeat is
# stale: one frozen or cut off (its machine's TCP stack may keep the session open for hours) would hold it forever.
END_STALE_HOLDERS = """
SELECT pg_terminate_backend(a.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid::bigint = (%(key)s >> 32) & 4294967295 AND l.objid::bigint = %(key)s & 4294967295
   AND a.application_name LIKE 'smsrent %%'
   AND a.backend_start < clock_timestamp() - make_interval(secs => %(settled)s)
   AND substr(a.application_name, 9) NOT IN (
        SELECT token FROM processes WHERE heartbeat_at > clock_timestamp() - make_interval(secs => %(stale)s))
"""


class PostgresCluster(PostgresBase):
    """One poller per provider account: leaderships, published waits, pauses, and hearing of stored messages."""

    async def lead(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        with unavailable_when_down():
            conn = await connect(self._url, self.owner)
        key = advisory_key(f"lead:{name}")
        try:
            with unavailable_when_down():
                while True:  # a lock, not an event: its holder may be another replica
                    if await try_lock(conn, key):
                        break
                    await conn.execute(
                        END_STALE_HOLDERS, {"key": key, "settled": SETTLED_CONNECTION, "stale": STALE_AFTER}
                    )
                    await anyio.sleep(LEAD_POLL)
            lost: list[psycopg.Error] = []

            async def held() -> None:
                """Returns once the lock's connection is found broken (so the lock is gone)."""
                try:
                    while True:
                        await anyio.sleep(LEAD_CHECK)
                        await conn.execute("SELECT 1")
                except psycopg.Error as err:
                    lost.append(err)

            if await while_held(work, held):
                raise LedgerUnavailable(f"lost the leadership of {name}: {' '.join(str(lost[0]).split())}")
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close()

    async def publish_waits(self, waits: Mapping[str, Wait]) -> None:
        async def publish(conn: Connection) -> None:
            await conn.execute("DELETE FROM waits WHERE owner = %s", (self.owner,))
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO waits (owner, rental_id, started_at, expected_at) VALUES (%s, %s, %s, %s)",
                    [(self.owner, rental_id, w.started, w.expected) for rental_id, w in waits.items()],
                )
            await self._notify(conn, waits=1)

        await self._write(publish)

    async def waits(self) -> dict[str, Wait]:
        rows = await self._rows(
            "SELECT rental_id, started_at, expected_at FROM waits WHERE owner <> %s AND owner IN (SELECT token"
            " FROM processes WHERE heartbeat_at > clock_timestamp() - make_interval(secs => %s))",
            (self.owner, STALE_AFTER),
        )
        return merge_waits(rows)

    async def pause(self, provider: str, seconds: float) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO pauses (provider, until) VALUES (%s, clock_timestamp() + make_interval(secs => %s))"
                " ON CONFLICT (provider) DO UPDATE SET until = GREATEST(pauses.until, excluded.until)",
                (provider, seconds),
            )
        )

    async def paused(self, provider: str) -> float:
        rows = await self._rows(
            "SELECT GREATEST(0, extract(epoch FROM until - clock_timestamp()))::float8 FROM pauses WHERE provider = %s",
            (provider,),
        )
        return float(rows[0][0]) if rows else 0.0

    async def listen(self, heard: Heard, waits_changed: Callable[[], Awaitable[None]]) -> None:
        delay = LISTEN_BACKOFF[0]
        last: int | None = None  # the newest message (seq) heard of: a new connection catches up from there
        while True:
            try:
                with unavailable_when_down():
                    conn = await connect(self._url, self.owner)
                try:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = LISTEN_BACKOFF[0]
                    await waits_changed()  # what changed while nobody listened: the waits, and the messages
                    last = await self._catch_up(last, heard)
                    async for note in conn.notifies():
                        payload = json.loads(note.payload)
                        seqs = [seq for seq in payload.get("seqs") or () if isinstance(seq, int)]
                        last = max([last, *seqs])
                        await self._heard(payload, seqs, heard, waits_changed)
                finally:
                    with anyio.CancelScope(shield=True):
                        await conn.close()
            except (psycopg.OperationalError, LedgerUnavailable) as err:
                why = err.why if isinstance(err, LedgerUnavailable) else _first_line(err)
                log.warning("not hearing the other replicas (%s); listening again in %.1f s", why, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, LISTEN_BACKOFF[1])

    async def _catch_up(self, last: int | None, heard: Heard) -> int:
        """Tell `heard` of the messages stored after `last` (None: the first connection, nothing to catch up), this
        process's own among them (its observers hear of those twice, harmlessly: a waiter looks again, a subscriber
        reads again); returns the newest seq."""
        if last is None:
            rows = await self._rows("SELECT COALESCE(max(seq), 0) FROM messages")
            return int(rows[0][0])
        rows = await self._rows("SELECT seq, data FROM messages WHERE seq > %s ORDER BY seq", (last,))
        if rows:
            await heard([Message.model_validate_json(data) for _, data in rows])
        return max([last, *(int(seq) for seq, _ in rows)])

    async def _heard(
        self,
        payload: dict[str, object],
        seqs: list[int],
        heard: Heard,
        waits_changed: Callable[[], Awaitable[None]],
    ) -> None:
        if payload.get("owner") == self.owner:
            return  # this process told its own observers already
        if payload.get("waits"):
            await waits_changed()
        if seqs:
            rows = await self._rows("SELECT data FROM messages WHERE seq = ANY(%s) ORDER BY seq", (seqs,))
            await heard([Message.model_validate_json(row[0]) for row in rows])


def _first_line(err: Exception) -> str:
    return next(iter(str(err).splitlines()), type(err).__name__)
