"""The rounds' summaries (extension/src/summaries.rs, issue 21): `round_minutes`,
`round_quarters` and `recent_prices`, which clear_round keeps so that price_to_win, price_history
and stats cost what a window's quarter-hours or distinct prices cost, not what its rounds cost. What they answer must be
exactly what the rounds give: every reader is compared with the query it replaced (the
reference SQL below, run on the same snapshot), over a history cleared at awkward times (either
side of minute boundaries, out of order, more than 24 hours ago, in the future), and audit()
must catch a summary that drifts from the rounds.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta

import psycopg
import pytest

from conftest import assert_audit_clean

# What price_to_win's percentiles were before the summaries: a sort of the window's rounds.
REF_PERCENTILES = """
SELECT p[1], p[2] FROM (
  SELECT percentile_disc(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY clearing_price_tokens) AS p
    FROM compute_auction.compute_auction_rounds
   WHERE cleared_at >= now() - %(window)s::interval AND clearing_price_tokens IS NOT NULL) AS r"""

# price_to_win's price windows: the default (the kept histogram), and others read from the
# quarter-hours' prices (issue 25): shorter, longer, the longest, cutting quarter-hours.
PRICE_WINDOWS = ["24 hours", "1 hour", "25 hours", "7 days", "90 minutes 17.000003 seconds", "1 second"]

# price_history before the summaries: every round of the window, bucketed.
REF_PRICE_HISTORY = """
WITH p AS (SELECT greatest(1.0, date_part('epoch', now() - %(since)s) / %(buckets)s) AS width)
SELECT to_timestamp(floor(date_part('epoch', r.cleared_at) / p.width) * p.width), count(*)::bigint,
       round(avg(r.clearing_price_tokens))::bigint, min(r.clearing_price_tokens),
       max(r.clearing_price_tokens), sum(r.slots_filled)::bigint, sum(r.slots_offered)::bigint
  FROM compute_auction.compute_auction_rounds AS r, p
 WHERE r.cleared_at >= %(since)s GROUP BY 1 ORDER BY 1"""

REF_FILL = """
SELECT CASE WHEN sum(slots_offered) > 0 THEN sum(slots_filled)::float8 / sum(slots_offered) END
  FROM compute_auction.compute_auction_rounds WHERE cleared_at >= %(since)s"""

REF_TOP = """
SELECT c.bid_id FROM compute_auction.compute_auction_clears c
  JOIN compute_auction.compute_auction_rounds r USING (round_id)
 WHERE r.cleared_at >= %(since)s AND c.status <> 'aborted'
 ORDER BY c.max_price_tokens DESC, c.bid_id LIMIT 10"""


def now(conn) -> object:
    return conn.execute("SELECT now()").fetchone()[0]


def clear_at(conn, t, bids: list[int], slots: int, reserve: int, tag: str) -> None:
    """One round at `t`: `slots` fresh slots with `reserve`, `bids` fresh bids, then clear_round."""
    for i in range(slots):
        conn.execute(
            "SELECT compute_auction.offer_slot(%s, %s, %s)", (f"slot-{tag}-{i}", t - timedelta(days=3), reserve)
        )
    for i, price in enumerate(bids):
        conn.execute(
            "SELECT compute_auction.place_bid('agent', %s, %s, NULL, %s)",
            (f"task-{tag}-{i}", price, t + timedelta(days=3)),
        )
    conn.execute("SELECT count(*) FROM compute_auction.clear_round(%s)", (t,))
    # the bids that lost stay open; cancel them so later rounds see only their own
    conn.execute(
        "SELECT count(compute_auction.cancel_bid(id)) FROM compute_auction.compute_auction_bids WHERE status = 'open'"
    )


def history(conn, rounds: int, seed: int) -> None:
    """`rounds` rounds at awkward times around now (see the module's docstring)."""
    rng = random.Random(seed)
    conn.execute("SELECT compute_auction.open_account('agent', 'agent', 10000000000)")
    base = now(conn).replace(second=0, microsecond=0)
    offsets = [
        timedelta(seconds=-1),  # the last microsecond-ish of a minute, then its first
        timedelta(microseconds=-1),
        timedelta(0),
        timedelta(microseconds=1),
        timedelta(hours=-25),  # outside the 24-hour window
        timedelta(hours=-24, seconds=30),
        timedelta(hours=2),  # the future
    ]
    for i in range(rounds):
        off = offsets[i] if i < len(offsets) else timedelta(seconds=rng.randint(-3 * 86400, 3600))
        n_bids = rng.choice([0, 1, 2, 3, 4])
        bids = [rng.choice([10, 50, 50, 100, 700, rng.randint(1, 2000)]) for _ in range(n_bids)]
        clear_at(conn, base + off, bids, rng.choice([0, 1, 2]), rng.choice([0, 0, 60]), f"{i}")


def readers_agree(conn, since_list) -> None:
    """Every summary reader against its reference, each pair in one snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for window in PRICE_WINDOWS:
            advice = conn.execute("SELECT compute_auction.price_to_win(NULL, %s)", (window,)).fetchone()[0]
            assert (advice["recent_clearing_p50"], advice["recent_clearing_p90"]) == conn.execute(
                REF_PERCENTILES, {"window": window}
            ).fetchone(), window
        for since, buckets in since_list:
            got = conn.execute("SELECT * FROM compute_auction.price_history(%s, %s)", (since, buckets)).fetchall()
            want = conn.execute(REF_PRICE_HISTORY, {"since": since, "buckets": buckets}).fetchall()
            assert got == want, (since, buckets)
            stats = conn.execute("SELECT compute_auction.stats(%s, false)", (since,)).fetchone()[0]
            assert stats["fill_rate"] == conn.execute(REF_FILL, {"since": since}).fetchone()[0], since
            top = [r[0] for r in conn.execute(REF_TOP, {"since": since}).fetchall()]
            assert [w["bid_id"] for w in stats["top_winners"]] == top, since


def windows(t) -> list:
    """Windows the readers are asked about: the dashboard's day in 96 buckets (15-minute
    buckets: whole minutes), odd widths that cut minutes, an unaligned start, a window starting
    in the future, a whole week."""
    return [
        (t - timedelta(hours=24), 96),
        (t - timedelta(hours=24), 7),
        (t - timedelta(hours=1, seconds=17, microseconds=3), 96),
        (t - timedelta(minutes=3), 10000),
        (t - timedelta(days=7), 96),
        (t + timedelta(minutes=30), 5),
        (t - timedelta(hours=25, seconds=1), 1),
    ]


def test_summaries_answer_exactly_what_the_rounds_give(conn):
    history(conn, 160, seed=21)
    readers_agree(conn, windows(now(conn)))
    assert_audit_clean(conn)


AGE_MARGIN_S = 5


def test_a_round_older_than_the_window_leaves_the_percentiles_when_it_ages(conn):
    """A round cleared 24 h minus 5 s ago is in the histogram when it is written (the margin
    only has to outlast two round writes and a query, about 50 ms); once it is older than the
    window price_to_win must leave it out without another round having run (the reader's
    correction), and the next round uncounts it."""
    conn.execute("SELECT compute_auction.open_account('agent', 'agent', 1000000)")
    t = now(conn)
    clear_at(conn, t - timedelta(hours=24) + timedelta(seconds=AGE_MARGIN_S), [900, 900], 1, 0, "old")
    clear_at(conn, t, [100, 100], 1, 0, "new")
    assert conn.execute(REF_PERCENTILES, {"window": "24 hours"}).fetchone() == (100, 900)
    readers_agree(conn, [])
    deadline = time.monotonic() + 12 * AGE_MARGIN_S  # only detects a hang
    while conn.execute(REF_PERCENTILES, {"window": "24 hours"}).fetchone() != (100, 100):
        assert time.monotonic() < deadline, "the old round never left the window"
        time.sleep(0.2)
    readers_agree(conn, [])  # no round ran since: the reader corrects the histogram itself
    assert conn.execute("SELECT rounds FROM compute_auction.recent_prices WHERE clearing_price_tokens = 900").fetchone()
    clear_at(conn, now(conn), [], 0, 0, "later")
    assert not conn.execute(
        "SELECT 1 FROM compute_auction.recent_prices WHERE clearing_price_tokens = 900"
    ).fetchone(), "the next round uncounts the aged round"
    readers_agree(conn, [])
    assert_audit_clean(conn)


def test_top_winners_outside_the_all_time_top_are_found(conn):
    """More than 1,000 clears priced above everything in the window (all cleared 2 days ago):
    the candidates from the all-time top are all outside the window, so stats ranks the window's
    own clears; an aborted winner never counts."""
    conn.execute("SELECT compute_auction.open_account('agent', 'agent', 100000000000)")
    t = now(conn)
    clear_at(conn, t - timedelta(days=2), [5000 + i for i in range(1100)], 1100, 0, "old")
    clear_at(conn, t - timedelta(hours=1), [10 + i for i in range(15)], 14, 0, "window")
    won = conn.execute(
        "SELECT slot_id FROM compute_auction.compute_auction_clears WHERE status = 'assigned' "
        "AND max_price_tokens < 5000 ORDER BY max_price_tokens DESC LIMIT 1"
    ).fetchone()[0]
    conn.execute("SELECT compute_auction.abort_slot(%s, 'test')", (won,))
    readers_agree(conn, [(t - timedelta(hours=24), 96), (t - timedelta(days=3), 96)])
    day = conn.execute("SELECT compute_auction.stats(now() - interval '24 hours', false)").fetchone()[0]
    assert len(day["top_winners"]) == 10
    assert all(w["max_price_tokens"] < 5000 and w["status"] != "aborted" for w in day["top_winners"])
    assert_audit_clean(conn)


def test_quarter_hours_are_read_whole_only_where_they_are_whole(conn):
    """Windows of exactly 24 or 6 hours (`since` = now() - the window in the reader's own
    transaction, as the dashboard's day is, so the width is 900 s to the bit and the buckets fall
    on the quarter-hours): price_history and stats' fill rate read whole quarter-hours from
    round_quarters, and must still give exactly what the rounds give around every cut: the
    quarter-hour the window starts in (rounds before and after `since` in it), the first and the
    last microsecond of a quarter-hour, and widths of 2 and 3 quarter-hours and of one minute."""
    conn.execute("SELECT compute_auction.open_account('agent', 'agent', 10000000000)")
    us = timedelta(microseconds=1)
    with conn.transaction():
        t = now(conn)
        since = t - timedelta(hours=24)
        q0 = conn.execute("SELECT to_timestamp(floor(date_part('epoch', %s::timestamptz) / 900) * 900)", (since,))
        q0 = q0.fetchone()[0]
        q1 = q0 + timedelta(seconds=900)
        times = [since - us, since, since + us, q0 + us, q1 - us, q1, q1 + us, q1 + timedelta(seconds=930)]
        times += [q0 - us, q0, q1 + timedelta(seconds=60) - us, q1 + timedelta(seconds=60)]
        times += [since + timedelta(hours=5, seconds=7), t - timedelta(hours=6) - us, t - timedelta(hours=6), t]
        for i, at in enumerate(times):
            clear_at(conn, at, [100 + 7 * i, 50], 1 + i % 2, 0, f"q{i}")
        assert conn.execute("SELECT count(*) FROM compute_auction.round_quarters").fetchone()[0] >= 6
        relative = (("24 hours", 96), ("24 hours", 48), ("24 hours", 32), ("24 hours", 1440), ("6 hours", 24))
        starts = [(conn.execute("SELECT now() - %s::interval", (w,)).fetchone()[0], n) for w, n in relative]
        # windows starting exactly on a quarter-hour, and on a minute inside one
        starts += [(start, n) for start in (q0, q1, q1 + timedelta(seconds=60)) for n in (1, 96)]
        for start, buckets in starts:
            got = conn.execute("SELECT * FROM compute_auction.price_history(%s, %s)", (start, buckets)).fetchall()
            want = conn.execute(REF_PRICE_HISTORY, {"since": start, "buckets": buckets}).fetchall()
            assert got == want, (start, buckets)
            stats = conn.execute("SELECT compute_auction.stats(%s, false)", (start,)).fetchone()[0]
            assert stats["fill_rate"] == conn.execute(REF_FILL, {"since": start}).fetchone()[0], start
        assert_audit_clean(conn)


def test_audit_reports_a_summary_that_drifts_and_rebuild_restores_it(conn):
    history(conn, 40, seed=7)
    assert_audit_clean(conn)
    minute, rounds = conn.execute(
        "SELECT minute, rounds FROM compute_auction.round_minutes ORDER BY minute DESC LIMIT 1"
    ).fetchone()
    conn.execute("UPDATE compute_auction.round_minutes SET rounds = rounds + 1 WHERE minute = %s", (minute,))
    quarter = conn.execute("SELECT min(quarter) FROM compute_auction.round_quarters").fetchone()[0]
    conn.execute(
        "UPDATE compute_auction.round_quarters SET slots_filled = slots_filled + 1 WHERE quarter = %s", (quarter,)
    )
    price = conn.execute("SELECT max(clearing_price_tokens) FROM compute_auction.recent_prices").fetchone()[0]
    conn.execute("DELETE FROM compute_auction.recent_prices WHERE clearing_price_tokens = %s", (price,))
    qp = conn.execute(
        "SELECT quarter, clearing_price_tokens FROM compute_auction.round_quarter_prices ORDER BY 1 DESC, 2 LIMIT 1"
    ).fetchone()
    conn.execute(
        "UPDATE compute_auction.round_quarter_prices SET rounds = rounds + 2"
        " WHERE quarter = %s AND clearing_price_tokens = %s",
        qp,
    )
    found = conn.execute("SELECT check_name, detail FROM compute_auction.audit()").fetchall()
    assert sorted(name for name, _ in found) == ["summary_mismatch"] * 4, found
    assert any(f"round_quarter_prices quarter {qp[0]} price {qp[1]}:" in d for _, d in found)
    assert any(f"round_minutes minute {minute}:" in d for _, d in found)
    assert any(f"round_quarters quarter {quarter}:" in d for _, d in found)
    assert any(f"price {price}:" in d for _, d in found)

    out = conn.execute("SELECT compute_auction.rebuild_round_summaries()").fetchone()[0]
    assert out == {
        "minutes": conn.execute("SELECT count(*) FROM compute_auction.round_minutes").fetchone()[0],
        "quarters": conn.execute("SELECT count(*) FROM compute_auction.round_quarters").fetchone()[0],
        "quarter_prices": conn.execute("SELECT count(*) FROM compute_auction.round_quarter_prices").fetchone()[0],
        "prices": conn.execute("SELECT count(*) FROM compute_auction.recent_prices").fetchone()[0],
    }
    assert conn.execute("SELECT rounds FROM compute_auction.round_minutes WHERE minute = %s", (minute,)).fetchone() == (
        rounds,
    )
    assert_audit_clean(conn)
    readers_agree(conn, windows(now(conn)))


def test_rebuild_is_for_operators(roles):
    """EXECUTE is revoked from PUBLIC and granted to compute_auction_operator (docs/roles.sql):
    an agent gets 42501 and changes nothing."""
    before = roles["op"].execute("SELECT count(*) FROM compute_auction.round_minutes").fetchone()
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        roles["alice"].execute("SELECT compute_auction.rebuild_round_summaries()")
    assert roles["op"].execute("SELECT count(*) FROM compute_auction.round_minutes").fetchone() == before
    assert roles["op"].execute("SELECT compute_auction.rebuild_round_summaries()").fetchone()[0] == {
        "minutes": 0,
        "quarters": 0,
        "quarter_prices": 0,
        "prices": 0,
    }


def test_pruned_rounds_leave_the_summaries_exact(conn):
    """prune_history deletes rounds (the one place that does): the minutes it went through are
    made again from the rounds left, and the recent prices too when the horizon is inside their
    24 hours, so every reader still answers what the rounds left give, and audit() stays empty."""
    history(conn, 120, seed=3)
    assert_audit_clean(conn)
    before = conn.execute("SELECT count(*) FROM compute_auction.compute_auction_rounds").fetchone()[0]
    for horizon in ("2 days", "1 hour"):
        conn.execute("SELECT count(*) FROM compute_auction.prune_history(%s::interval)", (horizon,))
        assert_audit_clean(conn)
        readers_agree(conn, windows(now(conn)))
    after = conn.execute("SELECT count(*) FROM compute_auction.compute_auction_rounds").fetchone()[0]
    assert after < before, "the prune removed rounds"
    kept_old = conn.execute(
        "SELECT count(*) FROM compute_auction.compute_auction_rounds WHERE cleared_at < now() - interval '1 hour'"
    ).fetchone()[0]
    assert kept_old > 0, "rounds of assigned clears stay, and their minutes with them"


def test_a_round_written_by_someone_else_is_counted_by_the_next_round(conn):
    """A round below the next one's id that the summaries did not count (a 0.1.0 clear_round
    that was waiting for the clearing lock when the upgrade committed writes one; so does SQL by
    hand): the next round notices it (through_round_id) and rebuilds both summaries, so audit()
    is empty again and every reader exact without an operator's rebuild."""
    history(conn, 12, seed=5)
    t = now(conn)
    conn.execute(
        "INSERT INTO compute_auction.compute_auction_rounds"
        " (cleared_at, slots_offered, bids_eligible, slots_filled, clearing_price_tokens)"
        " VALUES (%s, 3, 2, 2, 4242)",
        (t - timedelta(minutes=5),),
    )
    found = conn.execute("SELECT check_name FROM compute_auction.audit()").fetchall()
    assert found and {r[0] for r in found} == {"summary_mismatch"}, found
    clear_at(conn, t, [10], 1, 0, "next")
    assert_audit_clean(conn)
    readers_agree(conn, windows(now(conn)))
    assert conn.execute(
        "SELECT rounds FROM compute_auction.recent_prices WHERE clearing_price_tokens = 4242"
    ).fetchone() == (1,)
