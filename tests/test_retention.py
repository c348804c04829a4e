"""Retention (issue 24): prune_history over a day of history, the ledger's checkpoints, idempotency
keys across a prune, bounded tables across repeated prunes, a prune beside a busy market, and a
dump/restore of a pruned database.

The day of history is written by bulk SQL (seconds, not the hours calling the functions 86,400
times would take) that writes exactly the rows the functions write: a round a second, a settled
win a minute (escrow, charge and premium entries, a settled clear), a bid that expires unfilled a
minute (escrow and refund, a round_skips row, the refund counter's delta), a keyed deposit every
ten minutes, and, older than the horizon, an open bid, a won bid with its assigned clear and a
settled win whose wallet entries are still pending. audit() is asserted clean before any prune,
so the generator itself is checked.
"""

from __future__ import annotations

import random
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest

from conftest import (
    assert_audit_clean,
    drop_database,
    http_json,
    metrics,
    new_database,
    snapshot,
    sqlstate_of,
    wait_until,
)

PRUNE = "SELECT table_name, rows_removed, more FROM compute_auction.prune_history(%s::interval)"

HISTORY = """
CREATE TEMP TABLE h_clock AS SELECT now() - interval '1 day' - interval '5 minutes' AS start, now() AS t;

-- ten agent wallets, opened nine days ago
INSERT INTO compute_auction.token_accounts (account_id, kind, created_at, updated_at)
SELECT 'h' || a, 'agent', c.t - interval '9 days', c.t - interval '9 days' FROM generate_series(0, 9) a, h_clock c;
INSERT INTO compute_auction.compute_slots (slot_id, status, available_at)
SELECT s, 'idle', c.start FROM unnest(ARRAY['slot-h', 'slot-pend']) s, h_clock c;
INSERT INTO compute_auction.compute_slots (slot_id, status, available_at)
SELECT 'slot-live', 'assigned', c.start FROM h_clock c;

-- a round a second for a day
INSERT INTO compute_auction.compute_auction_rounds
       (round_id, cleared_at, slots_offered, bids_eligible, slots_filled, clearing_price_tokens, duration_ms)
SELECT i + 1, c.start + i * interval '1 second', 1,
       CASE WHEN i % 60 IN (0, 15, 30, 45) THEN 1 ELSE 0 END,
       CASE WHEN i % 60 = 0 OR i IN (86400 - 3 * 3600 + 15, 86400 - 4 * 3600 + 45) THEN 1 ELSE 0 END,
       CASE WHEN i % 60 = 0 OR i IN (86400 - 3 * 3600 + 15, 86400 - 4 * 3600 + 45) THEN 100 + (i / 60) % 50 END,
       1.0
  FROM generate_series(0, 86399) i, h_clock c;
SELECT setval('compute_auction.compute_auction_rounds_round_id_seq', 86400);

-- the bids: a settled win a minute, an expired bid a minute; and three live ones
CREATE TEMP TABLE h_bids AS
SELECT 'won-' || i AS task, 'h' || ((i / 60) % 10) AS bidder, 200::bigint AS max_price,
       c.start + i * interval '1 second' - interval '20 seconds' AS placed_at,
       c.start + i * interval '1 second' + interval '15 minutes' AS ttl_at,
       'settled' AS status, c.start + i * interval '1 second' + interval '30 seconds' AS updated_at,
       i + 1 AS round_id, (100 + (i / 60) % 50)::bigint AS price, 'slot-h' AS slot, 'settled' AS clear_status,
       false AS pending
  FROM generate_series(0, 86399, 60) i, h_clock c
UNION ALL
SELECT 'exp-' || i, 'h' || ((i / 60 + 5) % 10), 50, c.start + i * interval '1 second',
       c.start + i * interval '1 second' + interval '60 seconds', 'expired',
       c.start + i * interval '1 second' + interval '60 seconds', NULL, NULL, NULL, NULL, false
  FROM generate_series(30, 86399, 60) i, h_clock c
UNION ALL
SELECT 'live-open', 'h1', 300, c.t - interval '2 hours', c.t + interval '20 days', 'open', c.t - interval '2 hours',
       NULL, NULL, NULL, NULL, false FROM h_clock c
UNION ALL
SELECT 'live-won', 'h2', 200, c.start + (86400 - 3 * 3600 + 15) * interval '1 second' - interval '10 seconds',
       c.t + interval '1 day', 'won', c.start + (86400 - 3 * 3600 + 15) * interval '1 second',
       86400 - 3 * 3600 + 15 + 1, 100 + ((86400 - 3 * 3600 + 15) / 60) % 50, 'slot-live', 'assigned', false
  FROM h_clock c
UNION ALL
SELECT 'pend', 'h3', 200, c.start + (86400 - 4 * 3600 + 45) * interval '1 second' - interval '10 seconds',
       c.t + interval '1 day', 'settled',
       c.start + (86400 - 4 * 3600 + 45) * interval '1 second' + interval '30 seconds',
       86400 - 4 * 3600 + 45 + 1, 100 + ((86400 - 4 * 3600 + 45) / 60) % 50, 'slot-pend', 'settled', true
  FROM h_clock c;
ALTER TABLE h_bids ADD COLUMN id bigint;
UPDATE h_bids b SET id = n.id FROM (SELECT task, row_number() OVER (ORDER BY placed_at, task) AS id FROM h_bids) n
 WHERE n.task = b.task;
INSERT INTO compute_auction.compute_auction_bids
       (id, bidder_id, task_id, max_price_tokens, ttl_at, status, placed_at, last_result, round_id, updated_at)
SELECT id, bidder, task, max_price, ttl_at, status, placed_at,
       CASE status WHEN 'settled' THEN 'settled at ' || price WHEN 'expired' THEN 'expired unfilled' END,
       round_id, updated_at
  FROM h_bids;
SELECT setval('compute_auction.compute_auction_bids_id_seq', (SELECT max(id) FROM h_bids));
INSERT INTO compute_auction.compute_auction_clears
       (slot_id, round_id, bid_id, bidder_id, winning_task_id, clearing_price_tokens, max_price_tokens,
        slot_started_at, slot_finished_at, actual_cost_tokens, actual_impact, status)
SELECT b.slot, b.round_id, b.id, b.bidder, b.task, b.price, b.max_price, r.cleared_at,
       CASE WHEN b.clear_status = 'settled' THEN b.updated_at END,
       CASE WHEN b.clear_status = 'settled' THEN 10 END, CASE WHEN b.clear_status = 'settled' THEN 1.0 END,
       b.clear_status
  FROM h_bids b JOIN compute_auction.compute_auction_rounds r USING (round_id);
-- each expired bid was skipped by the round after the one it was placed in
INSERT INTO compute_auction.round_skips (round_id, bid_id)
SELECT r.round_id + 1, b.id FROM h_bids b JOIN compute_auction.compute_auction_rounds r ON r.cleared_at = b.placed_at
 WHERE b.status = 'expired';
-- the pending win's charge and premium
INSERT INTO compute_auction.pending_entries
       (entry_id, account_id, bid_id, slot_id, round_id, entry_kind, delta_balance, delta_held, reason, created_at)
SELECT n, b.bidder, b.id, b.slot, b.round_id, e.kind, e.db, e.dh, e.reason, b.updated_at
  FROM h_bids b,
       LATERAL (VALUES (1, 'charge', 0::bigint, -b.price, 'clearing price of a settled run'),
                       (2, 'premium', b.max_price - b.price, -(b.max_price - b.price), 'winning premium returned'))
               AS e(n, kind, db, dh, reason)
 WHERE b.pending;
SELECT setval('compute_auction.pending_entries_entry_id_seq', 2);

-- the ledger, in time order, with each entry's balances after it
CREATE TEMP TABLE h_ledger AS
SELECT 'h' || a AS account_id, c.t - interval '9 days' AS at, 1 AS ord, 'open' AS kind, 1000000::bigint AS db,
       0::bigint AS dh, NULL::bigint AS bid_id, NULL::text AS slot_id, NULL::bigint AS round_id,
       'initial tokens' AS reason, NULL::text AS key
  FROM generate_series(0, 9) a, h_clock c
UNION ALL
SELECT 'h4', c.t - interval '8 days', 2, 'deposit', 700, 0, NULL, NULL, NULL, 'refill', 'ancient' FROM h_clock c
UNION ALL
SELECT 'h4', c.t - interval '6 days', 2, 'deposit', 600, 0, NULL, NULL, NULL, 'refill', 'six-days' FROM h_clock c
UNION ALL
SELECT 'h' || ((i / 600) % 10), c.start + i * interval '1 second', 2, 'deposit', 1000, 0, NULL, NULL, NULL,
       'refill', 'dep-' || i
  FROM generate_series(10, 86399, 600) i, h_clock c
UNION ALL
SELECT bidder, placed_at, 3, 'escrow', -max_price, max_price, id, NULL, NULL, 'bid placed', NULL FROM h_bids
UNION ALL
SELECT bidder, updated_at, 4, 'charge', 0, -price, id, slot, round_id, 'clearing price of a settled run', NULL
  FROM h_bids WHERE status = 'settled' AND NOT pending
UNION ALL
SELECT bidder, updated_at, 5, 'premium', max_price - price, -(max_price - price), id, slot, round_id,
       'winning premium returned', NULL
  FROM h_bids WHERE status = 'settled' AND NOT pending
UNION ALL
SELECT bidder, updated_at, 4, 'refund', max_price, -max_price, id, NULL, NULL, 'bid expired unfilled', NULL
  FROM h_bids WHERE status = 'expired';
INSERT INTO compute_auction.token_ledger
       (id, at, account_id, delta_balance, delta_held, entry_kind, bid_id, slot_id, round_id, reason,
        balance_after, held_after, idempotency_key)
SELECT row_number() OVER w, at, account_id, db, dh, kind, bid_id, slot_id, round_id, reason,
       sum(db) OVER (PARTITION BY account_id ORDER BY at, ord, bid_id ROWS UNBOUNDED PRECEDING),
       sum(dh) OVER (PARTITION BY account_id ORDER BY at, ord, bid_id ROWS UNBOUNDED PRECEDING), key
  FROM h_ledger WINDOW w AS (ORDER BY at, ord, bid_id, account_id);
SELECT setval('compute_auction.token_ledger_id_seq', (SELECT max(id) FROM compute_auction.token_ledger));
UPDATE compute_auction.token_accounts a
   SET balance_tokens = l.b, held_tokens = l.h, total_deposited = l.dep, total_spent = l.spent
  FROM (SELECT account_id, sum(db) AS b, sum(dh) AS h,
               sum(db) FILTER (WHERE kind IN ('open', 'deposit')) AS dep,
               coalesce(-sum(dh) FILTER (WHERE kind = 'charge'), 0) AS spent
          FROM h_ledger GROUP BY account_id) l
 WHERE l.account_id = a.account_id;
-- the counters: one open bid, and every refund
INSERT INTO compute_auction.open_bid_count_deltas (delta, tokens_refunded)
SELECT 1, (SELECT sum(db) FROM h_ledger WHERE kind = 'refund');
"""

# every account's ledger is a running sum, ordered by id
CHAINS_BROKEN = """
SELECT account_id, id FROM (
    SELECT account_id, id, balance_after, held_after,
           sum(delta_balance) OVER (PARTITION BY account_id ORDER BY id) AS b,
           sum(delta_held) OVER (PARTITION BY account_id ORDER BY id) AS h
      FROM compute_auction.token_ledger) x
 WHERE balance_after <> b OR held_after <> h
"""

ACCOUNTS = """
SELECT account_id, balance_tokens, held_tokens, total_deposited, total_spent, total_withdrawn
  FROM compute_auction.token_accounts ORDER BY account_id
"""

TABLES = ["compute_auction_bids", "compute_auction_clears", "compute_auction_rounds", "round_skips", "token_ledger"]


def rows(conn, sql, params=None):
    return conn.execute(sql, params).fetchall()


def counts(conn) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM compute_auction.{t}").fetchone()[0] for t in TABLES}


def prune_all(conn, older_than: str) -> dict[str, int]:
    """prune_history until no table says `more`; the rows removed per table."""
    total: dict[str, int] = {}
    for _ in range(50):
        got = rows(conn, PRUNE, (older_than,))
        for table, n, _more in got:
            total[table] = total.get(table, 0) + n
        if not any(more for _t, _n, more in got):
            return total
    raise AssertionError("prune_history kept saying more")


def write_history(conn) -> None:
    with conn.transaction():
        conn.execute(HISTORY)
        # the rounds were written by hand: their summaries are computed as clear_round keeps them
        conn.execute("SELECT compute_auction.rebuild_round_summaries()")
    conn.execute("ANALYZE")


@pytest.fixture
def day(conn):
    write_history(conn)
    assert_audit_clean(conn)
    assert rows(conn, CHAINS_BROKEN) == []
    # the ledger's ids follow its times, as the functions write them
    assert rows(
        conn,
        "SELECT count(*) FROM (SELECT at < lag(at) OVER (ORDER BY id) AS back "
        "FROM compute_auction.token_ledger) x WHERE back",
    ) == [(0,)]
    return conn


def test_a_day_pruned_to_the_last_hour_keeps_the_books(day):
    conn = day
    # one transaction: the horizon here is the prune's own (now() - 1 hour), and price_history's
    # buckets, which follow now(), are the same before and after
    with conn.transaction():
        horizon = conn.execute("SELECT now() - interval '1 hour'").fetchone()[0]
        accounts = rows(conn, ACCOUNTS)
        pending = rows(conn, "SELECT * FROM compute_auction.pending_entries ORDER BY entry_id")
        pending_balances = rows(
            conn,
            "SELECT a, b.* FROM unnest(ARRAY['h0','h1','h2','h3','h4']) a, "
            "compute_auction.pending_balance(a) b ORDER BY a",
        )
        recent_ledger = rows(conn, "SELECT * FROM compute_auction.token_ledger WHERE at >= %s ORDER BY id", (horizon,))
        stats = conn.execute("SELECT compute_auction.stats(%s, true, 100000)", (horizon,)).fetchone()[0]
        summary = conn.execute("SELECT compute_auction.market_summary() - 'last_round'").fetchone()[0]
        last_round = conn.execute("SELECT compute_auction.last_round()").fetchone()[0]
        before = counts(conn)
        kept_rounds = conn.execute(
            "SELECT count(*) FROM compute_auction.compute_auction_rounds WHERE cleared_at >= %s", (horizon,)
        ).fetchone()[0]

        history = rows(conn, "SELECT * FROM compute_auction.price_history(%s, 12)", (horizon,))
        removed = prune_all(conn, "1 hour")
        assert rows(conn, "SELECT * FROM compute_auction.price_history(%s, 12)", (horizon,)) == history

    assert_audit_clean(conn)
    assert rows(conn, CHAINS_BROKEN) == []
    assert rows(conn, ACCOUNTS) == accounts
    assert rows(conn, "SELECT * FROM compute_auction.pending_entries ORDER BY entry_id") == pending
    assert (
        rows(
            conn,
            "SELECT a, b.* FROM unnest(ARRAY['h0','h1','h2','h3','h4']) a, "
            "compute_auction.pending_balance(a) b ORDER BY a",
        )
        == pending_balances
    )
    # the kept window, entry for entry, and what reads it
    assert rows(conn, "SELECT * FROM compute_auction.token_ledger WHERE at >= %s ORDER BY id", (horizon,)) == (
        recent_ledger
    )
    assert conn.execute("SELECT compute_auction.stats(%s, true, 100000)", (horizon,)).fetchone()[0] == stats
    assert conn.execute("SELECT compute_auction.market_summary() - 'last_round'").fetchone()[0] == summary
    assert conn.execute("SELECT compute_auction.last_round()").fetchone()[0] == last_round
    # what went: all but the kept window and what live things reference
    after = counts(conn)
    assert {t: before[t] - after[t] for t in TABLES} == {t: removed[t] for t in TABLES}
    # the rounds kept: the window's, plus those of the live clear, the pending win and the wins
    # that finished after the horizon (cleared less than 30 s before it)
    assert conn.execute(
        "SELECT count(*) FROM compute_auction.compute_auction_rounds WHERE cleared_at >= %s", (horizon,)
    ).fetchone() == (kept_rounds,)
    old_rounds = rows(
        conn,
        "SELECT b.task_id FROM compute_auction.compute_auction_rounds r "
        "LEFT JOIN compute_auction.compute_auction_clears c USING (round_id) "
        "LEFT JOIN compute_auction.compute_auction_bids b ON b.id = c.bid_id "
        "WHERE r.cleared_at < %s AND (b.updated_at IS NULL OR b.updated_at < %s) ORDER BY 1",
        (horizon, horizon),
    )
    assert old_rounds == [("live-won",), ("pend",)]
    assert removed["compute_auction_rounds"] > 80_000
    old_bids = rows(
        conn,
        "SELECT task_id, status FROM compute_auction.compute_auction_bids WHERE updated_at < %s ORDER BY task_id",
        (horizon,),
    )
    assert old_bids == [("live-open", "open"), ("live-won", "won"), ("pend", "settled")]
    # before the horizon: one checkpoint per account, and the live bids' and the pending win's
    # escrows with what follows them
    old = rows(
        conn,
        "SELECT account_id, entry_kind, count(*) FROM compute_auction.token_ledger WHERE at < %s "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        (horizon,),
    )
    kinds = {(a, k): n for a, k, n in old}
    for a in [f"h{i}" for i in range(10)]:
        assert kinds.pop((a, "checkpoint")) == 1, a
    assert all(a in ("h1", "h2", "h3") for a, _k in kinds), kinds
    for task in ("live-open", "live-won", "pend"):
        assert rows(
            conn,
            "SELECT l.entry_kind FROM compute_auction.token_ledger l "
            "JOIN compute_auction.compute_auction_bids b ON b.id = l.bid_id WHERE b.task_id = %s",
            (task,),
        ) == [("escrow",)]
    # the live clear and its slot are as they were; the pending win applies and settles the books
    assert rows(
        conn,
        "SELECT c.status, s.status FROM compute_auction.compute_auction_clears c "
        "JOIN compute_auction.compute_slots s USING (slot_id) WHERE slot_id = 'slot-live'",
    ) == [("assigned", "assigned")]
    assert conn.execute("SELECT compute_auction.apply_pending()").fetchone() == (2,)
    assert_audit_clean(conn)
    assert rows(conn, CHAINS_BROKEN) == []
    # a second prune keeps the win whose entries were just applied (they are recent)
    prune_all(conn, "1 hour")
    assert rows(conn, "SELECT status FROM compute_auction.compute_auction_bids WHERE task_id = 'pend'") == [
        ("settled",)
    ]
    assert_audit_clean(conn)
    assert rows(conn, CHAINS_BROKEN) == []


def test_retried_deposit_with_a_key_from_before_the_horizon_is_not_applied_twice(day):
    conn = day
    first = conn.execute(
        "SELECT balance_after FROM compute_auction.token_ledger WHERE idempotency_key = 'dep-610'"
    ).fetchone()[0]
    prune_all(conn, "1 hour")
    # every keyed entry before the horizon was compacted, except those after a live bid's escrow
    # (h1, h2 and h3 keep theirs), and its key kept
    assert rows(
        conn,
        "SELECT count(*) FROM compute_auction.token_ledger WHERE idempotency_key IS NOT NULL "
        "AND at < now() - interval '1 hour' AND account_id NOT IN ('h1', 'h2', 'h3')",
    ) == [(0,)]
    assert rows(conn, "SELECT count(*) FROM compute_auction.token_ledger WHERE idempotency_key = 'dep-610'") == [(0,)]
    assert rows(
        conn, "SELECT balance_after FROM compute_auction.idempotency_keys WHERE idempotency_key = 'dep-610'"
    ) == [(first,)]
    accounts = rows(conn, ACCOUNTS)
    entries = conn.execute("SELECT count(*) FROM compute_auction.token_ledger").fetchone()[0]
    account = "h" + str((610 // 600) % 10)
    got = conn.execute("SELECT compute_auction.deposit(%s, 1000, 'refill', 'dep-610')", (account,)).fetchone()[0]
    assert got == first
    assert rows(conn, ACCOUNTS) == accounts
    assert conn.execute("SELECT count(*) FROM compute_auction.token_ledger").fetchone()[0] == entries
    # the same key with another amount is refused, and changes nothing
    assert sqlstate_of(conn, "SELECT compute_auction.deposit(%s, 999, 'refill', 'dep-610')", (account,)) == "22023"
    assert rows(conn, ACCOUNTS) == accounts
    # within the key window (six days) the key is kept too; beyond it (eight days) it is not
    six = conn.execute("SELECT compute_auction.deposit('h4', 600, 'refill', 'six-days')").fetchone()[0]
    assert (
        six
        == conn.execute(
            "SELECT balance_after FROM compute_auction.idempotency_keys WHERE idempotency_key = 'six-days'"
        ).fetchone()[0]
    )
    assert rows(conn, ACCOUNTS) == accounts
    assert rows(conn, "SELECT count(*) FROM compute_auction.idempotency_keys WHERE idempotency_key = 'ancient'") == [
        (0,)
    ]
    # a retried withdraw across a prune: the same rule
    w = conn.execute("SELECT compute_auction.withdraw('h7', 5, 'payout', 'w-1')").fetchone()[0]
    conn.execute("SELECT compute_auction.deposit('h7', 1, 'tip')")
    prune_all(conn, "0")
    assert rows(conn, "SELECT count(*) FROM compute_auction.token_ledger WHERE idempotency_key = 'w-1'") == [(0,)]
    accounts = rows(conn, ACCOUNTS)
    assert conn.execute("SELECT compute_auction.withdraw('h7', 5, 'payout', 'w-1')").fetchone()[0] == w
    assert rows(conn, ACCOUNTS) == accounts
    assert_audit_clean(conn)


def test_the_dashboard_reads_the_kept_window(day, drivers, fresh_db_url):
    """The dashboard (driver) after a prune to the last hour: its 24 h window holds the kept
    rounds only, and its numbers are the SQL functions' for that window."""
    conn = day
    prune_all(conn, "1 hour")
    # one cycle at start (it clears a round), then none for an hour
    d = drivers(fresh_db_url, None, interval="1h")
    wait_until(lambda: metrics(d.port).get("compute_auction_rounds_cleared_total", 0) >= 1, 60, what="first round")
    status, data = http_json(d.port, "/api/compute-auction/dashboard")
    assert status == 200
    kept = conn.execute(
        "SELECT count(*), sum(slots_filled), sum(slots_offered) FROM compute_auction.compute_auction_rounds "
        "WHERE cleared_at >= now() - interval '24 hours'"
    ).fetchone()
    assert data["errors"] == {}, data["errors"]
    assert (data["totals"]["rounds"], data["totals"]["slots_filled"], data["totals"]["slots_offered"]) == kept
    stats = conn.execute("SELECT compute_auction.stats(now() - interval '24 hours', false)").fetchone()[0]
    assert data["top_winners"] == stats["top_winners"]
    assert data["fill_rate"] == pytest.approx(stats["fill_rate"])
    # the chart zooms in to the kept rounds
    assert data["chart"]["zoomed"] is True


def test_the_driver_prunes_with_retain(day, drivers, fresh_db_url):
    """serve --retain 1h prunes the day to its last hour by itself (it calls prune_history until
    nothing is left); without --retain nothing is pruned."""
    conn = day
    before = counts(conn)
    plain = drivers(fresh_db_url, None, interval="1h")
    wait_until(lambda: metrics(plain.port).get("compute_auction_rounds_cleared_total", 0) >= 1, 60, what="a round")
    plain.stop()
    assert counts(conn)["compute_auction_rounds"] == before["compute_auction_rounds"] + 1
    d = drivers(fresh_db_url, None, "--retain", "1h", interval="1h")
    wait_until(
        lambda: (
            conn.execute(
                "SELECT count(*) FROM compute_auction.compute_auction_rounds "
                "WHERE cleared_at < now() - interval '2 hours'"
            ).fetchone()[0]
            <= 2
        ),
        120,
        what="the driver to prune",
    )
    wait_until(lambda: metrics(d.port).get("compute_auction_pruned_rows_total", 0) > 80_000, 60, what="metrics")
    assert metrics(d.port).get("compute_auction_prune_errors_total", 0) == 0
    assert_audit_clean(conn)
    assert rows(conn, CHAINS_BROKEN) == []
    assert "pruned history" in d.log()


def test_table_sizes_stay_bounded_across_repeated_prunes(conn):
    """A market that keeps trading, pruned to "now" after every burst: every table's row count
    after a prune is the same every cycle, and the ledger's size on disk stops growing."""
    conn.execute("SELECT compute_auction.open_account(a, 'agent', 100000) FROM unnest(ARRAY['a', 'b', 'c']) a")
    conn.execute("SELECT compute_auction.offer_slot('s', now() - interval '1 minute')")
    after: list[dict[str, int]] = []
    sizes = []
    for cycle in range(6):
        for n in range(40):
            a = "abc"[n % 3]
            conn.execute("SELECT compute_auction.place_bid(%s, %s, %s)", (a, f"t{cycle}-{n}", 100 + n))
            conn.execute("SELECT compute_auction.deposit(%s, 1, 'refill', %s)", (a, f"k{cycle}-{n}"))
            conn.execute("SELECT * FROM compute_auction.clear_round()")
            if conn.execute("SELECT status FROM compute_auction.compute_slots WHERE slot_id = 's'").fetchone() == (
                "assigned",
            ):
                conn.execute("SELECT compute_auction.settle('s', 1, 1.0)")
            conn.execute("SELECT * FROM compute_auction.refund_unfilled(now() + interval '1 day')")
        conn.execute("SELECT compute_auction.offer_slot('s', now() - interval '1 minute')")
        prune_all(conn, "0")
        assert_audit_clean(conn)
        assert rows(conn, CHAINS_BROKEN) == []
        after.append(counts(conn))
        conn.execute("VACUUM compute_auction.token_ledger, compute_auction.compute_auction_bids")
        sizes.append(conn.execute("SELECT pg_relation_size('compute_auction.token_ledger')").fetchone()[0])
    assert all(c == after[0] for c in after), after
    assert after[0]["token_ledger"] <= 3
    assert after[0]["compute_auction_rounds"] == 1
    # the deleted rows' space is reused: no growth after the second cycle
    assert sizes[-1] <= sizes[1], sizes
    # the keys of the bursts are all kept (the key window), one per deposit
    assert conn.execute("SELECT count(*) FROM compute_auction.idempotency_keys").fetchone() == (240,)


def test_prune_alongside_the_stress_workload_changes_no_token_total(cluster, fresh_db_url, conn):
    """Four clients bid, cancel, deposit and settle while a fifth clears and a sixth prunes to
    "now" in a loop. The clients keep their own books of every acknowledged token movement: at
    the end the market's tokens are exactly those books, audit() is clean and every ledger is a
    running sum. Errors the clients may see are the documented retryable ones."""
    agents = [f"ag{i}" for i in range(8)]
    for a in agents:
        conn.execute("SELECT compute_auction.open_account(%s, 'agent', 100000)", (a,))
    for s in range(3):
        conn.execute("SELECT compute_auction.offer_slot(%s, now() - interval '1 minute')", (f"s{s}",))
    start_total = 8 * 100000
    books = {"deposited": 0, "charged": 0}
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []
    pruned = [0]

    def client(seed: int) -> None:
        rnd = random.Random(seed)
        with psycopg.connect(fresh_db_url, autocommit=True) as c:
            n = 0
            while not stop.is_set():
                n += 1
                a = rnd.choice(agents)
                try:
                    r = rnd.random()
                    if r < 0.5:
                        c.execute(
                            "SELECT compute_auction.place_bid(%s, %s, %s)",
                            (a, f"task-{seed}-{n}", rnd.randint(10, 500)),
                        )
                    elif r < 0.7:
                        bid = c.execute(
                            "SELECT id FROM compute_auction.compute_auction_bids WHERE bidder_id = %s "
                            "AND status = 'open' ORDER BY id LIMIT 1",
                            (a,),
                        ).fetchone()
                        if bid:
                            c.execute("SELECT compute_auction.cancel_bid(%s)", bid)
                    elif r < 0.85:
                        key = f"dep-{seed}-{n}"
                        c.execute("SELECT compute_auction.deposit(%s, 7, 'refill', %s)", (a, key))
                        with lock:
                            books["deposited"] += 7
                        # a retry of the same key moves nothing
                        c.execute("SELECT compute_auction.deposit(%s, 7, 'refill', %s)", (a, key))
                    else:
                        for (slot,) in c.execute(
                            "SELECT slot_id FROM compute_auction.compute_slots WHERE status = 'assigned'"
                        ).fetchall():
                            got = c.execute("SELECT compute_auction.settle(%s, 1, 1.0)", (slot,)).fetchone()[0]
                            with lock:
                                books["charged"] += got
                except psycopg.Error as e:
                    # lost races and bounded lock waits, as documented; P0002: the bid read as
                    # open was finished and then pruned before cancel_bid got to it
                    if e.sqlstate not in ("55000", "55P03", "23505", "23514", "40001", "40P01", "P0002"):
                        errors.append(f"{e.sqlstate}: {e}")

    def clearer() -> None:
        with psycopg.connect(fresh_db_url, autocommit=True) as c:
            while not stop.is_set():
                try:
                    c.execute("SELECT compute_auction.run_cycle()")
                    c.execute(
                        "SELECT compute_auction.offer_slot(slot_id, now()) FROM compute_auction.compute_slots "
                        "WHERE status = 'idle'"
                    )
                except psycopg.Error as e:
                    if e.sqlstate not in ("40001", "55P03", "55000", "40P01"):
                        errors.append(f"cycle {e.sqlstate}: {e}")

    def pruner() -> None:
        with psycopg.connect(fresh_db_url, autocommit=True) as c:
            while not stop.is_set():
                try:
                    for _t, n, _m in c.execute(PRUNE, ("0",)).fetchall():
                        pruned[0] += n
                except psycopg.Error as e:
                    errors.append(f"prune {e.sqlstate}: {e}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=clearer), threading.Thread(target=pruner)]
    for t in threads:
        t.start()
    stop.wait(20)
    stop.set()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a worker hung"
    assert errors == []
    # the workload did settle runs and the pruner did remove rows while it ran
    assert books["charged"] > 0
    assert pruned[0] > 0
    conn.execute("SELECT compute_auction.apply_pending()")
    prune_all(conn, "0")
    assert_audit_clean(conn)
    assert rows(conn, CHAINS_BROKEN) == []
    total, pending = conn.execute(
        "SELECT (SELECT sum(balance_tokens + held_tokens) FROM compute_auction.token_accounts), "
        "(SELECT coalesce(sum(delta_balance + delta_held), 0) FROM compute_auction.pending_entries)"
    ).fetchone()
    assert total + pending == start_total + books["deposited"] - books["charged"]


def test_dump_and_restore_of_a_pruned_database(cluster, day, fresh_db, tmp_path: Path):
    conn = day
    prune_all(conn, "1 hour")
    accounts = rows(conn, ACCOUNTS)
    before = counts(conn)
    keys = rows(conn, "SELECT * FROM compute_auction.idempotency_keys ORDER BY 1, 2, 3")
    dump = tmp_path / "pruned.sql"
    subprocess.run([f"{cluster.bindir}/pg_dump", "--no-owner", "-f", str(dump), cluster.url(fresh_db)], check=True)
    restored = new_database(cluster, with_extension=False)
    try:
        subprocess.run(
            [f"{cluster.bindir}/psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump), cluster.url(restored)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with psycopg.connect(cluster.url(restored), autocommit=True) as r:
            assert_audit_clean(r)
            assert rows(r, ACCOUNTS) == accounts
            assert counts(r) == before
            assert rows(r, "SELECT * FROM compute_auction.idempotency_keys ORDER BY 1, 2, 3") == keys
            assert rows(r, CHAINS_BROKEN) == []
            # a key kept past compaction still answers after the restore
            first = r.execute(
                "SELECT balance_after FROM compute_auction.idempotency_keys WHERE idempotency_key = 'dep-610'"
            ).fetchone()[0]
            assert r.execute("SELECT compute_auction.deposit('h1', 1000, 'refill', 'dep-610')").fetchone() == (first,)
            assert rows(r, ACCOUNTS) == accounts
            # it accepts new bids, clears them, and prunes again
            max_bid = r.execute("SELECT max(id) FROM compute_auction.compute_auction_bids").fetchone()[0]
            bid = r.execute("SELECT compute_auction.place_bid('h5', 'after-restore', 400)").fetchone()[0]
            assert bid > max_bid
            r.execute("SELECT compute_auction.offer_slot('slot-h', now() - interval '1 minute')")
            won = r.execute("SELECT bid_id FROM compute_auction.clear_round()").fetchall()
            assert (bid,) in won
            r.execute("SELECT compute_auction.settle('slot-h', 1, 1.0)")
            prune_all(r, "0")
            assert_audit_clean(r)
            assert rows(r, CHAINS_BROKEN) == []
    finally:
        drop_database(cluster, restored)


def test_prune_history_errors_change_nothing(conn):
    conn.execute("SELECT compute_auction.open_account('x', 'agent', 10)")
    conn.execute("SELECT compute_auction.deposit('x', 5, 'r')")
    for sql, code in [
        ("SELECT * FROM compute_auction.prune_history(NULL)", "22004"),
        ("SELECT * FROM compute_auction.prune_history('-1 second')", "22023"),
        ("SELECT * FROM compute_auction.prune_history('3654 days')", "22023"),
        ("SELECT * FROM compute_auction.prune_history('infinity'::interval)", None),
    ]:
        before = snapshot(conn)
        got = sqlstate_of(conn, sql)
        if code is None:
            # PostgreSQL 15 has no infinite interval: the cast itself fails
            assert got is not None
        else:
            assert got == code, sql
        assert snapshot(conn) == before


def test_a_second_prune_does_not_wait_for_the_first(cluster, fresh_db_url, conn):
    """While one prune's transaction is open, another returns at once with `more` everywhere and
    removes nothing; the participants' calls do not wait for the open prune either."""
    conn.execute("SELECT compute_auction.open_account('p', 'agent', 1000)")
    conn.execute("SELECT compute_auction.deposit('p', 5, 'r', 'k')")
    conn.execute("SELECT compute_auction.deposit('p', 6, 'r')")
    with psycopg.connect(fresh_db_url) as first:
        got = first.execute(PRUNE, ("0",)).fetchall()
        assert dict((t, n) for t, n, _m in got)["token_ledger"] == 2
        with psycopg.connect(fresh_db_url, autocommit=True) as second:
            second.execute("SET statement_timeout = '10s'")  # a hang, not a wait, would fail here
            got2 = second.execute(PRUNE, ("0",)).fetchall()
            assert [(n, m) for _t, n, m in got2] == [(0, True)] * 6
            # a participant's wallet call does not wait on the open prune (it took no account lock)
            second.execute("SET lock_timeout = '1s'")
            assert second.execute("SELECT compute_auction.deposit('p', 1, 'r')").fetchone() == (1012,)
            # and the retry of the compacted key, seen before the prune commits, still replays
            assert second.execute("SELECT compute_auction.deposit('p', 5, 'r', 'k')").fetchone() == (1005,)
        first.commit()
    assert conn.execute("SELECT compute_auction.deposit('p', 5, 'r', 'k')").fetchone() == (1005,)
    assert_audit_clean(conn)


def test_entries_that_sum_to_zero_leave_no_checkpoint_and_their_key_still_answers(conn):
    """An account whose compacted entries sum to zero in both columns gets no checkpoint (the
    ledger's CHECK forbids an all-zero row): its entries before the horizon are simply gone, the
    balances (zero) still equal the sums, and a retry of its keyed deposit still moves nothing."""
    conn.execute("SELECT compute_auction.open_account('z', 'agent', 0)")
    assert conn.execute("SELECT compute_auction.deposit('z', 5, 'r', 'z-1')").fetchone() == (5,)
    assert conn.execute("SELECT compute_auction.withdraw('z', 5, 'out')").fetchone() == (0,)
    removed = prune_all(conn, "0")
    assert removed["token_ledger"] == 2
    assert rows(conn, "SELECT * FROM compute_auction.token_ledger WHERE account_id = 'z'") == []
    assert_audit_clean(conn)
    before = rows(conn, ACCOUNTS)
    assert conn.execute("SELECT compute_auction.deposit('z', 5, 'r', 'z-1')").fetchone() == (5,)
    assert rows(conn, ACCOUNTS) == before
    assert rows(conn, "SELECT count(*) FROM compute_auction.token_ledger WHERE account_id = 'z'") == [(0,)]


def test_rows_a_participant_holds_are_skipped_not_waited_for(fresh_db_url, conn):
    """A transaction holding a finished bid, a finished clear and an old round (row locks, as a
    participant's open transaction may) does not make prune_history wait: the call completes
    (its statement timeout only detects a hang), removes everything else, and leaves those rows
    and what depends on them; once the holder ends, the next prune removes them."""
    conn.execute("SELECT compute_auction.open_account(a, 'agent', 10000) FROM unnest(ARRAY['a', 'b', 'c']) a")
    conn.execute("SELECT compute_auction.offer_slot(s, now() - interval '1 minute') FROM unnest(ARRAY['s1', 's2']) s")
    bids = {}
    for a, task, price in [("a", "ta", 300), ("b", "tb", 200), ("c", "tc", 100)]:
        bids[task] = conn.execute("SELECT compute_auction.place_bid(%s, %s, %s)", (a, task, price)).fetchone()[0]
    conn.execute("SELECT * FROM compute_auction.clear_round()")
    conn.execute("SELECT compute_auction.settle('s1', 1, 1.0)")
    conn.execute("SELECT compute_auction.settle('s2', 1, 1.0)")
    conn.execute("SELECT compute_auction.cancel_bid(%s)", (bids["tc"],))
    conn.execute("SELECT * FROM compute_auction.clear_round()")  # an empty round, the newest
    round_a = conn.execute(
        "SELECT round_id FROM compute_auction.compute_auction_clears WHERE bid_id = %s", (bids["ta"],)
    ).fetchone()[0]
    with psycopg.connect(fresh_db_url) as holder:
        holder.execute("SELECT 1 FROM compute_auction.compute_auction_bids WHERE id = %s FOR UPDATE", (bids["tc"],))
        holder.execute(
            "SELECT 1 FROM compute_auction.compute_auction_clears WHERE bid_id = %s FOR UPDATE", (bids["tb"],)
        )
        conn.execute("SET statement_timeout = '30s'")
        removed = prune_all(conn, "0")
        conn.execute("RESET statement_timeout")
        left = rows(conn, "SELECT id FROM compute_auction.compute_auction_bids ORDER BY id")
        assert left == [(bids["tb"],), (bids["tc"],)]
        assert removed["compute_auction_bids"] == 1 and removed["compute_auction_clears"] == 1
        # the round the held clear references stays with it (a and b won the same round)
        assert rows(conn, "SELECT round_id FROM compute_auction.compute_auction_rounds WHERE round_id = %s", (round_a,))
        assert_audit_clean(conn)
        holder.rollback()
    removed = prune_all(conn, "0")
    assert removed["compute_auction_bids"] == 2 and removed["compute_auction_clears"] == 1
    assert rows(conn, "SELECT count(*) FROM compute_auction.compute_auction_bids") == [(0,)]
    assert rows(conn, "SELECT count(*) FROM compute_auction.compute_auction_rounds") == [(1,)]
    assert_audit_clean(conn)
    assert rows(conn, CHAINS_BROKEN) == []
