"""The PostgreSQL ledger: one database shared by any number of server replicas on any number of machines
(SMSRENT_DATABASE_URL). Imported only when a database URL is configured (it needs `smsrent[postgres]`).

What must hold across replicas is held by the database, never by a replica:
- a reservation takes a transaction-scoped advisory lock (`pg_advisory_xact_lock`) around "count this provider's
  uncertain purchases, sum the 24 h committed spend, check, insert", so the daily budget and an uncertain
  purchase's block hold for every replica at once;
- `lock(name)` is a session advisory lock held on a connection of its own for as long as the lock is held (the
  lock dies with the connection, so with a killed replica);
- a process is alive while its heartbeat (on the database clock) is fresh *and* its presence lock, a session
  advisory lock on a connection it keeps open, shows in `pg_locks`. A killed replica's connection closes at once,
  so what it left mid-purchase is taken over within a heartbeat; a machine that vanished without closing its
  connections is judged by its heartbeat (its locks may linger until TCP gives up). After a database restart no
  presence lock exists until each replica's next beat takes its own again: a heartbeat older than the server's
  start is judged by itself.
- a message is stored once (`ON CONFLICT DO NOTHING` on its id), and the `wait_for_code` cursor is claimed in one
  `UPDATE ... RETURNING` on the oldest unreturned message (`FOR UPDATE SKIP LOCKED`), so no two claims anywhere
  return the same message;
- the transaction that stores messages sends a `NOTIFY` naming them (delivered on commit only), as does each
  change of a process's waits; every replica `LISTEN`s on a connection of its own (`listen`), reconnecting with
  back-off;
- a leadership (`lead`, one poller per provider account) is a session advisory lock on a connection of its own,
  checked every LEAD_CHECK seconds: a killed leader's lock goes with its connection, so a follower (trying
  every LEAD_POLL seconds) takes over within about a second or two.
When the database cannot be reached, every call raises LedgerUnavailable (the pool checks each connection it
hands out and reconnects by itself).
Every stored time is the database's `clock_timestamp()`; `now()` reads that clock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from decimal import Decimal
from typing import TypeVar

import anyio
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import SecretStr

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
from smsrent.service.ledger.postgres_migrations import MIGRATIONS, VERSIONS_TABLE

log = logging.getLogger("smsrent.ledger")

T = TypeVar("T")
Connection = psycopg.AsyncConnection[TupleRow]

CONNECT_TIMEOUT = 5  # seconds to reach the database before a start fails
POOL_SIZE = 8  # connections per replica for reads and writes (locks and presence have their own)
LOCK_POLL = 0.05  # seconds between attempts at a ledger lock another process holds
CHANNEL = "smsrent"  # the NOTIFY channel: {"owner": token, "seqs": [...]} for messages, {"owner", "waits": 1}
NOTIFY_SEQS = 500  # message seqs per NOTIFY (a payload must stay under 8000 bytes)
LISTEN_BACKOFF = (0.5, 10.0)  # the listener's first and longest wait before reconnecting
HOST = socket.gethostname()

_PURCHASE_COLUMNS = (
    "purchase_id, provider, kind, plan_id, rental_id, max_price, price, state, balance_before, note,"
    " extract(epoch FROM created_at)::float8, source_rental_id, verified, owner"
)
# A process's presence lock shows in pg_locks as two 32-bit halves of its bigint key (objsubid 1).
_LIVE = """
SELECT token FROM processes p
 WHERE p.heartbeat_at > clock_timestamp() - make_interval(secs => %s)
   AND (p.heartbeat_at < pg_postmaster_start_time() OR EXISTS (
        SELECT 1 FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.classid::bigint = (p.presence_key >> 32) & 4294967295
           AND l.objid::bigint = p.presence_key & 4294967295))
"""


def advisory_key(name: str) -> int:
    """The 64-bit advisory lock key of a ledger lock name (namespaced, so other applications' keys do not meet
    ours; two of our names meeting would take 2^64 names)."""
    digest = hashlib.blake2b(f"smsrent:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


BUDGET_KEY = advisory_key("budget")
MIGRATE_KEY = advisory_key("migrate")


def describe(database_url: SecretStr) -> str:
    """The database as errors and logs may name it: its name, host and port, never the user or password."""
    try:
        params = conninfo_to_dict(database_url.get_secret_value())
    except psycopg.ProgrammingError:
        return "database (unreadable SMSRENT_DATABASE_URL)"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"database {params.get('dbname') or '(default)'} on {host}:{params.get('port') or 5432}"


def _reason(err: Exception, database_url: SecretStr) -> str:
    """psycopg's error as one line, without the password should the driver ever echo it."""
    text = " ".join(str(err).split()) or type(err).__name__
    password = conninfo_to_dict(database_url.get_secret_value()).get("password")
    return text.replace(str(password), "***") if password else text


async def _connect(database_url: SecretStr, owner: str | None = None) -> Connection:
    """A connection of its own (autocommit), or LedgerUnusable in one line naming the database, never the password.
    `owner`: the process it serves, in `pg_stat_activity.application_name`."""
    try:
        return await psycopg.AsyncConnection.connect(
            database_url.get_secret_value(),
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name=_application(owner),
        )
    except psycopg.Error as err:
        raise LedgerUnusable(
            f"cannot connect to the PostgreSQL ledger ({describe(database_url)}): {_reason(err, database_url)}"
        ) from err


def _application(owner: str | None) -> str:
    return "smsrent" if owner is None else f"smsrent {owner}"


@contextmanager
def unavailable_when_down() -> Iterator[None]:
    """A database that cannot be reached (now, or for the rest of a call) as LedgerUnavailable; other errors (a
    deadlock, a cancelled query) as they are."""
    try:
        yield
    except (PoolTimeout, LedgerUnusable) as err:
        raise LedgerUnavailable(" ".join(str(err).split())) from err
    except psycopg.OperationalError as err:
        if not _connection_lost(err):
            raise
        raise LedgerUnavailable(" ".join(str(err).split())) from err


def _connection_lost(err: psycopg.OperationalError) -> bool:
    """A client-side failure (no SQLSTATE), a connection exception (class 08) or the server shutting down (57P)."""
    return err.sqlstate is None or err.sqlstate.startswith(("08", "57P"))


async def schema_version(conn: Connection) -> int:
    cur = await conn.execute("SELECT to_regclass('smsrent_schema') IS NOT NULL")
    if not (await cur.fetchone() or (False,))[0]:
        return 0
    cur = await conn.execute("SELECT COALESCE(max(version), 0) FROM smsrent_schema")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def check(database_url: SecretStr) -> int:
    """The database's schema version, once it is known to be reachable and recent enough for this release;
    LedgerUnusable in one line otherwise."""
    conn = await _connect(database_url)
    try:
        version = await schema_version(conn)
    finally:
        await conn.close()
    if version < len(MIGRATIONS):
        raise LedgerUnusable(
            f"the PostgreSQL ledger ({describe(database_url)}) is at schema version {version} and this smsrent needs"
            f" {len(MIGRATIONS)}: run `smsrent-mcp migrate` with the same SMSRENT_DATABASE_URL, then start again."
        )
    return version


async def migrate(database_url: SecretStr) -> tuple[int, int]:
    """Apply the migrations the database lacks, in one transaction (two at once: one waits, the other finds
    nothing to do). Returns the schema version before and after."""
    conn = await _connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_KEY,))
            await conn.execute(VERSIONS_TABLE)
            before = await schema_version(conn)
            for version, migration in enumerate(MIGRATIONS[before:], start=before + 1):
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO smsrent_schema (version, description) VALUES (%s, %s)",
                    (version, migration.description),
                )
    except psycopg.Error as err:
        why = f"({describe(database_url)}): {_reason(err, database_url)}"
        raise LedgerUnusable(f"could not migrate the PostgreSQL ledger {why}") from err
    finally:
        await conn.close()
    return before, max(before, len(MIGRATIONS))


class PostgresLedger:
    """The ledger in a PostgreSQL database, registered as one process of it (`owner`)."""

    def __init__(self, database_url: SecretStr) -> None:
        self.owner = secrets.token_hex(8)
        self._url = database_url
        self._pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            database_url.get_secret_value(),
            min_size=1,
            max_size=POOL_SIZE,
            timeout=CONNECT_TIMEOUT,  # a call waits this long for a connection before the database counts as down
            check=AsyncConnectionPool.check_connection,  # a connection broken by a database restart is replaced
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT,
                "application_name": _application(self.owner),
            },
            name="smsrent-ledger",
            open=False,
        )
        self._presence: Connection | None = None
        self._presence_key = advisory_key(f"process:{self.owner}")
        self._locks: dict[str, anyio.Lock] = {}

    @classmethod
    async def open(cls, database_url: SecretStr) -> PostgresLedger:
        """Open the ledger in the database at `database_url`, whose schema must be this release's or newer."""
        await check(database_url)
        ledger = cls(database_url)
        try:
            await ledger._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except psycopg.Error as err:
            await ledger._pool.close()
            where = describe(database_url)
            raise LedgerUnusable(f"cannot open connections to the PostgreSQL ledger ({where})") from err
        try:
            await ledger.beat()
        except BaseException:
            await ledger._shut()
            raise
        return ledger

    async def close(self) -> None:
        """Unregister this process (what it still held is taken over by the others) and close its connections."""
        with anyio.CancelScope(shield=True):
            try:
                await self._write(lambda conn: conn.execute("DELETE FROM processes WHERE token = %s", (self.owner,)))
            finally:
                await self._shut()

    async def _shut(self) -> None:
        if self._presence is not None:
            await self._presence.close()
        await self._pool.close()

    @traced_write("postgresql")
    async def _write(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `fn` in one transaction (committed, or rolled back if it raises)."""
        with unavailable_when_down():
            async with self._pool.connection() as conn, conn.transaction():
                return await fn(conn)

    async def _rows(self, query: str, params: Sequence[object] = ()) -> list[TupleRow]:
        with unavailable_when_down():
            async with self._pool.connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchall()

    async def _notify(self, conn: Connection, **payload: object) -> None:
        """Tell every listener (`listen`), once this transaction commits."""
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"owner": self.owner, **payload})))

    async def now(self) -> float:
        (row,) = await self._rows("SELECT extract(epoch FROM clock_timestamp())::float8")
        return float(row[0])

    # -- Processes and locks ------------------------------------------------------------------------

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
                self._presence = await _connect(self._url, self.owner)
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
        if not await _try_lock(conn, self._presence_key):
            raise LedgerUnusable("another session holds this process's presence lock (a token collision)")

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        """Hold the ledger lock `name`: a session advisory lock on a connection of its own, closed (so released)
        when done or when this process dies. This process's tasks queue for it locally first, so one connection
        per name waits, trying every LOCK_POLL seconds (a blocking `pg_advisory_lock` would leave its session
        waiting, and then holding the lock, after its task was cancelled)."""
        local = self._locks.setdefault(name, anyio.Lock())
        async with local:
            try:
                with unavailable_when_down():
                    conn = await _connect(self._url, self.owner)
                try:
                    while True:
                        if await _try_lock(conn, advisory_key(name)):
                            break
                        await anyio.sleep(LOCK_POLL)
                    yield
                finally:
                    with anyio.CancelScope(shield=True):
                        await conn.close()
            finally:
                if not local.statistics().tasks_waiting:
                    self._locks.pop(name, None)

    async def release(self, purchase_id: int) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE purchases SET owner = NULL WHERE purchase_id = %s AND owner = %s", (purchase_id, self.owner)
            )
        )

    async def recover_orphans(self, busy: Collection[int], note: str) -> int:
        async def recover(conn: Connection) -> int:
            live = {row[0] for row in await (await conn.execute(_LIVE, (STALE_AFTER,))).fetchall()}
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

    # -- One poller per provider account ------------------------------------------------------------

    async def lead(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        with unavailable_when_down():
            conn = await _connect(self._url, self.owner)
        try:
            with unavailable_when_down():
                while True:  # a lock, not an event: its holder may be another replica
                    if await _try_lock(conn, advisory_key(f"lead:{name}")):
                        break
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
        while True:
            try:
                with unavailable_when_down():
                    conn = await _connect(self._url, self.owner)
                try:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = LISTEN_BACKOFF[0]
                    # What changed while nobody listened: waits now; a message stored meanwhile reaches its
                    # waiter at the waiter's own next look (within PROGRESS_EVERY seconds).
                    await waits_changed()
                    async for note in conn.notifies():
                        await self._heard(json.loads(note.payload), heard, waits_changed)
                finally:
                    with anyio.CancelScope(shield=True):
                        await conn.close()
            except (psycopg.OperationalError, LedgerUnavailable) as err:
                why = err.why if isinstance(err, LedgerUnavailable) else _first_line(err)
                log.warning("not hearing the other replicas (%s); listening again in %.1f s", why, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, LISTEN_BACKOFF[1])

    async def _heard(
        self, payload: dict[str, object], heard: Heard, waits_changed: Callable[[], Awaitable[None]]
    ) -> None:
        if payload.get("owner") == self.owner:
            return  # this process told its own observers already
        if payload.get("waits"):
            await waits_changed()
        seqs = payload.get("seqs")
        if isinstance(seqs, list) and seqs:
            rows = await self._rows("SELECT data FROM messages WHERE seq = ANY(%s) ORDER BY seq", (seqs,))
            await heard([Message.model_validate_json(row[0]) for row in rows])

    # -- Rentals ------------------------------------------------------------------------------------

    async def save_rental(self, rental: Rental) -> Rental:
        async def save(conn: Connection) -> Rental:
            cur = await conn.execute(
                "INSERT INTO rentals (rental_id, provider, status, data, recorded_at, updated_at, agent)"
                f" VALUES (%s, %s, %s, %s, clock_timestamp(), clock_timestamp(), {_BUYER})"
                " ON CONFLICT (rental_id) DO NOTHING RETURNING rental_id",
                (rental.rental_id, rental.provider, rental.status, rental.model_dump_json(), rental.rental_id),
            )
            if await cur.fetchone():
                return rental
            cur = await conn.execute("SELECT data FROM rentals WHERE rental_id = %s FOR UPDATE", (rental.rental_id,))
            (known,) = await cur.fetchall()
            merged = merge(Rental.model_validate_json(known[0]), rental)
            await conn.execute(
                "UPDATE rentals SET status = %s, data = %s, updated_at = clock_timestamp() WHERE rental_id = %s",
                (merged.status, merged.model_dump_json(), merged.rental_id),
            )
            return merged

        return await self._write(save)

    async def rental(self, rental_id: str) -> Rental | None:
        rows = await self._rows("SELECT data FROM rentals WHERE rental_id = %s", (rental_id,))
        return Rental.model_validate_json(rows[0][0]) if rows else None

    async def rentals(
        self, *, active: bool | None = None, provider: str | None = None, agent: str | None = None
    ) -> list[Rental]:
        rows = await self._rows(
            "SELECT data FROM rentals WHERE (%s::text IS NULL OR provider = %s) AND (%s::text IS NULL OR agent = %s)"
            " ORDER BY recorded_at DESC",
            (provider, provider, agent, agent),
        )
        found = [Rental.model_validate_json(row[0]) for row in rows]
        return [r for r in found if active is None or active != r.status.ended]

    async def agents(self, rental_ids: Collection[str]) -> dict[str, str]:
        if not rental_ids:
            return {}
        rows = await self._rows("SELECT rental_id, agent FROM rentals WHERE rental_id = ANY(%s)", (list(rental_ids),))
        return {str(row[0]): str(row[1]) for row in rows}

    async def rental_ids(self, *, provider: str, recorded_before: float) -> set[str]:
        rows = await self._rows(
            "SELECT rental_id FROM rentals WHERE provider = %s AND recorded_at < to_timestamp(%s)",
            (provider, recorded_before),
        )
        return {row[0] for row in rows}

    # -- Messages -----------------------------------------------------------------------------------

    async def add_messages(self, messages: Sequence[Message]) -> list[Message]:
        async def add(conn: Connection) -> list[Message]:
            cur = await conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
            now = float((await cur.fetchall())[0][0])
            new, seqs = [], []
            for message in in_arrival_order(messages, now):
                cur = await conn.execute(
                    "INSERT INTO messages (message_id, rental_id, data, stored_at)"
                    " VALUES (%s, %s, %s, to_timestamp(%s)) ON CONFLICT (message_id) DO NOTHING RETURNING seq",
                    (message.message_id, message.rental_id, message.model_dump_json(), now),
                )
                if row := await cur.fetchone():
                    new.append(message)
                    seqs.append(row[0])
            for start in range(0, len(seqs), NOTIFY_SEQS):
                await self._notify(conn, seqs=seqs[start : start + NOTIFY_SEQS])
            return new

        return await self._write(add) if messages else []

    async def known_messages(self, message_ids: Sequence[str]) -> set[str]:
        if not message_ids:
            return set()
        rows = await self._rows("SELECT message_id FROM messages WHERE message_id = ANY(%s)", (list(message_ids),))
        return {row[0] for row in rows}

    async def messages(self, rental_id: str) -> list[StoredMessage]:
        rows = await self._rows(
            "SELECT data, extract(epoch FROM stored_at)::float8, returned_at IS NOT NULL FROM messages"
            " WHERE rental_id = %s ORDER BY seq",
            (rental_id,),
        )
        return [StoredMessage(Message.model_validate_json(data), stored, returned) for data, stored, returned in rows]

    async def recent_messages(self, limit: int = 20, agent: str | None = None) -> list[Message]:
        rows = await self._rows(
            "SELECT m.data FROM messages m WHERE %s::text IS NULL OR EXISTS (SELECT 1 FROM rentals r"
            " WHERE r.rental_id = m.rental_id AND r.agent = %s) ORDER BY m.seq DESC LIMIT %s",
            (agent, agent, limit),
        )
        return [Message.model_validate_json(row[0]) for row in rows]

    async def claim_next(self, rental_id: str, *, at: float | None = None) -> Message | None:
        async def claim(conn: Connection) -> Message | None:
            cur = await conn.execute(
                "UPDATE messages SET returned_at = COALESCE(to_timestamp(%s::float8), clock_timestamp())"
                " WHERE seq = (SELECT seq FROM messages WHERE rental_id = %s AND returned_at IS NULL"
                " ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING data",
                (at, rental_id),
            )
            row = await cur.fetchone()
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
        async def insert(conn: Connection) -> int:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (BUDGET_KEY,))  # every replica's reservations
            cur = await conn.execute(
                "SELECT count(*) FROM purchases WHERE provider = %s AND state = 'uncertain'", (provider,)
            )
            (uncertain,) = (await cur.fetchall())[0]
            committed, by_agent = committed_split(await _committed_rows(conn), agent)
            check(committed, int(uncertain), by_agent)
            cur = await conn.execute(
                "INSERT INTO purchases (provider, kind, plan_id, source_rental_id, max_price, state, created_at, owner,"
                " agent) VALUES (%s, %s, %s, %s, %s, 'reserved', clock_timestamp(), %s, %s) RETURNING purchase_id",
                (provider, kind, plan_id, source_rental_id, amount, self.owner, agent),
            )
            return int((await cur.fetchall())[0][0])

        return await self._write(insert)

    async def note_balance_before(self, purchase_id: int, balance: Decimal) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE purchases SET balance_before = %s WHERE purchase_id = %s", (balance, purchase_id)
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
        async def update(conn: Connection) -> None:
            await conn.execute(
                "UPDATE purchases SET state = %s, price = COALESCE(%s::numeric, price),"
                " rental_id = COALESCE(%s::text, rental_id), note = COALESCE(%s::text, note), verified = %s,"
                " settled_at = CASE WHEN %s THEN NULL ELSE clock_timestamp() END WHERE purchase_id = %s",
                (state, price, rental_id, note, verified, state in UNSETTLED, purchase_id),
            )
            if state == "bought" and rental_id is not None:  # a rental recorded before its purchase settled
                await conn.execute(f"UPDATE rentals SET agent = {_BUYER} WHERE rental_id = %s", (rental_id, rental_id))

        await self._write(update)

    async def note_refund(self, rental_id: str, amount: Decimal) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE purchases SET refunded = LEAST(%s::numeric, COALESCE(price, max_price))"
                " WHERE purchase_id = (SELECT max(purchase_id) FROM purchases WHERE rental_id = %s AND kind = 'rent'"
                " AND state = 'bought')",
                (amount, rental_id),
            )
        )

    async def bought_rental_ids(self, provider: str) -> set[str]:
        rows = await self._rows(
            "SELECT rental_id FROM purchases WHERE provider = %s AND state = 'bought' AND rental_id IS NOT NULL",
            (provider,),
        )
        return {row[0] for row in rows}

    async def unsettled(self, provider: str | None = None) -> list[Purchase]:
        rows = await self._rows(
            f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE state IN ('reserved', 'uncertain')"
            " AND (%s::text IS NULL OR provider = %s) ORDER BY purchase_id",
            (provider, provider),
        )
        return [purchase_from_row(row) for row in rows]

    async def purchase(self, purchase_id: int) -> Purchase | None:
        rows = await self._rows(f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE purchase_id = %s", (purchase_id,))
        return purchase_from_row(rows[0]) if rows else None

    async def purchases(self) -> list[Purchase]:
        rows = await self._rows(f"SELECT {_PURCHASE_COLUMNS} FROM purchases ORDER BY purchase_id")
        return [purchase_from_row(row) for row in rows]

    async def committed(self, agent: str | None = None) -> Decimal:
        with unavailable_when_down():
            async with self._pool.connection() as conn:
                rows = await _committed_rows(conn)
        return committed_sum(row for row in rows if agent in (None, row[4]))

    # -- Figures (metrics, report, dashboard) and the audit ---------------------------------------------

    async def note_refusal(
        self, *, provider: str | None, amount: Decimal, note: str, agent: str = DEFAULT_AGENT
    ) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO refusals (provider, amount, note, created_at, agent)"
                " VALUES (%s, %s, %s, clock_timestamp(), %s)",
                (provider, amount, note, agent),
            )
        )

    async def charges(self, since: float = 0.0) -> list[Charge]:
        rows = await self._rows(
            "SELECT provider, kind, state, max_price, price, refunded, extract(epoch FROM created_at)::float8, agent"
            " FROM purchases WHERE created_at >= to_timestamp(%s) ORDER BY purchase_id",
            (since,),
        )
        return [charge(*row) for row in rows]

    async def refusals(self, since: float = 0.0) -> list[Refusal]:
        rows = await self._rows(
            "SELECT provider, amount, note, extract(epoch FROM created_at)::float8, agent FROM refusals"
            " WHERE created_at >= to_timestamp(%s) ORDER BY refusal_id",
            (since,),
        )
        return [Refusal(provider, amount, note, at, agent) for provider, amount, note, at, agent in rows]

    async def rental_records(self, since: float = 0.0) -> list[RentalRecord]:
        rows = await self._rows(
            "SELECT r.data, extract(epoch FROM r.recorded_at)::float8,"
            " (SELECT count(*) FROM messages m WHERE m.rental_id = r.rental_id), r.agent"
            " FROM rentals r WHERE r.recorded_at >= to_timestamp(%s) ORDER BY r.recorded_at",
            (since,),
        )
        return [RentalRecord(Rental.model_validate_json(d), at, n, agent) for d, at, n, agent in rows]

    async def handovers(self, since: float = 0.0) -> list[Handover]:
        rows = await self._rows(
            "SELECT m.data, extract(epoch FROM m.returned_at)::float8, COALESCE(r.agent, %s) FROM messages m"
            " LEFT JOIN rentals r ON r.rental_id = m.rental_id"
            " WHERE m.returned_at >= to_timestamp(%s) ORDER BY m.returned_at, m.seq",
            (DEFAULT_AGENT, since),
        )
        handed = [(Message.model_validate_json(data), at, agent) for data, at, agent in rows]
        return [Handover(m.rental_id, m.received_at, at, agent) for m, at, agent in handed]

    async def audit(self, entry: AuditEntry) -> None:
        await self._write(
            lambda conn: conn.execute(
                f"INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES (clock_timestamp(), %s, %s, %s, %s, %s, %s, %s)",
                (
                    entry.agent,
                    entry.action,
                    entry.outcome,
                    entry.rental_id,
                    entry.amount,
                    entry.detail,
                    entry.credential,
                ),
            )
        )

    async def audit_entries(self, since: float = 0.0, agent: str | None = None) -> list[AuditEntry]:
        rows = await self._rows(
            f"SELECT extract(epoch FROM at)::float8, {_AUDIT_COLUMNS.partition(', ')[2]} FROM audit"
            " WHERE at >= to_timestamp(%s) AND (%s::text IS NULL OR agent = %s) ORDER BY audit_id",
            (since, agent, agent),
        )
        return [audit_entry(row) for row in rows]


_AUDIT_COLUMNS = "at, agent, action, outcome, rental_id, amount, detail, credential"
# The agent a rental belongs to (its id the one parameter): the agent of the latest purchase that bought it.
_BUYER = (
    "COALESCE((SELECT agent FROM purchases WHERE rental_id = %s AND kind = 'rent' AND state = 'bought'"
    " ORDER BY purchase_id DESC LIMIT 1), 'owner')"
)


async def _try_lock(conn: Connection, key: int) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
    row = await cur.fetchone()
    return bool(row and row[0])


def _first_line(err: Exception) -> str:
    return next(iter(str(err).splitlines()), type(err).__name__)


async def _committed_rows(conn: Connection) -> list[TupleRow]:
    """(state, max_price, price, refunded, agent) of the last 24 h's purchases that commit money."""
    cur = await conn.execute(
        "SELECT state, max_price, price, refunded, agent FROM purchases WHERE created_at >= clock_timestamp()"
        " - make_interval(secs => %s) AND state IN ('reserved', 'uncertain', 'bought')",
        (DAY,),
    )
    return await cur.fetchall()
