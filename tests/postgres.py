"""The PostgreSQL server the tests use: SMSRENT_TEST_DATABASE_URL (a role that may create databases). Set, every
PostgreSQL test runs and fails rather than skip; unset, they are skipped with a reason `-ra` prints. Each test
gets a database of its own (`smsrent_t_<random>`), dropped `WITH (FORCE)` after it."""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from pydantic import SecretStr

from tests.e2e.process import free_port

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


PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class OwnServer:
    """A PostgreSQL server of a test's own, in a temporary directory on a free port: it may stop and start it."""

    data: Path
    port: int

    @property
    def url(self) -> SecretStr:
        return SecretStr(f"postgresql://{getpass.getuser()}@127.0.0.1:{self.port}/postgres")

    def stop(self) -> None:
        _as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        _as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.data / "server.log"), "-w", "-o", options, "start")


@contextmanager
def own_server() -> Iterator[OwnServer]:
    """A new PostgreSQL server (`initdb`, then `pg_ctl start`) with trust authentication for this user, stopped and
    removed afterwards. Run only where the shared test server is configured (SMSRENT_TEST_DATABASE_URL)."""
    server_url()
    with tempfile.TemporaryDirectory(prefix="smsrent-pg-") as root:
        data = Path(root) / "data"
        data.mkdir()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: its files belong to `postgres`
            shutil.chown(root, "postgres")
            shutil.chown(data, "postgres")
        _as_postgres("initdb", "-D", str(data), "-A", "trust", "-U", getpass.getuser(), "--no-sync", "-E", "UTF8")
        server = OwnServer(data, free_port())
        server.start()
        try:
            yield server
        finally:
            with suppress(subprocess.CalledProcessError):  # stopped already
                server.stop()


def _as_postgres(program: str, *args: str) -> None:
    runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*runner, str(PG_BIN / program), *args], check=True, capture_output=True, timeout=60)
