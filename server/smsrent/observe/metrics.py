"""The Prometheus series at `/metrics`.

Cluster-wide series are computed from the ledger at each scrape (a custom collector), so they are right
after a restart and, with a shared ledger, identical on every replica: aggregate them with `max`. Per-replica
series count what this process did (provider requests, waiters, the delivery latency histogram): aggregate
them with `sum`. Label values are bounded: provider names, route templates, status classes, outcome words,
and agent names from the configuration (the agents file's, and `owner`; any other agent, an OAuth subject the
file does not name, counts as `_other`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

import anyio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from smsrent.domain.models import Message
from smsrent.observe.figures import ANY_PROVIDER, SETTLED_OUTCOMES, UNSETTLED_STATES, Spend, outcomes, spend_by
from smsrent.providers.base import HttpProvider, Provider
from smsrent.providers.observed import ProviderRequest
from smsrent.service.delivery import Delivery
from smsrent.service.ledger import DEFAULT_AGENT, Charge, Handover, Ledger, Refusal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# No `_created` series beside each counter and histogram: nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
OTHER_AGENT = "_other"  # the label of agents the configuration does not name
DELIVERY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class LedgerFigures:
    """What the cluster-wide series are computed from, read at one scrape."""

    providers: Sequence[str]
    charges: Sequence[Charge]
    refusals: Sequence[Refusal]
    committed: Decimal
    daily_budget: Decimal | None
    agents: Mapping[str, Decimal | None]  # each configured agent's daily budget (None: none), the owner's included
    committed_by: Mapping[str, Decimal]  # what each configured agent with a budget committed in 24 h

    def label(self, agent: str) -> str:
        return agent if agent in self.agents else OTHER_AGENT


class _LedgerCollector(Collector):
    def __init__(self) -> None:
        self.figures: LedgerFigures | None = None

    def collect(self) -> Iterable[Metric]:
        return [] if self.figures is None else _ledger_series(self.figures)


def _ledger_series(figures: LedgerFigures) -> Iterator[Metric]:
    agents = [DEFAULT_AGENT]  # every configured agent's series appear once it has bought or been refused
    spend = CounterMetricFamily(
        "smsrent_spend_usd", "Settled charges of bought purchases, USD (cluster-wide).", labels=["provider", "agent"]
    )
    refunds = CounterMetricFamily(
        "smsrent_refunds_usd", "Refunds credited to bought purchases, USD (cluster-wide).", labels=["provider", "agent"]
    )
    totals = spend_by(replace(c, agent=figures.label(c.agent)) for c in figures.charges)
    for provider, agent in sorted({*totals, *((p, a) for p in figures.providers for a in agents)}):
        money = totals.get((provider, agent), Spend())
        spend.add_metric([provider, agent], float(money.spent))
        refunds.add_metric([provider, agent], float(money.refunded))
    yield spend
    yield refunds

    counted = outcomes(
        (replace(c, agent=figures.label(c.agent)) for c in figures.charges),
        (replace(r, agent=figures.label(r.agent)) for r in figures.refusals),
    )
    keys = {(p, a) for p, a, _ in counted} | {(p, a) for p in figures.providers for a in agents}
    purchases = CounterMetricFamily(
        "smsrent_purchases",
        "Purchases by settled outcome, and purchases the money guard refused (cluster-wide).",
        labels=["provider", "agent", "outcome"],
    )
    unsettled = GaugeMetricFamily(
        "smsrent_purchases_unsettled",
        "Purchases reserved or with an unknown outcome right now (cluster-wide).",
        labels=["provider", "agent", "state"],
    )
    for provider, agent in sorted(keys):
        if provider == ANY_PROVIDER:  # refusals before a provider was chosen
            purchases.add_metric([provider, agent, "refused"], counted[provider, agent, "refused"])
            continue
        for outcome in SETTLED_OUTCOMES:
            purchases.add_metric([provider, agent, outcome], counted[provider, agent, outcome])
        for state in UNSETTLED_STATES:
            unsettled.add_metric([provider, agent, state], counted[provider, agent, state])
    yield purchases
    yield unsettled

    remaining = GaugeMetricFamily(
        "smsrent_budget_remaining_usd",
        "Daily budget not yet spent or reserved (rolling 24 h), USD (cluster-wide): the server's"
        " (SMSRENT_DAILY_BUDGET) as agent owner, and each agent's own that has one.",
        labels=["agent"],
    )
    if figures.daily_budget is not None:
        remaining.add_metric([DEFAULT_AGENT], float(figures.daily_budget - figures.committed))
    for agent, budget in sorted(figures.agents.items()):
        if budget is not None and agent != DEFAULT_AGENT:
            remaining.add_metric([agent], float(budget - figures.committed_by.get(agent, Decimal(0))))
    if remaining.samples:
        yield remaining


class Metrics:
    """One server process's metrics registry: the per-replica instruments and the ledger-derived series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "smsrent_provider_requests",
            "HTTP requests sent to providers (per replica).",
            ["provider", "endpoint", "status_class"],
            registry=self.registry,
        )
        self._delivery = Histogram(
            "smsrent_code_delivery_seconds",
            "From an SMS's received_at at the provider to wait_for_code handing it over, clamped at 0 (per replica).",
            buckets=DELIVERY_BUCKETS,
            registry=self.registry,
        )
        self._waiters = Gauge(
            "smsrent_waiters", "wait_for_code calls waiting now (per replica).", registry=self.registry
        )
        self._ledger = _LedgerCollector()
        self.registry.register(self._ledger)
        self._scrape = anyio.Lock()

    def watch(self, providers: Iterable[Provider], delivery: Delivery) -> None:
        """Observe the adapters' requests, the waiters and every code handed over."""
        for provider in providers:
            if isinstance(provider, HttpProvider):
                provider.request_observers.append(self.provider_request)
        delivery.handover_observers.append(self.code_handed_over)
        self._waiters.set_function(lambda: delivery.waiting)

    def provider_request(self, done: ProviderRequest) -> None:
        self._requests.labels(done.provider, done.endpoint, done.status).inc()

    def code_handed_over(self, message: Message, at: float) -> None:
        self._delivery.observe(Handover(message.rental_id, message.received_at, at).delay)

    async def exposition(
        self,
        ledger: Ledger,
        providers: Sequence[str],
        daily_budget: Decimal | None,
        agents: Mapping[str, Decimal | None] | None = None,
    ) -> bytes:
        """The text exposition, with the ledger-derived series read now; `agents`: the configured agents' daily
        budgets (by name; the owner is always one)."""
        known = {DEFAULT_AGENT: None, **(agents or {})}
        async with self._scrape:  # the collector holds one scrape's figures at a time
            self._ledger.figures = LedgerFigures(
                providers,
                await ledger.charges(),
                await ledger.refusals(),
                await ledger.committed(),
                daily_budget,
                known,
                {name: await ledger.committed(name) for name, budget in known.items() if budget is not None},
            )
            try:
                return generate_latest(self.registry)
            finally:
                self._ledger.figures = None
