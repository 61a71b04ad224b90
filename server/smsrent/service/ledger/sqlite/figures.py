"""The SQLite ledger's figures (metrics, report, dashboard) and the audit trail."""

from __future__ import annotations

import time
from decimal import Decimal

from smsrent.domain.models import Message, Rental
from smsrent.service.ledger import DEFAULT_AGENT, AuditEntry, Charge, Handover, Refusal, RentalRecord
from smsrent.service.ledger.rules import AUDIT_COLUMNS, audit_entry, charge
from smsrent.service.ledger.sqlite.base import SqliteBase


class SqliteFigures(SqliteBase):
    """Figures (metrics, report, dashboard) and the audit trail."""

    async def note_refusal(
        self, *, provider: str | None, amount: Decimal, note: str, agent: str = DEFAULT_AGENT
    ) -> None:
        """Record `agent`'s purchase of up to `amount` that the money guard refused (nothing was sent)."""
        await self._write(
            lambda db: db.execute(
                "INSERT INTO refusals (provider, amount, note, created_at, agent) VALUES (?, ?, ?, ?, ?)",
                (provider, str(amount), note, time.time(), agent),
            )
        )

    async def charges(self, since: float = 0.0) -> list[Charge]:
        """Every purchase made since `since` (a `time.time()`), oldest first; a bought one charged its price
        (its reserved cap when the provider gave none), any other nothing."""

        def read() -> list[Charge]:
            rows = self._db.execute(
                "SELECT provider, kind, state, max_price, price, refunded, created_at, agent FROM purchases"
                " WHERE created_at >= ? ORDER BY purchase_id",
                (since,),
            ).fetchall()
            return [charge(*row) for row in rows]

        return await self._run(read)

    async def refusals(self, since: float = 0.0) -> list[Refusal]:
        def read() -> list[Refusal]:
            rows = self._db.execute(
                "SELECT provider, amount, note, created_at, agent FROM refusals WHERE created_at >= ?"
                " ORDER BY refusal_id",
                (since,),
            ).fetchall()
            return [Refusal(provider, Decimal(amount), note, at, agent) for provider, amount, note, at, agent in rows]

        return await self._run(read)

    async def rental_records(self, since: float = 0.0) -> list[RentalRecord]:
        """Rentals first recorded since `since`, oldest first, with their message counts."""

        def read() -> list[RentalRecord]:
            rows = self._db.execute(
                "SELECT r.data, r.recorded_at, (SELECT COUNT(*) FROM messages m WHERE m.rental_id = r.rental_id),"
                " r.agent FROM rentals r WHERE r.recorded_at >= ? ORDER BY r.recorded_at",
                (since,),
            ).fetchall()
            return [RentalRecord(Rental.model_validate_json(d), at, n, agent) for d, at, n, agent in rows]

        return await self._run(read)

    async def handovers(self, since: float = 0.0) -> list[Handover]:
        """Messages `wait_for_code` returned since `since`, in the order it returned them."""

        def read() -> list[Handover]:
            rows = self._db.execute(
                "SELECT m.data, m.returned_at, COALESCE(r.agent, ?) FROM messages m LEFT JOIN rentals r"
                " ON r.rental_id = m.rental_id WHERE m.returned_at >= ? ORDER BY m.returned_at, m.seq",
                (DEFAULT_AGENT, since),
            ).fetchall()
            handed = [(Message.model_validate_json(data), at, agent) for data, at, agent in rows]
            return [Handover(m.rental_id, m.received_at, at, agent) for m, at, agent in handed]

        return await self._run(read)

    async def audit(self, entry: AuditEntry) -> None:
        amount = None if entry.amount is None else str(entry.amount)
        await self._write(
            lambda db: db.execute(
                f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    time.time(),
                    entry.agent,
                    entry.action,
                    entry.outcome,
                    entry.rental_id,
                    amount,
                    entry.detail,
                    entry.credential,
                ),
            )
        )

    async def audit_entries(self, since: float = 0.0, agent: str | None = None) -> list[AuditEntry]:
        def read() -> list[AuditEntry]:
            rows = self._db.execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit WHERE at >= ? AND (? IS NULL OR agent = ?) ORDER BY audit_id",
                (since, agent, agent),
            ).fetchall()
            return [audit_entry(row) for row in rows]

        return await self._run(read)
