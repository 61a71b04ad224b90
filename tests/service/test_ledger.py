"""The SQLite ledger on a real file: schema and restarts, rental merging, messages and the wait cursor,
purchases and the rolling 24 h spend, and the atomic reservation under concurrency."""

from __future__ import annotations

import re
import sqlite3
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from smsrent.domain.errors import BudgetExceeded
from smsrent.domain.models import Message, Rental, RentalStatus
from smsrent.service import ledger as ledger_module
from smsrent.service.ledger import DAY, MIGRATIONS, Ledger, LedgerUnusable

pytestmark = pytest.mark.anyio

NOON = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)


def rental(rental_id: str = "gotsms:rent-1", **fields: object) -> Rental:
    base: dict[str, object] = {
        "provider": "gotsms",
        "phone": "+18001234567",
        "phone_display": "+1 800 123 4567",
        "service": "Telegram",
        "plan_id": "gotsms:plan-1",
        "price": Decimal("0.60"),
        "status": RentalStatus.ACTIVE,
        "provider_status": "active",
        "started_at": NOON,
    }
    return Rental.model_validate({"rental_id": rental_id, **base, **fields})


def message(n: int, rental_id: str = "gotsms:rent-1", *, at: datetime | None = NOON) -> Message:
    return Message(
        message_id=f"gotsms:msg-{n}",
        rental_id=rental_id,
        sender="+18001234567",
        text=f"Your code is {n:06d}",
        code=f"{n:06d}",
        received_at=None if at is None else at + timedelta(seconds=n),
    )


def pragma(path: Path, name: str) -> object:
    with sqlite3.connect(path) as db:
        return db.execute(f"PRAGMA {name}").fetchone()[0]


def age_purchase(path: Path, purchase_id: int, seconds: float) -> None:
    """Move a purchase's creation time into the past, as if it were made `seconds` ago."""
    db = sqlite3.connect(path)
    try:
        db.execute("UPDATE purchases SET created_at = ? WHERE purchase_id = ?", (time.time() - seconds, purchase_id))
        db.commit()
    finally:
        db.close()


async def bought(ledger: Ledger, price: str, *, max_price: str | None = None, rental_id: str | None = None) -> int:
    pid = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal(max_price or price), plan_id="gotsms:p")
    await ledger.settle(pid, "bought", price=Decimal(price), rental_id=rental_id)
    return pid


# -- Schema and restarts ------------------------------------------------------------------------------


async def test_new_file_is_wal_and_fully_migrated(ledger: Ledger, ledger_path: Path) -> None:
    assert pragma(ledger_path, "journal_mode") == "wal"
    assert pragma(ledger_path, "user_version") == len(MIGRATIONS)
    with sqlite3.connect(ledger_path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"rentals", "messages", "purchases"} <= tables


async def test_restart_keeps_active_rentals_cursor_purchases_and_spend(ledger_path: Path) -> None:
    first = await Ledger.open(ledger_path)
    await first.save_rental(rental("gotsms:live"))
    await first.save_rental(rental("gotsms:done", status=RentalStatus.EXPIRED, provider_status="expired"))
    await first.add_messages([message(1, "gotsms:live"), message(2, "gotsms:live"), message(3, "gotsms:live")])
    claimed = await first.claim_next("gotsms:live")
    spent = await bought(first, "0.60", rental_id="gotsms:live")
    reserved = await first.reserve(provider="getatext", kind="rent", amount=Decimal("0.40"))
    before = await first.committed()
    purchases = await first.purchases()
    await first.close()

    second = await Ledger.open(ledger_path)
    try:
        assert pragma(ledger_path, "user_version") == len(MIGRATIONS)
        assert [r.rental_id for r in await second.rentals(active=True)] == ["gotsms:live"]
        assert [r.rental_id for r in await second.rentals(active=False)] == ["gotsms:done"]
        assert await second.rental("gotsms:live") == rental("gotsms:live")
        # The cursor survived: the message returned before the restart is not returned again.
        assert claimed is not None
        assert claimed.message_id == "gotsms:msg-1"
        stored = await second.messages("gotsms:live")
        assert [(s.message.message_id, s.returned) for s in stored] == [
            ("gotsms:msg-1", True),
            ("gotsms:msg-2", False),
            ("gotsms:msg-3", False),
        ]
        after = await second.claim_next("gotsms:live")
        assert after is not None
        assert after.message_id == "gotsms:msg-2"
        # Purchases and the 24 h spend survived.
        assert await second.purchases() == purchases
        assert before == await second.committed() == Decimal("1.00")
        assert [p.purchase_id for p in await second.unsettled()] == [reserved]
        assert {p.purchase_id: p.state for p in purchases} == {spent: "bought", reserved: "reserved"}
    finally:
        await second.close()


async def test_reopening_runs_only_the_migrations_a_file_lacks(
    ledger_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await Ledger.open(ledger_path)
    await first.save_rental(rental())
    await first.close()
    # A later version adds a migration (without IF NOT EXISTS: running it twice would fail).
    monkeypatch.setattr(ledger_module, "MIGRATIONS", (*MIGRATIONS, "CREATE TABLE extra (x INTEGER);"))
    for _ in range(2):
        reopened = await Ledger.open(ledger_path)
        assert await reopened.rental("gotsms:rent-1") == rental()
        await reopened.close()
        assert pragma(ledger_path, "user_version") == len(MIGRATIONS) + 1


async def test_memory_ledger_works() -> None:
    throwaway = await Ledger.open(":memory:")
    try:
        await throwaway.save_rental(rental())
        assert await throwaway.rental("gotsms:rent-1") == rental()
    finally:
        await throwaway.close()


async def test_a_commit_that_fails_is_rolled_back_and_later_writes_work(ledger: Ledger) -> None:
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
    opened = await Ledger.open(ledger_path)
    flaky = Ledger(CommitFailsOnce(opened._db))  # type: ignore[arg-type]
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

    monkeypatch.setattr(ledger_module.sqlite3, "connect", without_locking)
    with pytest.raises(LedgerUnusable, match=re.escape(str(ledger_path))) as refused:
        await Ledger.open(ledger_path)
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
        opened.append(await Ledger.open(ledger_path))

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(open_one)
    finally:
        for ledger in opened:
            await ledger.close()
    assert len(opened) == 8
    assert pragma(ledger_path, "user_version") == len(MIGRATIONS)


# -- Rentals: merging partial answers -----------------------------------------------------------------


async def test_unknown_rental_is_none(ledger: Ledger) -> None:
    assert await ledger.rental("gotsms:nope") is None
    assert await ledger.rentals() == []


async def test_refund_answer_with_only_id_and_status_keeps_what_was_known(ledger: Ledger) -> None:
    await ledger.save_rental(rental())
    answer = Rental(rental_id="gotsms:rent-1", provider="gotsms", status=RentalStatus.REFUNDED, provider_status="x")
    merged = await ledger.save_rental(answer)
    assert merged.status is RentalStatus.REFUNDED
    assert merged.provider_status == "x"
    assert (merged.phone, merged.price, merged.plan_id, merged.started_at) == (
        "+18001234567",
        Decimal("0.60"),
        "gotsms:plan-1",
        NOON,
    )
    assert await ledger.rental("gotsms:rent-1") == merged
    assert await ledger.rentals(active=True) == []


async def test_answer_without_a_status_keeps_the_known_status(ledger: Ledger) -> None:
    await ledger.save_rental(rental())
    merged = await ledger.save_rental(Rental(rental_id="gotsms:rent-1", provider="gotsms", can_wake_up=False))
    assert merged.status is RentalStatus.ACTIVE
    assert merged.can_wake_up is False
    # An UNKNOWN status that the provider did name (a status we do not map) is recorded as such.
    named = await ledger.save_rental(
        Rental(rental_id="gotsms:rent-1", provider="gotsms", status=RentalStatus.UNKNOWN, provider_status="frozen")
    )
    assert (named.status, named.provider_status) == (RentalStatus.UNKNOWN, "frozen")


@pytest.mark.parametrize("ended", [RentalStatus.REFUNDED, RentalStatus.CANCELLED])
async def test_refund_or_cancel_is_not_replaced_by_completed(ledger: Ledger, ended: RentalStatus) -> None:
    await ledger.save_rental(rental())
    await ledger.save_rental(Rental(rental_id="gotsms:rent-1", provider="gotsms", status=ended))
    merged = await ledger.save_rental(
        Rental(rental_id="gotsms:rent-1", provider="gotsms", status=RentalStatus.COMPLETED, provider_status="finished")
    )
    assert merged.status is ended
    assert merged.provider_status == "finished"
    # Completed over active is an ordinary update.
    await ledger.save_rental(rental("gotsms:other"))
    other = await ledger.save_rental(
        Rental(rental_id="gotsms:other", provider="gotsms", status=RentalStatus.COMPLETED, provider_status="finished")
    )
    assert other.status is RentalStatus.COMPLETED


async def test_rentals_filter_by_provider_and_state_newest_first(ledger: Ledger) -> None:
    await ledger.save_rental(rental("gotsms:a"))
    await ledger.save_rental(rental("getatext:1", provider="getatext"))
    await ledger.save_rental(rental("gotsms:b", status=RentalStatus.UNKNOWN, provider_status=None))
    assert [r.rental_id for r in await ledger.rentals()] == ["gotsms:b", "getatext:1", "gotsms:a"]
    assert [r.rental_id for r in await ledger.rentals(provider="gotsms", active=True)] == ["gotsms:b", "gotsms:a"]
    assert [r.rental_id for r in await ledger.rentals(provider="getatext")] == ["getatext:1"]


async def test_rental_ids_known_before_a_time(ledger: Ledger) -> None:
    await ledger.save_rental(rental("gotsms:early"))
    await ledger.save_rental(rental("getatext:1", provider="getatext"))
    cut = time.time()
    await anyio.sleep(0.01)
    await ledger.save_rental(rental("gotsms:late"))
    await ledger.save_rental(rental("gotsms:early", can_wake_up=True))  # an update keeps its first recording
    assert await ledger.rental_ids(provider="gotsms", recorded_before=cut) == {"gotsms:early"}
    assert await ledger.rental_ids(provider="gotsms", recorded_before=time.time() + 1) == {
        "gotsms:early",
        "gotsms:late",
    }


# -- Messages and the cursor ----------------------------------------------------------------------------


async def test_add_messages_is_insert_or_ignore_and_returns_only_new_ones(ledger: Ledger) -> None:
    assert await ledger.add_messages([]) == []
    first = await ledger.add_messages([message(1), message(2)])
    assert [m.message_id for m in first] == ["gotsms:msg-1", "gotsms:msg-2"]
    again = await ledger.add_messages([message(2), message(3), message(1)])
    assert [m.message_id for m in again] == ["gotsms:msg-3"]
    stored = await ledger.messages("gotsms:rent-1")
    assert [s.message for s in stored] == [message(1), message(2), message(3)]
    assert await ledger.known_messages(["gotsms:msg-2", "gotsms:msg-9"]) == {"gotsms:msg-2"}
    assert await ledger.known_messages([]) == set()
    assert [m.message_id for m in await ledger.recent_messages(2)] == ["gotsms:msg-3", "gotsms:msg-2"]


async def test_add_messages_fills_received_at_when_missing(ledger: Ledger) -> None:
    before = datetime.now(UTC)
    (new,) = await ledger.add_messages([message(1, at=None)])
    after = datetime.now(UTC)
    assert new.received_at is not None
    assert before - timedelta(seconds=1) <= new.received_at <= after + timedelta(seconds=1)
    (stored,) = await ledger.messages("gotsms:rent-1")
    assert stored.message.received_at == new.received_at
    # A time the provider gave is kept as given.
    (given,) = await ledger.add_messages([message(2)])
    assert given.received_at == NOON + timedelta(seconds=2)


async def test_claim_next_returns_messages_oldest_first_exactly_once(ledger: Ledger) -> None:
    assert await ledger.claim_next("gotsms:rent-1") is None
    await ledger.add_messages([message(1), message(2), message(101, "gotsms:other")])
    await ledger.add_messages([message(3)])
    claimed = [await ledger.claim_next("gotsms:rent-1") for _ in range(4)]
    assert [m.message_id if m else None for m in claimed] == ["gotsms:msg-1", "gotsms:msg-2", "gotsms:msg-3", None]
    # Another rental's cursor is its own.
    other = await ledger.claim_next("gotsms:other")
    assert other is not None
    assert other.rental_id == "gotsms:other"
    # A message arriving later is returned next.
    await ledger.add_messages([message(4)])
    latest = await ledger.claim_next("gotsms:rent-1")
    assert latest is not None
    assert latest.message_id == "gotsms:msg-4"
    assert all(s.returned for s in await ledger.messages("gotsms:rent-1"))


async def test_a_batch_given_newest_first_is_still_returned_oldest_first(ledger: Ledger) -> None:
    """GotSMS lists a number's messages newest first; the cursor must still hand out the oldest first."""
    await ledger.add_messages([message(3), message(1), message(2)])
    claimed = [await ledger.claim_next("gotsms:rent-1") for _ in range(3)]
    assert [m.message_id for m in claimed if m] == ["gotsms:msg-1", "gotsms:msg-2", "gotsms:msg-3"]
    assert [s.message.message_id for s in await ledger.messages("gotsms:rent-1")] == [
        "gotsms:msg-1",
        "gotsms:msg-2",
        "gotsms:msg-3",
    ]


async def test_concurrent_claims_never_return_a_message_twice(ledger: Ledger, ledger_path: Path) -> None:
    """60 concurrent claims over two connections to the same file (as two processes would) for 25 messages."""
    await ledger.add_messages([message(n) for n in range(25)])
    other = await Ledger.open(ledger_path)
    results: list[str | None] = []

    async def claim(on: Ledger) -> None:
        found = await on.claim_next("gotsms:rent-1")
        results.append(found.message_id if found else None)

    try:
        async with anyio.create_task_group() as tg:
            for n in range(60):
                tg.start_soon(claim, ledger if n % 2 else other)
    finally:
        await other.close()
    returned = [r for r in results if r is not None]
    assert len(returned) == len(set(returned)) == 25
    assert results.count(None) == 35
    assert set(returned) == {f"gotsms:msg-{n}" for n in range(25)}


# -- Purchases and the rolling 24 h spend ---------------------------------------------------------------


async def test_committed_counts_each_purchase_state_as_the_contract_says(ledger: Ledger) -> None:
    assert await ledger.committed() == 0
    reserved = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("1.00"))
    assert await ledger.committed() == Decimal("1.00")
    uncertain = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("2.00"))
    await ledger.settle(uncertain, "uncertain", note="timed out")
    assert await ledger.committed() == Decimal("3.00")
    # Bought: at its price, not the reserved cap.
    cheap = await bought(ledger, "0.60", max_price="5.00", rental_id="gotsms:r1")
    assert await ledger.committed() == Decimal("3.60")
    # Bought without a known price: at the reserved cap.
    unpriced = await ledger.reserve(provider="gotsms", kind="extend", amount=Decimal("0.70"))
    await ledger.settle(unpriced, "bought")
    assert await ledger.committed() == Decimal("4.30")
    # Failed and not bought: released.
    failed = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("9.00"))
    await ledger.settle(failed, "failed", note="422")
    not_bought = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("9.00"))
    await ledger.settle(not_bought, "not_bought", note="not in the list")
    assert await ledger.committed() == Decimal("4.30")
    # A refund credits the purchase that bought the rental.
    await ledger.note_refund("gotsms:r1", Decimal("0.60"))
    assert await ledger.committed() == Decimal("3.70")
    states = {p.purchase_id: p.state for p in await ledger.purchases()}
    assert states == {
        reserved: "reserved",
        uncertain: "uncertain",
        cheap: "bought",
        unpriced: "bought",
        failed: "failed",
        not_bought: "not_bought",
    }
    assert [p.purchase_id for p in await ledger.unsettled()] == [reserved, uncertain]
    assert await ledger.unsettled("getatext") == []


async def test_settle_keeps_what_an_earlier_step_recorded(ledger: Ledger) -> None:
    pid = await ledger.reserve(provider="getatext", kind="rent", amount=Decimal("0.50"), plan_id="getatext:uber")
    await ledger.note_balance_before(pid, Decimal("20.00"))
    await ledger.settle(pid, "uncertain", note="timed out")
    await ledger.settle(pid, "bought", price=Decimal("0.20"), rental_id="getatext:7")
    (purchase,) = await ledger.purchases()
    assert (purchase.state, purchase.price, purchase.rental_id, purchase.note, purchase.balance_before) == (
        "bought",
        Decimal("0.20"),
        "getatext:7",
        "timed out",
        Decimal("20.00"),
    )
    assert (purchase.plan_id, purchase.max_price, purchase.kind) == ("getatext:uber", Decimal("0.50"), "rent")


async def test_spend_older_than_24_hours_no_longer_counts(ledger: Ledger, ledger_path: Path) -> None:
    old = await bought(ledger, "3.00", rental_id="gotsms:old")
    stale_reserved = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("4.00"))
    recent = await bought(ledger, "1.00", rental_id="gotsms:recent")
    assert await ledger.committed() == Decimal("8.00")
    age_purchase(ledger_path, old, DAY + 60)
    age_purchase(ledger_path, stale_reserved, DAY + 1)
    assert await ledger.committed() == Decimal("1.00")
    # Just inside the window still counts.
    age_purchase(ledger_path, recent, DAY - 60)
    assert await ledger.committed() == Decimal("1.00")
    # The reservation check sees the same window.
    seen: list[Decimal] = []
    await ledger.reserve(
        provider="gotsms", kind="rent", amount=Decimal("1"), check=lambda committed, _u: seen.append(committed)
    )
    assert seen == [Decimal("1.00")]


async def test_reserve_check_sees_spend_and_this_providers_uncertain_purchases(ledger: Ledger) -> None:
    pid = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("1.50"))
    await ledger.settle(pid, "uncertain")
    seen: list[tuple[Decimal, int, str]] = []
    for provider in ("gotsms", "getatext"):

        def check(committed: Decimal, uncertain: int, provider: str = provider) -> None:
            seen.append((committed, uncertain, provider))

        await ledger.reserve(provider=provider, kind="rent", amount=Decimal("0.25"), check=check)
    assert seen == [(Decimal("1.50"), 1, "gotsms"), (Decimal("1.75"), 0, "getatext")]


async def test_refused_reservation_records_nothing(ledger: Ledger) -> None:
    def refuse(_committed: Decimal, _uncertain: int) -> None:
        raise BudgetExceeded("no")

    with pytest.raises(BudgetExceeded):
        await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("1"), check=refuse)
    assert await ledger.purchases() == []
    assert await ledger.committed() == 0


async def test_concurrent_reservations_never_overshoot_the_budget(ledger: Ledger, ledger_path: Path) -> None:
    """80 reservations of 0.35 race for a 3.00 budget over two connections to the same file: exactly 8 fit."""
    budget, amount = Decimal("3.00"), Decimal("0.35")
    other = await Ledger.open(ledger_path)
    made: list[int] = []
    refused: list[BudgetExceeded] = []

    def check(committed: Decimal, _uncertain: int) -> None:
        if committed + amount > budget:
            raise BudgetExceeded(f"{committed} + {amount} > {budget}")

    async def reserve(on: Ledger) -> None:
        try:
            made.append(await on.reserve(provider="gotsms", kind="rent", amount=amount, check=check))
        except BudgetExceeded as err:
            refused.append(err)

    try:
        async with anyio.create_task_group() as tg:
            for n in range(80):
                tg.start_soon(reserve, ledger if n % 2 else other)
    finally:
        await other.close()
    assert len(made) == 8
    assert len(refused) == 72
    assert await ledger.committed() == 8 * amount <= budget
    assert len(await ledger.purchases()) == 8


async def test_a_refund_credits_the_rent_that_bought_the_rental_never_more_than_it_cost(
    ledger: Ledger, ledger_path: Path
) -> None:
    first = await bought(ledger, "0.55", rental_id="getatext:7")
    again = await ledger.reserve(
        provider="getatext", kind="rent", amount=Decimal("0.55"), plan_id="getatext:p", source_rental_id="getatext:7"
    )
    await ledger.settle(again, "bought", price=Decimal("0.55"), rental_id="getatext:8")  # a re-rent of it
    assert await ledger.committed() == Decimal("1.10")
    # A balance difference can be larger than the price.
    await ledger.note_refund("getatext:7", Decimal("5.00"))
    assert await ledger.committed() == Decimal("0.55")  # the rental's own purchase credited, by its price only
    with sqlite3.connect(ledger_path) as db:
        credited = dict(db.execute("SELECT purchase_id, refunded FROM purchases").fetchall())
    assert credited == {first: "0.55", again: None}
    await ledger.note_refund("gotsms:unknown", Decimal("1.00"))  # nothing bought it: no credit
    assert await ledger.committed() == Decimal("0.55")


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
    ledger = await Ledger.open(ledger_path)
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
