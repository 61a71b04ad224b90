"""The SQLite ledger alone: its file (WAL, migrations run when it opens, a failed COMMIT), and how processes on one
machine share it (a process's pid tells whether it runs; a lock row names its holder). What every backend does:
test_contract.py."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from smsrent.service.ledger import HOST, STALE_AFTER, LedgerUnusable
from smsrent.service.ledger.sqlite import SqliteLedger, migrations
from smsrent.service.ledger.sqlite.migrations import MIGRATIONS
from tests.ledger import bought, rental

pytestmark = pytest.mark.anyio

NOTE = "the server stopped mid-purchase"


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ledger.sqlite3"


@pytest.fixture
async def ledger(ledger_path: Path) -> AsyncIterator[SqliteLedger]:
    opened = await SqliteLedger.open(ledger_path)
    yield opened
    await opened.close()


def pragma(path: Path, name: str) -> object:
    with sqlite3.connect(path) as db:
        return db.execute(f"PRAGMA {name}").fetchone()[0]


async def test_new_file_is_wal_and_fully_migrated(ledger: SqliteLedger, ledger_path: Path) -> None:
    assert pragma(ledger_path, "journal_mode") == "wal"
    assert pragma(ledger_path, "user_version") == len(MIGRATIONS)
    with sqlite3.connect(ledger_path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"rentals", "messages", "purchases"} <= tables


async def test_reopening_runs_only_the_migrations_a_file_lacks(
    ledger_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await SqliteLedger.open(ledger_path)
    await first.save_rental(rental())
    await first.close()
    # A later version adds a migration (without IF NOT EXISTS: running it twice would fail).
    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, "CREATE TABLE extra (x INTEGER);"))
    for _ in range(2):
        reopened = await SqliteLedger.open(ledger_path)
        assert await reopened.rental("gotsms:rent-1") == rental()
        await reopened.close()
        assert pragma(ledger_path, "user_version") == len(MIGRATIONS) + 1


async def test_the_agents_migration_gives_everything_before_it_to_the_owner(
    ledger_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:4])  # the release before agents
    before = await SqliteLedger.open(ledger_path)
    await before.close()
    with closing(sqlite3.connect(ledger_path)) as db, db:  # its own statements, without the agent columns
        db.execute(
            "INSERT INTO purchases (provider, kind, max_price, price, state, created_at, rental_id)"
            " VALUES ('gotsms', 'rent', '1', '1', 'bought', ?, 'gotsms:old')",
            (time.time(),),
        )
        db.execute(
            "INSERT INTO refusals (provider, amount, note, created_at) VALUES ('gotsms', '2', 'no', ?)", (time.time(),)
        )
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
    after = await SqliteLedger.open(ledger_path)
    try:
        await after.save_rental(rental("gotsms:old"))
        assert pragma(ledger_path, "user_version") == len(MIGRATIONS)
        assert [c.agent for c in await after.charges()] == ["owner"]
        assert [r.agent for r in await after.refusals()] == ["owner"]
        assert await after.agents(["gotsms:old"]) == {"gotsms:old": "owner"}
        assert await after.committed("owner") == Decimal(1)
    finally:
        await after.close()


async def test_memory_ledger_works() -> None:
    throwaway = await SqliteLedger.open(":memory:")
    try:
        await throwaway.save_rental(rental())
        assert await throwaway.rental("gotsms:rent-1") == rental()
    finally:
        await throwaway.close()


async def test_a_commit_that_fails_is_rolled_back_and_later_writes_work(ledger: SqliteLedger) -> None:
    """A real failed COMMIT that leaves the transaction open (a deferred constraint, checked at COMMIT): the write
    is rolled back and re-raised, and the ledger takes the next write (before, every later BEGIN failed)."""

    def prepare() -> None:
        ledger._db.execute("PRAGMA foreign_keys = ON")
        ledger._db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        ledger._db.execute(
            "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )

    await ledger._run(prepare)
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        await ledger._write(lambda db: db.execute("INSERT INTO child (parent_id) VALUES (42)"))
    assert not ledger._db.in_transaction
    await ledger.save_rental(rental())
    await bought(ledger, "0.60")
    assert await ledger.rental("gotsms:rent-1") == rental()
    assert await ledger.committed() == Decimal("0.60")
    assert await ledger._run(lambda: ledger._db.execute("SELECT COUNT(*) FROM child").fetchone()[0]) == 0


class CommitFailsOnce:
    """A connection whose next COMMIT fails the way a full disk makes it fail: SQLite has rolled back already."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.failed = db, False

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT" and not self.failed:
            self.failed = True
            self.db.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)


async def test_a_commit_failed_after_sqlite_rolled_back_is_reraised_and_later_writes_work(ledger_path: Path) -> None:
    opened = await SqliteLedger.open(ledger_path)
    flaky = SqliteLedger(CommitFailsOnce(opened._db))  # type: ignore[arg-type]
    try:
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            await flaky.save_rental(rental("gotsms:lost"))
        await flaky.save_rental(rental())
        assert await flaky.rental("gotsms:lost") is None
        assert await flaky.rental("gotsms:rent-1") == rental()
    finally:
        await opened.close()


async def test_a_ledger_file_that_cannot_use_wal_is_refused_naming_its_path(
    ledger_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite answers the journal mode in effect; on a file system it cannot share memory on (here: the
    `unix-none` VFS, which has no locking) it keeps "delete", and the ledger refuses to start."""
    connect = sqlite3.connect

    def without_locking(path: str, **kwargs: object) -> sqlite3.Connection:
        ledger_path.parent.mkdir(parents=True, exist_ok=True)
        return connect(f"{Path(path).as_uri()}?vfs=unix-none", uri=True, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite3, "connect", without_locking)
    with pytest.raises(LedgerUnusable, match=re.escape(str(ledger_path))) as refused:
        await SqliteLedger.open(ledger_path)
    assert "WAL" in str(refused.value)
    assert "'delete'" in str(refused.value)


async def test_servers_opening_an_old_file_at_once_migrate_it_once(ledger_path: Path) -> None:
    """Eight opens race on a file of schema version 1: each runs the missing migrations only if no other did
    (the version is read under the write lock), so none fails on a column another already added."""
    ledger_path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(ledger_path)) as db:
        db.executescript(f"{MIGRATIONS[0]}; PRAGMA user_version = 1;")
    opened = []

    async def open_one() -> None:
        opened.append(await SqliteLedger.open(ledger_path))

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(open_one)
    finally:
        for ledger in opened:
            await ledger.close()
    assert len(opened) == 8
    assert pragma(ledger_path, "user_version") == len(MIGRATIONS)


async def test_the_migration_keeps_a_re_rents_source_apart_from_the_rental_it_made(ledger_path: Path) -> None:
    """A ledger written before `source_rental_id`: extensions and renewals carried their source as `rental_id`, and
    so did a re-rent until its answer named the new rental (if it ever did)."""
    ledger_path.parent.mkdir(parents=True)
    old = sqlite3.connect(ledger_path)
    old.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    rows = [  # kind, rental_id, state
        ("rent", "getatext:7", "bought"),  # bought getatext:7
        ("rent", "getatext:7", "bought"),  # re-rented it, the answer lost: settled from the balance
        ("rent", "getatext:7", "uncertain"),  # re-rented it again, still unsettled
        ("rent", "getatext:9", "bought"),  # re-rented it, answered: its own new rental
        ("renew", "getatext:long:3", "bought"),
        ("extend", "gotsms:r1", "uncertain"),
    ]
    for kind, rental_id, state in rows:
        old.execute(
            "INSERT INTO purchases (provider, kind, rental_id, max_price, state, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            ("getatext", kind, rental_id, "1.00", state, time.time()),
        )
    old.commit()
    old.close()
    ledger = await SqliteLedger.open(ledger_path)
    try:
        purchases = await ledger.purchases()
    finally:
        await ledger.close()
    assert [(p.source_rental_id, p.rental_id, p.verified) for p in purchases] == [
        (None, "getatext:7", True),
        ("getatext:7", None, True),
        ("getatext:7", None, True),
        (None, "getatext:9", True),
        ("getatext:long:3", "getatext:long:3", True),
        ("gotsms:r1", "gotsms:r1", True),
    ]


def write(path: Path, sql: str, *args: object) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(sql, args)


def register(path: Path, token: str, *, host: str = HOST, pid: int, age: float = 0.0) -> None:
    """A process row as another server writes it, its last heartbeat `age` seconds ago."""
    beat = time.time() - age
    write(
        path,
        "INSERT INTO processes (token, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
        token,
        host,
        pid,
        beat,
        beat,
    )


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    return ended.pid


async def reserve(ledger: SqliteLedger, owner: str | None) -> int:
    """A purchase reserved by `owner` (None: a file from before owners were recorded)."""
    pid = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("1"), plan_id="gotsms:p")
    await ledger._write(lambda db: db.execute("UPDATE purchases SET owner = ? WHERE purchase_id = ?", (owner, pid)))
    return pid


async def state_of(ledger: SqliteLedger, purchase_id: int) -> tuple[str, str | None, str | None]:
    purchase = await ledger.purchase(purchase_id)
    assert purchase is not None
    return purchase.state, purchase.owner, purchase.note


# -- Processes on one machine--------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "alive"),
    [
        ("this host, pid running, heartbeat fresh", True),
        ("other host, heartbeat fresh", True),
        ("this host, pid ended, heartbeat fresh", False),
        ("this host, pid running, heartbeat stale", False),
        ("other host, heartbeat stale", False),
        ("this host, this pid, no ledger of it open here", False),
        ("not registered", False),
    ],
)
async def test_recovery_takes_over_only_what_a_gone_process_left(
    ledger: SqliteLedger, ledger_path: Path, dead_pid: int, where: str, alive: bool
) -> None:
    stale = STALE_AFTER + 5
    rows = {
        "this host, pid running, heartbeat fresh": {"pid": os.getppid()},
        "other host, heartbeat fresh": {"host": "elsewhere", "pid": 1},
        "this host, pid ended, heartbeat fresh": {"pid": dead_pid},
        "this host, pid running, heartbeat stale": {"pid": os.getppid(), "age": stale},
        "other host, heartbeat stale": {"host": "elsewhere", "pid": 1, "age": stale},
        "this host, this pid, no ledger of it open here": {"pid": os.getpid()},
    }
    if where in rows:
        register(ledger_path, "other", **rows[where])  # type: ignore[arg-type]
    reserved = await reserve(ledger, "other")
    unsure = await reserve(ledger, "other")
    await ledger.settle(unsure, "uncertain", note="the answer was lost")

    taken = await ledger.recover_orphans(busy=(), note=NOTE)

    if alive:
        assert taken == 0
        assert await state_of(ledger, reserved) == ("reserved", "other", None)
        assert await state_of(ledger, unsure) == ("uncertain", "other", "the answer was lost")
        assert await ledger.in_other_hands("gotsms")
    else:
        assert taken == 2
        assert await state_of(ledger, reserved) == ("uncertain", None, NOTE)
        assert await state_of(ledger, unsure) == ("uncertain", None, "the answer was lost")
        assert not await ledger.in_other_hands("gotsms")
        remaining = await ledger._run(lambda: ledger._db.execute("SELECT token FROM processes").fetchall())
        assert remaining == [(ledger.owner,)]  # the gone process is forgotten


async def test_a_lock_held_by_a_live_process_waits_and_one_left_by_a_gone_process_is_taken_over(
    ledger: SqliteLedger, ledger_path: Path, dead_pid: int
) -> None:
    register(ledger_path, "live", host="elsewhere", pid=1)
    write(ledger_path, "INSERT INTO locks (name, holder, taken_at) VALUES ('purchase:getatext', 'live', 0)")
    with anyio.move_on_after(0.5) as waiting:
        async with ledger.lock("purchase:getatext"):
            pytest.fail("took a lock a live process holds")
    assert waiting.cancelled_caught

    register(ledger_path, "gone", pid=dead_pid)
    write(ledger_path, "UPDATE locks SET holder = 'gone'")
    with anyio.fail_after(10):
        async with ledger.lock("purchase:getatext"):
            holder = await ledger._run(lambda: ledger._db.execute("SELECT holder FROM locks").fetchone()[0])
    assert holder == ledger.owner
