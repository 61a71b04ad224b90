"""The PostgreSQL server the tests use: SMSRENT_TEST_DATABASE_URL (a role that may create databases). Set, every
PostgreSQL test runs and fails rather than skip; unset, they are skipped with a reason `-ra` prints. Each test
gets a database of its own (`smsrent_t_<random>`), dropped `WITH (FORCE)` after it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg
import pytest
from pydantic import SecretStr

ENV = "SMSRENT_TEST_DATABASE_URL"
SKIP_REASON = (
    f"{ENV} is not set: the PostgreSQL ledger tests need a server"
    " (.ci/run starts one; see the README's Development section)"
)


def server_url() -> str:
    """The test server's URL, or a skip when none is configured."""
    url = os.environ.get(ENV)
    if not url:
        pytest.skip(SKIP_REASON)
    return url


@contextmanager
def fresh_database() -> Iterator[SecretStr]:
    """A new empty database on the test server, dropped afterwards (with whatever still connects to it)."""
    server = server_url()
    name = f"smsrent_t_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield SecretStr(urlsplit(server)._replace(path=f"/{name}").geturl())
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
