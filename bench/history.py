"""Issue 21's advice-vs-history cell: price_to_win() and the dashboard endpoint after a long
history of one-second rounds, divided by the same after one hour.

Two databases, built by bulk SQL with the per-round shape of the dashboard section's day
(`write_rounds`): one round a second ending now, each filling one slot with a settled clear of
its own settled bid. One holds an hour of them, the other 30 days (2,592,000 rounds; --quick: 2
days). Then, alternating the two databases call by call, the median of price_to_win() over one
connection per database and the median of GET /api/compute-auction/dashboard from a driver per
database; and, in one snapshot per database, the percentiles price_to_win returns against the
documented definition computed directly ("still exact").
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import urllib.request

DASH_ACCOUNTS = 1_000
SLOTS = 74
HOUR = 3_600

# the documented definition of recent_clearing_p50/p90 (docs/SQL_API.md, price_to_win)
EXACT = """SELECT p[1], p[2] FROM (
  SELECT percentile_disc(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY clearing_price_tokens) AS p
    FROM compute_auction.compute_auction_rounds
   WHERE cleared_at >= now() - interval '24 hours' AND clearing_price_tokens IS NOT NULL) AS r"""

ROUNDS = """
INSERT INTO compute_auction.compute_auction_rounds
       (cleared_at, slots_offered, bids_eligible, slots_filled, clearing_price_tokens, duration_ms)
SELECT now() - make_interval(secs => (%(n)s - g)::double precision),
       %(slots)s, 100, 1, 500 + (g * 7919) %% 1000, 0.5
  FROM generate_series(1, %(n)s::bigint) AS g"""

BIDS = """
INSERT INTO compute_auction.compute_auction_bids
       (bidder_id, task_id, max_price_tokens, ttl_at, status, placed_at, round_id)
SELECT 'dash-' || (r.round_id %% %(accts)s + 1), 'dash-task-' || r.round_id,
       r.clearing_price_tokens + 1 + (r.round_id * 104729) %% 5000,
       r.cleared_at + interval '15 minutes', 'settled', r.cleared_at - interval '1 second', r.round_id
  FROM compute_auction.compute_auction_rounds AS r"""

CLEARS = """
INSERT INTO compute_auction.compute_auction_clears
       (slot_id, round_id, bid_id, bidder_id, winning_task_id, clearing_price_tokens,
        max_price_tokens, slot_started_at, slot_finished_at, actual_cost_tokens, actual_impact, status)
SELECT 'slot-' || lpad((b.round_id %% %(slots)s + 1)::text, 2, '0'), b.round_id, b.id,
       b.bidder_id, b.task_id, r.clearing_price_tokens, b.max_price_tokens, r.cleared_at,
       r.cleared_at + interval '1 second', r.clearing_price_tokens, ((b.id * 31) %% 100) / 10.0, 'settled'
  FROM compute_auction.compute_auction_bids AS b
  JOIN compute_auction.compute_auction_rounds AS r USING (round_id)"""


def median(xs):
    return statistics.median(xs) if xs else None


def write_rounds(b, db: str, n: int) -> dict:
    """Writes n one-second rounds ending now into the fresh database db, one INSERT per table
    with every index in place: rounds, then a settled bid per round (1,000 accounts), then a
    settled clear per round (74 slots in turn); then a small open book placed by place_bid,
    VACUUM ANALYZE (autovacuum's work on a real history), and the extension's round summaries
    rebuilt when it has them. Returns the seconds each step took."""
    b.create_db(db)
    took: dict = {}
    with b.conn(db) as c:
        c.execute("SET synchronous_commit = off")
        c.execute("SET maintenance_work_mem = '512MB'")
        c.execute(
            "INSERT INTO compute_auction.token_accounts (account_id, kind) "
            "SELECT 'dash-' || i, 'agent' FROM generate_series(1, %s) AS i",
            (DASH_ACCOUNTS,),
        )
        c.execute(
            "SELECT count(compute_auction.offer_slot('slot-' || lpad(i::text, 2, '0'), "
            "now() - interval '1 minute', 0)) FROM generate_series(1, %s) AS i",
            (SLOTS,),
        )
        # the rows reference only what exists by construction (the 1,000 accounts, the 74 slots,
        # the rounds and bids just written), so the foreign-key triggers, which are most of the
        # cost of these INSERTs, are skipped for them (as a data-only restore does); every index
        # is maintained as the rows go in
        c.execute("SET session_replication_role = replica")
        for key, q in (("rounds_s", ROUNDS), ("bids_s", BIDS), ("clears_s", CLEARS)):
            t = time.monotonic()
            c.execute(q, {"n": n, "slots": SLOTS, "accts": DASH_ACCOUNTS})
            took[key] = time.monotonic() - t
        c.execute("RESET session_replication_role")
        # a small open book, placed the ordinary way
        c.execute(
            "SELECT count(compute_auction.deposit('dash-' || i, 1000000, 'bench')) FROM generate_series(1, 100) AS i"
        )
        c.execute(
            "SELECT count(compute_auction.place_bid('dash-' || i, 'dash-open-' || i, 100 + i)) "
            "FROM generate_series(1, 100) AS i"
        )
    t = time.monotonic()
    for table in ("compute_auction_rounds", "compute_auction_bids", "compute_auction_clears"):
        b.sql(db, f"VACUUM ANALYZE compute_auction.{table}")
    took["vacuum_s"] = time.monotonic() - t
    took.update(rebuild_summaries(b, db))
    return took


def rebuild_summaries(b, db: str) -> dict:
    """compute_auction.rebuild_round_summaries() (the operator function that rebuilds the round
    summaries clear_round maintains) when this build of the extension has it: the rounds above
    were written directly, not by clear_round."""
    have = b.one(
        db,
        "SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'compute_auction' AND p.proname = 'rebuild_round_summaries'",
    )
    if not have:
        return {"summaries": "absent (this build has no compute_auction.rebuild_round_summaries())"}
    t = time.monotonic()
    b.sql(db, "SELECT compute_auction.rebuild_round_summaries()")
    return {"summaries": "rebuilt", "summaries_s": time.monotonic() - t}


def exactness(b, db: str) -> dict:
    """price_to_win()'s percentiles and the documented definition, computed by a direct query in
    the same REPEATABLE READ transaction (one snapshot, one now())."""
    with b.conn(db, autocommit=False) as c:
        c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        ptw = c.execute("SELECT compute_auction.price_to_win()").fetchone()[0]
        p50, p90 = c.execute(EXACT).fetchone()
        window = c.execute(
            "SELECT count(*) FROM compute_auction.compute_auction_rounds "
            "WHERE cleared_at >= now() - interval '24 hours' AND clearing_price_tokens IS NOT NULL"
        ).fetchone()[0]
        c.rollback()
    got = (ptw.get("recent_clearing_p50"), ptw.get("recent_clearing_p90"))
    return {"price_to_win": list(got), "direct": [p50, p90], "window_rounds": window, "exact": got == (p50, p90)}


def alternate_price_to_win(b, dbs: list[str], reps: int) -> dict:
    """The median ms of price_to_win() per database, one connection each, the databases taking
    turns call by call (the first of each pair alternating)."""
    conns = {db: b.conn(db) for db in dbs}
    ms: dict = {db: [] for db in dbs}
    try:
        for c in conns.values():
            for _ in range(3):  # warm: plans, caches
                c.execute("SELECT compute_auction.price_to_win()", prepare=True).fetchone()
        for i in range(reps):
            for db in dbs if i % 2 == 0 else list(reversed(dbs)):
                t = time.perf_counter()
                conns[db].execute("SELECT compute_auction.price_to_win()", prepare=True).fetchone()
                ms[db].append((time.perf_counter() - t) * 1000)
    finally:
        for c in conns.values():
            c.close()
    return {db: {"median_ms": median(v), "ms": v} for db, v in ms.items()}


# the statements the dashboard bundle runs (driver/src/dashboard.rs `collect`, driver/src/db.rs),
# each alone: which part grows with history, and which costs the same after an hour
BUNDLE_PARTS = {
    "price_history(24 h, 96)": "SELECT count(*) FROM compute_auction.price_history(now() - interval '24 hours', 96)",
    "stats(24 h, false)": "SELECT compute_auction.stats(now() - make_interval(secs => 86400::float8), false)::text",
    "order_book(20)": "SELECT compute_auction.order_book(20)::text",
    "market_summary()": "SELECT compute_auction.market_summary()::text",
    "last priced round": "SELECT round_id FROM (SELECT round_id, clearing_price_tokens "
    "FROM compute_auction.compute_auction_rounds ORDER BY round_id DESC LIMIT 5000) r "
    "WHERE clearing_price_tokens IS NOT NULL ORDER BY round_id DESC LIMIT 1",
    "price_to_win()": "SELECT compute_auction.price_to_win()::text",
}


def alternate_parts(b, dbs: list[str], reps: int) -> dict:
    """The median ms of each of the bundle's statements alone, one connection per database, the
    databases taking turns statement by statement."""
    conns = {db: b.conn(db) for db in dbs}
    out: dict = {}
    try:
        for part, q in BUNDLE_PARTS.items():
            ms: dict = {db: [] for db in dbs}
            for i in range(reps + 1):  # the first of each is a warm-up
                for db in dbs if i % 2 == 0 else list(reversed(dbs)):
                    t = time.perf_counter()
                    conns[db].execute(q).fetchall()
                    if i:
                        ms[db].append((time.perf_counter() - t) * 1000)
            out[part] = {db: median(v) for db, v in ms.items()}
    finally:
        for c in conns.values():
            c.close()
    return out


def get_ms(url: str) -> tuple[float, dict]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        body = r.read()
    return (time.perf_counter() - t) * 1000, json.loads(body)


def alternate_dashboard(b, dbs: list[str], reps: int) -> dict:
    """The median ms of GET /api/compute-auction/dashboard per database, one driver per database
    (its clearing loop standing by: the benchmark holds its leader lock), requests alternating."""
    holders, drivers, urls = [], [], {}
    try:
        for i, db in enumerate(dbs):
            h = b.conn(db)
            h.execute("SELECT pg_advisory_lock(%s, %s)", b.leader_lock)
            holders.append(h)
            port = b.port + 5 + i
            logf = open(b.logs / f"driver-history-{db}.log", "w")  # noqa: SIM115 - closed with the driver
            cmd = [b.driver, "serve", "--database-url", b.url(db), "--interval", "1s", "--listen", f"127.0.0.1:{port}"]
            drivers.append((subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT), logf))
            urls[db] = f"http://127.0.0.1:{port}/api/compute-auction/dashboard"
        out: dict = {}
        for db, url in urls.items():
            b.wait_http(url.replace("/api/compute-auction/dashboard", "/openapi.yaml"))
            first, body = get_ms(url)
            out[db] = {"first_ms": first, "ms": [], "errors": body.get("errors"), "rounds": body["totals"]["rounds"]}
        for i in range(reps):
            for db in dbs if i % 2 == 0 else list(reversed(dbs)):
                out[db]["ms"].append(get_ms(urls[db])[0])
        for v in out.values():
            v["median_ms"] = median(v["ms"])
        return out
    finally:
        for drv, logf in drivers:
            b.stop_driver(drv, logf)
        for h in holders:
            h.close()


def run(b) -> dict:
    """The cell: build both histories, check exactness, measure alternating, audit both."""
    long_rounds = (2 if b.quick else 30) * 86_400
    reps = 10 if b.quick else 30
    dbs = {"hour": "history_hour", "long": "history_long"}
    res: dict = {"rounds": {"hour": HOUR, "long": long_rounds}, "reps": reps}
    for key, n in (("hour", HOUR), ("long", long_rounds)):
        b.log(f"history: {n:,} one-second rounds with settled bids and clears, written by bulk SQL ({key})")
        t = time.monotonic()
        res.setdefault("build", {})[key] = write_rounds(b, dbs[key], n)
        res["build"][key]["total_s"] = time.monotonic() - t
        b.log(f"history: built {key} in {res['build'][key]['total_s']:.1f} s: {res['build'][key]}")
    res["exact"] = {key: exactness(b, db) for key, db in dbs.items()}
    ptw = alternate_price_to_win(b, list(dbs.values()), reps)
    dash = alternate_dashboard(b, list(dbs.values()), max(6, reps // 2))
    parts = alternate_parts(b, list(dbs.values()), 3 if b.quick else 5)
    res["parts"] = {part: {key: v[db] for key, db in dbs.items()} for part, v in parts.items()}
    res["price_to_win"] = {key: ptw[db] for key, db in dbs.items()}
    res["dashboard"] = {key: dash[db] for key, db in dbs.items()}
    for what in ("price_to_win", "dashboard"):
        a, h = res[what]["long"]["median_ms"], res[what]["hour"]["median_ms"]
        res[what]["ratio"] = a / h if a and h else None
    res["audit_rows"] = {key: b.audit(db, f"history-{key}") for key, db in dbs.items()}
    b.log(
        f"history: price_to_win {res['price_to_win']['long']['median_ms']:.2f} vs "
        f"{res['price_to_win']['hour']['median_ms']:.2f} ms ({res['price_to_win']['ratio']:.2f}x), dashboard "
        f"{res['dashboard']['long']['median_ms']:.1f} vs {res['dashboard']['hour']['median_ms']:.1f} ms "
        f"({res['dashboard']['ratio']:.2f}x), exact {[v['exact'] for v in res['exact'].values()]}"
    )
    for db in dbs.values():
        b.sql("postgres", f'DROP DATABASE "{db}"')
    return res
