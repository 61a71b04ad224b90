"""The ledger contract, on each backend: restarts, rental merging, messages and the wait cursor, purchases and the
rolling 24 h spend, the atomic reservation under concurrency, and several processes on one ledger (who is
alive, ledger locks, purchases left by a process that is gone). Another process is played by another ledger
opened on the same store. (SQLite alone: test_sqlite.py; PostgreSQL alone: test_postgres.py.)"""

from __future__ import annotations

from contextlib import nullcontext, suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anyio
import pytest

from smsrent.domain.errors import BudgetExceeded
from smsrent.domain.models import Rental, RentalStatus
from smsrent.domain.principal import Principal, granted
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger import DAY, AuditEntry, Ledger
from tests.ledger import NOON, bought, message, rental
from tests.ledger.stores import Store

pytestmark = pytest.mark.anyio

# -- Restarts ----------------------------------------------------------------------------------------------


async def test_restart_keeps_active_rentals_cursor_purchases_and_spend(store: Store) -> None:
    first = await store.open()
    await first.save_rental(rental("gotsms:live"))
    await first.save_rental(rental("gotsms:done", status=RentalStatus.EXPIRED, provider_status="expired"))
    await first.add_messages([message(1, "gotsms:live"), message(2, "gotsms:live"), message(3, "gotsms:live")])
    claimed = await first.claim_next("gotsms:live")
    spent = await bought(first, "0.60", rental_id="gotsms:live")
    reserved = await first.reserve(provider="getatext", kind="rent", amount=Decimal("0.40"))
    before = await first.committed()
    purchases = await first.purchases()
    await first.close()

    second = await store.open()
    try:
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
    await anyio.sleep(0.01)
    cut = await ledger.now()
    await anyio.sleep(0.01)
    await ledger.save_rental(rental("gotsms:late"))
    await ledger.save_rental(rental("gotsms:early", can_wake_up=True))  # an update keeps its first recording
    assert await ledger.rental_ids(provider="gotsms", recorded_before=cut) == {"gotsms:early"}
    assert await ledger.rental_ids(provider="gotsms", recorded_before=await ledger.now() + 1) == {
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


async def test_concurrent_claims_never_return_a_message_twice(ledger: Ledger, store: Store) -> None:
    """60 concurrent claims through two processes for 25 messages."""
    await ledger.add_messages([message(n) for n in range(25)])
    other = await store.open()
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


async def test_spend_older_than_24_hours_no_longer_counts(ledger: Ledger, store: Store) -> None:
    old = await bought(ledger, "3.00", rental_id="gotsms:old")
    stale_reserved = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("4.00"))
    recent = await bought(ledger, "1.00", rental_id="gotsms:recent")
    assert await ledger.committed() == Decimal("8.00")
    await store.age_purchase(old, DAY + 60)
    await store.age_purchase(stale_reserved, DAY + 1)
    assert await ledger.committed() == Decimal("1.00")
    # Just inside the window still counts.
    await store.age_purchase(recent, DAY - 60)
    assert await ledger.committed() == Decimal("1.00")
    # The reservation check sees the same window.
    seen: list[Decimal] = []
    await ledger.reserve(
        provider="gotsms", kind="rent", amount=Decimal("1"), check=lambda committed, _u, _a: seen.append(committed)
    )
    assert seen == [Decimal("1.00")]


async def test_reserve_check_sees_spend_and_this_providers_uncertain_purchases(ledger: Ledger) -> None:
    pid = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("1.50"))
    await ledger.settle(pid, "uncertain")
    seen: list[tuple[Decimal, int, str]] = []
    for provider in ("gotsms", "getatext"):

        def check(committed: Decimal, uncertain: int, _by_agent: Decimal, provider: str = provider) -> None:
            seen.append((committed, uncertain, provider))

        await ledger.reserve(provider=provider, kind="rent", amount=Decimal("0.25"), check=check)
    assert seen == [(Decimal("1.50"), 1, "gotsms"), (Decimal("1.75"), 0, "getatext")]


async def test_refused_reservation_records_nothing(ledger: Ledger) -> None:
    def refuse(_committed: Decimal, _uncertain: int, _by_agent: Decimal) -> None:
        raise BudgetExceeded("no")

    with pytest.raises(BudgetExceeded):
        await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("1"), check=refuse)
    assert await ledger.purchases() == []
    assert await ledger.committed() == 0


async def test_concurrent_reservations_never_overshoot_the_budget(ledger: Ledger, store: Store) -> None:
    """80 reservations of 0.35 race for a 3.00 budget through two processes: exactly 8 fit."""
    budget, amount = Decimal("3.00"), Decimal("0.35")
    other = await store.open()
    made: list[int] = []
    refused: list[BudgetExceeded] = []

    def check(committed: Decimal, _uncertain: int, _by_agent: Decimal) -> None:
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


@pytest.mark.parametrize(
    ("server_budget", "made_by_each"),
    [("3.00", None), ("20.00", 2)],  # the server's budget binds first / each agent's binds first
)
async def test_concurrent_purchases_by_many_agents_overshoot_neither_their_budgets_nor_the_servers(
    ledger: Ledger, store: Store, server_budget: str, made_by_each: int | None
) -> None:
    """6 agents with 0.80 a day each race 10 reservations of 0.35 apiece through two processes, under the money
    guard's own check: no agent commits more than its budget (2 each), nor all of them more than the server's."""
    amount, budget = Decimal("0.35"), Decimal(server_budget)
    guard = MoneyGuard(daily_budget=budget)
    agents = [Principal(f"agent-{n}", granted(["spend"]), daily_budget=Decimal("0.80")) for n in range(6)]
    other = await store.open()
    made: list[str] = []

    async def reserve(on: Ledger, agent: Principal) -> None:
        with suppress(BudgetExceeded):
            check = guard.daily_check(amount, "GotSMS", agent)
            await on.reserve(provider="gotsms", kind="rent", amount=amount, agent=agent.name, check=check)
            made.append(agent.name)

    try:
        async with anyio.create_task_group() as tg:
            for n in range(60):
                tg.start_soon(reserve, ledger if n % 2 else other, agents[n % 6])
    finally:
        await other.close()
    committed = await ledger.committed()
    assert committed <= budget
    assert committed == len(made) * amount
    for agent in agents:
        assert await ledger.committed(agent.name) == made.count(agent.name) * amount <= Decimal("0.80")
    if made_by_each is None:
        assert len(made) == 8  # 8 x 0.35 = 2.80: a ninth would pass 3.00
    else:
        assert sorted(made) == sorted(a.name for a in agents for _ in range(made_by_each))
    assert [p.agent for p in await ledger.charges()].count("agent-0") == made.count("agent-0")


async def test_a_rental_belongs_to_the_agent_whose_purchase_bought_it_else_to_the_owner(ledger: Ledger) -> None:
    pid = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("1"), plan_id="gotsms:p", agent="alice")
    await ledger.settle(pid, "bought", price=Decimal("1"), rental_id="gotsms:hers")
    await ledger.save_rental(rental("gotsms:hers"))  # recorded after its purchase settled
    lost = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("1"), plan_id="gotsms:p", agent="bob")
    await ledger.settle(lost, "uncertain")
    await ledger.save_rental(rental("gotsms:his"))  # adopted from the listing before its purchase was settled ...
    assert (await ledger.agents(["gotsms:his"])) == {"gotsms:his": "owner"}
    await ledger.settle(lost, "bought", price=Decimal("1"), rental_id="gotsms:his")  # ... then reconciled
    await ledger.save_rental(rental("gotsms:website"))  # made on the provider's website: the owner's
    extend = await ledger.reserve(
        provider="gotsms", kind="extend", amount=Decimal("2"), source_rental_id="gotsms:hers", agent="boss"
    )
    await ledger.settle(extend, "bought", price=Decimal("2"), rental_id="gotsms:hers")  # an admin extends hers
    assert await ledger.agents(["gotsms:hers", "gotsms:his", "gotsms:website", "gotsms:nobody"]) == {
        "gotsms:hers": "alice",
        "gotsms:his": "bob",
        "gotsms:website": "owner",
    }
    assert [r.rental_id for r in await ledger.rentals(agent="alice")] == ["gotsms:hers"]
    assert [r.rental_id for r in await ledger.rentals(agent="owner")] == ["gotsms:website"]
    assert len(await ledger.rentals()) == 3
    assert {r.rental.rental_id: r.agent for r in await ledger.rental_records()} == {
        "gotsms:hers": "alice",
        "gotsms:his": "bob",
        "gotsms:website": "owner",
    }
    await ledger.add_messages([message(1, "gotsms:hers"), message(2, "gotsms:his")])
    assert [m.rental_id for m in await ledger.recent_messages(agent="alice")] == ["gotsms:hers"]
    assert len(await ledger.recent_messages()) == 2
    await ledger.claim_next("gotsms:his")
    assert [(h.rental_id, h.agent) for h in await ledger.handovers()] == [("gotsms:his", "bob")]
    assert [(c.agent, c.kind) for c in await ledger.charges()] == [
        ("alice", "rent"),
        ("bob", "rent"),
        ("boss", "extend"),
    ]
    assert (await ledger.committed("alice"), await ledger.committed("boss")) == (Decimal(1), Decimal(2))
    await ledger.note_refusal(provider="gotsms", amount=Decimal("3"), note="Refused: over", agent="alice")
    await ledger.note_refusal(provider=None, amount=Decimal("4"), note="Refused: over")
    assert [(r.agent, r.amount) for r in await ledger.refusals()] == [("alice", Decimal(3)), ("owner", Decimal(4))]


async def test_the_audit_trail_keeps_entries_in_order_by_agent(ledger: Ledger) -> None:
    before = await ledger.now()
    await ledger.audit(AuditEntry(0.0, "alice", "rent_number", "ok", "gotsms:1", Decimal("1.25"), "max_price 2.00"))
    await ledger.audit(
        AuditEntry(0.0, None, "authenticate", "unauthenticated", detail="no such", credential="ab12cd34")
    )
    await ledger.audit(AuditEntry(0.0, "bob", "refund", "refused", "gotsms:1", None, "Refused: no"))
    entries = await ledger.audit_entries()
    assert [(e.agent, e.action, e.outcome, e.rental_id, e.amount, e.detail, e.credential) for e in entries] == [
        ("alice", "rent_number", "ok", "gotsms:1", Decimal("1.25"), "max_price 2.00", None),
        (None, "authenticate", "unauthenticated", None, None, "no such", "ab12cd34"),
        ("bob", "refund", "refused", "gotsms:1", None, "Refused: no", None),
    ]
    after = await ledger.now()
    assert all(before <= e.at <= after for e in entries)  # stamped by the ledger's clock
    assert [e.action for e in await ledger.audit_entries(agent="bob")] == ["refund"]
    assert await ledger.audit_entries(since=await ledger.now() + 60) == []


async def test_a_refund_credits_the_rent_that_bought_the_rental_never_more_than_it_cost(ledger: Ledger) -> None:
    first = await bought(ledger, "0.55", rental_id="getatext:7")
    again = await ledger.reserve(
        provider="getatext", kind="rent", amount=Decimal("0.55"), plan_id="getatext:p", source_rental_id="getatext:7"
    )
    await ledger.settle(again, "bought", price=Decimal("0.55"), rental_id="getatext:8")  # a re-rent of it
    assert await ledger.committed() == Decimal("1.10")
    # A balance difference can be larger than the price.
    await ledger.note_refund("getatext:7", Decimal("5.00"))
    assert await ledger.committed() == Decimal("0.55")  # the rental's own purchase credited, by its price only
    assert [c.refunded for c in await ledger.charges()] == [Decimal("0.55"), 0]
    assert [p.purchase_id for p in await ledger.purchases()] == [first, again]
    await ledger.note_refund("gotsms:unknown", Decimal("1.00"))  # nothing bought it: no credit
    assert await ledger.committed() == Decimal("0.55")


# -- Several processes: who is alive, ledger locks, what a process that is gone left -------------------------

NOTE = "the server stopped mid-purchase"


async def reserve(ledger: Ledger, store: Store, owner: str | None) -> int:
    """A purchase reserved by `owner` (None: a store from before owners were recorded)."""
    pid = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("1"), plan_id="gotsms:p")
    await store.execute("UPDATE purchases SET owner = %s WHERE purchase_id = %s", owner, pid)
    return pid


async def state_of(ledger: Ledger, purchase_id: int) -> tuple[str, str | None, str | None]:
    purchase = await ledger.purchase(purchase_id)
    assert purchase is not None
    return purchase.state, purchase.owner, purchase.note


async def tokens(store: Store) -> set[object]:
    return {token for (token,) in await store.execute("SELECT token FROM processes")}


async def test_another_open_ledger_is_alive_until_it_closes(ledger: Ledger, store: Store) -> None:
    other = await store.open()
    try:
        reserved = await reserve(other, store, other.owner)
        assert await ledger.recover_orphans(busy=(), note=NOTE) == 0
        assert await state_of(ledger, reserved) == ("reserved", other.owner, None)
        assert await ledger.in_other_hands("gotsms")
        assert not await other.in_other_hands("gotsms")
    finally:
        await other.close()
    assert await ledger.recover_orphans(busy=(), note=NOTE) == 1  # closed: gone
    assert await state_of(ledger, reserved) == ("uncertain", None, NOTE)


async def test_what_a_killed_process_left_is_taken_over_and_the_process_forgotten(ledger: Ledger, store: Store) -> None:
    """Killed, nothing of it unregistered: its reserved purchase and its uncertain one are taken over; a live
    process's are not."""
    gone, live = await store.open(), await store.open()
    try:
        reserved, unsure = await reserve(gone, store, gone.owner), await reserve(gone, store, gone.owner)
        await gone.settle(unsure, "uncertain", note="the answer was lost")
        kept = await reserve(live, store, live.owner)
        await store.kill(gone)
        assert await ledger.in_other_hands("gotsms")

        assert await ledger.recover_orphans(busy=(), note=NOTE) == 2

        assert await state_of(ledger, reserved) == ("uncertain", None, NOTE)
        assert await state_of(ledger, unsure) == ("uncertain", None, "the answer was lost")
        assert await state_of(ledger, kept) == ("reserved", live.owner, None)
        assert await tokens(store) == {ledger.owner, live.owner}
    finally:
        await live.close()


async def test_recovery_of_own_and_ownerless_purchases(ledger: Ledger, store: Store) -> None:
    """Reserved without an owner (a store from before owners): taken over. This process's own: a reservation is
    its own to settle; an uncertain one is held only while its call runs (`busy`), else its release failed."""
    legacy = await reserve(ledger, store, None)
    own_reserved = await reserve(ledger, store, ledger.owner)
    own_running = await reserve(ledger, store, ledger.owner)
    own_released_failed = await reserve(ledger, store, ledger.owner)
    for pid in (own_running, own_released_failed):
        await ledger.settle(pid, "uncertain", note="the answer was lost")

    assert await ledger.recover_orphans(busy={own_running}, note=NOTE) == 2

    assert await state_of(ledger, legacy) == ("uncertain", None, NOTE)
    assert await state_of(ledger, own_reserved) == ("reserved", ledger.owner, None)
    assert await state_of(ledger, own_running) == ("uncertain", ledger.owner, "the answer was lost")
    assert await state_of(ledger, own_released_failed) == ("uncertain", None, "the answer was lost")


async def test_release_hands_a_purchase_over_and_only_the_owner_can(ledger: Ledger, store: Store) -> None:
    other = await store.open()
    try:
        pid = await reserve(other, store, other.owner)
        await ledger.release(pid)  # not its own: nothing changes
        assert (await state_of(ledger, pid))[1] == other.owner
        await other.release(pid)
        assert (await state_of(ledger, pid))[1] is None
    finally:
        await other.close()


async def test_a_forgotten_process_registers_again_on_its_next_heartbeat(ledger: Ledger, store: Store) -> None:
    await store.execute("DELETE FROM processes")  # judged gone by another process (this machine was asleep)
    await ledger.beat()
    assert await tokens(store) == {ledger.owner}
    other = await store.open()
    try:
        reserved = await reserve(ledger, store, ledger.owner)
        assert await other.recover_orphans(busy=(), note=NOTE) == 0  # alive again
        assert await state_of(other, reserved) == ("reserved", ledger.owner, None)
    finally:
        await other.close()


async def test_a_ledger_lock_excludes_another_process_until_released(ledger: Ledger, store: Store) -> None:
    other = await store.open()
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


async def test_ledger_locks_of_different_names_do_not_exclude_each_other(ledger: Ledger, store: Store) -> None:
    other = await store.open()
    try:
        with anyio.fail_after(10):
            async with ledger.lock("settle:gotsms"), other.lock("settle:getatext"), ledger.lock("rental:gotsms:1"):
                pass
    finally:
        await other.close()


async def test_a_ledger_lock_serialises_this_processes_tasks(ledger: Ledger, store: Store) -> None:
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
    other = await store.open()
    try:
        with anyio.fail_after(1):
            async with other.lock("rental:gotsms:x"):  # every holder let go
                pass
    finally:
        await other.close()


@pytest.mark.parametrize("end", ["closed", "killed"])
async def test_a_lock_holder_that_closes_or_dies_lets_another_process_take_it(
    ledger: Ledger, store: Store, end: str
) -> None:
    holder = await store.open()
    entered = anyio.Event()

    async def hold_forever() -> None:
        # Killed, its task's own clean-up meets a store it can no longer reach: the others must not need it.
        with suppress(Exception) if end == "killed" else nullcontext():
            async with holder.lock("settle:gotsms"):
                entered.set()
                await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold_forever)
            await entered.wait()
            if end == "killed":
                await store.kill(holder)
                await ledger.recover_orphans(busy=(), note=NOTE)  # the others learn it is gone
                async with ledger.lock("settle:gotsms"):
                    pass
            tg.cancel_scope.cancel()  # a cancelled holder still releases
        if end == "closed":
            await holder.close()
            async with ledger.lock("settle:gotsms"):
                pass
    assert await tokens(store) == {ledger.owner}


async def test_an_uncertain_purchase_of_one_process_is_seen_by_anothers_reservation(
    ledger: Ledger, store: Store
) -> None:
    other = await store.open()
    try:
        pid = await other.reserve(provider="gotsms", kind="rent", amount=Decimal("2"))
        await other.settle(pid, "uncertain", note="the answer was lost")
        seen: list[tuple[Decimal, int]] = []
        await ledger.reserve(
            provider="gotsms", kind="rent", amount=Decimal("1"), check=lambda c, u, _a: seen.append((c, u))
        )
        assert seen == [(Decimal("2"), 1)]
    finally:
        await other.close()


async def test_now_is_the_clock_stored_times_are_measured_on(ledger: Ledger) -> None:
    before = await ledger.now()
    pid = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal("1"))
    after = await ledger.now()
    purchase = await ledger.purchase(pid)
    assert purchase is not None
    assert before <= purchase.created_at <= after
