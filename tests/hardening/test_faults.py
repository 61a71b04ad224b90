"""The sandboxes' fault injection, met by the real adapters over loopback HTTP: every fault maps to the error
the service layer expects, safe calls ride over one by retrying, purchases are never retried, and the seeded
chaos is reproducible."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from smsrent.domain.errors import (
    ProviderError,
    ProviderTimeout,
    ProviderTransportError,
    ProviderUnavailable,
    RateLimited,
)
from smsrent.domain.ids import parse_plan_id
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.base import FAULTS, Fault
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import gotsms_adapter

pytestmark = pytest.mark.anyio

ACCOUNT = "/api/account"
RENTS = "/api/rents"
EXPECTED: dict[Fault, type[ProviderError]] = {
    "500": ProviderUnavailable,
    "html": ProviderUnavailable,
    "not_json": ProviderUnavailable,
    "truncated": ProviderUnavailable,
    "429": RateLimited,
    "slow": ProviderTimeout,
    "cut": ProviderTransportError,
    "commit_then_500": ProviderUnavailable,
    "commit_then_hang": ProviderTimeout,
    "commit_then_cut": ProviderTransportError,
}


@pytest.fixture
async def adapter(gotsms_sandbox: GotSmsSandbox) -> AsyncIterator[GotSmsProvider]:
    """The GotSMS adapter over loopback, giving up after 0.3 s; the sandbox's slow answers take 1 s."""
    gotsms_sandbox.slow_seconds = 1.0
    async with serve_loopback(gotsms_sandbox.app) as base:
        provider = gotsms_adapter(gotsms_sandbox, base_url=f"{base}/api", timeout=0.3)
        yield provider
        await provider.aclose()


def served(sandbox: GotSmsSandbox, method: str, path: str) -> int:
    return sum(1 for _, m, p in sandbox.requests if (m, p) == (method, path))


def test_every_fault_has_an_expected_error() -> None:
    assert set(EXPECTED) == set(FAULTS)


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_safe_call_rides_over_one_fault(
    adapter: GotSmsProvider, gotsms_sandbox: GotSmsSandbox, fault: Fault
) -> None:
    gotsms_sandbox.inject("GET", ACCOUNT, fault)
    balance = await adapter.get_balance()
    assert balance.amount == gotsms_sandbox.balance
    assert gotsms_sandbox.injected == {fault: 1}
    assert served(gotsms_sandbox, "GET", ACCOUNT) == 2  # the fault, then the retry


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_lasting_fault_maps_to_its_error(
    adapter: GotSmsProvider, gotsms_sandbox: GotSmsSandbox, fault: Fault
) -> None:
    gotsms_sandbox.inject("GET", ACCOUNT, fault, times=10)
    with pytest.raises(ProviderError) as failed:
        await adapter.get_balance()
    assert type(failed.value) is EXPECTED[fault]
    assert served(gotsms_sandbox, "GET", ACCOUNT) == adapter.retry.attempts
    assert len(failed.value.message) < 400


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_purchase_meeting_a_fault_is_sent_once(
    adapter: GotSmsProvider, gotsms_sandbox: GotSmsSandbox, fault: Fault
) -> None:
    """Never retried: uncertain when the request may have reached GotSMS, and committed only by `commit_then_*`
    (or by `slow`, which acts after the client gave up)."""
    plan = next(p for p in (await adapter.list_plans()) if p.price is not None and p.price < 1)
    gotsms_sandbox.inject("POST", RENTS, fault)
    with pytest.raises(ProviderError) as failed:
        await adapter.rent(parse_plan_id(plan.plan_id))
    assert served(gotsms_sandbox, "POST", RENTS) == 1
    assert failed.value.uncertain == (fault != "429")  # a 429 says the provider did not act
    acted = fault.startswith("commit_then") or fault == "slow"
    if fault == "slow":
        with anyio.fail_after(10):
            while not gotsms_sandbox.rents:  # it acts once its slow answer is due
                await anyio.sleep(0.05)
    assert len(gotsms_sandbox.rents) == int(acted)


async def chaos_run(seed: int, method: str, path: str = ACCOUNT) -> tuple[list[int], Counter[Fault]]:
    """Statuses of 100 requests to a sandbox in chaos (about half of them failing), and the faults it counted."""
    sandbox = GotSmsSandbox(seed=seed)
    sandbox.chaos(0.5, ("500", "html", "not_json", "commit_then_500"))
    headers = {"Authorization": f"Bearer {sandbox.token}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app), headers=headers) as client:
        statuses = [(await client.request(method, f"http://sandbox{path}")).status_code for _ in range(100)]
    return statuses, sandbox.injected


async def test_chaos_is_seeded_counted_and_keeps_commit_faults_for_posts() -> None:
    statuses, injected = await chaos_run(3, "GET")
    assert (statuses, injected) == await chaos_run(3, "GET")
    assert statuses != (await chaos_run(4, "GET"))[0]
    assert 30 < sum(injected.values()) == sum(s != 200 for s in statuses) + injected["not_json"] < 80
    assert "commit_then_500" not in injected
    _, posted = await chaos_run(3, "POST", RENTS)
    assert posted["commit_then_500"] > 0


async def test_a_chaos_429_opens_a_burst_with_retry_after() -> None:
    sandbox = GotSmsSandbox(seed=1)
    sandbox.chaos(1.0, ("429",))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app)) as client:
        first = await client.get("http://sandbox/api/account")
        sandbox.chaos(0)
        during = await client.get("http://sandbox/api/account")
    assert first.status_code == during.status_code == 429
    assert during.headers["Retry-After"] == "1"
    assert sandbox.injected == {"429": 2}
