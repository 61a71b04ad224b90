"""The SQLite ledger's messages and each rental's `wait_for_code` cursor."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from smsrent.domain.models import Message
from smsrent.service.ledger import StoredMessage
from smsrent.service.ledger.rules import in_arrival_order
from smsrent.service.ledger.sqlite.base import SqliteBase


class SqliteMessages(SqliteBase):
    """Messages, stored once each, and each rental's `wait_for_code` cursor."""

    async def add_messages(self, messages: Sequence[Message]) -> list[Message]:
        """Store messages not seen before, oldest first (providers may list newest first: the cursor hands out
        messages in the order stored); returns the new ones."""

        def add(db: sqlite3.Connection) -> list[Message]:
            now, new = time.time(), []
            for message in in_arrival_order(messages, now):
                cursor = db.execute(
                    "INSERT OR IGNORE INTO messages (message_id, rental_id, data, stored_at, stored_by)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (message.message_id, message.rental_id, message.model_dump_json(), now, self.owner),
                )
                if cursor.rowcount:
                    new.append(message)
            return new

        return await self._write(add) if messages else []

    async def known_messages(self, message_ids: Sequence[str]) -> set[str]:
        def read() -> set[str]:
            marks = ",".join("?" * len(message_ids))
            query = f"SELECT message_id FROM messages WHERE message_id IN ({marks})"
            return {row[0] for row in self._db.execute(query, tuple(message_ids))}

        return await self._run(read) if message_ids else set()

    async def messages(self, rental_id: str) -> list[StoredMessage]:
        """Every stored message of a rental, oldest first, with whether `wait_for_code` returned it."""

        def read() -> list[StoredMessage]:
            rows = self._db.execute(
                "SELECT data, stored_at, returned_at FROM messages WHERE rental_id = ? ORDER BY seq", (rental_id,)
            ).fetchall()
            return [StoredMessage(Message.model_validate_json(d), s, r is not None) for d, s, r in rows]

        return await self._run(read)

    async def recent_messages(self, limit: int = 20, agent: str | None = None) -> list[Message]:
        def read() -> list[Message]:
            rows = self._db.execute(
                "SELECT m.data FROM messages m WHERE ? IS NULL OR EXISTS (SELECT 1 FROM rentals r"
                " WHERE r.rental_id = m.rental_id AND r.agent = ?) ORDER BY m.seq DESC LIMIT ?",
                (agent, agent, limit),
            ).fetchall()
            return [Message.model_validate_json(r[0]) for r in rows]

        return await self._run(read)

    async def claim_next(self, rental_id: str, *, at: float | None = None) -> Message | None:
        """Advance the rental's `wait_for_code` cursor: the oldest message not returned before, now returned
        (`at`: the moment recorded as the hand-over, default now)."""

        def claim(db: sqlite3.Connection) -> Message | None:
            row = db.execute(
                "UPDATE messages SET returned_at = ? WHERE seq = (SELECT MIN(seq) FROM messages"
                " WHERE rental_id = ? AND returned_at IS NULL) RETURNING data",
                (time.time() if at is None else at, rental_id),
            ).fetchone()
            return Message.model_validate_json(row[0]) if row else None

        return await self._write(claim)
