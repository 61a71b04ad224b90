"""The seams the figures rest on: every refusal by the money guard is recorded once, every provider path has a
route template, and every request is reported once with its status class (transport failures included)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import anyio
import httpx
import pytest
from pydantic import SecretStr

from smsrent.domain.errors import BudgetExceeded, ProviderError, PurchaseUnsettled
from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.providers.observed import OTHER, ProviderRequest
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger import Ledger
from smsrent.service.rentals import Rentals
from tests.helpers import FAST_RETRY, getatext_adapter, gotsms_adapter
from tests.providers.transport import Router, json_response

pytestmark = pytest.mark.anyio

D = Decimal
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    opened = await Ledger.open(tmp_path / "ledger.sqlite3")
    yield opened
    await opened.close()


@pytest.fixture
async def gotsms(gotsms_sandbox: GotSmsSandbox) -> AsyncIterator[GotSmsProvider]:
    adapter = gotsms_adapter(gotsms_sandbox)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def getatext(getatext_sandbox: GetatextSandbox) -> AsyncIterator[GetatextProvider]:
    adapter = getatext_adapter(getatext_sandbox)
    yield adapter
    await adapter.aclose()


async def refusals(ledger: Ledger) -> list[tuple[str | None, Decimal]]:
    return [(r.provider, r.amount) for r in await ledger.refusals()]


async def test_each_refusal_is_recorded_once_with_its_provider_and_amount(
    ledger: Ledger, gotsms: GotSmsProvider, getatext: GetatextProvider
) -> None:
    rentals = Rentals([gotsms, getatext], ledger, MoneyGuard(max_price=D("3"), daily_budget=D("1.50")))
    with pytest.raises(BudgetExceeded, match="SMSRENT_MAX_PRICE"):  # before any provider is chosen
        await rentals.quote(max_price=D("4"), service="Discord")
    with pytest.raises(BudgetExceeded, match="above max_price"):  # the plan costs more than the caller allows
        await rentals.quote(max_price=D("0.50"), service="Discord", provider="gotsms")
    plan = await rentals.quote(max_price=D("1"), service="Discord", provider="gotsms")
    bought = await rentals.buy(plan, D("1"))
    with pytest.raises(BudgetExceeded, match="daily budget"):  # 1.00 reserved + 1.00 > 1.50
        await rentals.buy(plan, D("1"))
    weekly = next(p for p in await rentals.plans(service="Discord", provider="gotsms") if p.duration == "1 week")
    with pytest.raises(BudgetExceeded, match="above max_price"):  # inside the extension's own quote: once
        await rentals.extension(bought.rental.rental_id, D("2"), weekly.plan_id)
    with pytest.raises(BudgetExceeded, match="SMSRENT_MAX_PRICE"):
        await rentals.extension(bought.rental.rental_id, D("3.50"), weekly.plan_id)
    assert await refusals(ledger) == [
        (None, D("4")),
        ("gotsms", D("0.50")),
        ("gotsms", D("1")),
        ("gotsms", D("2")),
        ("gotsms", D("3.50")),
    ]
    assert [c.state for c in await ledger.charges()] == ["bought"]  # a refusal reserves nothing


async def test_a_purchase_refused_for_an_unsettled_one_is_recorded_but_not_the_unsettled_one(
    ledger: Ledger, gotsms: GotSmsProvider, gotsms_sandbox: GotSmsSandbox
) -> None:
    rentals = Rentals([gotsms], ledger, MoneyGuard(), settle_after=3600)
    plan = await rentals.quote(max_price=D("1"), service="Discord", provider="gotsms")
    gotsms_sandbox.inject("POST", "/api/rents", "500")  # the answer is a 500: bought or not, nobody knows yet
    with pytest.raises(PurchaseUnsettled, match="may or may not have gone through"):
        await rentals.buy(plan, D("1"))
    with pytest.raises(PurchaseUnsettled, match="Refused: an earlier purchase"):
        await rentals.buy(plan, D("1"))
    assert await refusals(ledger) == [("gotsms", D("1"))]
    assert [c.state for c in await ledger.charges()] == ["uncertain"]


@pytest.mark.parametrize("provider", [GotSmsProvider, GetatextProvider])
def test_every_path_an_adapter_sends_has_a_route_template(provider: type[GotSmsProvider | GetatextProvider]) -> None:
    """Every path literal in the adapter's module (ids filled in) maps to one of its templates, so no request is
    counted as `other` and no id becomes a label."""
    source = (ROOT / "server" / "smsrent" / "providers" / f"{provider.name}.py").read_text()
    paths = set(re.findall(r'f?"(/[a-z0-9_/{}\-]+)"', source))
    assert len(paths) >= 10
    filled = {path: re.sub(r"\{[^}]+\}", "9d3f8f6a-1b2c-4d5e-8f90-1a2b3c4d5e6f", path) for path in paths}
    assert {path: provider.routes.template(concrete) for path, concrete in filled.items()} == {
        path: re.sub(r"\{[^}]+\}", "{id}", path) for path in paths
    }
    assert provider.routes.template("/rents/123/unknown") == OTHER


@pytest.mark.parametrize(
    ("step", "status"),
    [
        (lambda _: json_response(200, {"success": True, "data": {"balance": 1}}), "2xx"),
        (lambda _: json_response(404, {"message": "No query results"}), "4xx"),
        (lambda _: json_response(503, {"message": "down"}), "5xx"),  # retried: three requests, three reports
        (httpx.ConnectError, "error"),
        (httpx.ReadTimeout, "timeout"),
    ],
)
async def test_each_request_is_reported_once_with_its_status_class(step: object, status: str) -> None:
    router = Router().add("GET", "/proxy/api/numbers/abc-123/status", step)  # type: ignore[arg-type]
    seen: list[ProviderRequest] = []
    adapter = GotSmsProvider(
        SecretStr("t0ken"), base_url="http://127.0.0.1:9/proxy/api/", transport=router.transport, retry=FAST_RETRY
    )
    adapter.request_observers.append(seen.append)
    try:
        await adapter.number_status("abc-123")
    except ProviderError:
        pass
    finally:
        await adapter.aclose()
    attempts = len(router.requests)
    assert [(s.provider, s.endpoint, s.status) for s in seen] == [
        ("gotsms", "GET /numbers/{id}/status", status)
    ] * attempts
    assert all(s.seconds >= 0 for s in seen)


async def test_a_cancelled_request_is_reported_cancelled() -> None:
    started = anyio.Event()

    async def hang(_request: httpx.Request) -> httpx.Response:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError

    seen: list[ProviderRequest] = []
    adapter = GotSmsProvider(SecretStr("t0ken"), transport=httpx.MockTransport(hang), retry=FAST_RETRY)
    adapter.request_observers.append(seen.append)
    async with anyio.create_task_group() as tg:
        tg.start_soon(adapter.account)
        await started.wait()
        tg.cancel_scope.cancel()
    await adapter.aclose()
    assert [(s.endpoint, s.status) for s in seen] == [("GET /account", "cancelled")]
