"""The PostgreSQL ledger's rentals."""

from __future__ import annotations

from collections.abc import Collection

from smsrent.domain.models import Rental
from smsrent.service.ledger.postgres.base import BUYER, Connection, PostgresBase
from smsrent.service.ledger.rules import merge


class PostgresRentals(PostgresBase):
    """Rentals, merged over what was known."""

    async def save_rental(self, rental: Rental) -> Rental:
        async def save(conn: Connection) -> Rental:
            cur = await conn.execute(
                "INSERT INTO rentals (rental_id, provider, status, data, recorded_at, updated_at, agent)"
                f" VALUES (%s, %s, %s, %s, clock_timestamp(), clock_timestamp(), {BUYER})"
                " ON CONFLICT (rental_id) DO NOTHING RETURNING rental_id",
                (rental.rental_id, rental.provider, rental.status, rental.model_dump_json(), rental.rental_id),
            )
            if await cur.fetchone():
                return rental
            cur = await conn.execute("SELECT data FROM rentals WHERE rental_id = %s FOR UPDATE", (rental.rental_id,))
            (known,) = await cur.fetchall()
            merged = merge(Rental.model_validate_json(known[0]), rental)
            await conn.execute(
                "UPDATE rentals SET status = %s, data = %s, updated_at = clock_timestamp() WHERE rental_id = %s",
                (merged.status, merged.model_dump_json(), merged.rental_id),
            )
            return merged

        return await self._write(save)

    async def rental(self, rental_id: str) -> Rental | None:
        rows = await self._rows("SELECT data FROM rentals WHERE rental_id = %s", (rental_id,))
        return Rental.model_validate_json(rows[0][0]) if rows else None

    async def rentals(
        self, *, active: bool | None = None, provider: str | None = None, agent: str | None = None
    ) -> list[Rental]:
        rows = await self._rows(
            "SELECT data FROM rentals WHERE (%s::text IS NULL OR provider = %s) AND (%s::text IS NULL OR agent = %s)"
            " ORDER BY recorded_at DESC",
            (provider, provider, agent, agent),
        )
        found = [Rental.model_validate_json(row[0]) for row in rows]
        return [r for r in found if active is None or active != r.status.ended]

    async def agents(self, rental_ids: Collection[str]) -> dict[str, str]:
        if not rental_ids:
            return {}
        rows = await self._rows("SELECT rental_id, agent FROM rentals WHERE rental_id = ANY(%s)", (list(rental_ids),))
        return {str(row[0]): str(row[1]) for row in rows}

    async def rental_ids(self, *, provider: str, recorded_before: float) -> set[str]:
        rows = await self._rows(
            "SELECT rental_id FROM rentals WHERE provider = %s AND recorded_at < to_timestamp(%s)",
            (provider, recorded_before),
        )
        return {row[0] for row in rows}
