"""The PostgreSQL ledger's figures (metrics, report, dashboard) and the audit trail."""

from __future__ import annotations

from decimal import Decimal

from smsrent.domain.models import Message, Rental
from smsrent.service.ledger import DEFAULT_AGENT, AuditEntry, Charge, Handover, Refusal, RentalRecord
from smsrent.service.ledger.postgres.base import PostgresBase
from smsrent.service.ledger.rules import AUDIT_COLUMNS, audit_entry, charge


class PostgresFigures(PostgresBase):
    """Figures (metrics, report, dashboard) and the audit trail."""

    async def note_refusal(
        self, *, provider: str | None, amount: Decimal, note: str, agent: str = DEFAULT_AGENT
    ) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO refusals (provider, amount, note, created_at, agent)"
                " VALUES (%s, %s, %s, clock_timestamp(), %s)",
                (provider, amount, note, agent),
            )
        )

    async def charges(self, since: float = 0.0) -> list[Charge]:
        rows = await self._rows(
            "SELECT provider, kind, state, max_price, price, refunded, extract(epoch FROM created_at)::float8, agent"
            " FROM purchases WHERE created_at >= to_timestamp(%s) ORDER BY purchase_id",
            (since,),
        )
        return [charge(*row) for row in rows]

    async def refusals(self, since: float = 0.0) -> list[Refusal]:
        rows = await self._rows(
            "SELECT provider, amount, note, extract(epoch FROM created_at)::float8, agent FROM refusals"
            " WHERE created_at >= to_timestamp(%s) ORDER BY refusal_id",
            (since,),
        )
        return [Refusal(provider, amount, note, at, agent) for provider, amount, note, at, agent in rows]

    async def rental_records(self, since: float = 0.0) -> list[RentalRecord]:
        rows = await self._rows(
            "SELECT r.data, extract(epoch FROM r.recorded_at)::float8,"
            " (SELECT count(*) FROM messages m WHERE m.rental_id = r.rental_id), r.agent"
            " FROM rentals r WHERE r.recorded_at >= to_timestamp(%s) ORDER BY r.recorded_at",
            (since,),
        )
        return [RentalRecord(Rental.model_validate_json(d), at, n, agent) for d, at, n, agent in rows]

    async def handovers(self, since: float = 0.0) -> list[Handover]:
        rows = await self._rows(
            "SELECT m.data, extract(epoch FROM m.returned_at)::float8, COALESCE(r.agent, %s) FROM messages m"
            " LEFT JOIN rentals r ON r.rental_id = m.rental_id"
            " WHERE m.returned_at >= to_timestamp(%s) ORDER BY m.returned_at, m.seq",
            (DEFAULT_AGENT, since),
        )
        handed = [(Message.model_validate_json(data), at, agent) for data, at, agent in rows]
        return [Handover(m.rental_id, m.received_at, at, agent) for m, at, agent in handed]

    async def audit(self, entry: AuditEntry) -> None:
        await self._write(
            lambda conn: conn.execute(
                f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (clock_timestamp(), %s, %s, %s, %s, %s, %s, %s)",
                (
                    entry.agent,
                    entry.action,
                    entry.outcome,
                    entry.rental_id,
                    entry.amount,
                    entry.detail,
                    entry.credential,
                ),
            )
        )

    async def audit_entries(self, since: float = 0.0, agent: str | None = None) -> list[AuditEntry]:
        rows = await self._rows(
            f"SELECT extract(epoch FROM at)::float8, {AUDIT_COLUMNS.partition(', ')[2]} FROM audit"
            " WHERE at >= to_timestamp(%s) AND (%s::text IS NULL OR agent = %s) ORDER BY audit_id",
            (since, agent, agent),
        )
        return [audit_entry(row) for row in rows]
