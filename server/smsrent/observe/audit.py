"""`smsrent-mcp audit`: the audit trail (purchases, refunds, extensions, renewal changes, refusals, failed
authentications) from the ledger of the configured data dir or database, as a table, CSV or JSON lines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

from smsrent.config import Settings
from smsrent.domain.models import format_money
from smsrent.observe.report import aligned, csv_text, iso, nothing, reading
from smsrent.service.ledger import AuditEntry, Ledger

Format = Literal["table", "csv", "jsonl"]
COLUMNS = ("at", "agent", "action", "rental_id", "amount", "outcome", "detail")


async def run_audit(settings: Settings, seconds: float, agent: str | None, fmt: Format) -> str:
    """The audit trail of the last `seconds` (on the ledger's clock), for one agent or all."""

    async def read(ledger: Ledger) -> str:
        since = await ledger.now() - seconds
        entries = await ledger.audit_entries(since, agent)
        if not entries and fmt == "table":
            who = f" for agent {agent}" if agent else ""
            return nothing(
                f"the ledger at {settings.ledger_name} has no audit entry{who} since {iso(since)}.", settings
            )
        return render(entries, fmt)

    return await reading(settings, read)


def render(entries: Sequence[AuditEntry], fmt: Format) -> str:
    rows = [row(entry) for entry in entries]
    if fmt == "jsonl":
        return "".join(json.dumps(dict(zip(COLUMNS, r, strict=True))) + "\n" for r in rows)
    if fmt == "csv":
        return csv_text([COLUMNS, *rows])
    return "\n".join(aligned([COLUMNS, *rows], left=len(COLUMNS))) + "\n"


def row(entry: AuditEntry) -> tuple[str, ...]:
    """An entry's cells; a failed authentication names the credential's fingerprint where others name the agent."""
    who = entry.agent if entry.agent is not None else f"sha256:{entry.credential}..." if entry.credential else "-"
    amount = "-" if entry.amount is None else format_money(entry.amount)
    return (iso(entry.at), who, entry.action, entry.rental_id or "-", amount, entry.outcome, entry.detail or "")
