"""The SQLite ledger's purchases, from intent to outcome, and the money they commit."""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal

from smsrent.service.ledger import DAY, DEFAULT_AGENT, UNSETTLED, Check, Purchase, PurchaseKind, PurchaseState
from smsrent.service.ledger.rules import committed_split, committed_sum, no_check, purchase_from_row
from smsrent.service.ledger.sqlite.base import BUYER, SqliteBase


class SqlitePurchases(SqliteBase):
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
        """Record `agent`'s purchase intent reserving `amount`, handled by this process, atomically with `check`
        (`Check`), which may refuse it. `source_rental_id`: the rental it extends, renews or re-rents."""

        def insert(db: sqlite3.Connection) -> int:
            now = time.time()
            (uncertain,) = db.execute(
                "SELECT COUNT(*) FROM purchases WHERE provider = ? AND state = 'uncertain'", (provider,)
            ).fetchone()
            committed, by_agent = committed_split(_committed_rows(db, now), agent)
            check(committed, uncertain, by_agent)
            cursor = db.execute(
                "INSERT INTO purchases (provider, kind, plan_id, source_rental_id, max_price, state, created_at,"
                " owner, agent) VALUES (?, ?, ?, ?, ?, 'reserved', ?, ?, ?)",
                (provider, kind, plan_id, source_rental_id, str(amount), now, self.owner, agent),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return await self._write(insert)

    async def note_balance_before(self, purchase_id: int, balance: Decimal) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE purchases SET balance_before = ? WHERE purchase_id = ?", (str(balance), purchase_id)
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
        """Record a purchase's outcome (`uncertain` keeps it counted at its reserved amount until reconciled;
        bought but not `verified`, without a price, it stays counted at that amount)."""
        settled_at = None if state in UNSETTLED else time.time()

        def update(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE purchases SET state = ?, price = COALESCE(?, price), rental_id = COALESCE(?, rental_id),"
                " note = COALESCE(?, note), verified = ?, settled_at = ? WHERE purchase_id = ?",
                (state, None if price is None else str(price), rental_id, note, verified, settled_at, purchase_id),
            )
            if state == "bought" and rental_id is not None:  # a rental recorded before its purchase settled
                db.execute(f"UPDATE rentals SET agent = {BUYER} WHERE rental_id = ?", (rental_id, rental_id))

        await self._write(update)

    async def note_refund(self, rental_id: str, amount: Decimal) -> None:
        """Credit a refund against the latest purchase that bought the rental, up to what it cost."""

        def credit(db: sqlite3.Connection) -> None:
            row = db.execute(
                "SELECT purchase_id, COALESCE(price, max_price) FROM purchases WHERE rental_id = ? AND kind = 'rent'"
                " AND state = 'bought' ORDER BY purchase_id DESC LIMIT 1",
                (rental_id,),
            ).fetchone()
            if row:
                purchase_id, cost = row
                credited = min(amount, Decimal(cost))
                db.execute("UPDATE purchases SET refunded = ? WHERE purchase_id = ?", (str(credited), purchase_id))

        await self._write(credit)

    async def bought_rental_ids(self, provider: str) -> set[str]:
        """Rentals this provider's settled purchases bought (a reconciliation must not give them to another)."""

        def read() -> set[str]:
            query = "SELECT rental_id FROM purchases WHERE provider = ? AND state = 'bought' AND rental_id IS NOT NULL"
            return {row[0] for row in self._db.execute(query, (provider,))}

        return await self._run(read)

    async def unsettled(self, provider: str | None = None) -> list[Purchase]:
        """Purchases still reserved or uncertain, oldest first."""

        def read() -> list[Purchase]:
            rows = self._db.execute(
                f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE state IN ('reserved', 'uncertain')"
                " AND (? IS NULL OR provider = ?) ORDER BY purchase_id",
                (provider, provider),
            ).fetchall()
            return [purchase_from_row(row) for row in rows]

        return await self._run(read)

    async def purchase(self, purchase_id: int) -> Purchase | None:
        def read() -> Purchase | None:
            query = f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE purchase_id = ?"
            row = self._db.execute(query, (purchase_id,)).fetchone()
            return purchase_from_row(row) if row else None

        return await self._run(read)

    async def purchases(self) -> list[Purchase]:
        def read() -> list[Purchase]:
            rows = self._db.execute(f"SELECT {_PURCHASE_COLUMNS} FROM purchases ORDER BY purchase_id").fetchall()
            return [purchase_from_row(row) for row in rows]

        return await self._run(read)

    async def committed(self, agent: str | None = None) -> Decimal:
        """Money spent or reserved in the last 24 h: bought (less refunds), plus reserved and uncertain at their cap;
        `agent`: by that agent only."""
        rows = await self._run(lambda: _committed_rows(self._db, time.time()))
        return committed_sum(row for row in rows if agent in (None, row[4]))


_PURCHASE_COLUMNS = (
    "purchase_id, provider, kind, plan_id, rental_id, max_price, price, state, balance_before, note, created_at,"
    " source_rental_id, verified, owner"
)


def _committed_rows(db: sqlite3.Connection, now: float) -> list[tuple[object, ...]]:
    """(state, max_price, price, refunded, agent) of the last 24 h's purchases that commit money."""
    return db.execute(
        "SELECT state, max_price, price, refunded, agent FROM purchases WHERE created_at >= ? AND state IN"
        " ('reserved', 'uncertain', 'bought')",
        (now - DAY,),
    ).fetchall()
