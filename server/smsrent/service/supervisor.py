"""Background tasks that can never end the server.

Every background task runs under `Supervisor.run`: an exception is logged (with its traceback, at once and
then at most once a minute while it keeps failing), the task waits (exponential back-off with a cap) and runs
again. Only `Exception` is caught: cancellation (and KeyboardInterrupt, SystemExit) still stops a task. A task
that returns is done. `report()` says how each task is doing, for `/healthz`: bounded, without exception
messages (they may carry provider or SMS text; the log has them).
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

import anyio

log = logging.getLogger("smsrent.supervisor")

TaskState = Literal["running", "failing", "done"]


@dataclass
class TaskHealth:
    failures: int = 0  # in the current streak
    last_error: str | None = None
    healthy_at: float = -math.inf  # (monotonic) a task that has not failed again by then has recovered
    logged_at: float = -math.inf
    unlogged: int = 0  # failures since the last log line
    done: bool = False

    def state(self, now: float) -> TaskState:
        if self.done:
            return "done"
        return "failing" if now < self.healthy_at else "running"


class Supervisor:
    """Runs background tasks; `first_delay` doubles with each failure in a row up to `max_delay`. A task counts as
    recovered once it has run `healthy_after` seconds past its restart without failing."""

    def __init__(
        self,
        *,
        first_delay: float = 1.0,
        max_delay: float = 60.0,
        healthy_after: float = 30.0,
        log_every: float = 60.0,
    ) -> None:
        self.first_delay, self.max_delay = first_delay, max_delay
        self.healthy_after, self.log_every = healthy_after, log_every
        self.tasks: dict[str, TaskHealth] = {}

    async def run(self, name: str, task: Callable[[], Awaitable[object]]) -> None:
        """Run `task` until it returns; after each failure, log it, wait, and run it again."""
        health = self.tasks.setdefault(name, TaskHealth())
        while True:
            try:
                await task()
            except Exception as err:
                await anyio.sleep(self.failed(name, err))
            else:
                health.done = True
                return

    def failed(self, name: str, err: Exception) -> float:
        """Count and log one failure of `name`; returns how long to wait before running it again."""
        health = self.tasks.setdefault(name, TaskHealth())
        now = time.monotonic()
        if health.state(now) != "failing":
            health.failures = 0  # a new streak
        health.failures += 1
        health.last_error = describe(err)
        delay = min(self.max_delay, self.first_delay * 2.0 ** min(health.failures - 1, 30))
        health.healthy_at = now + delay + self.healthy_after
        health.unlogged += 1
        if health.failures == 1 or now - health.logged_at >= self.log_every:
            log.error(
                "background task %s failed (%d in a row, %d since the last report); running it again in %.0f s",
                name,
                health.failures,
                health.unlogged,
                delay,
                exc_info=err,
            )
            health.logged_at, health.unlogged = now, 0
        return delay

    def report(self) -> dict[str, dict[str, object]]:
        """Each task's state; a failing one with its failures in a row and the last error's type and place."""
        now = time.monotonic()
        report: dict[str, dict[str, object]] = {}
        for name, health in sorted(self.tasks.items()):
            state = health.state(now)
            entry: dict[str, object] = {"state": state}
            if state == "failing":
                entry |= {"failures": health.failures, "last_error": health.last_error}
            report[name] = entry
        return report

    @property
    def degraded(self) -> bool:
        now = time.monotonic()
        return any(health.state(now) == "failing" for health in self.tasks.values())


def describe(err: BaseException) -> str:
    """An exception's type and where it was raised (`RecursionError at decoder.py:353`), never its message."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]  # a task group's failure: the first exception inside
    kind = type(err).__qualname__
    if type(err).__module__ not in ("builtins", "__main__"):
        kind = f"{type(err).__module__}.{kind}"
    frames = traceback.extract_tb(err.__traceback__)
    return f"{kind} at {PurePath(frames[-1].filename).name}:{frames[-1].lineno}" if frames else kind
