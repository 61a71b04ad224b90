"""Shared pollers, one per provider account, serving every waiting rental at once.

A provider with an account-wide inbox (GotSMS) lists all of an account's messages newest first, so one request
per tick serves every waiter; pages are walked only until a message the ledger already has. Any other provider
(Getatext) is polled per waited rental, once per tick however many calls wait on it, under an account-wide
ceiling. Ticks are adaptive (fast just after a code becomes expected, slower as the wait grows, idle with nobody
waiting), and a 429 slows the account.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

import anyio

from smsrent.domain.errors import ProviderError, RateLimited
from smsrent.domain.ids import parse_rental_id
from smsrent.domain.models import Message, Receipt
from smsrent.providers.base import AccountInbox, Provider

log = logging.getLogger("smsrent.delivery")

Store = Callable[[Sequence[Message]], Awaitable[None]]
StoreReceipt = Callable[[Receipt], Awaitable[None]]
KnownIds = Callable[[Sequence[str]], Awaitable[set[str]]]
MAX_PAGES_PER_TICK = 10


@dataclass(frozen=True)
class Schedule:
    """Seconds between ticks, by how long ago a code became expected (rent, wake-up, number online)."""

    steps: tuple[tuple[float, float], ...] = ((15.0, 1.0), (30.0, 2.0), (60.0, 4.0), (300.0, 6.0))
    idle: float = 10.0
    per_minute: int = 55  # ceiling for one account, whatever the schedule says

    def interval(self, age: float) -> float:
        return next((every for until, every in self.steps if age < until), self.idle)


def burst_start(expected: Iterable[float], burst: float = 2.0) -> float:
    """When the latest burst of expectations began: those within `burst` seconds of the freshest count as one,
    so a hundred waits that start together cost what one does."""
    times = list(expected)
    freshest = max(times)
    return min(t for t in times if t >= freshest - burst)


class RateWindow:
    """At most `limit` requests in any rolling `window` seconds."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._sent: deque[float] = deque()

    async def acquire(self) -> None:
        while True:
            now = time.monotonic()
            while self._sent and now - self._sent[0] >= self.window:
                self._sent.popleft()
            if len(self._sent) < self.limit:
                self._sent.append(now)
                return
            await anyio.sleep(self._sent[0] + self.window - now)


class Poller:
    """The loop every provider's poller shares: idle without waiters, tick on schedule or when kicked."""

    def __init__(self, name: str, waiting: Callable[[], dict[str, float]], schedule: Schedule) -> None:
        self.name = name
        self.schedule = schedule
        self.requests = RateWindow(schedule.per_minute)
        self._waiting = waiting
        self._kicked = anyio.Event()
        self._slow_until = 0.0
        self._hold_until = 0.0  # a rate limit's pause: no request before this, kicked or not
        self.pauses: list[Callable[[float], None]] = []  # hear of each rate limit's pause (seconds)
        self._last_tick = -math.inf
        self._idle = False

    def kick(self) -> None:
        """Tick now (a code became expected: just rented, woken, first waited for)."""
        self._kicked.set()

    def expect(self, rental_id: str) -> None:
        """A code may come soon for this rental: tick now."""
        self.kick()

    def resume(self) -> None:
        """Make sure an idle poller runs again (a later wait on a known rental), without an extra tick."""
        if self._idle:
            self.kick()

    async def run(self) -> None:
        while True:
            waiting = self._waiting()
            if not waiting:
                self._idle = True
                await self._sleep(math.inf)
                self._idle = False
                continue
            # Kicks may bring a tick forward, but never closer than the fastest step to the last one: a hundred
            # waiters arriving at once cost no more requests than one.
            hold = max(self._hold_until, self._last_tick + self.schedule.steps[0][1]) - time.monotonic()
            if hold > 0:
                await anyio.sleep(hold)
                continue
            self._last_tick = time.monotonic()
            delay = self.delay(waiting)
            try:
                await self.tick(waiting)
            except RateLimited as err:
                delay = max(delay, self.rate_limited(err))
            except ProviderError as err:
                log.warning("%s poll failed: %s", self.name, err.message)
                delay = max(delay, 2.0)
            await self._sleep(delay)

    def rate_limited(self, err: RateLimited) -> float:
        """A 429: pause the whole account for its Retry-After, then poll at half speed for five minutes."""
        pause = err.retry_after if err.retry_after is not None else 5.0
        log.warning("%s is rate limiting; polling slower for a while (pause %.0f s)", self.name, pause)
        self.hold(pause)
        for observer in self.pauses:
            observer(pause)
        return pause

    def hold(self, pause: float) -> None:
        """No request for `pause` seconds, then half speed for five minutes."""
        self._slow_until = time.monotonic() + 300.0
        self._hold_until = max(self._hold_until, time.monotonic() + pause)

    def delay(self, waiting: dict[str, float]) -> float:
        """The next tick's delay, by the age of the latest burst of expectations among the waited rentals."""
        age = time.time() - burst_start(waiting.values())
        slow = 2.0 if time.monotonic() < self._slow_until else 1.0
        return self.schedule.interval(age) * slow

    async def tick(self, waiting: dict[str, float]) -> None:
        raise NotImplementedError

    async def _sleep(self, delay: float) -> None:
        with anyio.move_on_after(delay):
            await self._kicked.wait()
        self._kicked = anyio.Event()


class InboxPoller(Poller):
    """One page of the account's inbox per tick (GotSMS `GET /messages`); older pages only while every message is
    new."""

    def __init__(
        self,
        provider: AccountInbox,
        waiting: Callable[[], dict[str, float]],
        schedule: Schedule,
        *,
        known: KnownIds,
        store: Store,
        since: Callable[[Collection[str]], Awaitable[float]],
    ) -> None:
        super().__init__(provider.name, waiting, schedule)
        self.provider = provider
        self._known, self._store, self._since = known, store, since

    async def tick(self, waiting: dict[str, float]) -> None:
        oldest = await self._since(waiting.keys())
        fresh: list[Message] = []
        for page_number in range(1, MAX_PAGES_PER_TICK + 1):
            await self.requests.acquire()
            page, more = await self.provider.message_page(page_number)
            known = await self._known([m.message_id for m in page])
            fresh.extend(m for m in page if m.message_id not in known)
            reached = any(m.received_at is not None and m.received_at.timestamp() < oldest for m in page)
            if known or reached or not more:
                break
        # Pages list newest first and times have whole seconds: reverse first, so equal times keep arrival order.
        fresh.reverse()
        fresh.sort(key=lambda m: m.received_at.timestamp() if m.received_at else 0.0)
        await self._store(fresh)


class RentalPoller(Poller):
    """Each waited rental (Getatext `rental-status`) when its own schedule says so, a few at a time."""

    def __init__(
        self,
        provider: Provider,
        waiting: Callable[[], dict[str, float]],
        schedule: Schedule,
        *,
        store: StoreReceipt,
        pushed: Callable[[], bool],
        failed: Callable[[Exception], float],
        concurrency: int = 4,
    ) -> None:
        """`failed` hears of a poll's unexpected exception (the supervisor's) and says how long that rental's
        polls pause."""
        super().__init__(provider.name, waiting, schedule)
        self.provider = provider
        self.requests = RateWindow(5, 1.0)  # the account ceiling: 5 requests a second (Getatext's)
        self._store, self._pushed, self._failed = store, pushed, failed
        self._due: dict[str, float] = {}
        self._limiter = anyio.CapacityLimiter(concurrency)

    def expect(self, rental_id: str) -> None:
        """Poll this rental now (just rented, first waited for, or a push to confirm)."""
        self._due[rental_id] = 0.0
        self.kick()

    def delay(self, waiting: dict[str, float]) -> float:
        now = time.monotonic()
        return max(0.0, min(self._due.get(r, 0.0) for r in waiting) - now)

    async def tick(self, waiting: dict[str, float]) -> None:
        now = time.monotonic()
        for gone in set(self._due) - set(waiting):
            del self._due[gone]
        due = [r for r in waiting if self._due.get(r, 0.0) <= now]
        for rental_id, expected in waiting.items():
            if rental_id in due or rental_id not in self._due:
                # With webhook pushes arriving, polling is only the safety net.
                factor = (4.0 if self._pushed() else 1.0) * (2.0 if now < self._slow_until else 1.0)
                self._due[rental_id] = now + self.schedule.interval(time.time() - expected) * factor
        async with anyio.create_task_group() as tg:
            for rental_id in due:
                tg.start_soon(self._poll, rental_id)

    async def _poll(self, rental_id: str) -> None:
        async with self._limiter:
            await self.requests.acquire()
            try:
                await self._store(await self.provider.poll(parse_rental_id(rental_id)))
            except RateLimited as err:
                self._due[rental_id] = time.monotonic() + self.rate_limited(err)
            except ProviderError as err:
                log.warning("%s poll of %s failed: %s", self.name, rental_id, err.message)
            except Exception as err:  # one rental's surprise must not cancel the other rentals' polls
                self._due[rental_id] = time.monotonic() + self._failed(err)
