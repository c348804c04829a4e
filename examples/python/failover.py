"""Writing to the market through a failover (docs/OPERATIONS.md): the pattern the examples use.

Connect with the formation's multi-host URI, as `pg_autoctl show uri` prints it, e.g.

    postgresql://app@db1:5432,db2:5432/app?target_session_attrs=read-write

libpq tries each host and keeps the one that accepts writes, so reconnecting after a failover is
just connecting again with the same URI: no configuration beyond it.

Every write is one transaction: the statement, then COMMIT.
- The connection broke BEFORE the COMMIT was sent: nothing happened. Reconnect and run it again.
- The connection broke DURING the COMMIT, or the COMMIT returned PostgreSQL's WARNING that the
  transaction "has already committed locally, but might not have been replicated to the
  standby": the outcome is IN DOUBT. Never run it again blindly. Either the call is safe to
  repeat by design (deposit and withdraw with an idempotency_key return the first call's result
  and move nothing; submit_bids_for_tasks with the same tasks; a repeated claim_slot is a read),
  then `write(..., idempotent=True)` repeats it; or look up what happened (`resolve`): a settle
  by the bid's status (bid_status(bid_id)), a place_bid by (bidder_id, task_id).

A warned commit is on the primary that answered; a failover right after may lose it (it is not
on the standby). Resolving it after reconnecting asks whichever server is primary then.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

UNREPLICATED = "might not have been replicated"


class InDoubt(Exception):
    """A commit whose outcome is unknown and that the caller gave no way to resolve."""


def is_connection_error(e: BaseException, conn: psycopg.Connection | None = None) -> bool:
    if isinstance(e, psycopg.InterfaceError):
        return True
    st = getattr(e, "sqlstate", None)
    if st is None:
        return isinstance(e, psycopg.OperationalError) or (conn is not None and conn.broken)
    return st.startswith("08") or st in ("57P01", "57P02", "57P03")


class Session:
    """One connection, reopened with the same DSN after it breaks (up to `reconnect_for`
    seconds of trying), with `write()` for the in-doubt rule above. `on_connect(conn)` runs on
    every new connection (e.g. LISTEN)."""

    def __init__(
        self,
        dsn: str,
        reconnect_for: float = 120.0,
        on_connect: Callable[[psycopg.Connection], None] | None = None,
    ):
        self.dsn, self.reconnect_for, self.on_connect = dsn, reconnect_for, on_connect
        self._conn: psycopg.Connection | None = None
        self._warned = False
        self.in_doubt = 0  # commits that were in doubt (and resolved)

    def _notice(self, diag) -> None:
        if UNREPLICATED in (diag.message_detail or "") or UNREPLICATED in (diag.message_primary or ""):
            self._warned = True

    def conn(self) -> psycopg.Connection:
        deadline = time.monotonic() + self.reconnect_for
        while self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self.dsn)
                self._conn.add_notice_handler(self._notice)
                if self.on_connect:  # in autocommit: e.g. LISTEN takes effect at once
                    self._conn.autocommit = True
                    self.on_connect(self._conn)
                    self._conn.autocommit = False
            except psycopg.OperationalError:
                self._conn = None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # the formation is failing over: about 10 s with tuned timeouts
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, sql: str, params=()) -> list[tuple]:
        """A read: safe to repeat, so it is simply run again after a broken connection."""
        while True:
            conn = self.conn()
            try:
                rows = conn.execute(sql, params).fetchall()
                conn.rollback()  # end the read's transaction
                return rows
            except psycopg.Error as e:
                if not is_connection_error(e, conn):
                    conn.rollback()
                    raise
                self._conn = None

    def write(
        self,
        sql: str,
        params=(),
        *,
        idempotent: bool = False,
        resolve: Callable[[Session], list[tuple] | None] | None = None,
    ) -> list[tuple] | None:
        """Runs one write transaction and returns its rows. A SQL error rolls back and raises.
        In doubt: an `idempotent` call is repeated (it returns the first call's result);
        otherwise `resolve(session)` says what happened (the rows, or None: it did not happen,
        and the caller decides whether to try again); without either, InDoubt is raised."""
        while True:
            conn = self.conn()
            try:
                rows = conn.execute(sql, params).fetchall()
            except psycopg.Error as e:
                if is_connection_error(e, conn):
                    self._conn = None
                    continue  # never committed: safe to run again
                conn.rollback()
                raise
            self._warned = False
            try:
                conn.commit()
                if not self._warned:
                    return rows
            except psycopg.Error as e:
                if not is_connection_error(e, conn):
                    raise
                self._conn = None
            # in doubt: never blindly again
            self.in_doubt += 1
            if idempotent:
                continue
            if resolve is not None:
                return resolve(self)
            raise InDoubt(f"the outcome of {sql!r} is unknown: resolve it from the database's state")
