"""compute-auction-driver against a real database: the clearing loop, leader
election and hand-over, reconnection after the server restarts, graceful
shutdown, the JSON API (shapes, 400s, 404s), /healthz, /metrics, the
degraded switch, and the simulate workload.

Fixtures come from conftest.py: cluster, fresh_db_url, conn, driver_bin,
free_port, drivers. No test asserts how fast the driver is or how many rounds fall in a time
window: each waits for what it expects (a deadline only detects a hang), then checks it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg
import pytest

from conftest import LEADER_LOCK, http, http_json, metrics, wait_until

# ----------------------------------------------------------------- helpers --


def sql(url: str, query: str, params=None):
    """One query on a new connection (survives cluster restarts)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as c:
        cur = c.execute(query, params)
        return cur.fetchall() if cur.description else None


def round_count(url: str) -> int:
    return sql(url, "SELECT count(*) FROM compute_auction.compute_auction_rounds")[0][0]


def seed_market(conn, bids=(500, 400, 300), slots=2, reserve=0, prefix="t"):
    """Wallets, bids (one bidder each) and idle slots; returns the bid ids."""
    ids = []
    for i, price in enumerate(bids):
        conn.execute("SELECT compute_auction.open_account(%s, 'agent', 1000000)", (f"{prefix}-agent-{i}",))
        ids.append(
            conn.execute(
                "SELECT compute_auction.place_bid(%s, %s, %s, 1.5, now() + interval '10 minutes')",
                (f"{prefix}-agent-{i}", f"{prefix}-task-{i}", price),
            ).fetchone()[0]
        )
    for j in range(slots):
        conn.execute(
            "SELECT compute_auction.offer_slot(%s, now() - interval '1 second', %s)", (f"{prefix}-slot-{j}", reserve)
        )
    return ids


def assert_no_double_assignment(url: str) -> None:
    twice = sql(
        url,
        """SELECT slot_id, count(*) FROM compute_auction.compute_auction_clears
                        WHERE status = 'assigned' GROUP BY slot_id HAVING count(*) > 1""",
    )
    assert twice == [], f"slots assigned to two live clears: {twice}"
    reused = sql(
        url,
        """SELECT bid_id, count(*) FROM compute_auction.compute_auction_clears
                         GROUP BY bid_id HAVING count(*) > 1""",
    )
    assert reused == [], f"bids that won twice: {reused}"
    assert sql(url, "SELECT check_name, detail FROM compute_auction.audit()") == []


# ------------------------------------------------------------ subcommands --


def test_version_prints_the_installed_extension_version(driver_bin, fresh_db_url, conn):
    want = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'compute_auction'").fetchone()[0]
    out = subprocess.run(
        [driver_bin, "version"],
        env={**os.environ, "DATABASE_URL": fresh_db_url},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == want


def test_version_without_the_extension_fails_clearly(driver_bin, cluster):
    out = subprocess.run(
        [driver_bin, "--database-url", cluster.url("postgres"), "version"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode != 0
    assert "not installed" in out.stderr


def test_missing_database_url_is_a_usage_error(driver_bin):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    out = subprocess.run([driver_bin, "version"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "--database-url" in out.stderr


def test_help_explains_every_serve_flag(driver_bin):
    out = subprocess.run([driver_bin, "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for flag in [
        "--database-url",
        "--interval",
        "--listen",
        "--assignment-timeout",
        "--order-book-max-depth",
        "--fallback-after",
        "--daily-budget-tokens",
    ]:
        assert flag in out.stdout, flag


def test_serve_takes_every_option_from_the_environment(driver_bin, fresh_db_url, conn, free_port, tmp_path):
    """No flags at all: the database, the address, the interval and a step timeout come from
    DATABASE_URL and COMPUTE_AUCTION_* (README, the driver's environment variables)."""
    out = subprocess.run([driver_bin, "serve", "--help"], capture_output=True, text=True, timeout=30)
    for var in ["COMPUTE_AUCTION_LISTEN", "COMPUTE_AUCTION_INTERVAL", "COMPUTE_AUCTION_SHUTDOWN_TIMEOUT"]:
        assert f"[env: {var}" in out.stdout, var
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPUTE_AUCTION_")}
    env.update(
        DATABASE_URL=fresh_db_url,
        COMPUTE_AUCTION_LISTEN=f"127.0.0.1:{free_port}",
        COMPUTE_AUCTION_INTERVAL="250ms",
        COMPUTE_AUCTION_STEP_LOCK_TIMEOUT="700ms",
        RUST_LOG="info",
    )
    log = tmp_path / "driver.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([driver_bin, "serve"], stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until(lambda: http(free_port, "/healthz", timeout=3)[0] == 200, 60, what="/healthz 200")
            wait_until(lambda: round_count(fresh_db_url) >= 2, 60, what="two rounds")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    text = log.read_text()
    assert "interval_ms=250" in text, text
    assert "step_lock_timeout_ms=700" in text, text
    assert proc.returncode == 0, text


def test_clear_runs_one_cycle_and_prints_json(driver_bin, fresh_db_url, conn):
    ids = seed_market(conn, bids=(500, 400, 300), slots=2)
    out = subprocess.run(
        [driver_bin, "--database-url", fresh_db_url, "clear"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ok"] is True
    assert result["round"]["slots_filled"] == 2
    assert result["round"]["clearing_price_tokens"] == 300  # the 3rd-highest bid
    assert sorted(a["bid_id"] for a in result["assignments"]) == sorted(ids[:2])
    assert all(a["clearing_price_tokens"] == 300 for a in result["assignments"])
    assert result["refund_unfilled"] == {"bids_expired": 0, "tokens_refunded": 0}
    assert round_count(fresh_db_url) == 1


# ------------------------------------------------------------- the loop --


def at_most_one_round_per_interval(rounds: int, started: float, interval_s: float = 1.0) -> None:
    """The loop starts a cycle at least one interval after the previous one started, so in the
    wall time since `started` (taken before the driver was launched) there can be at most
    elapsed / interval + 1 rounds, however slow the machine is (slowness only means fewer).
    An upper bound that load cannot break, not a rate the machine has to reach."""
    elapsed = time.monotonic() - started
    assert rounds <= elapsed / interval_s + 1, f"{rounds} rounds in {elapsed:.1f}s: more than one per interval"


def test_a_round_happens_each_interval(drivers, fresh_db_url, free_port):
    started = time.monotonic()
    d = drivers(fresh_db_url, free_port)
    # the loop keeps clearing: five rounds, however long they take (the deadline detects a hang)
    wait_until(lambda: round_count(fresh_db_url) >= 5, 60, what="five rounds")
    m = metrics(d.port)
    n = round_count(fresh_db_url)
    at_most_one_round_per_interval(n, started)
    assert m["compute_auction_leader"] == 1.0
    assert m["compute_auction_rounds_cleared_total"] >= 5
    assert m["compute_auction_rounds_cleared_total"] <= n  # every round it counted is in the table
    assert m["compute_auction_clearing_errors_total"] == 0
    assert m["compute_auction_round_duration_seconds_count"] >= 5
    assert "round cleared" in d.log() and "round_id=" in d.log()


def test_rounds_fill_slots_and_report_price(drivers, fresh_db_url, conn, free_port):
    seed_market(conn, bids=(900, 700, 650), slots=2)
    d = drivers(fresh_db_url, free_port)
    wait_until(lambda: metrics(d.port).get("compute_auction_slots_filled_total") == 2.0, 60, what="two slots filled")
    m = metrics(d.port)
    assert m["compute_auction_last_clearing_price_tokens"] == 650
    rows = sql(
        fresh_db_url, "SELECT count(*) FROM compute_auction.compute_auction_clears WHERE clearing_price_tokens = 650"
    )
    assert rows[0][0] == 2


def test_two_drivers_never_both_clear(drivers, driver_bin, fresh_db_url, tmp_path):
    started = time.monotonic()  # before either driver can clear
    a = drivers(fresh_db_url)
    b = drivers(fresh_db_url)
    # a workload, so that there is something to double-assign if election failed
    sim_log = open(tmp_path / "sim.log", "wb")  # noqa: SIM115 - closed in the finally below
    sim = subprocess.Popen(
        [
            driver_bin,
            "--database-url",
            fresh_db_url,
            "simulate",
            "--agents",
            "8",
            "--quests",
            "2",
            "--slots",
            "3",
            "--duration",
            "9s",
            "--seed",
            "11",
            "--bids-per-second",
            "8",
        ],
        stdout=subprocess.DEVNULL,
        stderr=sim_log,
    )
    try:
        wait_until(lambda: a.is_leader() or b.is_leader(), 60, what="a leader")
        n0 = round_count(fresh_db_url)
        # sample the leader flags until the pair has cleared six more rounds (however long that takes)
        leaders = []
        deadline = time.monotonic() + 120  # detects a hang only
        while round_count(fresh_db_url) < n0 + 6:
            assert time.monotonic() < deadline, f"no six rounds within 120 s: {round_count(fresh_db_url) - n0}"
            leaders.append((a.is_leader(), b.is_leader()))
            time.sleep(0.5)
        leaders.append((a.is_leader(), b.is_leader()))
        n1 = round_count(fresh_db_url)
    finally:
        sim.wait(120)
        sim_log.close()
    assert all(x != y for x, y in leaders), f"leader flags over time: {leaders}"
    # both drivers clearing would mean up to two rounds per interval
    at_most_one_round_per_interval(n1, started)
    leader, follower = (a, b) if a.is_leader() else (b, a)
    assert metrics(follower.port)["compute_auction_rounds_cleared_total"] == 0
    assert "round cleared" not in follower.log()
    assert_no_double_assignment(fresh_db_url)
    assert sql(fresh_db_url, "SELECT count(*) FROM compute_auction.compute_auction_clears")[0][0] > 0


def test_leader_death_hands_over_to_the_follower(drivers, fresh_db_url):
    a = drivers(fresh_db_url)
    b = drivers(fresh_db_url)
    wait_until(lambda: a.is_leader() or b.is_leader(), 60, what="a leader")
    leader, follower = (a, b) if a.is_leader() else (b, a)
    wait_until(lambda: round_count(fresh_db_url) >= 2, 60, what="rounds from the leader")
    assert not follower.is_leader()
    last = sql(fresh_db_url, "SELECT max(round_id) FROM compute_auction.compute_auction_rounds")[0][0]
    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait(30)
    # the follower takes the lock (it retries every interval; the deadlines only detect a hang)
    wait_until(follower.is_leader, 60, what="the follower to take the lock")
    wait_until(
        lambda: sql(fresh_db_url, "SELECT max(round_id) FROM compute_auction.compute_auction_rounds")[0][0] > last,
        60,
        what="a round by the new leader",
    )
    n0 = round_count(fresh_db_url)
    wait_until(lambda: round_count(fresh_db_url) >= n0 + 2, 60, what="the new leader to keep clearing")
    assert "acquired leadership" in follower.log()


def test_sigterm_stops_gracefully_and_releases_the_lock(drivers, fresh_db_url, conn):
    d = drivers(fresh_db_url)
    wait_until(d.is_leader, 60, what="leadership")
    wait_until(lambda: round_count(fresh_db_url) >= 1, 60, what="a round")
    # stop() waits up to 30 s before it SIGKILLs (exit code -9): 0 means it stopped by itself
    code = d.stop(signal.SIGTERM)
    assert code == 0, d.log()
    log = d.log_path.read_text()
    assert "shutting down" in log and "stopped" in log
    # the leader lock is free again: anyone can take it at once
    got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LEADER_LOCK).fetchone()[0]
    assert got is True
    conn.execute("SELECT pg_advisory_unlock(%s, %s)", LEADER_LOCK)


def test_a_lock_held_elsewhere_keeps_the_driver_on_standby(drivers, fresh_db_url, conn):
    conn.execute("SELECT pg_advisory_lock(%s, %s)", LEADER_LOCK)
    d = drivers(fresh_db_url)
    time.sleep(2.5)  # a few tries for the lock: it must never lead while the lock is held elsewhere
    assert not d.is_leader()
    assert round_count(fresh_db_url) == 0
    conn.execute("SELECT pg_advisory_unlock(%s, %s)", LEADER_LOCK)
    wait_until(d.is_leader, 60, what="leadership once the lock is free")
    wait_until(lambda: round_count(fresh_db_url) >= 1, 60, what="a round")


def test_reconnects_after_the_database_restarts(drivers, fresh_db_url, cluster):
    d = drivers(fresh_db_url)
    wait_until(lambda: round_count(fresh_db_url) >= 2, 60, what="rounds before the restart")
    cluster.restart()
    restarted = sql(fresh_db_url, "SELECT now()")[0][0]
    wait_until(
        lambda: (
            sql(
                fresh_db_url,
                "SELECT count(*) FROM compute_auction.compute_auction_rounds WHERE cleared_at > %s",
                (restarted,),
            )[0][0]
            >= 3
        ),
        90,
        interval=0.25,
        what="rounds after the restart",
    )
    assert d.proc.poll() is None, "the driver died"
    status, body = http_json(d.port, "/healthz")
    assert status == 200 and body["leader"] is True, body
    assert metrics(d.port)["compute_auction_leader"] == 1.0


def test_healthz_is_503_while_the_database_is_down(drivers, fresh_db_url, cluster):
    d = drivers(fresh_db_url)
    wait_until(lambda: round_count(fresh_db_url) >= 1, 60, what="a round")
    status, body = http_json(d.port, "/healthz")
    assert status == 200 and body["status"] == "ok"
    cluster.stop()
    try:
        # it answers while the database is down (the client timeout detects a hang), with 503
        # once it has noticed (a cycle or a probe after the stop; the deadline detects a hang)
        status, body = wait_until(
            lambda: (r := http_json(d.port, "/healthz", timeout=30))[0] == 503 and r,
            30,
            interval=0.25,
            what="healthz 503 while the database is down",
        )
        assert body["status"] == "unavailable" and body["error"]
        status, body = http_json(d.port, "/api/compute-auction/order-book")
        assert status == 503 and "error" in body
        time.sleep(2)  # and it stays up during the outage
        assert d.proc.poll() is None
    finally:
        cluster.start()
    wait_until(lambda: http(d.port, "/healthz")[0] == 200, 60, interval=0.25, what="healthz back to 200")
    n = round_count(fresh_db_url)
    wait_until(lambda: round_count(fresh_db_url) >= n + 2, 60, interval=0.25, what="rounds after the outage")
    assert metrics(d.port)["compute_auction_database_unavailable_total"] >= 1


def test_degraded_after_consecutive_failures_and_back(drivers, fresh_db_url, conn):
    d = drivers(fresh_db_url, None, "--fallback-after", "2", "--daily-budget-tokens", "1000")
    wait_until(lambda: round_count(fresh_db_url) >= 1, 60, what="a round")
    # make clear_round fail while the database still accepts writes (not with a privilege error
    # or a missing function, 42501/42883, on which a leader steps down instead)
    conn.execute(
        "ALTER TABLE compute_auction.compute_auction_rounds ADD CONSTRAINT no_rounds_now CHECK (false) NOT VALID"
    )
    try:
        wait_until(lambda: metrics(d.port)["compute_auction_degraded"] == 1.0, 60, what="degraded")
        status, body = http_json(d.port, "/healthz")
        assert status == 503 and body["status"] == "degraded" and body["consecutive_failures"] >= 2
        assert d.is_leader() and body["reason"]
        m = metrics(d.port)
        assert m["compute_auction_clearing_errors_total"] >= 2

        # the proportional fallback was attempted: the scheduler reports degraded first, then
        # writes the fallback (a database call), so wait for the attempt (the deadline detects a hang)
        def fallback_attempts():
            m = metrics(d.port)
            return m["compute_auction_fallback_allocations_total"] + m["compute_auction_fallback_errors_total"]

        wait_until(lambda: fallback_attempts() >= 1, 60, interval=0.25, what="a fallback attempt")
    finally:
        conn.execute("ALTER TABLE compute_auction.compute_auction_rounds DROP CONSTRAINT no_rounds_now")
    wait_until(lambda: metrics(d.port)["compute_auction_degraded"] == 0.0, 60, what="back to normal")
    status, body = http_json(d.port, "/healthz")
    assert status == 200 and body["status"] == "ok" and body["consecutive_failures"] == 0


# ---------------------------------------------------------------- the API --


def test_order_book_shape_is_exactly_the_spec(drivers, fresh_db_url, conn, free_port):
    seed_market(conn, bids=(500, 400, 300), slots=0)
    conn.execute("SELECT compute_auction.offer_slot('later-slot', now() + interval '1 hour', 7)")
    conn.execute("SELECT pg_advisory_lock(%s, %s)", LEADER_LOCK)  # keep the driver from clearing
    d = drivers(fresh_db_url, free_port)
    status, book = http_json(d.port, "/api/compute-auction/order-book")
    assert status == 200
    # the book, and where it was read (no read database: the primary, current)
    assert set(book) == {"bids", "asks", "served_by", "data_age_ms"}
    assert (book["served_by"], book["data_age_ms"]) == ("primary", 0)
    assert [b["max_price_tokens"] for b in book["bids"]] == [500, 400, 300]
    for b in book["bids"]:
        assert set(b) == {
            "bid_id",
            "bidder_id",
            "task_id",
            "max_price_tokens",
            "expected_value_usd",
            "ttl_at",
            "placed_at",
        }
        assert isinstance(b["max_price_tokens"], int) and isinstance(b["bid_id"], int)
    assert book["asks"] == [
        {"slot_id": "later-slot", "available_at": book["asks"][0]["available_at"], "reserve_price_tokens": 7}
    ]
    assert set(book["asks"][0]) == {"slot_id", "available_at", "reserve_price_tokens"}
    # verbatim: the same document order_book() returns
    want = conn.execute("SELECT compute_auction.order_book(100)").fetchone()[0]
    assert book == {**want, "served_by": "primary", "data_age_ms": 0}
    status, book = http_json(d.port, "/api/compute-auction/order-book?depth=1")
    assert status == 200 and len(book["bids"]) == 1 and book["bids"][0]["max_price_tokens"] == 500
    status, book = http_json(d.port, "/api/compute-auction/order-book?depth=0")
    assert status == 200 and book == {"bids": [], "asks": [], "served_by": "primary", "data_age_ms": 0}


@pytest.mark.parametrize(
    "query",
    [
        "depth=-1",
        "depth=1001",
        "depth=abc",
        "depth=1.5",
        "depth=",
        "depth=1e3",
        "depth=99999999999999999999",
        "depth=%FF",
    ],
)
def test_order_book_rejects_bad_depth(drivers, fresh_db_url, free_port, query):
    d = drivers(fresh_db_url, free_port)
    status, body = http_json(d.port, f"/api/compute-auction/order-book?{query}")
    assert status == 400, (query, body)
    assert isinstance(body["error"], str) and body["error"]


def test_order_book_max_depth_flag(drivers, fresh_db_url, free_port):
    d = drivers(fresh_db_url, free_port, "--order-book-max-depth", "5")
    assert http_json(d.port, "/api/compute-auction/order-book?depth=5")[0] == 200
    status, body = http_json(d.port, "/api/compute-auction/order-book?depth=6")
    assert status == 400 and "5" in body["error"]
    assert http_json(d.port, "/api/compute-auction/order-book")[0] == 200  # default capped at 5


def test_bid_status_found_unknown_and_malformed(drivers, fresh_db_url, conn, free_port):
    ids = seed_market(conn, bids=(500,), slots=0)
    d = drivers(fresh_db_url, free_port)
    status, body = http_json(d.port, f"/api/compute-auction/bids/{ids[0]}")
    assert status == 200
    assert body == {
        **conn.execute("SELECT compute_auction.bid_status(%s)", (ids[0],)).fetchone()[0],
        "served_by": "primary",
        "data_age_ms": 0,
    }
    for unknown in [ids[0] + 1000, 0, -5, 9223372036854775807]:
        status, body = http_json(d.port, f"/api/compute-auction/bids/{unknown}")
        assert status == 404, (unknown, body)
        assert body["error"]
    for bad in ["abc", "1.5", "9223372036854775808", "%20"]:
        status, body = http_json(d.port, f"/api/compute-auction/bids/{bad}")
        assert status == 400, (bad, body)


def test_stats_window_and_bad_hours(drivers, fresh_db_url, conn, free_port):
    seed_market(conn, bids=(500, 400, 300), slots=2)
    d = drivers(fresh_db_url, free_port)
    wait_until(lambda: round_count(fresh_db_url) >= 2, 60, what="rounds")
    # the per-round list only when asked for (issue 15)
    status, body = http_json(d.port, "/api/compute-auction/stats?hours=24&include_rounds=true")
    assert status == 200
    assert set(body) >= {"rounds", "fill_rate", "top_winners"}
    assert len(body["rounds"]) >= 2
    assert [w["max_price_tokens"] for w in body["top_winners"]] == [500, 400]
    status, default = http_json(d.port, "/api/compute-auction/stats")
    assert status == 200 and set(default) >= {"rounds", "fill_rate", "top_winners"}
    assert http_json(d.port, "/api/compute-auction/stats?hours=0.5")[0] == 200
    assert http_json(d.port, "/api/compute-auction/stats?hours=720")[0] == 200
    for bad in ["0", "-1", "720.5", "abc", "", "nan", "inf", "1e999"]:
        status, body = http_json(d.port, f"/api/compute-auction/stats?hours={urllib.parse.quote(bad)}")
        assert status == 400, (bad, body)
        assert body["error"]


def test_price_to_win_is_json(drivers, fresh_db_url, free_port):
    """GET /api/compute-auction/price-to-win[?slots=n] is price_to_win(n), verbatim (issue 25):
    a market where no slot is free (one assigned) and one is available in an hour, so the
    advice is for the next slots to free up; the leader lock is held, so nothing clears."""
    with psycopg.connect(fresh_db_url, autocommit=True) as c:
        c.execute("SELECT pg_advisory_lock(%s, %s)", LEADER_LOCK)
        for a in ("pa", "pb", "pc"):
            c.execute("SELECT compute_auction.open_account(%s, 'agent', 100000)", (a,))
        c.execute("SELECT compute_auction.offer_slot('busy', now() - interval '1 minute', 0)")
        for a, p in (("pa", 900), ("pb", 500), ("pc", 300)):
            c.execute("SELECT compute_auction.place_bid(%s, %s, %s)", (a, f"t-{a}", p))
        c.execute("SELECT * FROM compute_auction.clear_round()")
        c.execute("SELECT compute_auction.offer_slot('later', now() + interval '1 hour', 40)")
        d = drivers(fresh_db_url, free_port)
        for query, slots in (("", None), ("?slots=1", 1), ("?slots=2", 2), ("?slots=5", 5)):
            status, body = http_json(d.port, f"/api/compute-auction/price-to-win{query}")
            assert status == 200, body
            want = c.execute("SELECT compute_auction.price_to_win(%s)", (slots,)).fetchone()[0]
            assert {k: v for k, v in body.items() if k not in ("served_by", "data_age_ms")} == want, query
        # no slot free: advice for the next one (the slot available in an hour), then for two
        assert (want["slots_available"], want["price_to_win_now"], want["slots_capped"]) == (0, None, True)
        _, one = http_json(d.port, "/api/compute-auction/price-to-win")
        assert (one["slots_free"], one["price_to_win"], one["next_slot_id"]) == (1, 501, "later")
        _, two = http_json(d.port, "/api/compute-auction/price-to-win?slots=2")
        assert two["price_to_win"] == 301
        for bad in ["0", "-1", "10001", "1.5", "abc", ""]:
            status, body = http_json(d.port, f"/api/compute-auction/price-to-win?slots={urllib.parse.quote(bad)}")
            assert status == 400, (bad, body)
            assert body["error"]


def test_healthz_metrics_openapi_and_unknown_paths(drivers, fresh_db_url, free_port):
    d = drivers(fresh_db_url, free_port)
    wait_until(lambda: round_count(fresh_db_url) >= 1, 60, what="a round")
    status, body = http_json(d.port, "/healthz")
    assert status == 200
    assert body["status"] == "ok" and body["leader"] is True and body["last_round_at"]
    status, headers, text = http(d.port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = text.decode()
    for name in [
        "compute_auction_rounds_cleared_total",
        "compute_auction_slots_filled_total",
        "compute_auction_bids_refunded_total",
        "compute_auction_tokens_refunded_total",
        "compute_auction_clearing_errors_total",
        "compute_auction_round_duration_seconds_bucket",
        "compute_auction_consecutive_failures",
        "compute_auction_leader",
        "compute_auction_open_bids",
        "compute_auction_bids_placed",
    ]:
        assert f"\n{name}" in text, name
    status, headers, spec = http(d.port, "/openapi.yaml")
    assert status == 200 and spec.startswith(b"openapi: 3.")
    assert spec == (Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml").read_bytes()
    status, body = http_json(d.port, "/no/such/path")
    assert status == 404 and body["error"]


def test_dashboard_bundle_aggregates_rounds(drivers, fresh_db_url, conn, free_port):
    seed_market(conn, bids=(500, 400, 300), slots=2)
    for _ in range(3):
        conn.execute("SELECT * FROM compute_auction.clear_round()")
    conn.execute("SELECT pg_advisory_lock(%s, %s)", LEADER_LOCK)
    d = drivers(fresh_db_url, free_port)
    status, body = http_json(d.port, "/api/compute-auction/dashboard")
    assert status == 200
    assert body["totals"]["rounds"] == 3
    assert body["totals"]["slots_filled"] == 2
    assert sum(b["rounds"] for b in body["chart"]["buckets"]) == 3
    assert len(body["chart"]["buckets"]) <= 96
    assert body["last_priced_round"]["clearing_price_tokens"] == 300
    assert [w["max_price_tokens"] for w in body["top_winners"]] == [500, 400]
    assert set(body["order_book"]) == {"bids", "asks"}
    assert body["market"]["open_bids"] == 1
    assert body["driver"]["leader"] is False
    assert "rounds" not in body  # never the raw rounds
    status, headers, page = http(d.port, "/resources")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'id="fill-rate"' in page and b"__INITIAL_DATA__" not in page


# ---------------------------------------------------------------- simulate --


def test_simulate_keeps_the_market_moving(drivers, driver_bin, fresh_db_url, free_port, tmp_path):
    d = drivers(fresh_db_url, free_port)
    # simulate until SIGTERM (--duration 0), stopped once the market has moved as much as the
    # checks need, however long that takes: at least 40 bids, 5 settled runs and 3 distinct
    # clearing prices (the deadline only detects a hang)
    with open(tmp_path / "simulate.err", "wb") as err:
        sim = subprocess.Popen(
            [driver_bin, "--database-url", fresh_db_url, "simulate", "--duration", "0", "--seed", "7"],
            stdout=subprocess.PIPE,
            stderr=err,
        )
        try:

            def moved() -> bool:
                ((bids, settled, prices),) = sql(
                    fresh_db_url,
                    "SELECT (SELECT count(*) FROM compute_auction.compute_auction_bids WHERE bidder_id LIKE 'sim-%%'),"
                    " (SELECT count(*) FROM compute_auction.compute_auction_clears WHERE status = 'settled'),"
                    " (SELECT count(DISTINCT clearing_price_tokens) FROM compute_auction.compute_auction_rounds"
                    "   WHERE clearing_price_tokens IS NOT NULL)",
                )
                assert sim.poll() is None, f"simulate exited with {sim.returncode}"
                return bids >= 40 and settled >= 5 and prices >= 3

            wait_until(moved, 300, interval=0.5, what="40 bids, 5 settled runs and 3 clearing prices")
        finally:
            if sim.poll() is None:
                sim.send_signal(signal.SIGTERM)
            stdout, _ = sim.communicate(timeout=60)
    stderr = (tmp_path / "simulate.err").read_text(errors="replace")
    assert sim.returncode == 0, stderr[-2000:]
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert summary["bids_placed"] >= 40, summary
    assert summary["settled"] >= 5, summary
    assert summary["unexpected_errors"] == {}, summary
    accounts = sql(
        fresh_db_url,
        "SELECT kind, count(*) FROM compute_auction.token_accounts "
        "WHERE account_id LIKE 'sim-%%' GROUP BY kind ORDER BY kind",
    )
    assert accounts == [("agent", 30), ("quest", 6)]
    prices = sql(
        fresh_db_url,
        "SELECT DISTINCT clearing_price_tokens FROM compute_auction.compute_auction_rounds "
        "WHERE clearing_price_tokens IS NOT NULL",
    )
    assert len(prices) >= 3, f"clearing prices did not move: {prices}"
    assert_no_double_assignment(fresh_db_url)
    # a second run reuses the wallets (23505 ignored) and still works
    out = subprocess.run(
        [driver_bin, "--database-url", fresh_db_url, "simulate", "--duration", "2s", "--seed", "8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert d.proc.poll() is None
