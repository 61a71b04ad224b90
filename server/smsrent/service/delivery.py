"""Code delivery: `wait_for_code`, the shared pollers, webhook pushes and wake-ups of sleeping numbers.

Every message goes to the ledger first (`Rentals.record_messages`), then wakes the waiters of its
rental and the other observers (resource subscribers). A wait claims messages through the rental's
stored cursor, so it never misses a code that came before it started and never returns one twice.

Processes sharing a ledger behave as one: each publishes its waits and expectations to the ledger, one of them
leads each provider account (`Ledger.lead`) and polls for everyone's waits, and each hears of the messages the
others store (`Ledger.listen`) and tells its own observers.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import anyio

from smsrent.domain.errors import LedgerUnavailable, ProviderError
from smsrent.domain.ids import parse_rental_id
from smsrent.domain.models import Message, NumberStatus, Receipt, Rental, RentalStatus
from smsrent.domain.principal import OWNER, Principal
from smsrent.providers.base import AccountInbox, Wakeable
from smsrent.providers.getatext import WebhookCode
from smsrent.service.ledger import Wait
from smsrent.service.ledger.rules import while_held
from smsrent.service.pollers import InboxPoller, Poller, RentalPoller, Schedule
from smsrent.service.rentals import Rentals
from smsrent.service.supervisor import Supervisor

log = logging.getLogger("smsrent.delivery")

WaitOutcome = Literal["code_received", "still_waiting", "rental_ended"]
NumberPhase = Literal["queued", "online", "unknown"]
Progress = Callable[[float, str], Awaitable[None]]
PROGRESS_EVERY = 5.0
REFRESH_EVERY = 1.0  # seconds between a leader's reads of every process's waits (PostgreSQL also tells at once)
LEAD_RETRY = 2.0  # seconds before trying a leadership again after the ledger's database went away


@dataclass(frozen=True)
class WaitResult:
    outcome: WaitOutcome
    rental: Rental
    waited: float
    message: Message | None = None
    number_phase: NumberPhase | None = None


@dataclass
class _Awake:
    """What GotSMS last said about a number's windows, in local wall-clock seconds."""

    online_at: float
    online_till: float
    unknown: bool = False  # the provider could not say


class Delivery:
    """Owns the pollers (run them with `run()`) and serves waits and pushes."""

    def __init__(
        self, rentals: Rentals, *, schedule: Schedule | None = None, supervisor: Supervisor | None = None
    ) -> None:
        self.rentals = rentals
        self.supervisor = supervisor or Supervisor()
        self.ledger = rentals.ledger
        self.pushes_arrive = False  # set by the first webhook push: from then on polling is the safety net
        self._waiters: dict[str, int] = defaultdict(int)
        self._waited: set[str] = set()
        self._started: dict[str, float] = {}  # each waited rental's start, to bound how far back pages are read
        self._expected: dict[str, float] = {}
        self._signals: dict[str, anyio.Event] = {}
        self._awake: dict[str, _Awake] = {}
        self._wake_locks: dict[str, anyio.Lock] = defaultdict(anyio.Lock)
        self._shared: dict[str, Wait] = {}  # the other processes' waits, as the ledger last said (read while leading)
        self._changed = anyio.Event()  # this process's waits or expectations changed, or a pause began: publish
        self._pauses: dict[str, float] = {}  # rate limits' pauses (seconds) not yet published, by provider
        self.leading: set[str] = set()  # the providers whose accounts this process polls
        self.pollers: dict[str, Poller] = {}
        self.handover_observers: list[Callable[[Message, float], None]] = []  # (message, when a waiter got it)
        rentals.observers.append(self._wake_waiters)
        self.schedule = schedule = schedule or Schedule()
        for provider in rentals.providers.values():
            if isinstance(provider, AccountInbox):
                self.pollers[provider.name] = InboxPoller(
                    provider,
                    self._waiting_for(provider.name),
                    schedule,
                    known=self.ledger.known_messages,
                    store=self.deliver,
                    since=self._oldest_start,
                )
            else:
                self.pollers[provider.name] = RentalPoller(
                    provider,
                    self._waiting_for(provider.name),
                    schedule,
                    store=self._deliver_receipt,
                    pushed=lambda: self.pushes_arrive,
                    failed=functools.partial(self.supervisor.failed, _task_name(provider.name)),
                )
            self.pollers[provider.name].pauses.append(functools.partial(self._paused, provider.name))

    async def run(self) -> None:
        """Until cancelled, under the supervisor: each provider's poller while this process leads its account, the
        publishing of this process's waits, and the hearing of messages other processes store."""
        async with anyio.create_task_group() as tg:
            for name, poller in self.pollers.items():
                tg.start_soon(self.supervisor.run, _task_name(name), functools.partial(self._lead, name, poller))
            tg.start_soon(self.supervisor.run, "publish", self._publish)
            tg.start_soon(
                self.supervisor.run, "listen", functools.partial(self.ledger.listen, self.rentals.heard, self._refresh)
            )

    # -- One poller per provider account, among the processes on the ledger ------------------------------------

    async def _lead(self, name: str, poller: Poller) -> None:
        """Poll the account while this process leads it; until then (or once the database is back), try again."""
        failing = False  # log once per outage: the next leadership is logged too

        async def leading() -> None:
            nonlocal failing
            failing = False
            await self._leading(name, poller)

        while True:
            try:
                await self.ledger.lead(_task_name(name), leading)
            except LedgerUnavailable as err:
                if not failing:
                    why = err.why or err.message
                    log.warning("not polling %s: %s; trying again every %.0f s", name, why, LEAD_RETRY)
                failing = True
            await anyio.sleep(LEAD_RETRY)

    async def _leading(self, name: str, poller: Poller) -> None:
        self.leading.add(name)
        log.info("this server polls %s for every server on the ledger", name)
        try:
            if paused := await self.ledger.paused(name):  # a rate limit the last leader met still holds
                poller.hold(paused)
            if await while_held(poller.run, self._refreshing):
                raise LedgerUnavailable(f"could not read the waits of the other servers, so stopped polling {name}")
        finally:
            self.leading.discard(name)

    async def _refreshing(self) -> None:
        """Refresh every REFRESH_EVERY seconds; returns once the ledger cannot be read."""
        try:
            while True:
                await self._refresh()
                await anyio.sleep(REFRESH_EVERY)
        except LedgerUnavailable:
            return

    async def _refresh(self) -> None:
        """While leading: learn the other processes' waits. A new expectation ticks its poller now, as a local one
        does."""
        if not self.leading:
            return
        shared, known = await self.ledger.waits(), self._shared
        self._shared = shared
        for rental_id, wait in shared.items():
            provider = rental_id.partition(":")[0]
            seen = known.get(rental_id)
            if provider in self.leading and (seen is None or wait.expected > seen.expected):
                self.pollers[provider].expect(rental_id)
            elif provider in self.leading and wait.started is not None:
                self.pollers[provider].resume()

    async def _publish(self) -> None:
        """Publish this process's waits (and recent expectations) each time they change, and each rate limit's
        pause (so a new leader keeps to it); when stopped, withdraw the waits."""
        try:
            while True:
                await self._changed.wait()
                self._changed = anyio.Event()
                pauses, self._pauses = self._pauses, {}
                try:
                    for provider, seconds in pauses.items():
                        await self.ledger.pause(provider, seconds)
                    await self.ledger.publish_waits(self._own_waits())
                except BaseException as err:
                    for provider, seconds in pauses.items():
                        self._paused(provider, seconds)  # the longest pause of each provider, published next time
                    self._changed.set()
                    if not isinstance(err, LedgerUnavailable):
                        raise
                    await anyio.sleep(LEAD_RETRY)  # once the database is back, not after the supervisor's back-off
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(LEAD_RETRY):
                try:
                    await self.ledger.publish_waits({})  # stopping: this process waits for nothing any more
                except Exception as err:
                    log.info("could not withdraw this server's waits from the ledger: %s", err)
            raise

    def _paused(self, provider: str, seconds: float) -> None:
        self._pauses[provider] = max(seconds, self._pauses.get(provider, 0.0))
        self._changed.set()

    def _own_waits(self) -> dict[str, Wait]:
        now, recent = time.time(), self.schedule.steps[-1][0]
        waits = {r: Wait(None, at) for r, at in self._expected.items() if now - at < recent}
        for rental_id, count in self._waiters.items():
            if count:
                waits[rental_id] = Wait(self._started.get(rental_id, 0.0), self._expected.get(rental_id, 0.0))
        return waits

    # -- Storing and fanning out ----------------------------------------------------------------------

    async def deliver(self, messages: Sequence[Message]) -> None:
        await self.rentals.record_messages(messages)

    async def _wake_waiters(self, new: Sequence[Message]) -> None:
        """Observer of newly stored messages: wake the waits of their rentals."""
        for rental_id in {m.rental_id for m in new}:
            signal = self._signals.pop(rental_id, None)
            if signal is not None:
                signal.set()

    async def _deliver_receipt(self, receipt: Receipt) -> None:
        await self.rentals.record(receipt)

    def expect(self, rental_id: str, at: float | None = None) -> None:
        """A code may come soon for this rental (just rented, woken, or online): poll fast for a while."""
        self._expected[rental_id] = max(self._expected.get(rental_id, 0.0), at or time.time())
        self._changed.set()
        poller = self.pollers.get(rental_id.partition(":")[0])
        if poller is not None:
            poller.expect(rental_id)

    def _waiting_for(self, provider: str) -> Callable[[], dict[str, float]]:
        prefix = provider + ":"

        def waiting() -> dict[str, float]:
            """The rentals waited for here or, as the ledger said, by any process: when a code was last expected."""
            local = {r: self._expected.get(r, 0.0) for r, n in self._waiters.items() if n and r.startswith(prefix)}
            shared = {r: w.expected for r, w in self._shared.items() if w.started is not None and r.startswith(prefix)}
            return {r: max(local.get(r, 0.0), shared.get(r, 0.0)) for r in local | shared}

        return waiting

    async def _oldest_start(self, rental_ids: Collection[str]) -> float:
        """How far back a message page must be read: the earliest start among the waited rentals."""
        starts = (self._started.get(r, _started(self._shared.get(r))) for r in rental_ids)
        return min(starts, default=0.0) - 60.0

    # -- Waiting ------------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """`wait_for_code` calls waiting right now."""
        return sum(self._waiters.values())

    async def _claim(self, rental_id: str) -> Message | None:
        """The rental's next message through its cursor, handed over now (the observers hear when)."""
        at = time.time()
        message = await self.ledger.claim_next(rental_id, at=at)
        if message is not None:
            for observer in self.handover_observers:
                observer(message, at)
        return message

    async def wait(
        self, rental_id: str, seconds: float, progress: Progress | None = None, caller: Principal = OWNER
    ) -> WaitResult:
        """The next message of this rental (the caller's) not returned before, waiting at most `seconds`."""
        ref = parse_rental_id(rental_id)
        key = str(ref)
        rental = await self.rentals.rental(ref, caller)
        started = time.monotonic()
        self._waiters[key] += 1
        self._started[key] = rental.started_at.timestamp() if rental.started_at else 0.0
        self._changed.set()
        if key not in self._waited:  # the first wait on a rental: the code was just requested, so poll fast
            self._waited.add(key)
            self.expect(key)
        elif (poller := self.pollers.get(ref.provider)) is not None:
            poller.resume()  # an idle poller sleeps until kicked: a later wait on a known rental must wake it
        try:
            with anyio.move_on_after(seconds):  # network calls included: a wait never outlives its bound
                return await self._wait(key, rental, started, seconds, progress)
            rental = await self.ledger.rental(key) or rental
            return WaitResult("still_waiting", rental, time.monotonic() - started, None, self._phase(key))
        finally:
            self._waiters[key] -= 1
            if not self._waiters[key]:
                del self._waiters[key]
                self._changed.set()

    async def _wait(
        self, key: str, rental: Rental, started: float, seconds: float, progress: Progress | None
    ) -> WaitResult:
        reported: tuple[float, NumberPhase | None] = (-PROGRESS_EVERY, None)
        while True:
            signal = self._signals.setdefault(key, anyio.Event())
            waited = time.monotonic() - started
            with anyio.CancelScope(shield=True):  # a claimed message must reach the caller, never vanish
                message = await self._claim(key)
                rental = await self.ledger.rental(key) or rental
            if message is not None:
                return WaitResult("code_received", rental, waited, message, self._phase(key))
            if _ended(rental):
                return await self._last_look(key, rental, waited)
            if waited >= seconds:
                return WaitResult("still_waiting", rental, waited, None, self._phase(key))
            sleeps = isinstance(self.rentals.providers.get(rental.provider), Wakeable)
            line = await self._keep_awake(key) if sleeps else None
            phase = self._phase(key)
            if progress is not None and (waited - reported[0] >= PROGRESS_EVERY or phase != reported[1]):
                reported = (waited, phase)
                await progress(waited, _progress_text(waited, line))
            with anyio.move_on_after(min(seconds - waited, PROGRESS_EVERY, self._next_wake_check(key))):
                await signal.wait()

    async def _last_look(self, rental_id: str, rental: Rental, waited: float) -> WaitResult:
        """A rental that ended may still have a code that came just before the end and no poll saw yet."""
        try:
            await self.rentals.messages(rental_id)
        except ProviderError as err:
            log.info("last look at %s failed: %s", rental_id, err.message)
        with anyio.CancelScope(shield=True):
            message = await self._claim(rental_id)
        outcome: WaitOutcome = "code_received" if message is not None else "rental_ended"
        return WaitResult(outcome, rental, waited, message, self._phase(rental_id))

    def _next_wake_check(self, rental_id: str) -> float:
        awake = self._awake.get(rental_id)
        if awake is None:
            return PROGRESS_EVERY
        now = time.time()
        upcoming = [t - now for t in (awake.online_at, awake.online_till) if t > now]
        return max(0.05, min(upcoming, default=PROGRESS_EVERY))

    async def wake(self, rental_id: str, caller: Principal = OWNER) -> NumberStatus:
        """The wake_up tool: wake a caller's sleeping number now, and remember its windows for the waits."""
        async with self._wake_locks[rental_id]:
            status = await self.rentals.wake_up(rental_id, caller)
            self._remember(rental_id, status)
            return status

    def _remember(self, rental_id: str, status: NumberStatus) -> _Awake:
        """A number's queue and online window from its status (seconds left, so clocks need not agree)."""
        now = time.time()
        online_at = now + (status.wake_seconds_left or 0)
        online_till = online_at + (status.online_seconds_left or 0)
        if online_till <= now:
            # Not online in whole seconds and not wakeable: an active number is at the very end of its
            # window (look again in a moment, then wake it); anything else, look again later.
            online_till = now + (1.0 if status.status is RentalStatus.ACTIVE else 30.0)
        self._awake[rental_id] = awake = _Awake(online_at, online_till)
        self.expect(rental_id, online_at)
        return awake

    def _phase(self, rental_id: str) -> NumberPhase | None:
        """Where a sleeping number is in its wake-up cycle, as far as the last status said."""
        awake = self._awake.get(rental_id)
        if awake is None:
            return None
        now = time.time()
        if awake.unknown:
            return "unknown"
        return "queued" if now < awake.online_at else "online"

    async def _keep_awake(self, rental_id: str) -> str:
        """Wake a sleeping number, follow its queue, and wake it again when its online window ends.
        Returns a line for progress messages."""
        async with self._wake_locks[rental_id]:
            known, now = self._awake.get(rental_id), time.time()
            if known is None or now >= known.online_till:
                try:
                    known = self._remember(rental_id, await self.rentals.wake_up(rental_id))
                except ProviderError as err:
                    log.warning("could not check or wake %s: %s", rental_id, err.message)
                    self._awake[rental_id] = _Awake(now, now + 10.0, unknown=True)  # try again in a moment
                    return "number state unknown (provider error); still polling"
            if now < known.online_at:
                return f"number queued, online in about {known.online_at - now:.0f} s"
            return f"number online until {_clock(known.online_till)}"

    # -- Pushes -----------------------------------------------------------------------------------

    async def push(self, pushed: WebhookCode) -> bool:
        """A webhook code (Getatext's): confirm it with a poll of the rental (`rental-status`, which keeps leading
        zeros), store it, and wake the waiter at once. A code pushed as a JSON number may have lost its leading
        zeros, so unconfirmed it is not stored: the poller reads it instead. False for an unknown rental (unless it
        is one a purchase paid for without learning its id: then it is adopted)."""
        ref = parse_rental_id(pushed.rental_id)
        provider = self.rentals.providers.get(ref.provider)
        if provider is None:
            return False
        receipt: Receipt | None = None
        if await self.ledger.rental(pushed.rental_id) is None:
            try:
                receipt = await self.rentals.purchases.adopt(pushed.rental_id)
            except ProviderError as err:
                log.warning("could not check the pushed rental %s: %s", pushed.rental_id, err.message)
            if receipt is None:
                return False
        self.pushes_arrive = True
        if receipt is None:
            try:
                receipt = await provider.poll(ref)
            except ProviderError as err:
                log.warning("could not confirm the pushed code of %s: %s", pushed.rental_id, err.message)
        if receipt is not None and receipt.messages:
            await self.rentals.record(receipt)
        elif not pushed.code_was_number:
            at = pushed.received_at
            message_id = f"{pushed.rental_id}:{pushed.code}"
            await self.deliver(
                [Message(message_id=message_id, rental_id=pushed.rental_id, code=pushed.code, received_at=at)]
            )
        else:
            self.expect(pushed.rental_id)  # poll rental-status soon, until it shows the code
        return True


def _started(wait: Wait | None) -> float:
    return 0.0 if wait is None or wait.started is None else wait.started


def _task_name(provider: str) -> str:
    return f"poller:{provider}"


def _ended(rental: Rental) -> bool:
    return rental.status.ended or (rental.ends_at is not None and rental.ends_at <= datetime.now(UTC))


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S UTC")


def _progress_text(waited: float, number: str | None) -> str:
    text = f"waiting for the SMS, {waited:.0f} s so far"
    return f"{text}; {number}" if number else text
