"""The PostgreSQL ledger's schema, one migration per version; `smsrent-mcp migrate` applies those a database
lacks and records each in `smsrent_schema`. A replica never migrates by itself: it refuses to start on an older
schema (naming `smsrent-mcp migrate`) and starts on a newer one.

The rule every migration follows, so that replicas can be upgraded one at a time: the schema it leaves must
still serve the previous release. Add tables, nullable columns, columns with defaults and indexes (`CREATE INDEX
CONCURRENTLY` cannot run in the migration's transaction: give it a migration of its own outside one if a table
is large); never drop, rename or retype what the previous release reads or writes, and never add a constraint
its writes would break. Removing something takes two releases: stop using it, then drop it.

Money is NUMERIC (exact); every time is a `timestamptz` from the database's clock (`clock_timestamp()`), never
a replica's, so that budget windows, settle windows and heartbeats agree across machines (a wait's times are
its process's scheduling hints, not deadlines: plain epoch seconds). Rentals and messages
are stored as the JSON the domain models write (as text: `jsonb` refuses the `\\u0000` an SMS may carry).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from pydantic import SecretStr

from smsrent.service.ledger import LedgerUnusable
from smsrent.service.ledger.postgres.base import Connection, advisory_key, connect, describe, reason


@dataclass(frozen=True)
class Migration:
    description: str
    sql: str


VERSIONS_TABLE = """
CREATE TABLE IF NOT EXISTS smsrent_schema (
    version integer PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "rentals, messages and their cursor, purchases, processes, refusals",
        """
        CREATE TABLE rentals (
            rental_id text PRIMARY KEY,
            provider text NOT NULL,
            status text NOT NULL,
            data text NOT NULL,
            recorded_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        );
        CREATE INDEX rentals_by_time ON rentals (recorded_at);
        CREATE TABLE messages (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            message_id text NOT NULL UNIQUE,
            rental_id text NOT NULL,
            data text NOT NULL,
            stored_at timestamptz NOT NULL,
            returned_at timestamptz
        );
        CREATE INDEX messages_by_rental ON messages (rental_id, seq);
        CREATE INDEX messages_by_return ON messages (returned_at);
        CREATE TABLE purchases (
            purchase_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            provider text NOT NULL,
            kind text NOT NULL,
            plan_id text,
            rental_id text,
            source_rental_id text,
            max_price numeric NOT NULL,
            price numeric,
            refunded numeric,
            state text NOT NULL,
            verified boolean NOT NULL DEFAULT true,
            balance_before numeric,
            note text,
            owner text,
            created_at timestamptz NOT NULL,
            settled_at timestamptz
        );
        CREATE INDEX purchases_by_time ON purchases (created_at);
        CREATE INDEX purchases_by_rental ON purchases (rental_id);
        CREATE INDEX purchases_unsettled ON purchases (provider) WHERE state IN ('reserved', 'uncertain');
        CREATE TABLE processes (
            token text PRIMARY KEY,
            host text NOT NULL,
            pid integer NOT NULL,
            presence_key bigint NOT NULL,
            started_at timestamptz NOT NULL,
            heartbeat_at timestamptz NOT NULL
        );
        CREATE TABLE refusals (
            refusal_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            provider text,
            amount numeric NOT NULL,
            note text NOT NULL,
            created_at timestamptz NOT NULL
        );
        CREATE INDEX refusals_by_time ON refusals (created_at);
        """,
    ),
    Migration(
        "agents: whose each purchase, rental and refusal is (the owner's before), and the audit trail",
        """
        ALTER TABLE purchases ADD COLUMN agent text NOT NULL DEFAULT 'owner';
        ALTER TABLE rentals ADD COLUMN agent text NOT NULL DEFAULT 'owner';
        ALTER TABLE refusals ADD COLUMN agent text NOT NULL DEFAULT 'owner';
        CREATE TABLE audit (
            audit_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at timestamptz NOT NULL,
            agent text,
            credential text,
            action text NOT NULL,
            rental_id text,
            amount numeric,
            outcome text NOT NULL,
            detail text
        );
        CREATE INDEX audit_by_time ON audit (at);
        """,
    ),
    Migration(
        "waits: the rentals each process wants codes for, read by the poller's leader; pauses of rate-limited accounts",
        """
        CREATE TABLE waits (
            owner text NOT NULL,
            rental_id text NOT NULL,
            started_at double precision,
            expected_at double precision NOT NULL,
            PRIMARY KEY (owner, rental_id)
        );
        CREATE TABLE pauses (
            provider text PRIMARY KEY,
            until timestamptz NOT NULL
        );
        """,
    ),
)


MIGRATE_KEY = advisory_key("migrate")


async def schema_version(conn: Connection) -> int:
    cur = await conn.execute("SELECT to_regclass('smsrent_schema') IS NOT NULL")
    if not (await cur.fetchone() or (False,))[0]:
        return 0
    cur = await conn.execute("SELECT COALESCE(max(version), 0) FROM smsrent_schema")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def check(database_url: SecretStr) -> int:
    """The database's schema version, once it is known to be reachable and recent enough for this release;
    LedgerUnusable in one line otherwise."""
    conn = await connect(database_url)
    try:
        version = await schema_version(conn)
    finally:
        await conn.close()
    if version < len(MIGRATIONS):
        raise LedgerUnusable(
            f"the PostgreSQL ledger ({describe(database_url)}) is at schema version {version} and this smsrent needs"
            f" {len(MIGRATIONS)}: run `smsrent-mcp migrate` with the same SMSRENT_DATABASE_URL, then start again."
        )
    return version


async def migrate(database_url: SecretStr) -> tuple[int, int]:
    """Apply the migrations the database lacks, in one transaction (two at once: one waits, the other finds
    nothing to do). Returns the schema version before and after."""
    conn = await connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_KEY,))
            await conn.execute(VERSIONS_TABLE)
            before = await schema_version(conn)
            for version, migration in enumerate(MIGRATIONS[before:], start=before + 1):
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO smsrent_schema (version, description) VALUES (%s, %s)",
                    (version, migration.description),
                )
    except psycopg.Error as err:
        why = f"({describe(database_url)}): {reason(err, database_url)}"
        raise LedgerUnusable(f"could not migrate the PostgreSQL ledger {why}") from err
    finally:
        await conn.close()
    return before, max(before, len(MIGRATIONS))
