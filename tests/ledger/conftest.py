"""The ledger contract suite runs every test on each backend (`store`: an SQLite file, or a PostgreSQL database
of its own), the way fsspec and libcloud test every implementation with one suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from smsrent.service.ledger import Ledger
from tests.ledger.stores import PostgresStore, SqliteStore, Store

BACKENDS = ("sqlite", "postgres")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        yield SqliteStore(tmp_path / "data" / "ledger.sqlite3")
    else:
        yield PostgresStore(request.getfixturevalue("database_url"))


@pytest.fixture
async def ledger(store: Store) -> AsyncIterator[Ledger]:
    opened = await store.open()
    yield opened
    await opened.close()
