"""`/metrics` after a scripted flow agrees with the ledger (cluster-wide series) and with what the providers
served (per-replica series)."""

from __future__ import annotations

import functools
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.providers.observed import Routes
from smsrent.sandbox.base import SandboxServer
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.mcp import ok, rent_getatext
from tests.observe import AUTH, CAPS, http_client, ledger_rows, scripted_flow, served

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
LEDGER_FAMILIES = (
    "smsrent_spend_usd",
    "smsrent_refunds_usd",
    "smsrent_purchases",
    "smsrent_purchases_unsettled",
    "smsrent_budget_remaining_usd",
)


def parse(exposition: str) -> dict[str, Series]:
    """Samples by family: {family: {(sample name, labels): value}}."""
    return {
        family.name: {(s.name, frozenset(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(exposition)
    }


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


async def scrape(base: str) -> dict[str, Series]:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{base}/metrics", headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(answer.text)


def expected_from_ledger(data_dir: Path, budget: Decimal) -> dict[str, Series]:
    """The cluster-wide series, computed here with plain SQL over the ledger file."""
    spend: Counter[str] = Counter()
    refunds: Counter[str] = Counter()
    states: Counter[tuple[str, str]] = Counter()
    committed = Decimal(0)
    for provider, state, max_price, price, refunded in ledger_rows(
        data_dir, "SELECT provider, state, max_price, price, refunded FROM purchases"
    ):
        states[provider, state] += 1
        if state == "bought":
            spend[provider] += Decimal(price or max_price)
            refunds[provider] += Decimal(refunded or 0)
            committed += Decimal(price or max_price) - Decimal(refunded or 0)
        elif state in ("reserved", "uncertain"):
            committed += Decimal(max_price)
    for (provider,) in ledger_rows(data_dir, "SELECT COALESCE(provider, 'any') FROM refusals"):
        states[provider, "refused"] += 1
    owner = {"agent": "owner"}
    providers = ("gotsms", "getatext")
    return {
        "smsrent_spend_usd": {
            ("smsrent_spend_usd_total", labels(provider=p, **owner)): float(spend[p]) for p in providers
        },
        "smsrent_refunds_usd": {
            ("smsrent_refunds_usd_total", labels(provider=p, **owner)): float(refunds[p]) for p in providers
        },
        "smsrent_purchases": {
            ("smsrent_purchases_total", labels(provider=p, outcome=o, **owner)): states[p, o]
            for p in providers
            for o in ("bought", "failed", "not_bought", "refused")
        }
        | {("smsrent_purchases_total", labels(provider="any", outcome="refused", **owner)): states["any", "refused"]},
        "smsrent_purchases_unsettled": {
            ("smsrent_purchases_unsettled", labels(provider=p, state=s, **owner)): states[p, s]
            for p in providers
            for s in ("reserved", "uncertain")
        },
        "smsrent_budget_remaining_usd": {
            ("smsrent_budget_remaining_usd", labels(**owner)): float(budget - committed),
        },
    }


def served_requests(sandbox: SandboxServer, routes: Routes, base: str) -> Counter[str]:
    """Requests the sandbox served, by endpoint template."""
    return Counter(f"{method} {routes.template(path.removeprefix(base))}" for _, method, path in sandbox.requests)


async def test_metrics_agree_with_the_ledger_and_the_providers_after_a_scripted_flow(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    async with served(tmp_path, gotsms_sandbox, getatext_sandbox, **CAPS) as (app, base):
        async with http_client(base) as client:
            await scripted_flow(client, gotsms_sandbox, getatext_sandbox)
        assert app.runtime.require().delivery.waiting == 0
        series = await scrape(base)

    # Cluster-wide: every series equals the ledger's figure, and the flow made the figures it should.
    expected = expected_from_ledger(tmp_path, CAPS["daily_budget"])
    for family in LEDGER_FAMILIES:
        assert series[family] == expected[family], family
    owner = {"agent": "owner"}
    assert series["smsrent_spend_usd"][("smsrent_spend_usd_total", labels(provider="gotsms", **owner))] == 1.00
    assert series["smsrent_spend_usd"][("smsrent_spend_usd_total", labels(provider="getatext", **owner))] == 0.55
    assert series["smsrent_refunds_usd"][("smsrent_refunds_usd_total", labels(provider="getatext", **owner))] == 0.55
    purchases = {
        dict(key)["provider"] + " " + dict(key)["outcome"]: v
        for (_, key), v in series["smsrent_purchases"].items()
        if v
    }
    assert purchases == {
        "gotsms bought": 1,
        "getatext bought": 1,
        "gotsms failed": 1,
        "gotsms refused": 1,
        "any refused": 1,
    }
    assert series["smsrent_budget_remaining_usd"][("smsrent_budget_remaining_usd", labels(**owner))] == 9.00

    # Per replica: provider requests match what each sandbox served, endpoint by endpoint, as route templates.
    requests = series["smsrent_provider_requests"]
    counted: Counter[str] = Counter()
    statuses: Counter[tuple[str, str]] = Counter()
    for (_, key), value in requests.items():
        sample = dict(key)
        counted[f"{sample['provider']} {sample['endpoint']}"] += int(value)
        statuses[sample["endpoint"], sample["status_class"]] += int(value)
    by_sandbox = Counter(
        {f"gotsms {e}": n for e, n in served_requests(gotsms_sandbox, GotSmsProvider.routes, "/api").items()}
        | {f"getatext {e}": n for e, n in served_requests(getatext_sandbox, GetatextProvider.routes, "").items()}
    )
    assert counted == by_sandbox
    assert not any(endpoint.endswith(" other") for endpoint in counted)
    assert statuses["GET /account", "5xx"] == 1  # the injected 500 ...
    assert statuses["GET /account", "2xx"] >= 1  # ... and the retry that rode over it
    assert statuses["POST /rents", "4xx"] == 1  # the purchase GotSMS refused
    assert statuses["POST /rents/{id}/refund", "2xx"] + statuses["POST /api/v1/cancel-rental", "2xx"] == 1

    # Per replica: the one code handed over, its latency as the ledger recorded it (received_at to returned_at).
    handed = ledger_rows(tmp_path, "SELECT json_extract(data, '$.received_at'), returned_at FROM messages")
    delays = [max(0.0, at - datetime.fromisoformat(received).timestamp()) for received, at in handed if at is not None]
    histogram = series["smsrent_code_delivery_seconds"]
    assert len(delays) == 1
    assert histogram[("smsrent_code_delivery_seconds_count", frozenset())] == 1
    assert histogram[("smsrent_code_delivery_seconds_sum", frozenset())] == pytest.approx(delays[0], abs=1e-6)
    assert series["smsrent_waiters"] == {("smsrent_waiters", frozenset()): 0}


async def test_waiters_gauge_counts_the_waits_in_progress(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    async with (
        served(tmp_path, gotsms_sandbox, getatext_sandbox) as (app, base),
        http_client(base) as client,
    ):
        rental = await rent_getatext(client)
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                functools.partial(ok, client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=2)
            )
            with anyio.fail_after(5):
                while app.runtime.require().delivery.waiting == 0:
                    await anyio.sleep(0.01)
            during = await scrape(base)
        after = await scrape(base)
    assert during["smsrent_waiters"] == {("smsrent_waiters", frozenset()): 1}
    assert after["smsrent_waiters"] == {("smsrent_waiters", frozenset()): 0}
