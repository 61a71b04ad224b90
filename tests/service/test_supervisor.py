"""The supervisor every background task runs under: failures are caught, logged (then rate-limited), backed off
and reported; a task that returns is done; cancellation and the other BaseExceptions still stop a task."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import pytest

from smsrent.service.supervisor import Supervisor, describe

pytestmark = pytest.mark.anyio


def failing(times: int, error: Callable[[], Exception] = lambda: RuntimeError("no")) -> Callable[[], object]:
    """A task that raises `times` times, then returns."""
    calls = 0

    async def task() -> None:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise error()

    return task


async def test_a_failing_task_is_run_again_until_it_returns_then_it_is_done(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(first_delay=0.001, max_delay=0.001, log_every=3600)
    with anyio.fail_after(5):
        await supervisor.run("reconcile", failing(5))
    assert supervisor.report() == {"reconcile": {"state": "done"}}
    assert not supervisor.degraded
    logged = [r for r in caplog.records if r.name == "smsrent.supervisor"]
    assert len(logged) == 1  # once, then rate-limited
    assert logged[0].levelno == logging.ERROR
    assert logged[0].exc_info is not None
    assert isinstance(logged[0].exc_info[1], RuntimeError)


async def test_a_task_that_keeps_failing_is_logged_again_once_a_while_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(first_delay=0.001, max_delay=0.001, log_every=0.0)
    await supervisor.run("poller:gotsms", failing(3))
    messages = [r.getMessage() for r in caplog.records if r.name == "smsrent.supervisor"]
    assert [m.split(" failed ")[1].split(";")[0] for m in messages] == [
        "(1 in a row, 1 since the last report)",
        "(2 in a row, 1 since the last report)",
        "(3 in a row, 1 since the last report)",
    ]


def test_back_off_doubles_up_to_the_cap_and_a_failing_task_shows_in_the_report() -> None:
    supervisor = Supervisor(first_delay=1.0, max_delay=60.0, healthy_after=30.0)
    delays = [supervisor.failed("poller:getatext", RecursionError("deep")) for _ in range(9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    (entry,) = supervisor.report().values()
    assert entry["state"] == "failing"
    assert entry["failures"] == 9
    assert entry["last_error"] == "RecursionError"  # never raised: no place to tell
    assert supervisor.degraded


def test_a_task_that_ran_long_enough_has_recovered_and_a_new_failure_starts_a_new_streak() -> None:
    supervisor = Supervisor(first_delay=0.0, max_delay=0.0, healthy_after=0.0)
    supervisor.failed("heartbeat", RuntimeError("once"))
    supervisor.failed("heartbeat", RuntimeError("twice"))
    assert supervisor.report() == {"heartbeat": {"state": "running"}}
    assert not supervisor.degraded
    assert supervisor.failed("heartbeat", RuntimeError("again")) == 0.0
    assert supervisor.tasks["heartbeat"].failures == 1


def test_the_reported_error_is_its_type_and_place_never_its_message() -> None:
    def raise_it() -> None:
        raise ValueError("SMS: your code is 123456, token sk-live-secret")

    try:
        raise_it()
    except ValueError as err:
        described = describe(err)
    assert described.startswith("ValueError at test_supervisor.py:")
    assert "123456" not in described
    assert "secret" not in described
    group = ExceptionGroup("task group", [KeyError("x")])
    assert describe(group) == "KeyError"


async def test_cancellation_stops_a_task_while_it_runs_and_while_it_backs_off() -> None:
    supervisor = Supervisor(first_delay=3600, max_delay=3600)
    started = anyio.Event()

    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervisor.run, "runs", forever)
            tg.start_soon(supervisor.run, "backs off", failing(1))
            await started.wait()
            while not supervisor.degraded:  # the second is in its hour-long back-off
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert supervisor.report()["runs"] == {"state": "running"}


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
async def test_base_exceptions_are_not_caught(error: type[BaseException]) -> None:
    async def stop() -> None:
        raise error

    with pytest.raises(error):
        await Supervisor().run("stops", stop)
