"""The figures split by agent: metrics and the report agree with the ledger after a flow of several agents, and
agent label values come from the configuration only."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from smsrent.observe.metrics import Metrics
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.ledger import open_ledger
from tests.auth import ALICE_KEY, BOB_KEY, BOSS_KEY, agents_app, bearer
from tests.e2e.process import command, server_env
from tests.mcp import fails, ok
from tests.mcp.served import authorized, served
from tests.observe import ledger_rows
from tests.observe.test_metrics import labels, parse

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

D = Decimal
AGENTS = ("alice", "bob", "boss", "looker", "owner")


async def test_metrics_and_report_split_by_agent_agree_with_the_ledger(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    app = agents_app(tmp_path, gotsms_sandbox, getatext_sandbox, daily_budget=D("5.00"))
    async with served(app) as base:
        async with authorized(base, "legacy", ALICE_KEY) as alice:
            await ok(alice, "rent_number", plan_id="getatext:telegram", max_price="0.5")
            await fails(alice, "rent_number", plan_id="getatext:whatsapp", max_price="0.7")  # her budget
        async with authorized(base, "legacy", BOB_KEY) as bob:
            await ok(bob, "rent_number", service="Telegram", provider="gotsms", country="USA", max_price="1")
            given_back = (await ok(bob, "rent_number", plan_id="getatext:whatsapp", max_price="0.6"))["rental"]
        async with authorized(base, "legacy", BOSS_KEY) as boss:
            await ok(boss, "refund", rental_id=given_back["rental_id"])
        async with httpx.AsyncClient() as http:  # an admin agent may read the metrics
            answer = await http.get(f"{base}/metrics", headers=bearer(BOSS_KEY))
        assert answer.status_code == 200, answer.text
        series = parse(answer.text)

    # From the ledger with plain SQL: money by (provider, agent), refusals by agent.
    spent: Counter[tuple[str, str]] = Counter()
    refunded: Counter[tuple[str, str]] = Counter()
    for provider, agent, price, back in ledger_rows(
        tmp_path, "SELECT provider, agent, price, refunded FROM purchases WHERE state = 'bought'"
    ):
        spent[provider, agent] += D(price)
        refunded[provider, agent] += D(back or 0)
    assert spent == {("getatext", "alice"): D("0.40"), ("gotsms", "bob"): D("1.00"), ("getatext", "bob"): D("0.55")}
    assert refunded[("getatext", "bob")] == D("0.55")
    for (provider, agent), money in spent.items():
        key = labels(provider=provider, agent=agent)
        assert series["smsrent_spend_usd"][("smsrent_spend_usd_total", key)] == float(money)
        assert series["smsrent_refunds_usd"][("smsrent_refunds_usd_total", key)] == float(refunded[provider, agent])
    assert {dict(key)["agent"] for (_, key) in series["smsrent_spend_usd"]} <= set(AGENTS)
    refused = {
        dict(key)["agent"]: v
        for (_, key), v in series["smsrent_purchases"].items()
        if dict(key)["outcome"] == "refused" and v
    }
    assert refused == {"alice": 1}
    assert ledger_rows(tmp_path, "SELECT agent FROM refusals") == [("alice",)]
    remaining = {dict(key)["agent"]: v for (_, key), v in series["smsrent_budget_remaining_usd"].items()}
    assert remaining == {"owner": 3.60, "alice": 0.60}  # 5.00 less 0.40 and 1.00; 1.00 less 0.40; none for the rest

    def report(*args: str) -> dict[str, object]:
        done = subprocess.run(
            [command(), "report", "--format", "json", *args],
            env=server_env(tmp_path, SMSRENT_DAILY_BUDGET="5"),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        figures: dict[str, object] = json.loads(done.stdout)
        return figures

    every = report()
    assert [(s["provider"], s["agent"], s["spent"], s["refunded"]) for s in every["spend"]] == [  # type: ignore[attr-defined, index]
        ("getatext", "alice", "0.40", "0.00"),
        ("getatext", "bob", "0.55", "0.55"),
        ("gotsms", "bob", "1.00", "0.00"),
    ]
    hers = report("--agent", "alice")
    assert [(s["provider"], s["agent"]) for s in hers["spend"]] == [("getatext", "alice")]  # type: ignore[attr-defined, index]
    assert hers["total"] == {"bought": 1, "spent": "0.40", "refunded": "0.00", "net": "0.40"}
    assert hers["purchases"]["refused"] == 1  # type: ignore[index]
    assert report("--agent", "bob")["purchases"]["refused"] == 0  # type: ignore[index]


async def test_an_agent_the_configuration_does_not_name_is_labelled_other(tmp_path: Path) -> None:
    """An agent since removed from the file (or an OAuth subject it never named) is `_other`, never free text."""
    ledger = await open_ledger(tmp_path / "ledger.sqlite3")
    try:
        for agent, price in (("alice", "0.40"), ("gone-agent", "1.00"), ("oauth:user-9", "0.30")):
            pid = await ledger.reserve(provider="gotsms", kind="rent", amount=D(price), agent=agent)
            await ledger.settle(pid, "bought", price=D(price), rental_id=f"gotsms:{agent}")
        exposition = await Metrics().exposition(ledger, ["gotsms"], None, {"alice": D("2")})
    finally:
        await ledger.close()
    spend = parse(exposition.decode())["smsrent_spend_usd"]
    by_agent = {dict(key)["agent"]: value for (_, key), value in spend.items()}
    assert by_agent == {"alice": 0.40, "_other": 1.30, "owner": 0.0}
    remaining = parse(exposition.decode())["smsrent_budget_remaining_usd"]
    assert remaining == {("smsrent_budget_remaining_usd", labels(agent="alice")): 1.60}
