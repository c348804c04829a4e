"""Issue 15, point 3: stats() and the HTTP stats endpoint return a bounded number of rounds.

30 days of 1-second rounds (2,592,000 rows, inserted directly) is the history of the issue's
report. Each test fails on the code before issue 15: stats() had no max_rounds argument (42883)
and returned every round of its window, and the endpoint asked for all of them (hundreds of MB;
the request does not finish within its deadline)."""

import threading

import psycopg

from conftest import http_json, metrics, sqlstate_of, wait_until

DAYS_OF_SECONDS = 30 * 86_400


def _thirty_days_of_rounds(conn: psycopg.Connection) -> int:
    """Inserts one round a second for the last 30 days (newest 10 s ago); returns the newest id."""
    conn.execute(
        """INSERT INTO compute_auction.compute_auction_rounds
                  (round_id, cleared_at, slots_offered, bids_eligible, slots_filled, clearing_price_tokens)
           SELECT g, now() - interval '720 hours' + g * interval '1 second' - interval '10 seconds', 1, 1, 1, 100
             FROM generate_series(1, %s) AS g""",
        (DAYS_OF_SECONDS - 60,),
    )
    conn.execute("ANALYZE compute_auction.compute_auction_rounds")
    conn.execute(
        "SELECT setval(pg_get_serial_sequence('compute_auction.compute_auction_rounds', 'round_id'), %s)",
        (DAYS_OF_SECONDS - 60,),
    )
    # written by hand: the rounds' summaries as clear_round keeps them (stats' fill rate reads them)
    conn.execute("SELECT compute_auction.rebuild_round_summaries()")
    return DAYS_OF_SECONDS - 60


def _stats(conn, *args):
    placeholders = ", ".join(["%s"] * len(args))
    return conn.execute(f"SELECT compute_auction.stats(now() - interval '720 hours', {placeholders})", args).fetchone()[
        0
    ]


def test_stats_keeps_the_newest_max_rounds_in_round_id_order(conn):
    """Fails before issue 15: stats(since, include_rounds, max_rounds) does not exist (42883)."""
    newest = _thirty_days_of_rounds(conn)
    for n in (0, 1, 500, 1000):
        s = _stats(conn, True, n)
        ids = [r["round_id"] for r in s["rounds"]]
        assert ids == list(range(newest - n + 1, newest + 1)), (n, ids[:3], ids[-3:])
        assert s["rounds_truncated"] is True
        assert s["fill_rate"] == 1.0  # the whole window, not only the rounds listed
    # the default is 1000
    default = conn.execute("SELECT compute_auction.stats(now() - interval '720 hours')").fetchone()[0]
    assert len(default["rounds"]) == 1000 and default["rounds_truncated"] is True
    # a window that fits is not truncated
    since = conn.execute("SELECT now() - interval '5 minutes'").fetchone()[0]  # one fixed window
    small = conn.execute("SELECT compute_auction.stats(%s, true, 1000)", (since,)).fetchone()[0]
    assert 0 < len(small["rounds"]) <= 301 and small["rounds_truncated"] is False
    exact = conn.execute("SELECT compute_auction.stats(%s, true, %s)", (since, len(small["rounds"]))).fetchone()[0]
    assert exact["rounds"] == small["rounds"] and exact["rounds_truncated"] is False
    # without rounds: null, not truncated
    none = _stats(conn, False, 10)
    assert none["rounds"] is None and none["rounds_truncated"] is False


def test_stats_max_rounds_errors(conn):
    """Fails before issue 15: there is no max_rounds argument (42883 instead of 22023/22004)."""
    since = "now() - interval '1 hour'"
    assert sqlstate_of(conn, f"SELECT compute_auction.stats({since}, true, -1)") == "22023"
    assert sqlstate_of(conn, f"SELECT compute_auction.stats({since}, true, 100001)") == "22023"
    assert sqlstate_of(conn, f"SELECT compute_auction.stats({since}, true, NULL)") == "22004"
    assert sqlstate_of(conn, f"SELECT compute_auction.stats({since}, true, 100000)") is None


def test_http_stats_returns_rounds_only_when_asked_and_at_most_10000(conn, drivers, fresh_db_url):
    """Fails before issue 15: the endpoint returned every round of the window (2.6M here, far
    beyond the 60 s deadline of these requests) and had no include_rounds / max_rounds."""
    newest = _thirty_days_of_rounds(conn)
    d = drivers(fresh_db_url)
    status, body = http_json(d.port, "/api/compute-auction/stats?hours=720", timeout=60)
    assert status == 200, body
    assert body["rounds"] is None and body["rounds_truncated"] is False
    assert body["fill_rate"] is not None

    status, body = http_json(d.port, "/api/compute-auction/stats?hours=720&include_rounds=true", timeout=60)
    assert status == 200, body
    assert len(body["rounds"]) == 1000 and body["rounds_truncated"] is True

    path = "/api/compute-auction/stats?hours=720&include_rounds=true&max_rounds=20000"
    status, body = http_json(d.port, path, timeout=60)
    assert status == 200, body
    ids = [r["round_id"] for r in body["rounds"]]
    assert len(ids) == 10_000 and body["rounds_truncated"] is True
    assert ids == sorted(ids) and ids[-1] >= newest  # the driver's own rounds may be newer

    for bad in ("include_rounds=yes", "include_rounds=true&max_rounds=-1", "include_rounds=true&max_rounds=x"):
        status, body = http_json(d.port, f"/api/compute-auction/stats?hours=1&{bad}")
        assert status == 400, (bad, body)


def _newest_round(conn) -> int:
    return conn.execute("SELECT max(round_id) FROM compute_auction.compute_auction_rounds").fetchone()[0]


def test_the_driver_keeps_clearing_while_clients_fetch_stats_in_a_loop(conn, drivers, fresh_db_url):
    """Four clients fetch stats?hours=720&include_rounds=true in a loop against 30 days of
    1-second rounds, through a pool of 4 connections: the driver's rounds keep coming (waited
    for with a deadline that only detects a hang), and no cycle step fails or times out while
    the load runs, and the driver is not degraded at the end. Nothing here asserts how fast a round
    comes. Fails before issue 15: the clearing cycle took its connection from the HTTP pool,
    which the four (unbounded, many-second) requests keep busy, and the cycle timed out
    waiting for a pooled connection (a clearing error each time)."""
    _thirty_days_of_rounds(conn)
    interval = 1.0
    d = drivers(fresh_db_url, None, "--pool-size", "4", interval="1s")
    wait_until(lambda: metrics(d.port).get("compute_auction_rounds_cleared_total", 0) >= 1, 30, what="a first round")
    before = _failures(metrics(d.port))  # before the load starts
    stop = threading.Event()
    done = []

    def client():
        while not stop.is_set():
            try:
                status, _ = http_json(d.port, "/api/compute-auction/stats?hours=720&include_rounds=true", timeout=30)
                done.append(status)
            except OSError as e:  # a timeout is the server's to avoid, not this test's subject
                done.append(repr(e))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(done) >= 4, 120, what="the load to be running")
        first = _newest_round(conn)
        # five rounds take about 5 s at a 1 s interval: 60 s only detects a hang
        wait_until(lambda: _newest_round(conn) >= first + 5, 60 * interval, what="five rounds under load")
        served = len(done)
        wait_until(lambda: len(done) > served, 120, what="the load to be still running")
        after = metrics(d.port)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert _failures(after) == before, "a cycle step failed or timed out while clients fetched stats"
    assert after.get("compute_auction_degraded") == 0
    assert done.count(200) >= 4, done


def _failures(m: dict[str, float]) -> dict[str, float]:
    """The driver's counters of failed or abandoned cycle steps and clearing calls."""
    prefixes = (
        "compute_auction_clearing_errors_total",
        "compute_auction_cycle_step_errors_total",
        "compute_auction_cycle_step_timeouts_total",
        "compute_auction_database_unavailable_total",
    )
    return {k: v for k, v in m.items() if k.startswith(prefixes)}
