"""Getatext webhook pushes: the sandbox POSTs the code (a JSON number) to a receiver that hands it to
`Delivery.push`, which cross-checks it with `rental-status` and wakes the waiting call at once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smsrent.domain.ids import parse_plan_id, parse_rental_id
from smsrent.providers.getatext import parse_webhook
from smsrent.sandbox.getatext import TZ
from smsrent.service.delivery import WaitResult
from smsrent.service.ledger import PurchaseState
from tests.helpers import requests
from tests.world import World, WorldFactory, every

pytestmark = pytest.mark.anyio

STATUS = ("POST", "/api/v1/rental-status")
HOOK = "http://smsrent.test/webhooks/getatext/s3cret"


def receiver(world: World, answers: list[bool]) -> Starlette:
    """What the HTTP mode's webhook route does: parse the body, hand it to Delivery.push."""

    async def hook(request: Request) -> Response:
        accepted = await world.delivery.push(parse_webhook(await request.json(), TZ))
        answers.append(accepted)
        return JSONResponse({"accepted": accepted}, status_code=200 if accepted else 404)

    return Starlette(routes=[Route("/webhooks/getatext/s3cret", hook, methods=["POST"])])


@asynccontextmanager
async def pushing(world: World, answers: list[bool]) -> AsyncIterator[list[WaitResult]]:
    """Delivery and the sandbox's push loop running, and a wait on a fresh Getatext rental under way."""
    world.getatext_sandbox.webhook_url = HOOK
    world.getatext_sandbox.webhook_transport = httpx.ASGITransport(app=receiver(world, answers))
    results: list[WaitResult] = []
    rental = await world.rent("getatext", service="Whatsapp")

    async def wait() -> None:
        results.append(await world.delivery.wait(rental, 8.0))

    async with world.running() as tg:
        tg.start_soon(world.getatext_sandbox.run)
        tg.start_soon(wait)
        with anyio.fail_after(3):
            while requests(world.getatext_sandbox, *STATUS) < 1:  # the first poll found no code
                await anyio.sleep(0.01)
        yield results


async def first(results: list[WaitResult], seconds: float) -> WaitResult:
    with anyio.fail_after(seconds):
        while not results:
            await anyio.sleep(0.005)
    return results[0]


# The next poll would come 5 s x 4 (polling is only the safety net once pushes are on) after the first.
SLOW = every(5.0)


async def test_a_pushed_code_wakes_the_wait_with_the_code_from_rental_status(make_world: WorldFactory) -> None:
    answers: list[bool] = []
    async with make_world(schedule=SLOW, pushes_arrive=True) as world, pushing(world, answers) as results:
        rental = next(iter(world.getatext_sandbox.rentals.values()))
        polled = requests(world.getatext_sandbox, *STATUS)
        sent = time.monotonic()
        world.getatext_sandbox.deliver(rental.id, "004521")
        result = await first(results, 1.0)
        latency = time.monotonic() - sent
        assert (await world.delivery.wait(f"getatext:{rental.id}", 0.3)).outcome == "still_waiting"
        stored = await world.ledger.messages(f"getatext:{rental.id}")
    assert latency < 1.0
    assert answers == [True]
    [pushed] = world.getatext_sandbox.pushed
    assert type(pushed["code"]) is int
    assert (pushed["code"], pushed["answer"]) == (4521, 200)
    assert requests(world.getatext_sandbox, *STATUS) == polled + 1  # the one cross-check
    assert result.outcome == "code_received"
    assert result.message is not None
    assert result.message.code == "004521"  # rental-status's string, not the pushed number
    assert [s.message.code for s in stored] == ["004521"]  # stored once
    assert [m.code for m in world.delivered] == ["004521"]  # listeners heard of it once


async def test_a_push_for_an_unknown_rental_is_refused_and_stores_nothing(make_world: WorldFactory) -> None:
    async with make_world(schedule=SLOW, pushes_arrive=True) as world:
        body = {"id": 99999, "code": 4521, "received_at": "2025-07-06 15:43:37", "number": "1234567890"}
        with anyio.fail_after(5):
            async with world.running():
                assert await world.delivery.push(parse_webhook(body, TZ)) is False
        assert await world.ledger.messages("getatext:99999") == []
        assert await world.ledger.rental("getatext:99999") is None
        assert world.getatext_sandbox.requests == []  # not even a cross-check
        assert world.delivered == []


async def test_when_rental_status_fails_a_numeric_push_waits_for_the_status_to_keep_its_zeros(
    make_world: WorldFactory,
) -> None:
    answers: list[bool] = []
    async with make_world(schedule=every(0.2), pushes_arrive=True) as world, pushing(world, answers) as results:
        rental = next(iter(world.getatext_sandbox.rentals.values()))
        world.getatext_sandbox.inject(*STATUS, "500", times=1)  # the confirmation fails once
        world.getatext_sandbox.deliver(rental.id, "004521")  # pushed as the JSON number 4521
        result = await first(results, 3.0)
        again = await world.delivery.wait(f"getatext:{rental.id}", 0.5)
        assert requests(world.getatext_sandbox, *STATUS) >= 2  # the failed confirmation, then the poll
    assert answers == [True]
    assert result.outcome == "code_received"
    assert result.message is not None
    assert result.message.code == "004521"  # never "4521": the unconfirmed number was not stored
    assert again.outcome == "still_waiting"  # one SMS, one code


async def test_when_rental_status_fails_a_push_with_a_string_code_is_delivered_as_sent(
    make_world: WorldFactory,
) -> None:
    async with make_world(schedule=SLOW, pushes_arrive=True) as world:
        rental = await world.rent("getatext")
        world.getatext_sandbox.inject(*STATUS, "500", times=100)
        body = {"id": int(rental.split(":")[1]), "code": "004521", "received_at": "2025-07-06 15:43:37"}
        with anyio.fail_after(5):
            async with world.running():
                assert await world.delivery.push(parse_webhook(body, TZ)) is True
                result = await world.delivery.wait(rental, 1.0)
    assert result.outcome == "code_received"
    assert result.message is not None
    assert result.message.code == "004521"
    assert result.message.received_at is not None
    assert result.message.received_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("orphans", "adopted"),
    [
        (["uber"], True),
        (["uber", "uber"], False),  # two purchases it could belong to: neither gets it
        (["whatsapp"], False),  # no purchase of its service
    ],
)
@pytest.mark.parametrize("state", ["bought", "uncertain"], ids=["unverified", "uncertain"])
async def test_a_push_adopts_the_rental_a_purchase_paid_for_without_learning_its_id(
    make_world: WorldFactory, orphans: list[str], adopted: bool, state: PurchaseState
) -> None:
    """A Getatext purchase whose answer was lost is settled from the balance, without the rental id, counted at
    its max_price (or still uncertain: a credit hid its charge); the first pushed code names the rental: confirmed
    with `rental-status`, it is recorded and given to that purchase, with its real price, if exactly one purchase
    of that service can be its own."""
    async with make_world(schedule=SLOW, pushes_arrive=True) as world:
        plan = (await world.rentals.catalogue.plans(service="uber", provider="getatext"))[0]
        bought = await world.rentals.provider("getatext").rent(parse_plan_id(plan.plan_id))  # never recorded
        rental_id = bought.rental.rental_id
        number = int(parse_rental_id(rental_id).local_id)
        ids = []
        for service in orphans:
            orphan = await world.ledger.reserve(
                provider="getatext", kind="rent", amount=Decimal("0.50"), plan_id=f"getatext:{service}"
            )
            await world.ledger.note_balance_before(orphan, world.getatext_sandbox.balance)  # then it was sent
            await world.ledger.settle(orphan, state, note="the answer was lost", verified=False)
            ids.append(orphan)
        world.getatext_sandbox.deliver(number, "004521")
        body = {"id": number, "code": 4521, "received_at": "2025-07-06 15:43:37", "number": "1"}
        async with world.running():
            assert await world.delivery.push(parse_webhook(body, TZ)) is adopted
            result = await world.delivery.wait(rental_id, 0.5) if adopted else None
        purchases = [await world.ledger.purchase(pid) for pid in ids]
        linked = [(p.state, p.rental_id, p.price, p.verified) for p in purchases if p is not None]
        recorded = await world.ledger.rental(rental_id)
    assert requests(world.getatext_sandbox, "POST", "/api/v1/rent-a-number") == 1
    if adopted:
        assert result is not None
        assert result.message is not None
        assert result.message.code == "004521"
        assert linked == [("bought", rental_id, plan.price, True)]  # its real price, no longer its max_price
        assert recorded is not None
        assert (recorded.plan_id, recorded.price) == (plan.plan_id, plan.price)
    else:
        assert linked == [(state, None, None, False)] * len(orphans)
        assert recorded is None


async def test_a_push_is_never_given_to_a_purchase_whose_request_never_left(make_world: WorldFactory) -> None:
    """A purchase stopped before its request was sent (no balance noted yet) cannot have bought the pushed rental
    (made on the website, say), even when nothing else could have: it is not adopted, and it is settled as not
    bought."""
    async with make_world(schedule=SLOW, pushes_arrive=True) as world:
        plan = (await world.rentals.catalogue.plans(service="uber", provider="getatext"))[0]
        elsewhere = await world.rentals.provider("getatext").rent(parse_plan_id(plan.plan_id))
        number = int(parse_rental_id(elsewhere.rental.rental_id).local_id)
        stopped = await world.ledger.reserve(
            provider="getatext", kind="rent", amount=Decimal("0.50"), plan_id=plan.plan_id
        )
        await world.ledger.settle(stopped, "uncertain", note="the server stopped mid-purchase")
        world.getatext_sandbox.deliver(number, "004521")
        body = {"id": number, "code": 4521, "received_at": "2025-07-06 15:43:37"}
        assert await world.delivery.push(parse_webhook(body, TZ)) is False
        await world.rentals.purchases.reconcile("getatext")
        purchase = await world.ledger.purchase(stopped)
        recorded = await world.ledger.rental(elsewhere.rental.rental_id)
    assert purchase is not None
    assert (purchase.state, purchase.rental_id) == ("not_bought", None)
    assert recorded is None


async def test_a_push_to_another_process_on_the_ledger_wakes_the_wait_here_once(
    make_world: WorldFactory, tmp_path: Path
) -> None:
    """Two processes on one ledger: the webhook reaches the one where nobody waits. It stores the code; the waiting
    one hears of it from the ledger (before the next poll, 5 s away) and its observers hear of it once."""
    ledger_path = tmp_path / "shared.sqlite3"
    async with (
        make_world(schedule=SLOW, ledger_path=ledger_path) as here,
        make_world(
            schedule=SLOW,
            ledger_path=ledger_path,
            gotsms_sandbox=here.gotsms_sandbox,
            getatext_sandbox=here.getatext_sandbox,
            pushes_arrive=True,
        ) as there,
    ):
        answers: list[bool] = []
        sandbox = here.getatext_sandbox
        sandbox.webhook_url = HOOK
        sandbox.webhook_transport = httpx.ASGITransport(app=receiver(there, answers))
        rental = await here.rent("getatext", service="Whatsapp")
        results: list[WaitResult] = []

        async def wait() -> None:
            results.append(await here.delivery.wait(rental, 8.0))

        async with here.running() as tg, there.running():
            tg.start_soon(sandbox.run)
            tg.start_soon(wait)
            with anyio.fail_after(3):
                while requests(sandbox, *STATUS) < 1:  # the first poll (whoever leads) found no code
                    await anyio.sleep(0.01)
            sandbox.deliver(int(rental.partition(":")[2]), "004521")
            result = await first(results, 4.0)
    assert answers == [True]
    assert result.outcome == "code_received"
    assert result.message is not None
    assert result.message.code == "004521"
    assert [m.code for m in there.delivered] == ["004521"]  # stored there
    assert [m.code for m in here.delivered] == ["004521"]  # heard here, once
