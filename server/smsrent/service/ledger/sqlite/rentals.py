"""The SQLite ledger's rentals."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection

from smsrent.domain.models import Rental
from smsrent.service.ledger.rules import merge
from smsrent.service.ledger.sqlite.base import BUYER, SqliteBase


class SqliteRentals(SqliteBase):
    """Rentals, merged over what was known."""

    async def save_rental(self, rental: Rental) -> Rental:
        """Record what a provider said about a rental, merged over what was known; returns the merged rental."""

        def save(db: sqlite3.Connection) -> Rental:
            now = time.time()
            row = db.execute("SELECT data FROM rentals WHERE rental_id = ?", (rental.rental_id,)).fetchone()
            merged = merge(Rental.model_validate_json(row[0]), rental) if row else rental
            db.execute(
                "INSERT INTO rentals (rental_id, provider, status, data, recorded_at, updated_at, agent)"
                f" VALUES (?, ?, ?, ?, ?, ?, {BUYER}) ON CONFLICT (rental_id) DO UPDATE SET"
                " status = excluded.status, data = excluded.data, updated_at = excluded.updated_at",
                (
                    merged.rental_id,
                    merged.provider,
                    merged.status,
                    merged.model_dump_json(),
                    now,
                    now,
                    merged.rental_id,
                ),
            )
            return merged

        return await self._write(save)

    async def rental(self, rental_id: str) -> Rental | None:
        def read() -> Rental | None:
            row = self._db.execute("SELECT data FROM rentals WHERE rental_id = ?", (rental_id,)).fetchone()
            return Rental.model_validate_json(row[0]) if row else None

        return await self._run(read)

    async def rentals(
        self, *, active: bool | None = None, provider: str | None = None, agent: str | None = None
    ) -> list[Rental]:
        """Rentals, newest first; `active=True` only active ones, `False` only ended ones; `agent`: only its."""

        def read() -> list[Rental]:
            rows = self._db.execute(
                "SELECT data FROM rentals WHERE ? IS NULL OR agent = ? ORDER BY recorded_at DESC", (agent, agent)
            ).fetchall()
            found = [Rental.model_validate_json(r[0]) for r in rows]
            return [
                r
                for r in found
                if (provider is None or r.provider == provider) and (active is None or active != r.status.ended)
            ]

        return await self._run(read)

    async def agents(self, rental_ids: Collection[str]) -> dict[str, str]:
        def read() -> dict[str, str]:
            marks = ",".join("?" * len(rental_ids))
            query = f"SELECT rental_id, agent FROM rentals WHERE rental_id IN ({marks})"
            return dict(self._db.execute(query, tuple(rental_ids)).fetchall())

        return await self._run(read) if rental_ids else {}

    async def rental_ids(self, *, provider: str, recorded_before: float) -> set[str]:
        """Ids of this provider's rentals that the ledger already knew at `recorded_before` (a `time.time()`)."""

        def read() -> set[str]:
            query = "SELECT rental_id FROM rentals WHERE provider = ? AND recorded_at < ?"
            return {row[0] for row in self._db.execute(query, (provider, recorded_before))}

        return await self._run(read)
