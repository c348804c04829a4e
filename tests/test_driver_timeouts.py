"""Issue 15, point 4: the driver's clearing steps and HTTP handlers run with timeouts, so a step
blocked on a lock is abandoned (and retried next interval) and nothing of the driver's is left
running on the server. Each test fails before issue 15: the driver had no --step-lock-timeout /
--step-statement-timeout (it does not start with them), its clear_round waited for the clearing
lock forever, and an HTTP request it gave up on kept running on the server."""

import time

import psycopg

from conftest import CLEARING_LOCK, http_json, metrics, wait_until

APP = "compute-auction-driver"  # db::APPLICATION_NAME


def _long_running(conn, db: str, older_than: str = "2 seconds") -> list:
    """The driver's statements running (or waiting) on the server for longer than older_than."""
    return conn.execute(
        """SELECT pid, state, wait_event_type, query FROM pg_stat_activity
            WHERE application_name = %s AND datname = %s AND state = 'active'
              AND now() - query_start > %s::interval""",
        (APP, db, older_than),
    ).fetchall()


def _metric(port: int, name: str) -> float:
    return metrics(port).get(name, 0.0)


def test_a_step_blocked_past_its_lock_timeout_is_abandoned_and_retried(conn, drivers, fresh_db_url, cluster):
    db = conn.info.dbname
    d = drivers(fresh_db_url, None, "--step-lock-timeout", "300ms", "--step-statement-timeout", "5s")
    wait_until(lambda: _metric(d.port, "compute_auction_rounds_cleared_total") >= 1, 30, what="a first round")
    with psycopg.connect(cluster.url(db), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", CLEARING_LOCK)
        try:
            base = _metric(d.port, "compute_auction_cycle_step_timeouts_total")
            # abandoned once, and the next interval runs (and is abandoned again)
            wait_until(
                lambda: _metric(d.port, "compute_auction_cycle_step_timeouts_total") >= base + 2,
                30,
                what="clear_round to time out in two intervals",
            )
            m = metrics(d.port)
            assert m['compute_auction_cycle_step_errors_total{step="clear_round"}'] >= 2
            # the other steps still run, and fine
            assert m['compute_auction_cycle_step_errors_total{step="refund_unfilled"}'] == 0
            assert m['compute_auction_cycle_step_errors_total{step="apply_pending"}'] == 0
            assert "cycle step timed out" in d.log()
            # nothing of the driver's waits on the server past its timeout
            for _ in range(5):
                assert _long_running(conn, db) == []
                time.sleep(0.5)  # sampled a few times, not a duration assertion
            rounds = _metric(d.port, "compute_auction_rounds_cleared_total")
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s, %s)", CLEARING_LOCK)
    # and rounds resume with the lock free
    wait_until(lambda: _metric(d.port, "compute_auction_rounds_cleared_total") > rounds, 30, what="rounds to resume")


def test_an_http_request_leaves_nothing_running_on_the_server(conn, drivers, fresh_db_url, cluster):
    """A stats request blocked on a table lock: the driver answers 503, and its statement is
    not left waiting on the server (before issue 15 it gave up after 15 s client-side only)."""
    db = conn.info.dbname
    d = drivers(fresh_db_url, None, "--step-lock-timeout", "300ms")
    with psycopg.connect(cluster.url(db)) as holder:
        holder.execute("LOCK TABLE compute_auction.compute_auction_rounds IN ACCESS EXCLUSIVE MODE")
        try:
            status, body = http_json(d.port, "/api/compute-auction/stats?hours=1", timeout=60)
            assert status == 503, body

            # what the request ran is cancelled on the server (the cancel may land just after
            # the answer): the lock is still held, so only a cancel ends it; the deadline only
            # detects a statement left waiting
            def leftover():
                return conn.execute(
                    """SELECT pid, query FROM pg_stat_activity
                        WHERE application_name = %s AND datname = %s AND state = 'active'
                          AND query LIKE '%%compute_auction.stats(%%'""",
                    (APP, db),
                ).fetchall()

            wait_until(lambda: leftover() == [], timeout=10, what="the stats statement to be cancelled")
            assert _long_running(conn, db, "15 seconds") == []
        finally:
            holder.rollback()
