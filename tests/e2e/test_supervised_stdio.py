"""Over real stdio: a background task meeting a real non-provider failure (the ledger file locked by another
program past SQLite's busy timeout) is logged with its traceback and retried; the server keeps answering and
delivers the code once the lock is gone. And a ledger file that cannot use WAL stops the start with one line."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from smsrent.sandbox import serve_loopback
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.e2e.process import command, server_env
from tests.mcp import local_id, ok, posts, rent_gotsms

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def test_a_poller_failing_on_a_locked_ledger_is_logged_retried_and_delivers_afterwards(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox
) -> None:
    """A wait is under way when another program takes the ledger's write lock and the SMS arrives: the poller
    cannot store it (SQLite's busy timeout runs out), is logged and retried; once the lock is gone the code is
    delivered (to that wait, or, if the wait's own read of its cursor met the lock first and failed as a tool
    error, to the next one)."""
    log = tmp_path / "server.log"
    async with serve_loopback(gotsms_sandbox.app) as base:
        env = server_env(tmp_path, GOTSMS_API_TOKEN=gotsms_sandbox.token, GOTSMS_BASE_URL=f"{base}/api")
        params = StdioServerParameters(command="/bin/sh", args=["-c", f'exec "{command()}" 2>>"{log}"'], env=env)
        async with Client(params) as client:
            rental = await rent_gotsms(client)
            arguments = {"rental_id": rental["rental_id"], "timeout_seconds": 40}
            first: list[CallToolResult] = []

            async def wait() -> None:
                first.append(await client.call_tool("wait_for_code", arguments))

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait)
                    while not any(path.endswith("/wake-up") for path in posts(gotsms_sandbox)):
                        await anyio.sleep(0.02)  # the wait is under way (it woke the number)
                    with closing(sqlite3.connect(tmp_path / "ledger.sqlite3", isolation_level=None)) as other:
                        other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
                        gotsms_sandbox.deliver(local_id(rental["rental_id"]), "Your code is 864209", "864209")
                        while "background task poller:gotsms failed" not in log.read_text():
                            await anyio.sleep(0.1)
                        balance = await ok(client, "get_balance")  # still answering
                        other.execute("ROLLBACK")
            (result,) = first
            waited = result.structured_content
            if result.is_error or waited is None or waited["outcome"] != "code_received":
                waited = await ok(client, "wait_for_code", **arguments)
    stderr = log.read_text()
    assert balance["balances"]
    assert (waited["outcome"], waited["code"]) == ("code_received", "864209")
    assert "sqlite3.OperationalError: database is locked" in stderr
    assert "Traceback (most recent call last)" in stderr


REFUSE_WAL = """
import sqlite3
from pathlib import Path

from smsrent import cli

connect = sqlite3.connect  # a file system SQLite cannot share memory on: it keeps the "delete" journal
sqlite3.connect = lambda path, **kw: connect(f"{Path(path).as_uri()}?vfs=unix-none", uri=True, **kw)
cli.main()
"""


def test_a_ledger_that_cannot_use_wal_stops_the_start_with_one_line_naming_it(tmp_path: Path) -> None:
    env = server_env(tmp_path, GOTSMS_API_TOKEN="unused", GOTSMS_BASE_URL="http://127.0.0.1:9/api")
    done = subprocess.run(
        [sys.executable, "-c", REFUSE_WAL],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"smsrent-mcp: The ledger {tmp_path / 'ledger.sqlite3'} cannot use SQLite's WAL mode")
    assert "Traceback" not in done.stderr
