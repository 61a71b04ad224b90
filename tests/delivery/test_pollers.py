"""The shared pollers: one request per tick however many calls wait, page walking that stops at the
ledger, and slowing down under rate limits without failing the waiter."""

from __future__ import annotations

import itertools
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from smsrent.domain.errors import LedgerUnavailable
from smsrent.domain.models import Message, Receipt
from smsrent.service.pollers import InboxPoller
from tests.helpers import request_times, requests
from tests.world import FAST, World, WorldFactory, every, settle

pytestmark = pytest.mark.anyio
log = logging.getLogger(__name__)

MESSAGES = ("GET", "/api/messages")
STATUS = ("POST", "/api/v1/rental-status")


# -- Sharing ------------------------------------------------------------------------------------------


async def gotsms_polls_while_waiting(make_world: WorldFactory, waiters: int) -> tuple[int, int]:
    """GET /api/messages requests in one second while `waiters` calls wait on as many GotSMS rentals,
    and the wake-ups they caused."""
    async with make_world(schedule=FAST) as world:
        rentals = [await world.rent("gotsms") for _ in range(waiters)]
        with anyio.fail_after(10):
            async with world.running() as tg:
                for rental in rentals:
                    tg.start_soon(world.delivery.wait, rental, 30.0)
                start = await settle(0.4)  # every number woken, the poller on its schedule
                end = await settle(1.0)
                wakes = sum(1 for _, m, p in world.gotsms_sandbox.requests if m == "POST" and p.endswith("/wake-up"))
                return requests(world.gotsms_sandbox, *MESSAGES, start, end), wakes


async def test_gotsms_one_messages_request_per_tick_for_any_number_of_waiters(make_world: WorldFactory) -> None:
    alone, alone_wakes = await gotsms_polls_while_waiting(make_world, 1)
    crowd, crowd_wakes = await gotsms_polls_while_waiting(make_world, 20)
    log.info("GET /api/messages in 1 s: %d with 1 waiter, %d with 20 waiters", alone, crowd)
    assert (alone_wakes, crowd_wakes) == (1, 20)  # each number is woken once, by its own wait
    assert alone >= 5  # the poller does run on its 50 ms schedule
    assert crowd <= alone * 1.3 + 3  # ... and does not ask more often with 20 waiters
    assert crowd < 20 * 5


async def test_getatext_one_status_request_per_tick_for_many_waits_on_one_rental(make_world: WorldFactory) -> None:
    """One Getatext rental with one waiting call, another with twenty, side by side for two seconds."""
    async with make_world(schedule=every(0.5)) as world:  # 4 requests a second: under the 5/s account ceiling
        alone, crowded = await world.rent("getatext", service="Whatsapp"), await world.rent("getatext", service="Uber")
        poller = world.delivery.pollers["getatext"]
        ticks: list[list[str]] = []
        tick, status = poller.tick, world.getatext.rental_status

        async def counted_tick(waiting: dict[str, float]) -> None:
            ticks.append([])
            await tick(waiting)

        async def counted_status(rental_id: str, *, retry: bool = True) -> Receipt:
            ticks[-1].append(rental_id)
            return await status(rental_id, retry=retry)

        poller.tick = counted_tick  # type: ignore[method-assign]
        world.getatext.rental_status = counted_status  # type: ignore[method-assign]
        with anyio.fail_after(10):
            async with world.running() as tg:
                tg.start_soon(world.delivery.wait, alone, 30.0)
                for _ in range(20):
                    tg.start_soon(world.delivery.wait, crowded, 30.0)
                start = await settle(0.3)
                first_tick = len(ticks)
                end = await settle(2.0)
                last_tick = len(ticks)
        asked = [rental_id for tick_asked in ticks[first_tick:last_tick] for rental_id in tick_asked]
        one, twenty = asked.count(world.local(alone)), asked.count(world.local(crowded))
        total = requests(world.getatext_sandbox, *STATUS, start, end)
        log.info("rental-status in 2 s: %d for 1 waiting call, %d for 20 on one rental", one, twenty)
        assert all(len(set(tick_asked)) == len(tick_asked) for tick_asked in ticks)  # a rental at most once a tick
        assert 3 <= one <= 5  # a tick every 0.5 s
        assert twenty <= one + 1  # not one per waiting call
        assert abs(total - (one + twenty)) <= 2  # the sandbox saw just these


# -- Page walking ---------------------------------------------------------------------------------------


class PageSpy:
    """Records, tick by tick, which `GET /messages` pages the GotSMS poller asked for."""

    def __init__(self, world: World) -> None:
        poller = world.delivery.pollers["gotsms"]
        assert isinstance(poller, InboxPoller)
        self.ticks: list[list[int]] = []
        tick, read_page = poller.tick, world.gotsms.message_page

        async def counted_tick(waiting: dict[str, float]) -> None:
            self.ticks.append([])
            await tick(waiting)

        async def counted_page(page: int) -> tuple[list[Message], bool]:
            self.ticks[-1].append(page)
            return await read_page(page)

        poller.tick = counted_tick  # type: ignore[method-assign]
        world.gotsms.message_page = counted_page  # type: ignore[method-assign]


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    with anyio.fail_after(seconds):
        while not await condition():
            await anyio.sleep(0.02)


async def test_poller_walks_older_pages_only_until_a_known_message(make_world: WorldFactory) -> None:
    async with make_world(schedule=every(0.2)) as world:
        world.gotsms_sandbox.per_page = 3
        sender, watcher = await world.rent("gotsms"), await world.rent("gotsms")
        first = [world.send_sms(sender, f"1000{i}") for i in range(10)]  # four pages, all new
        spy = PageSpy(world)

        async def stored(count: int) -> bool:
            return len(await world.ledger.messages(sender)) == count

        async with world.running() as tg:
            tg.start_soon(world.delivery.wait, watcher, 30.0)  # keeps the poller ticking
            await until(lambda: stored(10))
            walked_first = spy.ticks[0]
            ticks_before = len(spy.ticks)
            second = [world.send_sms(sender, f"2000{i}") for i in range(7)]  # two pages and one more
            await until(lambda: stored(17))
            await settle(0.5)
            later = spy.ticks[ticks_before:]

        assert walked_first == [1, 2, 3, 4]  # an empty ledger: every page to the last one
        assert [1, 2, 3] in later  # page 3 holds the first known message: no page 4
        assert all(pages in ([1], [1, 2, 3]) for pages in later)
        assert later.count([1, 2, 3]) == 1
        assert later[-1] == [1]  # nothing new: one page a tick
        stored_ids = [s.message.message_id for s in await world.ledger.messages(sender)]
        assert sorted(stored_ids) == sorted(f"gotsms:{i}" for i in first + second)


# -- Rate limits -------------------------------------------------------------------------------------------


async def test_429_slows_the_poller_and_the_waiter_still_gets_its_code(make_world: WorldFactory) -> None:
    async with make_world(schedule=FAST) as world:
        rental, other = await world.rent("gotsms"), await world.rent("gotsms")
        world.send_sms(rental, "246810")
        world.gotsms_sandbox.inject(*MESSAGES, "429", times=2)
        with anyio.fail_after(10):
            async with world.running() as tg:
                tg.start_soon(world.delivery.wait, other, 30.0)  # keeps polling after the code came
                result = await world.delivery.wait(rental, 8.0)
                recovered = len(request_times(world.gotsms_sandbox, *MESSAGES))
                await settle(0.5)
        assert result.outcome == "code_received"
        assert result.message is not None
        assert result.message.code == "246810"
        times = request_times(world.gotsms_sandbox, *MESSAGES)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps[0] >= 0.9  # Retry-After: 1 after the first 429
        assert gaps[1] >= 0.9  # ... and after the second
        assert result.waited >= 1.8
        after = gaps[recovered:]
        assert after
        assert sum(after) / len(after) >= 0.09  # still slower than the 50 ms schedule for a while


async def test_a_429s_pause_is_published_and_the_next_leader_keeps_to_it(
    make_world: WorldFactory, tmp_path: Path
) -> None:
    """The leader that met the rate limit publishes its pause; a process that leads the account afterwards (its
    leader gone) holds its polls until the pause ends."""
    ledger_path = tmp_path / "shared.sqlite3"
    async with make_world(schedule=FAST, ledger_path=ledger_path) as first:
        rental = await first.rent("gotsms")
        first.gotsms_sandbox.inject(*MESSAGES, "429")
        with anyio.fail_after(10):
            async with first.running() as tg:
                tg.start_soon(first.delivery.wait, rental, 30.0)
                while not (published := await first.ledger.paused("gotsms")):
                    await anyio.sleep(0.02)
        await first.ledger.pause("gotsms", 60.0)  # as a longer Retry-After would have
    async with make_world(schedule=FAST, ledger_path=ledger_path) as second:
        poller = second.delivery.pollers["gotsms"]
        with anyio.fail_after(10):
            async with second.running():
                while "gotsms" not in second.delivery.leading:
                    await anyio.sleep(0.02)
                held = poller._hold_until - time.monotonic()
    assert 0 < published <= 1.0  # the sandbox's Retry-After: 1
    assert 50.0 < held <= 60.0


async def test_waits_and_pauses_are_published_once_the_database_is_back_not_after_a_back_off(
    make_world: WorldFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the ledger's database is down, publishing keeps what it could not write (this process's waits, the
    longest pause of each provider) and tries again every couple of seconds, without failing into the
    supervisor's back-off (up to a minute), which would keep the leader from polling for this process's waits."""
    rental_id = "gotsms:e5f3c1a0-0000-4000-8000-000000000001"
    async with make_world(schedule=FAST) as world:
        ledger, delivery = world.ledger, world.delivery
        publish_waits, pause = ledger.publish_waits, ledger.pause
        published: list[dict[str, Any]] = []

        async def refused(*args: Any) -> None:
            raise LedgerUnavailable("connection refused")

        async def publishing(waits: Any) -> None:
            published.append(dict(waits))
            await publish_waits(waits)

        async def back() -> None:
            monkeypatch.setattr(ledger, "publish_waits", publishing)
            monkeypatch.setattr(ledger, "pause", pause)
            with anyio.fail_after(5):
                while not published:
                    await anyio.sleep(0.02)

        monkeypatch.setattr(ledger, "publish_waits", refused)
        async with world.running():
            delivery.expect(rental_id)  # a wait alone (no pause) while the database is down
            await anyio.sleep(0.3)
            await back()
            waits = published[-1]
            monkeypatch.setattr(ledger, "publish_waits", refused)
            monkeypatch.setattr(ledger, "pause", refused)
            published.clear()
            delivery._paused("gotsms", 50.0)
            delivery._paused("gotsms", 5.0)
            await anyio.sleep(0.3)
            await back()
            state = delivery.supervisor.report()["publish"]["state"]
            paused = await ledger.paused("gotsms")
    assert state == "running"
    assert rental_id in waits
    assert 40.0 < paused <= 50.0


async def test_a_server_that_stops_withdraws_its_waits(make_world: WorldFactory, tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"

    def rows() -> int:
        with closing(sqlite3.connect(path)) as db:
            (count,) = db.execute("SELECT count(*) FROM waits").fetchone()
            return int(count)

    async with make_world(schedule=FAST, ledger_path=path) as world:
        async with world.running():
            world.delivery.expect("gotsms:e5f3c1a0-0000-4000-8000-000000000001")
            with anyio.fail_after(5):
                while not rows():
                    await anyio.sleep(0.02)
        assert rows() == 0
