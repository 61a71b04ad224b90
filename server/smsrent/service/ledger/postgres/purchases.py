"""The PostgreSQL ledger's purchases, from intent to outcome, and the money they commit."""

from __future__ import annotations

from decimal import Decimal

from psycopg.rows import TupleRow

from smsrent.service.ledger import DAY, DEFAULT_AGENT, UNSETTLED, Check, Purchase, PurchaseKind, PurchaseState
from smsrent.service.ledger.postgres.base import BUYER, Connection, PostgresBase, advisory_key, unavailable_when_down
from smsrent.service.ledger.rules import committed_split, committed_sum, no_check, purchase_from_row

_PURCHASE_COLUMNS = (
    "purchase_id, provider, kind, plan_id, rental_id, max_price, price, state, balance_before, note,"
    " extract(epoch FROM created_at)::float8, source_rental_id, verified, owner"
)
BUDGET_KEY = advisory_key("budget")


class PostgresPurchases(PostgresBase):
    """Purchases from intent to outcome, and the money they commit."""

    async def reserve(
        self,
        *,
        provider: str,
        kind: PurchaseKind,
        amount: Decimal,
        plan_id: str | None = None,
        source_rental_id: str | None = None,
        agent: str = DEFAULT_AGENT,
        check: Check = no_check,
    ) -> int:
        async def insert(conn: Connection) -> int:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (BUDGET_KEY,))  # every replica's reservations
            cur = await conn.execute(
                "SELECT count(*) FROM purchases WHERE provider = %s AND state = 'uncertain'", (provider,)
            )
            (uncertain,) = (await cur.fetchall())[0]
            committed, by_agent = committed_split(await _committed_rows(conn), agent)
            check(committed, int(uncertain), by_agent)
            cur = await conn.execute(
                "INSERT INTO purchases (provider, kind, plan_id, source_rental_id, max_price, state, created_at, owner,"
                " agent) VALUES (%s, %s, %s, %s, %s, 'reserved', clock_timestamp(), %s, %s) RETURNING purchase_id",
                (provider, kind, plan_id, source_rental_id, amount, self.owner, agent),
            )
            return int((await cur.fetchall())[0][0])

        return await self._write(insert)

    async def note_balance_before(self, purchase_id: int, balance: Decimal) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE purchases SET balance_before = %s WHERE purchase_id = %s", (balance, purchase_id)
            )
        )

    async def settle(
        self,
        purchase_id: int,
        state: PurchaseState,
        *,
        price: Decimal | None = None,
        rental_id: str | None = None,
        note: str | None = None,
        verified: bool = True,
    ) -> None:
        async def update(conn: Connection) -> None:
            await conn.execute(
                "UPDATE purchases SET state = %s, price = COALESCE(%s::numeric, price),"
                " rental_id = COALESCE(%s::text, rental_id), note = COALESCE(%s::text, note), verified = %s,"
                " settled_at = CASE WHEN %s THEN NULL ELSE clock_timestamp() END WHERE purchase_id = %s",
                (state, price, rental_id, note, verified, state in UNSETTLED, purchase_id),
            )
            if state == "bought" and rental_id is not None:  # a rental recorded before its purchase settled
                await conn.execute(f"UPDATE rentals SET agent = {BUYER} WHERE rental_id = %s", (rental_id, rental_id))

        await self._write(update)

    async def note_refund(self, rental_id: str, amount: Decimal) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE purchases SET refunded = LEAST(%s::numeric, COALESCE(price, max_price))"
                " WHERE purchase_id = (SELECT max(purchase_id) FROM purchases WHERE rental_id = %s AND kind = 'rent'"
                " AND state = 'bought')",
                (amount, rental_id),
            )
        )

    async def bought_rental_ids(self, provider: str) -> set[str]:
        rows = await self._rows(
            "SELECT rental_id FROM purchases WHERE provider = %s AND state = 'bought' AND rental_id IS NOT NULL",
            (provider,),
        )
        return {row[0] for row in rows}

    async def unsettled(self, provider: str | None = None) -> list[Purchase]:
        rows = await self._rows(
            f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE state IN ('reserved', 'uncertain')"
            " AND (%s::text IS NULL OR provider = %s) ORDER BY purchase_id",
            (provider, provider),
        )
        return [purchase_from_row(row) for row in rows]

    async def purchase(self, purchase_id: int) -> Purchase | None:
        rows = await self._rows(f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE purchase_id = %s", (purchase_id,))
        return purchase_from_row(rows[0]) if rows else None

    async def purchases(self) -> list[Purchase]:
        rows = await self._rows(f"SELECT {_PURCHASE_COLUMNS} FROM purchases ORDER BY purchase_id")
        return [purchase_from_row(row) for row in rows]

    async def committed(self, agent: str | None = None) -> Decimal:
        with unavailable_when_down():
            async with self._pool.connection() as conn:
                rows = await _committed_rows(conn)
        return committed_sum(row for row in rows if agent in (None, row[4]))


async def _committed_rows(conn: Connection) -> list[TupleRow]:
    """(state, max_price, price, refunded, agent) of the last 24 h's purchases that commit money."""
    cur = await conn.execute(
        "SELECT state, max_price, price, refunded, agent FROM purchases WHERE created_at >= clock_timestamp()"
        " - make_interval(secs => %s) AND state IN ('reserved', 'uncertain', 'bought')",
        (DAY,),
    )
    return await cur.fetchall()
