"""The SQLite ledger's schema, one migration per version, and the opening of a ledger file (migrated as needed)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from smsrent.service.ledger import LedgerUnusable
from smsrent.service.ledger.sqlite.base import transaction

# Each entry moves the schema one version up; `PRAGMA user_version` records how far a file has come.
MIGRATIONS = (
    """
    CREATE TABLE rentals (
        rental_id TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        status TEXT NOT NULL,
        data TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL UNIQUE,
        rental_id TEXT NOT NULL,
        data TEXT NOT NULL,
        stored_at REAL NOT NULL,
        returned_at REAL
    );
    CREATE INDEX messages_by_rental ON messages (rental_id, seq);
    CREATE TABLE purchases (
        purchase_id INTEGER PRIMARY KEY AUTOINCREMENT,
        provider TEXT NOT NULL,
        kind TEXT NOT NULL,
        plan_id TEXT,
        rental_id TEXT,
        max_price TEXT NOT NULL,
        price TEXT,
        refunded TEXT,
        state TEXT NOT NULL,
        balance_before TEXT,
        note TEXT,
        created_at REAL NOT NULL,
        settled_at REAL
    );
    CREATE INDEX purchases_by_time ON purchases (created_at);
    """,
    # The rental a purchase extends or re-rents (`source_rental_id`) apart from the one it produced
    # (`rental_id`), and whether a bought purchase was verified. Before, a re-rent carried its source as
    # `rental_id`: still unsettled, or bought again after the source's own purchase, it had not learned its own.
    """
    ALTER TABLE purchases ADD COLUMN source_rental_id TEXT;
    ALTER TABLE purchases ADD COLUMN verified INTEGER NOT NULL DEFAULT 1;
    UPDATE purchases SET source_rental_id = rental_id WHERE kind IN ('extend', 'renew');
    UPDATE purchases SET source_rental_id = rental_id, rental_id = NULL
     WHERE kind = 'rent' AND rental_id IS NOT NULL AND (state IN ('reserved', 'uncertain') OR EXISTS (
        SELECT 1 FROM purchases AS earlier WHERE earlier.kind = 'rent' AND earlier.rental_id = purchases.rental_id
         AND earlier.purchase_id < purchases.purchase_id));
    """,
    # Servers sharing the file: who is alive, which process handles a purchase in flight, ledger locks.
    """
    ALTER TABLE purchases ADD COLUMN owner TEXT;
    CREATE TABLE processes (
        token TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    );
    CREATE TABLE locks (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        taken_at REAL NOT NULL
    );
    """,
    """
    CREATE TABLE refusals (
        refusal_id INTEGER PRIMARY KEY AUTOINCREMENT,
        provider TEXT,
        amount TEXT NOT NULL,
        note TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX refusals_by_time ON refusals (created_at);
    CREATE INDEX messages_by_return ON messages (returned_at);
    """,
    # Agents: whose each purchase, rental and refusal is (the owner's before), and the audit trail.
    """
    ALTER TABLE purchases ADD COLUMN agent TEXT NOT NULL DEFAULT 'owner';
    ALTER TABLE rentals ADD COLUMN agent TEXT NOT NULL DEFAULT 'owner';
    ALTER TABLE refusals ADD COLUMN agent TEXT NOT NULL DEFAULT 'owner';
    CREATE TABLE audit (
        audit_id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        agent TEXT,
        credential TEXT,
        action TEXT NOT NULL,
        rental_id TEXT,
        amount TEXT,
        outcome TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX audit_by_time ON audit (at);
    """,
    # One poller per provider account: the rentals each process wants codes for, who stored each message, and
    # the pause of a rate-limited account.
    """
    CREATE TABLE waits (
        owner TEXT NOT NULL,
        rental_id TEXT NOT NULL,
        started_at REAL,
        expected_at REAL NOT NULL,
        PRIMARY KEY (owner, rental_id)
    );
    ALTER TABLE messages ADD COLUMN stored_by TEXT;
    CREATE TABLE pauses (
        provider TEXT PRIMARY KEY,
        until REAL NOT NULL
    );
    """,
)


def connect(path: str) -> sqlite3.Connection:
    """The ledger file at `path` (created as needed) in WAL mode, migrated to this release's schema."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if path != ":memory:" and str(mode).lower() != "wal":
        db.close()
        raise LedgerUnusable(
            f"The ledger {path} cannot use SQLite's WAL mode (SQLite kept {mode!r}), so it could not be shared"
            " safely; put SMSRENT_DATA_DIR on a local disk."
        )
    db.execute("PRAGMA synchronous = NORMAL")
    transaction(db, _migrate)  # under the write lock: two servers starting together migrate once
    return db


def _migrate(db: sqlite3.Connection) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in _statements(script):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")


def _statements(script: str) -> list[str]:
    """The statements of a migration script (`executescript` would commit the transaction it runs in)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return [*statements, pending.strip()] if pending.strip() else statements
