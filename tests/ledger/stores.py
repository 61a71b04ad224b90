"""The stores the ledger contract runs on: an SQLite file, or a PostgreSQL database of its own. A store opens as
many ledgers on the same data as a test needs (each one a process of it), and does to its rows what another
process, a crash or the passing of time would."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Protocol

import psycopg
from pydantic import SecretStr

from smsrent.service.ledger import Ledger
from smsrent.service.ledger.postgres import PostgresLedger
from smsrent.service.ledger.sqlite import SqliteLedger
from smsrent.service.ledger.sqlite.base import OPEN


class Store(Protocol):
    async def open(self) -> Ledger:
        """One more process on this store."""
        ...

    async def execute(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        """Run one statement as another process would (`%s` placeholders) and return its rows."""
        ...

    async def age_purchase(self, purchase_id: int, seconds: float) -> None:
        """Move a purchase's creation `seconds` into the past."""

    async def age_heartbeat(self, token: str, seconds: float) -> None:
        """Move a process's last heartbeat `seconds` into the past."""

    async def kill(self, ledger: Ledger) -> None:
        """End `ledger`'s process the way SIGKILL would: nothing of it is unregistered."""


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def open(self) -> Ledger:
        return await SqliteLedger.open(self.path)

    async def execute(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        with closing(sqlite3.connect(self.path)) as db, db:
            return db.execute(sql.replace("%s", "?"), args).fetchall()

    async def age_purchase(self, purchase_id: int, seconds: float) -> None:
        await self.execute(
            "UPDATE purchases SET created_at = %s WHERE purchase_id = %s", time.time() - seconds, purchase_id
        )

    async def age_heartbeat(self, token: str, seconds: float) -> None:
        await self.execute("UPDATE processes SET heartbeat_at = %s WHERE token = %s", time.time() - seconds, token)

    async def kill(self, ledger: Ledger) -> None:
        assert isinstance(ledger, SqliteLedger)
        OPEN.discard(ledger.owner)  # this process no longer vouches for it; its pid is this one's
        await ledger._run(ledger._db.close)


class PostgresStore:
    def __init__(self, url: SecretStr) -> None:
        self.url = url

    async def open(self) -> Ledger:
        return await PostgresLedger.open(self.url)

    async def execute(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        async with await psycopg.AsyncConnection.connect(self.url.get_secret_value(), autocommit=True) as conn:
            cur = await conn.execute(sql, args)
            return await cur.fetchall() if cur.description else []

    async def age_purchase(self, purchase_id: int, seconds: float) -> None:
        await self.execute(
            "UPDATE purchases SET created_at = created_at - make_interval(secs => %s) WHERE purchase_id = %s",
            seconds,
            purchase_id,
        )

    async def age_heartbeat(self, token: str, seconds: float) -> None:
        await self.execute(
            "UPDATE processes SET heartbeat_at = heartbeat_at - make_interval(secs => %s) WHERE token = %s",
            seconds,
            token,
        )

    async def kill(self, ledger: Ledger) -> None:
        """The server ends every connection of the process (as when its machine closes them), waiting until they are
        gone; then the process's objects are let go without a word to the database."""
        assert isinstance(ledger, PostgresLedger)
        await self.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
            f"smsrent {ledger.owner}",
        )
        await ledger._shut()
