"""The PostgreSQL ledger's messages and each rental's `wait_for_code` cursor."""

from __future__ import annotations

from collections.abc import Sequence

from smsrent.domain.models import Message
from smsrent.service.ledger import StoredMessage
from smsrent.service.ledger.postgres.base import Connection, PostgresBase
from smsrent.service.ledger.rules import in_arrival_order

NOTIFY_SEQS = 500  # message seqs per NOTIFY (a payload must stay under 8000 bytes)


class PostgresMessages(PostgresBase):
    """Messages, stored once each, and each rental's `wait_for_code` cursor."""

    async def add_messages(self, messages: Sequence[Message]) -> list[Message]:
        async def add(conn: Connection) -> list[Message]:
            cur = await conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
            now = float((await cur.fetchall())[0][0])
            new, seqs = [], []
            for message in in_arrival_order(messages, now):
                cur = await conn.execute(
                    "INSERT INTO messages (message_id, rental_id, data, stored_at)"
                    " VALUES (%s, %s, %s, to_timestamp(%s)) ON CONFLICT (message_id) DO NOTHING RETURNING seq",
                    (message.message_id, message.rental_id, message.model_dump_json(), now),
                )
                if row := await cur.fetchone():
                    new.append(message)
                    seqs.append(row[0])
            for start in range(0, len(seqs), NOTIFY_SEQS):
                await self._notify(conn, seqs=seqs[start : start + NOTIFY_SEQS])
            return new

        return await self._write(add) if messages else []

    async def known_messages(self, message_ids: Sequence[str]) -> set[str]:
        if not message_ids:
            return set()
        rows = await self._rows("SELECT message_id FROM messages WHERE message_id = ANY(%s)", (list(message_ids),))
        return {row[0] for row in rows}

    async def messages(self, rental_id: str) -> list[StoredMessage]:
        rows = await self._rows(
            "SELECT data, extract(epoch FROM stored_at)::float8, returned_at IS NOT NULL FROM messages"
            " WHERE rental_id = %s ORDER BY seq",
            (rental_id,),
        )
        return [StoredMessage(Message.model_validate_json(data), stored, returned) for data, stored, returned in rows]

    async def recent_messages(self, limit: int = 20, agent: str | None = None) -> list[Message]:
        rows = await self._rows(
            "SELECT m.data FROM messages m WHERE %s::text IS NULL OR EXISTS (SELECT 1 FROM rentals r"
            " WHERE r.rental_id = m.rental_id AND r.agent = %s) ORDER BY m.seq DESC LIMIT %s",
            (agent, agent, limit),
        )
        return [Message.model_validate_json(row[0]) for row in rows]

    async def claim_next(self, rental_id: str, *, at: float | None = None) -> Message | None:
        async def claim(conn: Connection) -> Message | None:
            cur = await conn.execute(
                "UPDATE messages SET returned_at = COALESCE(to_timestamp(%s::float8), clock_timestamp())"
                " WHERE seq = (SELECT seq FROM messages WHERE rental_id = %s AND returned_at IS NULL"
                " ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING data",
                (at, rental_id),
            )
            row = await cur.fetchone()
            return Message.model_validate_json(row[0]) if row else None

        return await self._write(claim)
