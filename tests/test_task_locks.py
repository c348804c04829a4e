"""Issue 15, points 1 and 2: submit_bids_for_tasks takes its task locks in key order, checks
authority before any lock, and takes at most 1,000 tasks per call.

The task locks are advisory locks keyed by hashtext(task_id). k8862/k212653 and k11453/k305250
collide pairwise, so quests bidding on disjoint task ids can need the same two keys. Before
0.2.0 each call sorted its locks by task text: [k11453, k8862] took key B then A, [k212653,
k305250] key A then B, and started together the two calls deadlocked (40P01) every time. A
call by someone who does not own the quest took every task lock before its 42501, and the task
list was unbounded. Holds here last well under a second; the only deadlines detect hangs.
"""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import ROLES_SQL, assert_audit_clean, core_lock_key, snapshot, sqlstate_of

TASK_LOCK_CLASS = core_lock_key("CLASS") + 1  # compute_auction_core::limits::locks::CLASS_TASK
MAX_TASKS = 1000  # compute_auction_core::limits::MAX_TASKS_PER_CALL, documented in docs/SQL_API.md
HANG = 30.0
SUBMIT = "SELECT task_id, outcome FROM compute_auction.submit_bids_for_tasks(%s, %s, 100, 0.5)"


def backlog(tasks: list[str]) -> Jsonb:
    return Jsonb([{"task_id": t, "expected_value_usd": 1} for t in tasks])


def key_of(conn: psycopg.Connection, task: str) -> int:
    return conn.execute("SELECT hashtext(%s)", (task,)).fetchone()[0]


def wait_until_waiting(observer: psycopg.Connection, pids: list[int]) -> None:
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        n = observer.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND wait_event_type = 'Lock'", (pids,)
        ).fetchone()[0]
        if n == len(pids):
            return
        time.sleep(0.01)
    raise AssertionError(f"backends {pids} never all waited on a lock")


def test_the_task_ids_really_collide(conn):
    assert key_of(conn, "k8862") == key_of(conn, "k212653")
    assert key_of(conn, "k11453") == key_of(conn, "k305250")
    assert key_of(conn, "k8862") < key_of(conn, "k11453")


@pytest.mark.parametrize("repetition", range(5))
def test_colliding_task_keys_never_deadlock(fresh_db_url, conn, repetition):
    calls = {"q1": ["k11453", "k8862"], "q2": ["k212653", "k305250"]}
    for q in calls:
        conn.execute("SELECT compute_auction.open_account(%s, 'quest', 1000)", (q,))
    holder = psycopg.connect(fresh_db_url)
    clients = {q: psycopg.connect(fresh_db_url, autocommit=True) for q in calls}
    results: dict[str, object] = {}

    def run(q: str) -> None:
        c = clients[q]
        c.execute("SET statement_timeout = '20s'")
        try:
            results[q] = sorted(c.execute(SUBMIT, (q, backlog(calls[q]))).fetchall())
        except psycopg.Error as e:
            results[q] = e.sqlstate

    try:
        # the third session holds both keys, so each call waits at its first lock and both
        # start together: in text order that is B for q1 and A for q2 (then, released at once,
        # each got its first and waited for the other's: 40P01 every time); in key order both
        # wait for A
        for task in ("k8862", "k11453"):
            holder.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (TASK_LOCK_CLASS, task))
        threads = [threading.Thread(target=run, args=(q,)) for q in calls]
        for t in threads:
            t.start()
        wait_until_waiting(conn, [c.info.backend_pid for c in clients.values()])
        holder.commit()
        for t in threads:
            t.join(HANG)
            assert not t.is_alive(), "a submit_bids_for_tasks call hung"
    finally:
        holder.close()
        for c in clients.values():
            c.close()
    assert results == {q: sorted((t, "placed") for t in ts) for q, ts in calls.items()}, results
    assert_audit_clean(conn)


def test_more_than_the_limit_is_54000_and_changes_nothing(conn):
    conn.execute("SELECT compute_auction.open_account('q', 'quest', 1000000)")
    before = snapshot(conn)
    tasks = [f"t{i}" for i in range(MAX_TASKS + 1)]
    assert sqlstate_of(conn, SUBMIT, ("q", backlog(tasks))) == "54000"
    assert snapshot(conn) == before
    # exactly the limit is accepted
    rows = conn.execute(SUBMIT, ("q", backlog(tasks[:MAX_TASKS]))).fetchall()
    assert len(rows) == MAX_TASKS
    assert_audit_clean(conn)


def test_a_non_owner_is_refused_before_taking_any_task_lock(cluster, fresh_db, conn):
    suffix = uuid.uuid4().hex[:8]
    owner, other = f"owner_{suffix}", f"mallory_{suffix}"
    conn.execute(ROLES_SQL)
    conn.execute(f"CREATE ROLE {owner} LOGIN IN ROLE compute_auction_agent")
    conn.execute(f"CREATE ROLE {other} LOGIN IN ROLE compute_auction_agent")
    try:
        conn.execute("SELECT compute_auction.open_account('quest-q', 'quest', 100000, %s)", (owner,))
        tasks = [f"t{i}" for i in range(MAX_TASKS)]
        before = snapshot(conn)
        holder = psycopg.connect(cluster.url(fresh_db))
        mallory = psycopg.connect(cluster.url(fresh_db, user=other), autocommit=True)
        try:
            # one of the tasks' locks is held elsewhere: a call that took task locks before its
            # authority check would stop there and wait
            holder.execute("SELECT pg_advisory_xact_lock(%s, hashtext('t500'))", (TASK_LOCK_CLASS,))
            mallory.execute("SET statement_timeout = '10s'")
            seen_locks: list[int] = []
            done = threading.Event()

            def watch() -> None:
                with psycopg.connect(cluster.url(fresh_db), autocommit=True) as w:
                    while not done.is_set():
                        seen_locks.append(
                            w.execute(
                                "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory'",
                                (mallory.info.backend_pid,),
                            ).fetchone()[0]
                        )
                        time.sleep(0.005)

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                got = sqlstate_of(mallory, SUBMIT, ("quest-q", backlog(tasks)))
            finally:
                done.set()
                watcher.join(HANG)
            assert got == "42501", got  # 57014 would mean it waited for the held task lock
            assert max(seen_locks, default=0) == 0, "the refused call took task locks"
            # the held lock is still held: the call ended without it
            assert conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = %s",
                (holder.info.backend_pid,),
            ).fetchone() == (1,)
        finally:
            holder.close()
            mallory.close()
        assert snapshot(conn) == before
    finally:
        for r in (owner, other):
            conn.execute(f"DROP OWNED BY {r}")
            conn.execute(f"DROP ROLE {r}")
