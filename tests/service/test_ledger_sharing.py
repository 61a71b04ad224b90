"""One ledger file shared by several processes: who is alive, ledger locks, and purchases left by a process that
is gone. Another process is played by a second `Ledger` on the same file, or by rows written as one would."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from smsrent.service.ledger import HOST, STALE_AFTER, Ledger

pytestmark = pytest.mark.anyio

NOTE = "the server stopped mid-purchase"


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


async def reserve(ledger: Ledger, owner: str | None) -> int:
    """A purchase reserved by `owner` (None: a file from before owners were recorded)."""
    pid = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("1"), plan_id="gotsms:p")
    await ledger._write(lambda db: db.execute("UPDATE purchases SET owner = ? WHERE purchase_id = ?", (owner, pid)))
    return pid


async def state_of(ledger: Ledger, purchase_id: int) -> tuple[str, str | None, str | None]:
    purchase = await ledger.purchase(purchase_id)
    assert purchase is not None
    return purchase.state, purchase.owner, purchase.note


# -- Who is alive -----------------------------------------------------------------------------------------


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
    ledger: Ledger, ledger_path: Path, dead_pid: int, where: str, alive: bool
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


async def test_another_open_ledger_in_this_process_is_alive(ledger: Ledger, ledger_path: Path) -> None:
    other = await Ledger.open(ledger_path)
    try:
        reserved = await reserve(other, other.owner)
        assert await ledger.recover_orphans(busy=(), note=NOTE) == 0
        assert await state_of(ledger, reserved) == ("reserved", other.owner, None)
        assert await ledger.in_other_hands("gotsms")
        assert not await other.in_other_hands("gotsms")
    finally:
        await other.close()
    assert await ledger.recover_orphans(busy=(), note=NOTE) == 1  # closed: gone
    assert await state_of(ledger, reserved) == ("uncertain", None, NOTE)


async def test_recovery_of_own_and_ownerless_purchases(ledger: Ledger) -> None:
    """Reserved without an owner (a file from before owners): taken over. This process's own: a reservation is
    its own to settle; an uncertain one is held only while its call runs (`busy`), else its release failed."""
    legacy = await reserve(ledger, None)
    own_reserved = await reserve(ledger, ledger.owner)
    own_running, own_released_failed = await reserve(ledger, ledger.owner), await reserve(ledger, ledger.owner)
    for pid in (own_running, own_released_failed):
        await ledger.settle(pid, "uncertain", note="the answer was lost")

    assert await ledger.recover_orphans(busy={own_running}, note=NOTE) == 2

    assert await state_of(ledger, legacy) == ("uncertain", None, NOTE)
    assert await state_of(ledger, own_reserved) == ("reserved", ledger.owner, None)
    assert await state_of(ledger, own_running) == ("uncertain", ledger.owner, "the answer was lost")
    assert await state_of(ledger, own_released_failed) == ("uncertain", None, "the answer was lost")


async def test_release_hands_a_purchase_over_and_only_the_owner_can(ledger: Ledger, ledger_path: Path) -> None:
    other = await Ledger.open(ledger_path)
    try:
        pid = await reserve(other, other.owner)
        await ledger.release(pid)  # not its own: nothing changes
        assert (await state_of(ledger, pid))[1] == other.owner
        await other.release(pid)
        assert (await state_of(ledger, pid))[1] is None
    finally:
        await other.close()


async def test_a_forgotten_process_registers_again_on_its_next_heartbeat(ledger: Ledger, ledger_path: Path) -> None:
    write(ledger_path, "DELETE FROM processes")  # judged gone by another process (this machine was asleep)
    await ledger.beat()
    rows = await ledger._run(lambda: ledger._db.execute("SELECT token, host, pid FROM processes").fetchall())
    assert rows == [(ledger.owner, HOST, os.getpid())]


# -- Ledger locks -----------------------------------------------------------------------------------------


async def test_a_ledger_lock_excludes_another_process_until_released(ledger: Ledger, ledger_path: Path) -> None:
    other = await Ledger.open(ledger_path)
    order: list[str] = []
    held = anyio.Event()

    async def first() -> None:
        async with ledger.lock("purchase:getatext"):
            order.append("first holds")
            held.set()
            await anyio.sleep(0.3)  # time for the other to try
            order.append("first releases")

    async def second() -> None:
        await held.wait()
        async with other.lock("purchase:getatext"):
            order.append("second holds")

    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                tg.start_soon(second)
    finally:
        await other.close()
    assert order == ["first holds", "first releases", "second holds"]


async def test_a_ledger_lock_serialises_this_processes_tasks(ledger: Ledger) -> None:
    inside, most = 0, 0

    async def hold() -> None:
        nonlocal inside, most
        async with ledger.lock("rental:gotsms:x"):
            inside += 1
            most = max(most, inside)
            await anyio.sleep(0.01)
            inside -= 1

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(hold)
    assert most == 1
    assert await ledger._run(lambda: ledger._db.execute("SELECT COUNT(*) FROM locks").fetchone()[0]) == 0


async def test_a_lock_held_by_a_live_process_waits_and_one_left_by_a_gone_process_is_taken_over(
    ledger: Ledger, ledger_path: Path, dead_pid: int
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


async def test_closing_a_ledger_releases_its_locks_and_unregisters_it(ledger: Ledger, ledger_path: Path) -> None:
    other = await Ledger.open(ledger_path)
    entered = anyio.Event()

    async def hold_forever() -> None:
        async with other.lock("settle:gotsms"):
            entered.set()
            await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold_forever)
            await entered.wait()
            tg.cancel_scope.cancel()  # a cancelled holder still releases
        await other.close()
        async with ledger.lock("settle:gotsms"):
            pass
    tokens = await ledger._run(lambda: ledger._db.execute("SELECT token FROM processes").fetchall())
    assert tokens == [(ledger.owner,)]
