"""Processes on one ledger behave as one, on both backends: one leader per name at a time (taken over when it
closes or dies), the waits each process publishes, hearing the messages the others store (the PostgreSQL
listener reconnecting when its connection is cut), and messages with NUL bytes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import anyio
import pytest
from pydantic import SecretStr

from smsrent.domain.errors import LedgerUnavailable
from smsrent.domain.models import Message
from smsrent.service.ledger import LEAD_POLL, Ledger, Wait
from smsrent.service.ledger.postgres import cluster
from tests.ledger.stores import PostgresStore, Store

pytestmark = pytest.mark.anyio

NAME = "poller:gotsms"


def message(n: int, rental_id: str = "gotsms:1", text: str = "Your code is 1234") -> Message:
    return Message(message_id=f"m{n}", rental_id=rental_id, text=text, code="1234")


def leading(led: anyio.Event) -> Callable[[], Awaitable[None]]:
    async def work() -> None:
        led.set()
        await anyio.sleep_forever()

    return work


@pytest.mark.parametrize("end", ["closed", "killed"])
async def test_one_process_leads_at_a_time_and_another_takes_over_when_the_leader_closes_or_dies(
    ledger: Ledger, store: Store, end: str
) -> None:
    first = await store.open()
    first_led, second_led = anyio.Event(), anyio.Event()
    first_scope = anyio.CancelScope()
    outcome: list[BaseException] = []

    async def first_leads() -> None:
        with first_scope:
            try:
                await first.lead(NAME, leading(first_led))
            except Exception as err:  # killed: its leadership is lost (and its clean-up meets a closed store)
                outcome.append(err)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first_leads)
            await first_led.wait()
            tg.start_soon(ledger.lead, NAME, leading(second_led))
            await anyio.sleep(2.5 * LEAD_POLL)  # the follower tried more than once
            follower_waited = not second_led.is_set()
            if end == "killed":
                await store.kill(first)
                await ledger.recover_orphans(busy=(), note="gone")  # SQLite: the others learn it is gone
            else:
                first_scope.cancel()  # the leader's server stops: its leadership is given up
                await first.close()
            await second_led.wait()
            tg.cancel_scope.cancel()
    assert follower_waited
    if end == "killed" and isinstance(store, PostgresStore):
        assert [type(err) for err in outcome] == [LedgerUnavailable]  # the leader learnt it lost the lead


async def test_waits_published_by_the_others_are_merged_per_rental(ledger: Ledger, store: Store) -> None:
    a, b = await store.open(), await store.open()
    try:
        await a.publish_waits({"gotsms:1": Wait(100.0, 200.0)})
        await b.publish_waits({"gotsms:1": Wait(50.0, 150.0), "gotsms:2": Wait(None, 300.0)})
        merged = await ledger.waits()
        own = await a.waits()
        await b.publish_waits({})  # b's wait ended: its rows go
        after = await ledger.waits()
    finally:
        await b.close()
    await a.close()
    closed = await ledger.waits()
    assert merged == {"gotsms:1": Wait(50.0, 200.0), "gotsms:2": Wait(None, 300.0)}
    assert own == {"gotsms:1": Wait(50.0, 150.0), "gotsms:2": Wait(None, 300.0)}  # a process's own are left out
    assert after == {"gotsms:1": Wait(100.0, 200.0)}
    assert closed == {}  # a process that is gone waits for nothing


async def hear(
    ledger: Ledger, until: Callable[[list[Message]], bool], act: Callable[[], Awaitable[None]]
) -> list[Message]:
    """What `ledger`'s listener hears while `act` runs (and after, until `until` holds)."""
    heard: list[Message] = []
    changed = anyio.Event()

    async def note(messages: Sequence[Message]) -> None:
        nonlocal changed
        heard.extend(messages)
        changed.set()
        changed = anyio.Event()

    async def waits_changed() -> None:
        pass

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ledger.listen, note, waits_changed)
            await act()
            while not until(heard):
                await changed.wait()
            tg.cancel_scope.cancel()
    return heard


async def test_a_process_hears_once_of_each_message_another_stores_and_never_of_its_own(
    ledger: Ledger, store: Store
) -> None:
    other = await store.open()
    try:

        async def store_some() -> None:
            await anyio.sleep(0.5)  # the listener is listening
            await ledger.add_messages([message(0)])  # its own: its observers heard at once
            await other.add_messages([message(1), message(2, "gotsms:2")])
            await other.add_messages([message(1)])  # seen before: nothing new to hear of

        heard = await hear(ledger, lambda h: len(h) >= 2, store_some)
        await anyio.sleep(1.5)  # nothing more arrives
    finally:
        await other.close()
    assert [(m.message_id, m.rental_id) for m in heard] == [("m1", "gotsms:1"), ("m2", "gotsms:2")]


LISTENER = "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND query = 'LISTEN smsrent'"


async def test_the_postgres_listener_reconnects_when_its_connection_is_cut(database_url: SecretStr) -> None:
    store = PostgresStore(database_url)
    listener, other = await store.open(), await store.open()
    name = f"smsrent {listener.owner}"

    async def cut_then_store() -> None:
        """Cut the listener's connection, then store a message every 0.2 s until the listener is back."""
        while not (found := await store.execute(LISTENER, name)):
            await anyio.sleep(0.05)
        (pid,) = found[0]
        await store.execute("SELECT pg_terminate_backend(%s, 5000)", pid)
        while [(pid,)] == (found := await store.execute(LISTENER, name)) or not found:
            await other.add_messages([message(len(stored))])
            stored.append(len(stored))
            await anyio.sleep(0.2)
        await other.add_messages([message(1000)])  # the new connection listens: this one is heard

    stored: list[int] = []
    try:
        heard = await hear(listener, lambda h: any(m.message_id == "m1000" for m in h), cut_then_store)
    finally:
        await listener.close()
        await other.close()
    assert stored  # some were stored while the listener was away: it catches up on them once back
    assert {f"m{n}" for n in stored} <= {m.message_id for m in heard}
    assert heard[-1].message_id == "m1000"


async def test_a_postgres_leader_whose_heartbeat_went_stale_gives_up_the_lead(
    database_url: SecretStr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader frozen or cut off keeps its session (and its lock) open, maybe for hours: once its heartbeat is
    stale, a follower ends that session and leads."""
    monkeypatch.setattr(cluster, "SETTLED_CONNECTION", 0.0)
    store = PostgresStore(database_url)
    frozen, follower = await store.open(), await store.open()
    frozen_led, follower_led = anyio.Event(), anyio.Event()
    lost: list[Exception] = []

    async def frozen_leads() -> None:
        try:
            await frozen.lead(NAME, leading(frozen_led))
        except LedgerUnavailable as err:
            lost.append(err)

    try:
        await frozen.beat()
        await follower.beat()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(frozen_leads)
                await frozen_led.wait()
                tg.start_soon(follower.lead, NAME, leading(follower_led))
                await anyio.sleep(2.5 * LEAD_POLL)
                assert not follower_led.is_set()  # a live leader keeps its lead
                await store.execute(
                    "UPDATE processes SET heartbeat_at = clock_timestamp() - interval '1 hour' WHERE token = %s",
                    frozen.owner,
                )
                await follower_led.wait()
                tg.cancel_scope.cancel()
    finally:
        await frozen.close()
        await follower.close()
    assert lost  # the frozen one, when it runs again, learns it lost the lead


async def test_nul_bytes_in_a_message_are_stored_as_replacement_characters(ledger: Ledger) -> None:
    nul = Message(message_id="m\x00", rental_id="gotsms:1", sender="+1\x00", text="code\x00 1234", code="1234")
    (new,) = await ledger.add_messages([nul])
    (stored,) = await ledger.messages("gotsms:1")
    claimed = await ledger.claim_next("gotsms:1")
    again = await ledger.add_messages([nul])
    assert new.message_id == "m\ufffd"
    assert (new.text, new.sender) == ("code\ufffd 1234", "+1\ufffd")
    assert stored.message == new == claimed
    assert again == []  # stored once: the same message comes back as the same id


async def test_a_pause_holds_for_every_process_and_a_shorter_one_does_not_cut_it(ledger: Ledger, store: Store) -> None:
    other = await store.open()
    try:
        before = await other.paused("gotsms")
        await ledger.pause("gotsms", 60.0)
        await ledger.pause("gotsms", 1.0)  # a later, shorter pause
        seen = await other.paused("gotsms")
        elsewhere = await other.paused("getatext")
    finally:
        await other.close()
    assert before == 0.0
    assert 50.0 < seen <= 60.0
    assert elsewhere == 0.0
