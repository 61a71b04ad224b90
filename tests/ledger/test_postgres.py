"""The PostgreSQL ledger alone: versioned migrations (`smsrent-mcp migrate`, a replica refusing an older schema and
starting on a newer one), one-line refusals that never show a password, money as NUMERIC, the database's clock,
and liveness from heartbeats and presence locks. What every backend does: test_contract.py."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import anyio
import pytest
from pydantic import SecretStr

from smsrent.service.ledger import DAY, STALE_AFTER, LedgerUnusable
from smsrent.service.ledger.postgres import PostgresLedger, base, migrations
from smsrent.service.ledger.postgres.base import describe
from smsrent.service.ledger.postgres.migrations import MIGRATIONS, Migration, check, migrate
from tests.ledger import rental
from tests.ledger.stores import PostgresStore
from tests.postgres import fresh_database

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

NOTE = "the server stopped mid-purchase"
LATER = Migration("a later release's table", "CREATE TABLE later (x integer)")  # no IF NOT EXISTS: runs once


@pytest.fixture
def empty_url() -> AsyncIterator[SecretStr]:
    with fresh_database() as url:
        yield url


@pytest.fixture
async def ledger(database_url: SecretStr) -> AsyncIterator[PostgresLedger]:
    opened = await PostgresLedger.open(database_url)
    yield opened
    await opened.close()


async def rows(url: SecretStr, sql: str, *args: object) -> list[tuple[object, ...]]:
    return await PostgresStore(url).execute(sql, *args)


# -- Schema versions --------------------------------------------------------------------------------------


async def test_a_database_without_the_schema_is_refused_naming_migrate_and_migrate_fixes_it(
    empty_url: SecretStr,
) -> None:
    with pytest.raises(LedgerUnusable, match=re.escape("run `smsrent-mcp migrate`")) as refused:
        await PostgresLedger.open(empty_url)
    assert f"is at schema version 0 and this smsrent needs {len(MIGRATIONS)}" in str(refused.value)
    assert await rows(empty_url, "SELECT to_regclass('purchases')") == [(None,)]  # opening changed nothing

    assert await migrate(empty_url) == (0, len(MIGRATIONS))
    assert await migrate(empty_url) == (len(MIGRATIONS), len(MIGRATIONS))
    ledger = await PostgresLedger.open(empty_url)
    await ledger.close()
    versions = await rows(empty_url, "SELECT version FROM smsrent_schema ORDER BY version")
    assert versions == [(n,) for n in range(1, len(MIGRATIONS) + 1)]


async def test_an_older_schema_is_refused_and_a_newer_one_serves_the_previous_release(
    database_url: SecretStr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release with one more migration refuses the database until `migrate` ran; the previous release still
    starts on the migrated database (replicas are upgraded one at a time)."""
    previous = await PostgresLedger.open(database_url)
    await previous.save_rental(kept := rental("gotsms:kept"))
    await previous.close()

    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, LATER))
    with pytest.raises(LedgerUnusable, match=f"version {len(MIGRATIONS)} and this smsrent needs {len(MIGRATIONS) + 1}"):
        await check(database_url)
    assert await migrate(database_url) == (len(MIGRATIONS), len(MIGRATIONS) + 1)
    upgraded = await PostgresLedger.open(database_url)
    await upgraded.close()

    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
    assert await check(database_url) == len(MIGRATIONS) + 1
    again = await PostgresLedger.open(database_url)
    try:
        assert await again.rental(kept.rental_id) == kept
    finally:
        await again.close()


# What the release before agents wrote (its statements, without the agent columns).
BEFORE_AGENTS = (
    "INSERT INTO purchases (provider, kind, plan_id, max_price, price, state, created_at, rental_id)"
    " VALUES ('gotsms', 'rent', 'gotsms:p', 1, 1, 'bought', clock_timestamp(), %s)"
)


async def test_the_agents_migration_gives_everything_before_it_to_the_owner_and_serves_the_previous_release(
    empty_url: SecretStr, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:1])
    assert await migrate(empty_url) == (0, 1)
    await rows(empty_url, BEFORE_AGENTS, "gotsms:old")
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
    assert await migrate(empty_url) == (1, len(MIGRATIONS))
    await rows(empty_url, BEFORE_AGENTS, "gotsms:older-replica")  # a replica not yet upgraded still writes
    ledger = await PostgresLedger.open(empty_url)
    try:
        await ledger.save_rental(rental("gotsms:old"))
        assert [c.agent for c in await ledger.charges()] == ["owner", "owner"]
        assert await ledger.agents(["gotsms:old"]) == {"gotsms:old": "owner"}
        assert await ledger.committed("owner") == Decimal(2)
    finally:
        await ledger.close()


async def test_migrations_started_together_apply_each_migration_once(empty_url: SecretStr) -> None:
    results: list[tuple[int, int]] = []

    async def run() -> None:
        results.append(await migrate(empty_url))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(run)
    assert sorted(results) == [(0, len(MIGRATIONS))] + [(len(MIGRATIONS), len(MIGRATIONS))] * 3


# -- Refusals name the database, never the password ----------------------------------------------------------


async def test_an_unreachable_database_is_refused_in_one_line_without_the_password() -> None:
    url = SecretStr("postgresql://smsrent:hunter2-secret@127.0.0.1:9/ledger")
    started = time.monotonic()
    with pytest.raises(LedgerUnusable) as refused:
        await PostgresLedger.open(url)
    message = str(refused.value)
    assert time.monotonic() - started < base.CONNECT_TIMEOUT + 5
    assert message.startswith("cannot connect to the PostgreSQL ledger (database ledger on 127.0.0.1:9): ")
    assert "\n" not in message
    assert "hunter2" not in message
    assert "hunter2" not in describe(url)


# -- Money and the clock -------------------------------------------------------------------------------------


async def test_money_is_stored_as_numeric_and_sums_exactly(ledger: PostgresLedger, database_url: SecretStr) -> None:
    for _ in range(3):
        await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("0.1"))
    assert await ledger.committed() == Decimal("0.3")  # 0.1 + 0.1 + 0.1 as floats would not be
    types = await rows(
        database_url,
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE column_name IN ('max_price', 'price', 'refunded', 'balance_before', 'amount') ORDER BY 1, 2",
    )
    assert {data_type for _, _, data_type in types} == {"numeric"}
    assert len(types) == 6  # the audit trail's amount too


async def test_the_budget_window_runs_on_the_databases_clock_not_the_replicas(
    ledger: PostgresLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica whose clock runs two days ahead still counts today's spend, and stamps its purchases with the
    database's time (on its own clock the purchase would look two days old, outside the window)."""
    await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("2.00"))
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 2 * DAY)
    seen: list[Decimal] = []
    pid = await ledger.reserve(
        provider="gotsms", kind="rent", amount=Decimal("1.00"), check=lambda c, _u, _a: seen.append(c)
    )
    assert seen == [Decimal("2.00")]
    assert await ledger.committed() == Decimal("3.00")
    purchase = await ledger.purchase(pid)
    assert purchase is not None
    assert abs(purchase.created_at - real()) < 60
    assert abs(await ledger.now() - real()) < 60


# -- Who is alive ---------------------------------------------------------------------------------------------


async def test_a_process_silent_too_long_is_gone_though_its_connection_lingers(
    ledger: PostgresLedger, database_url: SecretStr
) -> None:
    """Its machine vanished without closing its connections: its presence lock still shows, its heartbeat is
    stale, and what it left is taken over."""
    store = PostgresStore(database_url)
    silent = await PostgresLedger.open(database_url)
    try:
        pid = await silent.reserve(provider="gotsms", kind="rent", amount=Decimal("1"))
        assert await ledger.recover_orphans(busy=(), note=NOTE) == 0
        await store.age_heartbeat(silent.owner, STALE_AFTER + 5)
        assert await ledger.recover_orphans(busy=(), note=NOTE) == 1
        taken = await ledger.purchase(pid)
        assert taken is not None
        assert (taken.state, taken.owner, taken.note) == ("uncertain", None, NOTE)
    finally:
        await silent.close()


async def test_a_process_whose_presence_connection_dropped_is_gone_until_its_next_beat(
    ledger: PostgresLedger, database_url: SecretStr
) -> None:
    """The presence lock went with its connection (a network cut): the others judge it gone at once; its next beat
    connects again, takes the lock, registers again, and it is alive."""
    other = await PostgresLedger.open(database_url)
    try:
        assert other._presence is not None
        backend = other._presence.info.backend_pid
        await rows(database_url, "SELECT pg_terminate_backend(%s, 5000)", backend)
        pid = await other.reserve(provider="gotsms", kind="rent", amount=Decimal("1"))
        assert await ledger.recover_orphans(busy=(), note=NOTE) == 1  # and it is forgotten

        await other.beat()
        mine = await other.reserve(provider="gotsms", kind="rent", amount=Decimal("1"))
        assert await ledger.recover_orphans(busy=(), note=NOTE) == 0
        assert {p.purchase_id: p.owner for p in await ledger.unsettled()} == {pid: None, mine: other.owner}
    finally:
        await other.close()


async def test_a_task_cancelled_while_waiting_for_a_lock_leaves_no_waiting_session(
    ledger: PostgresLedger, database_url: SecretStr
) -> None:
    other = await PostgresLedger.open(database_url)
    try:
        async with ledger.lock("purchase:getatext"):
            with anyio.move_on_after(0.3) as waited:
                async with other.lock("purchase:getatext"):
                    pytest.fail("took a lock another process holds")
            assert waited.cancelled_caught
            sessions = await rows(
                database_url,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                f"smsrent {other.owner}",
            )
        with anyio.fail_after(5):
            async with other.lock("purchase:getatext"):
                pass
    finally:
        await other.close()
    assert sessions == [(2,)]  # its pool's one and its presence: the waiting session is closed
