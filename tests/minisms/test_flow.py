"""MiniSMS, registered in one place (`registered`), goes through the whole flow of the service and of the MCP tools:
plans, a purchase whose answer is lost, a wait for the code, a refund. `service/` and `mcp/` never name it.

MiniSMS is served by its tiny ASGI app over real HTTP on loopback, and built by the registry from the settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client

from smsrent.domain.errors import InvalidInput, ProviderError, Unsupported
from smsrent.domain.ids import Ref, parse_plan_id, parse_rental_id
from smsrent.domain.models import RentalStatus
from smsrent.mcp.app import create_app
from smsrent.providers.registry import configured_providers
from smsrent.sandbox import serve_loopback
from smsrent.service.delivery import Delivery, WaitResult
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger.sqlite import SqliteLedger
from smsrent.service.rentals import Rentals
from tests.faults import LoseAnswer
from tests.helpers import settings
from tests.mcp import fails, local_id, ok, wait_while
from tests.minisms.adapter import NAME, registered
from tests.minisms.server import MiniSms
from tests.world import FAST

pytestmark = pytest.mark.anyio
D = Decimal
RENTALS = "/v1/rentals"


@pytest.fixture
async def minisms() -> AsyncIterator[tuple[MiniSms, str]]:
    """A fresh MiniSMS account served on loopback, and its base URL."""
    with anyio.fail_after(30):
        server = MiniSms()
        async with serve_loopback(server.app) as base:
            yield server, base


def losing(deliver: bool) -> LoseAnswer:
    """Real HTTP whose first purchase loses its answer, after the provider acted on it (or before, `deliver=False`)."""
    return LoseAnswer(httpx.AsyncHTTPTransport(), "POST", RENTALS, "timeout", deliver=deliver)


@asynccontextmanager
async def registry_rentals(tmp_path: Path) -> AsyncIterator[Rentals]:
    """Rentals over whatever the registry builds from the test's settings (no credentials: only MiniSMS)."""
    built = configured_providers(settings(tmp_path))
    ledger = await SqliteLedger.open(tmp_path / "ledger.sqlite3")
    try:
        yield Rentals(built.adapters, ledger, MoneyGuard(max_price=D("1")), settle_after=0.0)
    finally:
        await ledger.close()
        for adapter in built.adapters:
            await adapter.aclose()


async def test_the_service_flow(tmp_path: Path, minisms: tuple[MiniSms, str]) -> None:
    server, base = minisms
    lossy = losing(deliver=True)
    with registered(base, lossy):
        async with registry_rentals(tmp_path) as service:
            assert list(service.providers) == [NAME]
            plans = await service.catalogue.plans()
            assert [(p.plan_id, p.price) for p in plans] == [
                ("minisms:discord_uk", D("0.35")),
                ("minisms:telegram", D("0.40")),
                ("minisms:whatsapp", D("0.55")),
            ]

            # The purchase's answer is lost after MiniSMS made the rental: its rental list settles it.
            outcome = await service.buy(await service.quote(max_price=D("1"), service="telegram"), D("1"))
            (made,) = (r for r in server.rentals.values() if r["plan"] == "telegram")
            assert outcome.rental.rental_id == f"minisms:{made['id']}"
            assert outcome.note is not None
            assert "found at the provider" in outcome.note
            (purchase,) = await service.ledger.purchases()
            assert (purchase.state, purchase.price, purchase.note) == ("bought", D("0.40"), "reconciled")
            assert (lossy.lost, server.requests.count(("POST", RENTALS))) == (1, 1)

            # The code arrives while a wait is on: the per-rental poller finds it.
            delivery = Delivery(service, schedule=FAST)
            results: list[WaitResult] = []

            async def wait() -> None:
                results.append(await delivery.wait(outcome.rental.rental_id, 8.0))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(delivery.run)
                    async with anyio.create_task_group() as waits:
                        waits.start_soon(wait)
                        await anyio.sleep(0.3)
                        server.deliver(made["id"], "004521")
                    tg.cancel_scope.cancel()
            (result,) = results
            assert result.outcome == "code_received"
            assert result.message is not None
            assert result.message.code == "004521"

            # A rental that got no code is refunded; one that got a code is not.
            unused = await service.buy(await service.quote(max_price=D("1"), plan_id="minisms:whatsapp"), D("1"))
            refund = await service.refund(unused.rental.rental_id)
            assert (refund.rental.status, refund.refunded) == (RentalStatus.REFUNDED, D("0.55"))
            with pytest.raises(ProviderError, match="refund not allowed"):
                await service.refund(outcome.rental.rental_id)
            assert server.balance == D("10.00") - D("0.40")
            assert await service.ledger.committed() == D("0.40")

            # What MiniSMS does not offer is refused before any request.
            served = len(server.requests)
            for change in (service.wake_up, service.finish):
                with pytest.raises(Unsupported):
                    await change(unused.rental.rental_id)
            with pytest.raises(Unsupported):
                await service.set_auto_renew(unused.rental.rental_id, False)
            assert len(server.requests) == served


async def test_a_purchase_lost_before_minisms_acted_is_settled_not_bought(
    tmp_path: Path, minisms: tuple[MiniSms, str]
) -> None:
    """Its rental list shows every rental, so it proves that the lost purchase made nothing: buying again is
    safe, and buys once."""
    server, base = minisms
    with registered(base, losing(deliver=False)):
        async with registry_rentals(tmp_path) as service:
            plan = await service.quote(max_price=D("1"), plan_id="minisms:telegram")
            with pytest.raises(ProviderError, match="nothing was bought; you may try again"):
                await service.buy(plan, D("1"))
            assert server.rentals == {}
            assert [p.state for p in await service.ledger.purchases()] == ["not_bought"]
            again = await service.buy(plan, D("1"))
            assert again.rental.status is RentalStatus.ACTIVE
            assert list(server.rentals) == [local_id(again.rental.rental_id)]


async def test_the_mcp_tools_serve_minisms(tmp_path: Path, minisms: tuple[MiniSms, str]) -> None:
    server, base = minisms
    with registered(base, losing(deliver=True)):
        app_settings = settings(tmp_path)
        app = create_app(app_settings, providers=lambda: configured_providers(app_settings))
        async with Client(app.mcp) as client:
            listed = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert NAME in listed["list_plans"].input_schema["properties"]["provider"]["enum"]

            balance = await ok(client, "get_balance", provider=NAME)
            assert balance["balances"] == [{"provider": NAME, "amount": "10.00"}]
            plans = await ok(client, "list_plans", service="telegram")
            assert [p["plan_id"] for p in plans["plans"]] == ["minisms:telegram"]

            rented = await ok(client, "rent_number", plan_id="minisms:telegram", max_price=1)
            rental_id = rented["rental"]["rental_id"]
            assert "found at the provider" in rented["note"]  # the answer was lost; the rental list settled it
            code = await wait_while(client, rental_id, lambda: server.deliver(local_id(rental_id), "004521"))
            assert code.structured_content is not None
            assert (code.structured_content["outcome"], code.structured_content["code"]) == ("code_received", "004521")

            unused = await ok(client, "rent_number", service="whatsapp", max_price=1)
            refunded = await ok(client, "refund", rental_id=unused["rental"]["rental_id"])
            assert (refunded["rental"]["status"], refunded["refunded"]) == ("refunded", "0.55")
            assert "MiniSMS numbers are always online" in await fails(client, "wake_up", rental_id=rental_id)

            active = await ok(client, "list_rentals")
            assert [r["rental_id"] for r in active["rentals"]] == [rental_id]
    assert server.requests.count(("POST", RENTALS)) == 2


async def test_its_ids_parse_only_while_it_is_registered() -> None:
    with pytest.raises(InvalidInput, match="it must start with gotsms: or getatext:"):
        parse_rental_id("minisms:r-1")
    with registered("http://minisms.test"):
        assert parse_rental_id("minisms:r-1") == Ref(NAME, "r-1")
        assert parse_plan_id("minisms:telegram") == Ref(NAME, "telegram")
        for malformed in ("minisms:../balance", "minisms:r-1/refund", "minisms:long:r-1", "minisms:"):
            with pytest.raises(InvalidInput, match="a form this provider never uses"):
                parse_rental_id(malformed)
    with pytest.raises(InvalidInput):
        parse_rental_id("minisms:r-1")
