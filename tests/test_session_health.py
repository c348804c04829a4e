"""Issue 10: no timeout, cancel or error inside clear_round or run_cycle can leave the caller's
session in a broken transaction.

Each case makes clear_round or run_cycle wait, then ends the wait with a lock_timeout, a
statement_timeout or pg_cancel_backend. Until issue 13 the wait was on a bid row another
session held, inside the lock retry's internal subtransaction, and on 0a1e601 every case here
failed (25P02 on the next statement, FATAL on ROLLBACK, the clearing lock kept). Since rounds
skip the bids they cannot lock, the only wait left is the clearing lock, which another
session's open round holds here; the subtransaction's error path is tested directly by the
#[pg_test]s in extension/src/pg_tests.rs. Afterwards the session must be healthy: the next
statement works, ROLLBACK/COMMIT give at most a warning, it holds no lock (the clearing lock is
free, another session clears at once), and, where a PL/pgSQL EXCEPTION block caught the error,
the session still commits: now() advances, its writes are visible to others and survive its
disconnect.

Holds last a second or two; the only waits are deadlines that detect a hang.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

# The advisory lock key space of the extension (extension/src/spi.rs): class "CAUC".
LOCK_CLASS = 0x4341_5543

HANG = 30.0  # seconds: a deadline that only detects a hang (the holds here last ~1 s)

CALLS = {
    "clear_round": "SELECT * FROM compute_auction.clear_round()",
    "run_cycle": "SELECT compute_auction.run_cycle()",
}
MODES = ["lock_timeout", "statement_timeout", "cancel"]
EXPECTED = {"lock_timeout": "55P03", "statement_timeout": "57014", "cancel": "57014"}


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def seed(conn: psycopg.Connection) -> None:
    """alice holds the top (committed) bid and a slot is free: a round has work to do."""
    conn.execute("SELECT compute_auction.open_account('alice', 'agent', 10000)")
    conn.execute("SELECT compute_auction.open_account('bob', 'agent', 10000)")
    conn.execute("SELECT compute_auction.offer_slot('gpu-01')")
    conn.execute("SELECT compute_auction.place_bid('alice', 't1', 150)")


def hold_the_clearing_lock(url: str) -> psycopg.Connection:
    """Another session clears a round and leaves its transaction open: it holds the clearing
    lock (and alice's bid row, which its round won)."""
    holder = psycopg.connect(url)
    holder.execute("SELECT * FROM compute_auction.clear_round()")
    return holder


def wait_until_waiting_on_lock(observer: psycopg.Connection, pid: int) -> None:
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        row = observer.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if row and row[0] == "Lock":
            return
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} never started waiting on a lock")


def run_interrupted(victim: psycopg.Connection, observer: psycopg.Connection, sql: str, mode: str) -> str | None:
    """Runs `sql` in `victim` while its bid row is held, ended by `mode`; returns the SQLSTATE
    it failed with (None if it succeeded, e.g. inside an EXCEPTION block)."""
    if mode == "lock_timeout":
        victim.execute("SET lock_timeout = '1s'")
    elif mode == "statement_timeout":
        victim.execute("SET statement_timeout = '1s'")
    outcome: dict = {}

    def call() -> None:
        try:
            victim.execute(sql)
            outcome["sqlstate"] = None
        except psycopg.Error as e:
            outcome["sqlstate"] = e.sqlstate

    t = threading.Thread(target=call)
    t.start()
    if mode == "cancel":
        pid = victim.info.backend_pid
        wait_until_waiting_on_lock(observer, pid)
        assert observer.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone()[0]
    t.join(HANG)
    assert not t.is_alive(), f"{sql} hung under {mode}"
    victim.execute("RESET lock_timeout")
    victim.execute("RESET statement_timeout")
    return outcome["sqlstate"]


def advisory_locks_of(observer: psycopg.Connection, pid: int) -> int:
    return observer.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory'", (pid,)
    ).fetchone()[0]


def assert_others_can_clear(url: str) -> None:
    """Another session takes the clearing lock at once and clears a round."""
    with connect(url) as other:
        other.execute("SET lock_timeout = '5s'")
        got = other.execute("SELECT pg_try_advisory_lock(%s, 1)", (LOCK_CLASS,)).fetchone()[0]
        assert got, "the clearing lock is still held by someone"
        other.execute("SELECT pg_advisory_unlock(%s, 1)", (LOCK_CLASS,))
        other.execute("SELECT * FROM compute_auction.clear_round()")
        assert other.execute("SELECT count(*) FROM compute_auction.compute_auction_rounds").fetchone()[0] >= 1


@pytest.fixture
def session(fresh_db_url):
    """(victim, observer): the session under test and a second one that watches it."""
    with connect(fresh_db_url) as victim, connect(fresh_db_url) as observer:
        seed(observer)
        yield victim, observer


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("call", list(CALLS))
def test_interrupted_wait_in_autocommit_leaves_the_session_healthy(fresh_db_url, session, call, mode):
    victim, observer = session
    pid = victim.info.backend_pid
    holder = hold_the_clearing_lock(fresh_db_url)
    try:
        assert run_interrupted(victim, observer, CALLS[call], mode) == EXPECTED[mode]
        # the failed statement's transaction is over: it holds no lock, the clearing lock among them
        assert advisory_locks_of(observer, pid) == 0
        assert victim.execute("SELECT 1").fetchone() == (1,)
        assert victim.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        holder.rollback()
        holder.close()
    # no transaction is open: both give only a warning, and the session keeps working
    victim.execute("ROLLBACK")
    victim.execute("COMMIT")
    assert victim.execute("SELECT 2").fetchone() == (2,)
    assert_others_can_clear(fresh_db_url)
    # nothing of the failed round was written, and the session can clear again itself
    victim.execute("SELECT * FROM compute_auction.clear_round()")
    assert observer.execute("SELECT count(*) FROM compute_auction.audit()").fetchone()[0] == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("call", list(CALLS))
def test_interrupted_wait_caught_by_plpgsql_leaves_the_session_committing(fresh_db_url, session, call, mode):
    victim, observer = session
    pid = victim.info.backend_pid
    # OTHERS alone does not catch query_canceled (57014)
    block = f"""
        DO $$
        BEGIN
            PERFORM * FROM ({CALLS[call]}) AS r;
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            RAISE NOTICE 'caught %', SQLSTATE;
        END
        $$"""
    holder = hold_the_clearing_lock(fresh_db_url)
    try:
        assert run_interrupted(victim, observer, block, mode) is None
        assert advisory_locks_of(observer, pid) == 0
    finally:
        holder.rollback()
        holder.close()
    assert victim.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    # each autocommit statement is its own transaction again: now() advances
    t1 = victim.execute("SELECT now()").fetchone()[0]
    deadline = time.monotonic() + HANG
    while victim.execute("SELECT now()").fetchone()[0] == t1:
        assert time.monotonic() < deadline, "now() is frozen: the session never commits"
        time.sleep(0.01)
    # a bid placed in autocommit is visible to another session at once
    bid_id = victim.execute("SELECT compute_auction.place_bid('bob', 't2', 90)").fetchone()[0]
    seen = observer.execute("SELECT bidder_id FROM compute_auction.compute_auction_bids WHERE id = %s", (bid_id,))
    assert seen.fetchone() == ("bob",)
    victim.execute("SELECT compute_auction.deposit('bob', 5, 'good work')")
    assert advisory_locks_of(observer, pid) == 0
    assert_others_can_clear(fresh_db_url)
    # nothing is lost when the session disconnects
    victim.close()
    deadline = time.monotonic() + HANG
    while observer.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]:
        assert time.monotonic() < deadline, "the session never ended"
        time.sleep(0.02)
    assert observer.execute(
        "SELECT count(*) FROM compute_auction.compute_auction_bids WHERE id = %s", (bid_id,)
    ).fetchone() == (1,)
    assert observer.execute("SELECT balance_tokens FROM compute_auction.balance('bob')").fetchone()[0] == 10005 - 90
    assert observer.execute("SELECT count(*) FROM compute_auction.audit()").fetchone()[0] == 0
