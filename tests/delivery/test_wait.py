"""`Delivery.wait`: oldest first through the ledger cursor, across restarts, cancellation, and GotSMS
wake-ups with the sandbox's queue and online window."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest

import smsrent.service.delivery as delivery_module
from smsrent.domain.models import RentalStatus
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.delivery import WaitResult
from tests.helpers import requests
from tests.world import FAST, WorldFactory, every, settle, timing_with

pytestmark = pytest.mark.anyio

MESSAGES = ("GET", "/api/messages")


def code_of(result: WaitResult) -> str | None:
    return result.message.code if result.message is not None else None


# -- Ordering --------------------------------------------------------------------------------------------


async def test_codes_come_back_oldest_first_one_per_wait_none_twice_none_missed(make_world: WorldFactory) -> None:
    async with make_world(schedule=FAST) as world:
        rental, other = await world.rent("gotsms"), await world.rent("gotsms")
        sent = [world.send_sms(rental, "100000")]  # before the first wait started
        with anyio.fail_after(15):
            async with world.running() as tg:
                got = [await world.delivery.wait(rental, 5.0)]
                for code in ("100001", "100002", "100003"):  # a burst: the same second, one page
                    sent.append(world.send_sms(rental, code))
                    world.send_sms(other, "999" + code[-3:])  # another rental's SMS in between
                got += [await world.delivery.wait(rental, 5.0) for _ in range(3)]

                late: list[WaitResult] = []

                async def wait_in_background() -> None:
                    late.append(await world.delivery.wait(rental, 5.0))

                tg.start_soon(wait_in_background)
                await anyio.sleep(0.3)
                assert late == []  # waiting: nothing new yet
                sent.append(world.send_sms(rental, "100004"))  # arrives while it waits
                while not late:
                    await anyio.sleep(0.01)
                got += late
                got.append(await world.delivery.wait(rental, 0.4))
        assert [code_of(r) for r in got] == ["100000", "100001", "100002", "100003", "100004", None]
        assert [r.outcome for r in got] == ["code_received"] * 5 + ["still_waiting"]
        assert [r.message.message_id for r in got if r.message] == [f"gotsms:{i}" for i in sent]
        assert {r.rental.rental_id for r in got} == {rental}
        other_codes = [s.message.code for s in await world.ledger.messages(other)]
        assert other_codes == ["999001", "999002", "999003"]  # stored in arrival order, not returned


async def test_several_codes_stored_in_one_tick_keep_their_order(make_world: WorldFactory) -> None:
    async with make_world(schedule=FAST) as world:
        rental = await world.rent("gotsms")
        sent = [world.send_sms(rental, f"55500{i}") for i in range(6)]  # all before anyone waits
        with anyio.fail_after(10):
            async with world.running():
                got = [await world.delivery.wait(rental, 5.0) for _ in range(6)]
        assert [code_of(r) for r in got] == [f"55500{i}" for i in range(6)]
        assert [s.message.message_id for s in await world.ledger.messages(rental)] == [f"gotsms:{i}" for i in sent]


async def test_a_second_wait_after_the_poller_went_idle_still_polls(make_world: WorldFactory) -> None:
    """The usual agent loop: wait_for_code answers still_waiting, the agent calls it again."""
    async with make_world(schedule=every(0.2)) as world:  # under Getatext's 5/s ceiling: no request queued
        gotsms, getatext = await world.rent("gotsms"), await world.rent("getatext", service="Whatsapp")
        with anyio.fail_after(10):
            async with world.running():
                for rental in (gotsms, getatext):
                    assert (await world.delivery.wait(rental, 0.5)).outcome == "still_waiting"
                await settle(0.5)  # nobody waits: both pollers idle
                world.send_sms(gotsms, "314159")
                world.getatext_sandbox.deliver(int(world.local(getatext)), "271828")
                again = [await world.delivery.wait(rental, 2.0) for rental in (getatext, gotsms)]
        assert [code_of(r) for r in again] == ["271828", "314159"]
        assert all(r.waited < 1.0 for r in again), [r.waited for r in again]


# -- Cancellation ----------------------------------------------------------------------------------------


async def test_a_cancelled_wait_unregisters_and_the_poller_goes_idle(make_world: WorldFactory) -> None:
    async with make_world(schedule=FAST) as world:
        rental = await world.rent("gotsms")
        with anyio.fail_after(10):
            async with world.running():
                with anyio.move_on_after(0.4) as scope:
                    await world.delivery.wait(rental, 30.0)
                assert scope.cancelled_caught
                polled = requests(world.gotsms_sandbox, *MESSAGES)
                assert polled >= 3  # it was polling while the call waited
                start = await settle(0.15)  # a tick already under way may finish
                end = await settle(0.6)
                assert requests(world.gotsms_sandbox, *MESSAGES, start, end) == 0
                assert world.delivery.pollers["gotsms"]._waiting() == {}

                world.send_sms(rental, "161803")  # the next call still gets it: nothing was lost
                result = await world.delivery.wait(rental, 3.0)
        assert code_of(result) == "161803"


# -- Restart -----------------------------------------------------------------------------------------------


async def test_restart_keeps_the_cursor_and_leaves_no_stray_task(
    make_world: WorldFactory, tmp_path: Path, gotsms_sandbox: GotSmsSandbox
) -> None:
    ledger_path = tmp_path / "restart.sqlite3"
    async with make_world(gotsms_sandbox=gotsms_sandbox, ledger_path=ledger_path) as first:
        busy, quiet = await first.rent("gotsms"), await first.rent("gotsms")
        one, two = first.send_sms(busy, "111111"), first.send_sms(busy, "222222")
        tasks_before = len(asyncio.all_tasks())
        with anyio.fail_after(10):
            async with first.running() as tg:
                assert code_of(await first.delivery.wait(busy, 5.0)) == "111111"  # "222222" is stored too
                tg.start_soon(first.delivery.wait, quiet, 30.0)  # in progress when the process "stops"
                await settle(0.3)
                tg.cancel_scope.cancel()
        assert len(asyncio.all_tasks()) == tasks_before  # the poller and the wait are gone
        stopped = len(gotsms_sandbox.requests)
        await settle(0.3)
        assert len(gotsms_sandbox.requests) == stopped  # nothing polls any more
        stored = [s.message.message_id for s in await first.ledger.messages(busy)]
        assert stored == [f"gotsms:{one}", f"gotsms:{two}"]

    gotsms_sandbox.sms = [m for m in gotsms_sandbox.sms if m.id != two]  # only the ledger has it now
    async with make_world(gotsms_sandbox=gotsms_sandbox, ledger_path=ledger_path) as second:
        with anyio.fail_after(10):
            async with second.running():
                kept = await second.delivery.wait(busy, 3.0)
                assert code_of(await second.delivery.wait(busy, 0.3)) is None  # "111111" is not returned again
                second.send_sms(quiet, "333333")
                resumed = await second.delivery.wait(quiet, 3.0)
    assert code_of(kept) == "222222"
    assert kept.message is not None
    assert kept.message.message_id == f"gotsms:{two}"
    assert code_of(resumed) == "333333"


# -- Wake-ups ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timing",
    [timing_with(wake_queue=1.0, online_window=30.0, code_delay=0.4, auto_code=True)],
    ids=["queue-1s"],
)
async def test_wait_wakes_a_sleeping_number_and_reports_queue_then_online(
    make_world: WorldFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_module, "PROGRESS_EVERY", 0.25)
    progress: list[tuple[float, str]] = []

    async def report(waited: float, text: str) -> None:
        progress.append((waited, text))

    async with make_world(schedule=every(0.1)) as world:
        rental = await world.rent("gotsms")
        local = world.local(rental)
        assert world.gotsms_sandbox.rents[local].wake_from is None  # rented numbers sleep
        with anyio.fail_after(10):
            async with world.running():
                result = await world.delivery.wait(rental, 8.0, report)
        wake_path = f"/api/numbers/{local}/wake-up"
        assert requests(world.gotsms_sandbox, "POST", wake_path) == 1
        [sms] = world.gotsms_sandbox.sms
    assert result.outcome == "code_received"
    assert code_of(result) == sms.code
    assert 1.2 <= result.waited < 3.0  # queue 1 s, then the code 0.4 s after coming online
    texts = [text for _, text in progress]
    assert "queued" in texts[0]
    online = next(i for i, text in enumerate(texts) if "online until" in text)
    assert online > 0
    assert all("queued" in text for text in texts[:online])
    assert result.number_phase == "online"


@pytest.mark.parametrize(
    "timing", [timing_with(wake_queue=0.05, online_window=1.4, auto_code=False)], ids=["window-1.4s"]
)
async def test_a_number_whose_window_ends_during_a_wait_is_woken_again(make_world: WorldFactory) -> None:
    async with make_world(schedule=every(0.1)) as world:
        rental = await world.rent("gotsms")
        local = world.local(rental)
        wake_path = f"/api/numbers/{local}/wake-up"
        result: list[WaitResult] = []
        with anyio.fail_after(12):
            async with world.running() as tg:

                async def wait() -> None:
                    result.append(await world.delivery.wait(rental, 9.0))

                tg.start_soon(wait)
                while requests(world.gotsms_sandbox, "POST", wake_path) < 2:
                    await anyio.sleep(0.05)
                assert world.gotsms_sandbox.rents[local].wake_from is not None
                woken_again = world.gotsms_sandbox.rents[local].wake_from or 0.0
                world.send_sms(rental, "577215")
                while not result:
                    await anyio.sleep(0.02)
        first_wake = min(at for at, m, p in world.gotsms_sandbox.requests if (m, p) == ("POST", wake_path))
        assert woken_again - first_wake >= 1.4  # not before the first window ended
        assert woken_again - first_wake < 4.0  # ... and soon after it did
        assert code_of(result[0]) == "577215"


async def test_an_ended_rental_gets_a_last_look_for_a_code_no_poll_saw(make_world: WorldFactory) -> None:
    """The code came just before the rental ended and before any poll: the wait still returns it."""
    async with make_world(schedule=every(60.0)) as world:
        rental = await world.rent("getatext")
        local = int(rental.split(":")[1])
        world.getatext_sandbox.deliver(local, "004521")
        known = await world.ledger.rental(rental)
        assert known is not None
        await world.ledger.save_rental(known.model_copy(update={"status": RentalStatus.EXPIRED}))
        with anyio.fail_after(5):
            result = await world.delivery.wait(rental, 1.0)  # no poller running: only the last look can see it
            after = await world.delivery.wait(rental, 1.0)
    assert result.outcome == "code_received"
    assert result.message is not None
    assert result.message.code == "004521"
    assert after.outcome == "rental_ended"
