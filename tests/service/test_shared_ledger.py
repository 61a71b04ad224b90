"""Two servers on one ledger file, each played here by its own `Ledger` and `Rentals` (the real-process version:
tests/e2e/test_two_servers.py): recovery and reconciliation leave the other's purchase in flight alone, Getatext
purchases never overlap at the provider, and what a server that died left is settled by the heartbeat."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import anyio
import httpx
import pytest

from smsrent.domain.ids import parse_plan_id
from smsrent.providers.base import Provider
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger.sqlite import SqliteLedger
from smsrent.service.ledger.sqlite.base import OPEN
from smsrent.service.rentals import Rentals
from tests.helpers import getatext_adapter, gotsms_adapter
from tests.service.test_money_safety import discord_day

pytestmark = pytest.mark.anyio

D = Decimal
RENTS = "/api/rents"
GETATEXT_RENT = "/api/v1/rent-a-number"


class Held(httpx.AsyncBaseTransport):
    """Forwards to `inner`; requests to `method path` wait until `release` is set (a slow provider)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, method: str, path: str) -> None:
        self.inner, self.method, self.path = inner, method, path
        self.arrived, self.release = anyio.Event(), anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if (request.method, request.url.path) == (self.method, self.path):
            self.arrived.set()
            await self.release.wait()
        return await self.inner.handle_async_request(request)


@asynccontextmanager
async def server(ledger_path: Path, *providers: Provider, guard: MoneyGuard | None = None) -> AsyncIterator[Rentals]:
    """One more server on the ledger file: its own connection and process registration, its own adapters."""
    ledger = await SqliteLedger.open(ledger_path)
    try:
        yield Rentals(list(providers), ledger, guard or MoneyGuard(), settle_after=0.0)
    finally:
        for provider in providers:
            await provider.aclose()
        await ledger.close()


async def test_a_server_starting_while_another_buys_leaves_that_purchase_alone(
    ledger_path: Path, gotsms_sandbox: GotSmsSandbox
) -> None:
    """Start-up recovery took every reserved row for its own crash: the other server's purchase in flight became
    uncertain, and (its rent not listed yet) reconciliation could settle it as not bought."""
    held = Held(httpx.ASGITransport(app=gotsms_sandbox.app), "POST", RENTS)
    async with server(ledger_path, gotsms_adapter(gotsms_sandbox, transport=held)) as first:
        plan = await discord_day(first)
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.buy, plan, D("1.00"))
            with anyio.fail_after(10):
                await held.arrived.wait()  # the rent POST is on its way
            async with server(ledger_path, gotsms_adapter(gotsms_sandbox)) as second:
                await second.purchases.recover()
                await second.purchases.reconcile_all()
                await second.list_rentals()
                (purchase,) = await second.ledger.purchases()
                assert (purchase.state, purchase.owner) == ("reserved", first.ledger.owner)
            held.release.set()
        (purchase,) = await first.ledger.purchases()
    (rent_id,) = gotsms_sandbox.rents
    assert (purchase.state, purchase.rental_id, purchase.owner) == ("bought", f"gotsms:{rent_id}", None)


async def test_reconciliation_waits_while_another_server_has_a_purchase_in_flight(
    ledger_path: Path, gotsms_sandbox: GotSmsSandbox
) -> None:
    """An uncertain purchase on a plan is not matched while another server's purchase on the same plan is in
    flight: the new rent could be that one's."""
    held = Held(httpx.ASGITransport(app=gotsms_sandbox.app), "POST", RENTS)
    async with (
        server(ledger_path, gotsms_adapter(gotsms_sandbox, transport=held)) as first,
        server(ledger_path, gotsms_adapter(gotsms_sandbox)) as second,
    ):
        plan = await discord_day(first)
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.buy, plan, D("1.00"))
            with anyio.fail_after(10):
                await held.arrived.wait()
            lost = await second.ledger.reserve(provider="gotsms", kind="rent", amount=D("1"), plan_id=plan.plan_id)
            await second.ledger.settle(lost, "uncertain", note="the answer was lost")  # it never reached GotSMS
            await second.ledger.release(lost)
            assert await second.purchases.reconcile("gotsms") == []
            assert (await second.ledger.purchase(lost)).state == "uncertain"  # type: ignore[union-attr]
            held.release.set()
        settled = await second.purchases.reconcile("gotsms")
        purchases = {p.purchase_id: p for p in await second.ledger.purchases()}
    (rent_id,) = gotsms_sandbox.rents
    assert [(p.purchase_id, r) for p, r in settled] == [(lost, None)]
    assert purchases[lost].state == "not_bought"
    assert [p.rental_id for p in purchases.values() if p.state == "bought"] == [f"gotsms:{rent_id}"]


async def test_getatext_purchases_of_two_servers_never_overlap_at_the_provider(
    ledger_path: Path, getatext_sandbox: GetatextSandbox
) -> None:
    """The purchase lock was an `anyio.Lock`: two processes each held their own and rented at once (their
    balance-based settlement then reads each other's charges)."""
    getatext_sandbox.slow_seconds = 0.1
    getatext_sandbox.inject("POST", GETATEXT_RENT, "slow", times=10)
    async with (
        server(ledger_path, getatext_adapter(getatext_sandbox)) as first,
        server(ledger_path, getatext_adapter(getatext_sandbox)) as second,
    ):
        plan = await first.quote(max_price=D("0.20"), plan_id="getatext:uber")
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for n in range(10):
                    tg.start_soon((first if n % 2 else second).buy, plan, D("0.20"))
        purchases = await first.ledger.purchases()
    spans = sorted((start, end) for start, end, method, path in getatext_sandbox.spans if path == GETATEXT_RENT)
    assert len(spans) == 10
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans))
    assert [p.state for p in purchases] == ["bought"] * 10
    assert sum(p.price or 0 for p in purchases) == D("20.00") - getatext_sandbox.balance == D("2.00")


async def test_the_heartbeat_settles_what_a_server_that_died_left_mid_purchase(
    ledger_path: Path, gotsms_sandbox: GotSmsSandbox
) -> None:
    """A server dies (no clean close) between its rent POST and the answer; a live server's heartbeat loop
    finds it gone and settles its purchase from the rent list, with no call from anyone."""
    async with server(ledger_path, gotsms_adapter(gotsms_sandbox)) as survivor:
        plan = await discord_day(survivor)
        dead = await SqliteLedger.open(ledger_path)
        lost = await dead.reserve(provider="gotsms", kind="rent", amount=D("1.00"), plan_id=plan.plan_id)
        await survivor.providers["gotsms"].rent(parse_plan_id(plan.plan_id))  # the request went out; then it died
        OPEN.discard(dead.owner)  # killed: its connection drops, its row stays
        await dead._run(dead._db.close)
        assert await survivor.ledger.in_other_hands("gotsms")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(survivor.purchases.heartbeat, 0.05)
                while (await survivor.ledger.purchase(lost)).state != "bought":  # type: ignore[union-attr]
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
        purchase = await survivor.ledger.purchase(lost)
        (rent_id,) = gotsms_sandbox.rents
        assert purchase is not None
        assert (purchase.rental_id, purchase.price, purchase.owner) == (f"gotsms:{rent_id}", D("0.60"), None)
        assert await survivor.ledger.committed() == D("25.00") - gotsms_sandbox.balance
