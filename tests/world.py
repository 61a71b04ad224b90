"""A delivery world: both sandboxes, the real adapters in-process, a real ledger file, Rentals and Delivery."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from smsrent.domain.ids import ProviderName
from smsrent.domain.models import Message
from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.sandbox.base import SandboxTiming
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.delivery import Delivery
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger import Ledger
from smsrent.service.ledger.sqlite import SqliteLedger
from smsrent.service.pollers import Schedule
from smsrent.service.rentals import Rentals
from tests.helpers import getatext_adapter, gotsms_adapter

FAST = Schedule(steps=((3600.0, 0.05),), idle=0.05, per_minute=100_000)
"""A tick every 50 ms, no account ceiling to speak of."""


def every(seconds: float) -> Schedule:
    return Schedule(steps=((3600.0, seconds),), idle=seconds, per_minute=100_000)


def timing_with(**changes: float | bool) -> SandboxTiming:
    values = {**SandboxTiming.instant().__dict__, **changes}
    return SandboxTiming(**values)


async def settle(seconds: float) -> float:
    """Sleep, then return the wall-clock time (the sandboxes record requests in `time.time()`)."""
    await anyio.sleep(seconds)
    return time.time()


@dataclass
class World:
    gotsms_sandbox: GotSmsSandbox
    getatext_sandbox: GetatextSandbox
    gotsms: GotSmsProvider
    getatext: GetatextProvider
    ledger: Ledger
    delivery: Delivery
    delivered: list[Message] = field(default_factory=list)

    @property
    def rentals(self) -> Rentals:
        return self.delivery.rentals

    async def rent(self, provider: ProviderName, service: str = "Telegram") -> str:
        """Rent the cheapest plan of `service` through Rentals (ledger and money guard); returns the rental id."""
        plans = await self.rentals.catalogue.plans(provider=provider, service=service)
        plan = next(p for p in plans if p.billing_type in ("one_time", "duration"))
        assert plan.price is not None
        outcome = await self.rentals.buy(plan, plan.price + Decimal("1"))
        return outcome.rental.rental_id

    def local(self, rental_id: str) -> str:
        return rental_id.rsplit(":", 1)[1]

    def send_sms(self, rental_id: str, code: str, body: str | None = None) -> str:
        """A GotSMS SMS reaches the rented number now; returns its id."""
        return self.gotsms_sandbox.deliver(self.local(rental_id), body or f"Your code is {code}", code)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[TaskGroup]:
        """`delivery.run()` in a task group (plus anything the test starts there), cancelled on exit."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.delivery.run)
            try:
                yield tg
            finally:
                tg.cancel_scope.cancel()


WorldFactory = Callable[..., AbstractAsyncContextManager[World]]


@asynccontextmanager
async def open_world(
    ledger_path: Path,
    timing: SandboxTiming,
    *,
    schedule: Schedule = FAST,
    gotsms_sandbox: GotSmsSandbox | None = None,
    getatext_sandbox: GetatextSandbox | None = None,
    pushes_arrive: bool = False,
) -> AsyncIterator[World]:
    """A world on the ledger at `ledger_path`; by default fresh sandboxes with `timing`."""
    gs = gotsms_sandbox or GotSmsSandbox(timing=timing, seed=7)
    ga = getatext_sandbox or GetatextSandbox(timing=timing, seed=7)
    async with AsyncExitStack() as stack:
        gotsms, getatext = gotsms_adapter(gs), getatext_adapter(ga)
        stack.push_async_callback(gotsms.aclose)
        stack.push_async_callback(getatext.aclose)
        ledger = await SqliteLedger.open(ledger_path)
        stack.push_async_callback(ledger.close)
        rentals = Rentals([gotsms, getatext], ledger, MoneyGuard())
        delivery = Delivery(rentals, schedule=schedule)
        delivery.pushes_arrive = pushes_arrive
        world = World(gs, ga, gotsms, getatext, ledger, delivery)

        async def listen(messages: Sequence[Message]) -> None:
            world.delivered.extend(messages)

        rentals.observers.append(listen)
        yield world
