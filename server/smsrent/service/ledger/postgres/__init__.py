"""The PostgreSQL ledger: one database shared by any number of server replicas on any number of machines
(SMSRENT_DATABASE_URL). Imported only when a database URL is configured (it needs `smsrent[postgres]`).

What must hold across replicas is held by the database, never by a replica:
- a reservation takes a transaction-scoped advisory lock (`pg_advisory_xact_lock`) around "count this provider's
  uncertain purchases, sum the 24 h committed spend, check, insert", so the daily budget and an uncertain
  purchase's block hold for every replica at once;
- `lock(name)` is a session advisory lock held on a connection of its own for as long as the lock is held (the
  lock dies with the connection, so with a killed replica);
- a process is alive while its heartbeat (on the database clock) is fresh *and* its presence lock, a session
  advisory lock on a connection it keeps open, shows in `pg_locks`. A killed replica's connection closes at once,
  so what it left mid-purchase is taken over within a heartbeat; a machine that vanished without closing its
  connections is judged by its heartbeat (its locks may linger until TCP gives up). After a database restart no
  presence lock exists until each replica's next beat takes its own again: a heartbeat older than the server's
  start is judged by itself.
- a message is stored once (`ON CONFLICT DO NOTHING` on its id), and the `wait_for_code` cursor is claimed in one
  `UPDATE ... RETURNING` on the oldest unreturned message (`FOR UPDATE SKIP LOCKED`), so no two claims anywhere
  return the same message;
- the transaction that stores messages sends a `NOTIFY` naming them (delivered on commit only), as does each
  change of a process's waits; every replica `LISTEN`s on a connection of its own (`listen`), reconnecting with
  back-off;
- a leadership (`lead`, one poller per provider account) is a session advisory lock on a connection of its own,
  checked every LEAD_CHECK seconds: a killed leader's lock goes with its connection, so a follower (trying
  every LEAD_POLL seconds) takes over within about a second or two.
When the database cannot be reached, every call raises LedgerUnavailable (the pool checks each connection it
hands out and reconnects by itself).
Every stored time is the database's `clock_timestamp()`; `now()` reads that clock.

The parts follow the sections of the `Ledger` protocol, one mixin each over `base.PostgresBase`.
"""

from __future__ import annotations

import anyio
import psycopg
from pydantic import SecretStr

from smsrent.service.ledger import LedgerUnusable
from smsrent.service.ledger.postgres.base import CONNECT_TIMEOUT, describe
from smsrent.service.ledger.postgres.cluster import PostgresCluster
from smsrent.service.ledger.postgres.figures import PostgresFigures
from smsrent.service.ledger.postgres.messages import PostgresMessages
from smsrent.service.ledger.postgres.migrations import check
from smsrent.service.ledger.postgres.processes import PostgresProcesses
from smsrent.service.ledger.postgres.purchases import PostgresPurchases
from smsrent.service.ledger.postgres.rentals import PostgresRentals


class PostgresLedger(
    PostgresProcesses, PostgresCluster, PostgresRentals, PostgresMessages, PostgresPurchases, PostgresFigures
):
    """The ledger in a PostgreSQL database, registered as one process of it (`owner`)."""

    @classmethod
    async def open(cls, database_url: SecretStr) -> PostgresLedger:
        """Open the ledger in the database at `database_url`, whose schema must be this release's or newer."""
        await check(database_url)
        ledger = cls(database_url)
        try:
            await ledger._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except psycopg.Error as err:
            await ledger._pool.close()
            where = describe(database_url)
            raise LedgerUnusable(f"cannot open connections to the PostgreSQL ledger ({where})") from err
        try:
            await ledger.beat()
        except BaseException:
            await ledger._shut()
            raise
        return ledger

    async def close(self) -> None:
        """Unregister this process (what it still held is taken over by the others) and close its connections."""
        with anyio.CancelScope(shield=True):
            try:
                await self._write(lambda conn: conn.execute("DELETE FROM processes WHERE token = %s", (self.owner,)))
            finally:
                await self._shut()

    async def _shut(self) -> None:
        if self._presence is not None:
            await self._presence.close()
        await self._pool.close()
