"""GotSMS auto-renew can only be flipped: `set_auto_renew` flips it under the rental's ledger lock, never from a
state the provider does not show, puts back a flip that landed on the wrong state, and says when it did not get
where it was asked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import anyio
import httpx
import pytest

from smsrent.domain.errors import ProviderError, UnknownRental
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger.sqlite import SqliteLedger
from smsrent.service.rentals import Rentals
from tests.helpers import gotsms_adapter, requests
from tests.service.test_rentals import local, plan_of

pytestmark = pytest.mark.anyio

RENTS = "/api/rents"


@dataclass
class Watch:
    """What the transports below share: when the rent list was last read."""

    read: anyio.Event = field(default_factory=anyio.Event)


class SlowToggle(httpx.AsyncBaseTransport):
    """Forwards to the sandbox; a renewal toggle first waits for another read of the rent list (up to 0.5 s), so
    that a second caller without the per-rental lock reads the state before the first caller's flip lands.
    `before_toggle` runs just before a toggle is forwarded (to change the state elsewhere, say)."""

    def __init__(
        self, sandbox: GotSmsSandbox, watch: Watch, before_toggle: Callable[[], object] = lambda: None
    ) -> None:
        self.inner = httpx.ASGITransport(app=sandbox.app)
        self.watch, self.before_toggle = watch, before_toggle

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/renewal/toggle"):
            self.watch.read = anyio.Event()
            with anyio.move_on_after(0.5):
                await self.watch.read.wait()
            self.before_toggle()
        response = await self.inner.handle_async_request(request)
        if (request.method, request.url.path) == ("GET", RENTS):
            self.watch.read.set()
        return response


class DeafToggle(httpx.AsyncBaseTransport):
    """A provider whose toggle answers success with the state unchanged (the flip never happens)."""

    def __init__(self, sandbox: GotSmsSandbox) -> None:
        self.sandbox, self.inner = sandbox, httpx.ASGITransport(app=sandbox.app)
        self.toggles = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/renewal/toggle"):
            self.toggles += 1
            rent = self.sandbox.rents[request.url.path.split("/")[-3]]
            data = {"id": rent.id, "is_included_for_next_renewal": rent.renew}
            return httpx.Response(200, json={"success": True, "message": "Auto renewal enabled.", "data": data})
        return await self.inner.handle_async_request(request)


@dataclass
class Monthly:
    rentals: Rentals
    rental_id: str
    sandbox: GotSmsSandbox

    @property
    def renews(self) -> bool:
        return self.sandbox.rents[local(self.rental_id)].renew

    def toggles(self) -> int:
        return requests(self.sandbox, "POST", f"{RENTS}/{local(self.rental_id)}/renewal/toggle")

    async def in_ledger(self) -> bool | None:
        stored = await self.rentals.ledger.rental(self.rental_id)
        assert stored is not None
        return stored.auto_renew


GUARD = MoneyGuard(daily_budget=Decimal("50"), allow_auto_renew=True)


@pytest.fixture
async def monthly(
    make_rentals: Callable[..., Rentals], gotsms: GotSmsProvider, gotsms_sandbox: GotSmsSandbox
) -> Monthly:
    """A monthly GotSMS rent bought through the service, auto-renew on."""
    rentals = make_rentals(gotsms, guard=GUARD)
    bought = (await rentals.buy(await plan_of(rentals, "gotsms", "Discord", duration="1 month"), Decimal("6"))).rental
    await rentals.set_auto_renew(bought.rental_id, True)
    return Monthly(rentals, bought.rental_id, gotsms_sandbox)


@pytest.fixture
async def second_adapter(gotsms_sandbox: GotSmsSandbox) -> AsyncIterator[Callable[..., GotSmsProvider]]:
    made: list[GotSmsProvider] = []

    def make(transport: httpx.AsyncBaseTransport) -> GotSmsProvider:
        made.append(gotsms_adapter(gotsms_sandbox, transport=transport))
        return made[-1]

    yield make
    for adapter in made:
        await adapter.aclose()


@pytest.mark.parametrize("callers", ["one process", "two processes on one ledger"])
async def test_two_concurrent_calls_to_turn_it_off_flip_it_once(
    monthly: Monthly,
    ledger_path: Path,
    second_adapter: Callable[..., GotSmsProvider],
    callers: str,
) -> None:
    """Without the per-rental lock both calls read "on" and both flip: renewal ended up on, the ledger off."""
    watch = Watch()
    first = Rentals([second_adapter(SlowToggle(monthly.sandbox, watch))], monthly.rentals.ledger, GUARD)
    other_ledger = await SqliteLedger.open(ledger_path) if callers.startswith("two") else monthly.rentals.ledger
    second = Rentals([second_adapter(SlowToggle(monthly.sandbox, watch))], other_ledger, GUARD)
    toggles_before = monthly.toggles()
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(first.set_auto_renew, monthly.rental_id, False)
                tg.start_soon(second.set_auto_renew, monthly.rental_id, False)
    finally:
        if other_ledger is not monthly.rentals.ledger:
            await other_ledger.close()
    assert monthly.toggles() - toggles_before == 1
    assert monthly.renews is False
    assert await monthly.in_ledger() is False


@pytest.mark.parametrize("enabled", [True, False])
async def test_a_state_the_rent_list_does_not_show_is_never_flipped(monthly: Monthly, enabled: bool) -> None:
    """The document gives no schema; a rent list without `is_included_for_next_renewal` made the server flip
    blindly (an unknown state is not the wanted one), which could turn renewal on."""
    monthly.sandbox.lists_renewal = False
    toggles_before = monthly.toggles()
    with pytest.raises(ProviderError, match="does not show whether auto-renew is on") as refused:
        await monthly.rentals.set_auto_renew(monthly.rental_id, enabled)
    assert refused.value.message.count(". ") == 0  # one sentence
    assert f"turn it {'on' if enabled else 'off'} on the GotSMS website" in refused.value.message
    assert monthly.toggles() == toggles_before
    assert monthly.renews is True


async def test_a_flip_that_lands_on_the_wrong_state_is_flipped_back(
    monthly: Monthly, second_adapter: Callable[..., GotSmsProvider]
) -> None:
    """Between the read and the flip, renewal is turned off elsewhere (the website): the flip turns it back on.
    The service sees the answer, reads again and flips it back, and says what happened."""
    rent = monthly.sandbox.rents[local(monthly.rental_id)]

    def off_on_the_website() -> None:
        if toggles_before == monthly.toggles():  # before the first flip only
            rent.renew = False

    rentals = Rentals(
        [second_adapter(SlowToggle(monthly.sandbox, Watch(), off_on_the_website))], monthly.rentals.ledger, GUARD
    )
    toggles_before = monthly.toggles()
    outcome = await rentals.set_auto_renew(monthly.rental_id, False)
    assert outcome.rental.auto_renew is False
    assert outcome.note == "GotSMS first answered that auto-renew was on; it is off now."
    assert monthly.toggles() - toggles_before == 2
    assert monthly.renews is False
    assert await monthly.in_ledger() is False


async def test_a_flip_that_never_happens_is_reported_and_the_ledger_keeps_the_real_state(
    monthly: Monthly, second_adapter: Callable[..., GotSmsProvider]
) -> None:
    deaf = DeafToggle(monthly.sandbox)
    rentals = Rentals([second_adapter(deaf)], monthly.rentals.ledger, GUARD)
    with pytest.raises(ProviderError, match="GotSMS did not turn auto-renew off") as failed:
        await rentals.set_auto_renew(monthly.rental_id, False)
    assert "(it is on now)" in failed.value.message
    assert deaf.toggles == 2  # the flip, and the attempt to put it back after reading it again
    assert monthly.renews is True
    assert await monthly.in_ledger() is True


async def test_a_rent_the_ledger_does_not_know_is_refused_before_any_request(
    make_rentals: Callable[..., Rentals], gotsms: GotSmsProvider, gotsms_sandbox: GotSmsSandbox
) -> None:
    """As the other tools do: a rent made elsewhere is adopted by list_rentals first."""
    plan = next(p for p in gotsms_sandbox.plans.values() if p.duration_type == "month")
    made_elsewhere = (await gotsms.create_rent(plan.id)).rental.rental_id
    rentals = make_rentals(gotsms, guard=GUARD)
    seen = len(gotsms_sandbox.requests)
    with pytest.raises(UnknownRental, match="call list_rentals"):
        await rentals.set_auto_renew(made_elsewhere, True)
    assert len(gotsms_sandbox.requests) == seen
