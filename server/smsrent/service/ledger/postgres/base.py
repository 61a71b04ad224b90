"""What the PostgreSQL ledger's parts share: its connections (the pool, and connections of their own for locks),
the database's errors as LedgerUnusable or LedgerUnavailable, and advisory lock keys."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import SecretStr

from smsrent.domain.errors import LedgerUnavailable
from smsrent.observe.tracing import traced_write
from smsrent.service.ledger import LedgerUnusable

T = TypeVar("T")
Connection = psycopg.AsyncConnection[TupleRow]

CONNECT_TIMEOUT = 5  # seconds to reach the database before a start fails
POOL_SIZE = 8  # connections per replica for reads and writes (locks and presence have their own)
CHANNEL = "smsrent"  # the NOTIFY channel: {"owner": token, "seqs": [...]} for messages, {"owner", "waits": 1}
# The agent a rental belongs to (its id the one parameter): the agent of the latest purchase that bought it.
BUYER = (
    "COALESCE((SELECT agent FROM purchases WHERE rental_id = %s AND kind = 'rent' AND state = 'bought'"
    " ORDER BY purchase_id DESC LIMIT 1), 'owner')"
)


def advisory_key(name: str) -> int:
    """The 64-bit advisory lock key of a ledger lock name (namespaced, so other applications' keys do not meet
    ours; two of our names meeting would take 2^64 names)."""
    digest = hashlib.blake2b(f"smsrent:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def describe(database_url: SecretStr) -> str:
    """The database as errors and logs may name it: its name, host and port, never the user or password."""
    try:
        params = conninfo_to_dict(database_url.get_secret_value())
    except psycopg.ProgrammingError:
        return "database (unreadable SMSRENT_DATABASE_URL)"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"database {params.get('dbname') or '(default)'} on {host}:{params.get('port') or 5432}"


def reason(err: Exception, database_url: SecretStr) -> str:
    """psycopg's error as one line, without the password should the driver ever echo it."""
    text = " ".join(str(err).split()) or type(err).__name__
    password = conninfo_to_dict(database_url.get_secret_value()).get("password")
    return text.replace(str(password), "***") if password else text


def connection_options(owner: str | None) -> dict[str, Any]:
    """Every connection's: autocommit, a connect timeout, the process it serves (in `pg_stat_activity`), and TCP
    keepalives, so that a connection a network silently dropped (a NAT, a load balancer) fails within about a
    minute instead of hanging for the operating system's two hours (a listener would be deaf meanwhile)."""
    return {
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT,
        "application_name": _application(owner),
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }


async def connect(database_url: SecretStr, owner: str | None = None) -> Connection:
    """A connection of its own (autocommit), or LedgerUnusable in one line naming the database, never the password.
    `owner`: the process it serves, in `pg_stat_activity.application_name`."""
    try:
        return await psycopg.AsyncConnection.connect(database_url.get_secret_value(), **connection_options(owner))
    except psycopg.Error as err:
        raise LedgerUnusable(
            f"cannot connect to the PostgreSQL ledger ({describe(database_url)}): {reason(err, database_url)}"
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


async def try_lock(conn: Connection, key: int) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
    row = await cur.fetchone()
    return bool(row and row[0])


class PostgresBase:
    """A pool of connections to the database, registered as one process of the ledger."""

    def __init__(self, database_url: SecretStr) -> None:
        self.owner = secrets.token_hex(8)
        self._url = database_url
        self._pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            database_url.get_secret_value(),
            min_size=1,
            max_size=POOL_SIZE,
            timeout=CONNECT_TIMEOUT,  # a call waits this long for a connection before the database counts as down
            check=AsyncConnectionPool.check_connection,  # a connection broken by a database restart is replaced
            kwargs=connection_options(self.owner),
            name="smsrent-ledger",
            open=False,
        )
        self._presence: Connection | None = None
        self._presence_key = advisory_key(f"process:{self.owner}")
        self._locks: dict[str, anyio.Lock] = {}

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
