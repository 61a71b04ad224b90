"""`smsrent-mcp report`: spend against the budget, purchase and rental outcomes, code delivery times, from
the ledger of the configured data dir.

Windows: purchases and refusals count by when they were made, rentals by when the ledger first recorded
them, deliveries by when `wait_for_code` handed the code over. The budget line is the rolling 24 h the
money guard enforces, as of now, whatever the window.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from smsrent.config import Settings
from smsrent.domain.models import format_money
from smsrent.observe.figures import (
    RENTAL_OUTCOMES,
    SETTLED_OUTCOMES,
    UNSETTLED_STATES,
    Spend,
    outcomes,
    percentile,
    rental_outcome,
    spend_by,
)
from smsrent.service.ledger import Ledger, open_ledger

Format = Literal["table", "csv", "json"]
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


SANDBOX_NOTE = (
    "Without provider credentials the server runs on the sandbox, whose ledger lives in memory and is gone when it"
    " stops, so its rentals are never in a report."
)


async def run_report(settings: Settings, seconds: float, agent: str | None, fmt: Format) -> str:
    """The report over the last `seconds` (on the ledger's clock) from the configured ledger, or a sentence saying
    why there is nothing to report."""
    path = settings.ledger_name

    async def read(ledger: Ledger) -> str:
        report = await build(
            ledger, since=await ledger.now() - seconds, agent=agent, daily_budget=settings.daily_budget
        )
        if report.empty and fmt == "table":
            who = f" for agent {agent}" if agent else ""
            return nothing(
                f"the ledger at {path} has no purchase, rental or code{who} since {iso(report.since)}.", settings
            )
        return render(report, fmt, path)

    return await reading(settings, read)


async def reading(settings: Settings, read: Callable[[Ledger], Awaitable[str]]) -> str:
    """`read` on the configured ledger (opened for it, then closed), or a sentence saying there is none yet."""
    if settings.database_url is None and not settings.ledger_path.exists():
        return nothing(f"there is no ledger at {settings.ledger_name} yet.", settings)
    ledger = await open_ledger(settings.ledger_path, settings.database_url)
    try:
        return await read(ledger)
    finally:
        await ledger.close()


def nothing(why: str, settings: Settings) -> str:
    return f"Nothing to report: {why}" + (f" {SANDBOX_NOTE}" if settings.use_sandbox else "") + "\n"


def parse_duration(text: str) -> float:
    """`90m`, `24h`, `7d`, `2w`, `3600s` as seconds; ValueError for anything else."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None or float(found.group(1)) <= 0:
        raise ValueError(f"expected a duration like 90m, 24h or 7d, got {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


@dataclass(frozen=True)
class SpendLine:
    provider: str
    agent: str
    bought: int
    money: Spend


@dataclass(frozen=True)
class Budget:
    daily: Decimal
    committed: Decimal

    @property
    def remaining(self) -> Decimal:
        return self.daily - self.committed

    def formatted(self) -> dict[str, str]:
        amounts = {"daily": self.daily, "committed": self.committed, "remaining": self.remaining}
        return {name: format_money(amount) for name, amount in amounts.items()}


@dataclass(frozen=True)
class Report:
    since: float
    until: float
    agent: str | None
    spend: list[SpendLine]
    budget: Budget | None
    purchases: dict[str, int]
    rentals: dict[str, int]
    delays: list[float]

    @property
    def total(self) -> Spend:
        return sum((line.money for line in self.spend), Spend())

    @property
    def refund_rate(self) -> float | None:
        """Rentals given back, of the rentals recorded in the window."""
        count = sum(self.rentals.values())
        return self.rentals["refunded"] / count if count else None

    @property
    def empty(self) -> bool:
        return not (self.spend or any(self.purchases.values()) or any(self.rentals.values()) or self.delays)


async def build(
    ledger: Ledger, *, since: float, agent: str | None = None, daily_budget: Decimal | None = None
) -> Report:
    """The report over what the ledger recorded since `since` (on its clock), for one agent or all."""
    until = await ledger.now()
    charges = [c for c in await ledger.charges(since) if agent in (None, c.agent)]
    refusals = [r for r in await ledger.refusals(since) if agent in (None, r.agent)]
    records = [r for r in await ledger.rental_records(since) if agent in (None, r.agent)]
    handovers = [h for h in await ledger.handovers(since) if agent in (None, h.agent)]
    bought = Counter((c.provider, c.agent) for c in charges if c.state == "bought")
    spend = [SpendLine(p, a, bought[p, a], money) for (p, a), money in sorted(spend_by(charges).items())]
    counted = Counter[str]()
    for (_, _, outcome), n in outcomes(charges, refusals).items():
        counted[outcome] += n
    rentals = Counter(rental_outcome(r) for r in records)
    budget = None if daily_budget is None else Budget(daily_budget, await ledger.committed())
    return Report(
        since=since,
        until=until,
        agent=agent,
        spend=spend,
        budget=budget,
        purchases={name: counted[name] for name in (*SETTLED_OUTCOMES, *UNSETTLED_STATES)},
        rentals={name: rentals[name] for name in RENTAL_OUTCOMES},
        delays=[h.delay for h in handovers],
    )


def render(report: Report, fmt: Format, ledger_path: Path | str) -> str:
    if fmt == "json":
        return json.dumps(_as_json(report, ledger_path), indent=2) + "\n"
    if fmt == "csv":
        return _as_csv(report)
    return _as_table(report, ledger_path)


def _as_json(report: Report, ledger_path: Path | str) -> dict[str, Any]:
    total = report.total
    return {
        "since": iso(report.since),
        "until": iso(report.until),
        "agent": report.agent,
        "ledger": str(ledger_path),
        "currency": "USD",
        "spend": [
            {"provider": s.provider, "agent": s.agent, "bought": s.bought, **s.money.formatted()} for s in report.spend
        ],
        "total": {"bought": sum(s.bought for s in report.spend), **total.formatted()},
        "budget": None if report.budget is None else report.budget.formatted(),
        "purchases": report.purchases,
        "rentals": report.rentals,
        "refund_rate": _rounded(report.refund_rate, 4),
        "delivery": {
            "codes": len(report.delays),
            "p50_seconds": _rounded(percentile(report.delays, 0.5), 3),
            "p95_seconds": _rounded(percentile(report.delays, 0.95), 3),
        },
    }


def _as_csv(report: Report) -> str:
    rows: list[list[object]] = [["section", "provider", "agent", "figure", "value"]]
    for line in report.spend:
        rows.append(["spend", line.provider, line.agent, "bought", line.bought])
        for name, amount in line.money.formatted().items():
            rows.append(["spend", line.provider, line.agent, name, amount])
    for name, amount in report.total.formatted().items():
        rows.append(["spend", "", "", name, amount])
    if report.budget is not None:
        for name, amount in report.budget.formatted().items():
            rows.append(["budget", "", "", name, amount])
    for section, counts in (("purchases", report.purchases), ("rentals", report.rentals)):
        for name, count in counts.items():
            rows.append([section, "", "", name, count])
    rows.append(["rentals", "", "", "refund_rate", _rounded(report.refund_rate, 4) or ""])
    rows.append(["delivery", "", "", "codes", len(report.delays)])
    for name, share in (("p50_seconds", 0.5), ("p95_seconds", 0.95)):
        rows.append(["delivery", "", "", name, _rounded(percentile(report.delays, share), 3) or ""])
    return csv_text(rows)


def _as_table(report: Report, ledger_path: Path | str) -> str:
    who = f"agent {report.agent}" if report.agent else "every agent"
    lines = [
        f"smsrent report: {iso(report.since)} to {iso(report.until)}, {who}",
        f"ledger: {ledger_path}",
        "",
    ]
    rows = [["spend (USD)", "", "bought", "spent", "refunded", "net"]]
    rows += [[s.provider, s.agent, str(s.bought), *s.money.formatted().values()] for s in report.spend]
    rows.append(["total", "", str(sum(s.bought for s in report.spend)), *report.total.formatted().values()])
    lines += aligned(rows, left=2)
    if report.budget is None:
        lines.append("daily budget: none set (SMSRENT_DAILY_BUDGET)")
    else:
        figures = report.budget.formatted()
        lines.append(
            f"daily budget (rolling 24 h, as of now): {figures['daily']}, committed {figures['committed']},"
            f" remaining {figures['remaining']}"
        )
    rate = report.refund_rate
    p50, p95 = percentile(report.delays, 0.5), percentile(report.delays, 0.95)
    lines += [
        "",
        "purchases: " + ", ".join(f"{name} {n}" for name, n in report.purchases.items()),
        f"rentals: {sum(report.rentals.values())} ("
        + ", ".join(f"{name} {n}" for name, n in report.rentals.items())
        + f"); refund rate {'-' if rate is None else f'{rate:.0%}'}",
        f"code delivery: {len(report.delays)} codes, p50 {_seconds(p50)}, p95 {_seconds(p95)}",
    ]
    return "\n".join(lines) + "\n"


def aligned(rows: Sequence[Sequence[str]], left: int) -> list[str]:
    """Rows as table lines: the first `left` columns aligned left, the others (figures) right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def csv_text(rows: Iterable[Sequence[object]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
