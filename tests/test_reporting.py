"""Reporting (extension/src/reporting.rs): order_book, stats (fill rate, ROI, the window and
top ten, doubles carried exactly) and bid_status.

Split from the former test_compute_auction.py (issue 3's tests), used the way an existing Python
application uses the extension (psycopg 3). Time is never slept away: every test reads the
server's clock once (Market.t0) and passes explicit timestamps relative to it. Every error case
asserts the SQLSTATE and that a snapshot of every extension table is unchanged; tests that move
tokens end with assert_audit_clean(). Helpers: tests/helpers.py; fixtures market, ten_bids and
one_win: conftest.py.
"""

from __future__ import annotations

import pytest

from conftest import assert_audit_clean
from helpers import (
    BID_STATUS,
    BOOK_ASK_KEYS,
    BOOK_BID_KEYS,
    CANCEL,
    FIVE_SLOTS,
    ORDER_BOOK,
    RETIRE,
    ROUND_KEYS,
    STATS,
    WINNER_KEYS,
    assert_rejected,
    ts,
)

# -------------------------------------------------------------- order_book --


def test_order_book_shape_and_order(market):
    market.account("a")
    market.account("b")
    market.offer("later", reserve=5, available_at=market.at(30))
    market.offer("sooner", reserve=50, available_at=market.at(-5))
    market.offer("soonest-b", available_at=market.at(-10))
    market.offer("soonest-a", available_at=market.at(-10))
    market.offer("gone")
    market.conn.execute(RETIRE, ("gone",))
    first_200 = market.bid("a", "t1", 200, ev=2.5, ttl=20)
    top = market.bid("b", "t2", 900, ttl=25)
    second_200 = market.bid("b", "t3", 200, ttl=20)
    low = market.bid("a", "t4", 10, ttl=20)
    cancelled = market.bid("a", "t5", 5_000, ttl=20)
    market.value(CANCEL, (cancelled,))

    book = market.order_book()
    assert set(book) == {"bids", "asks"}
    for b in book["bids"]:
        assert set(b) == BOOK_BID_KEYS
    for a in book["asks"]:
        assert set(a) == BOOK_ASK_KEYS
    assert [b["bid_id"] for b in book["bids"]] == [top, first_200, second_200, low]
    first = book["bids"][1]
    row = market.bid_row(first_200)
    assert (first["bidder_id"], first["task_id"], first["max_price_tokens"], first["expected_value_usd"]) == (
        "a",
        "t1",
        200,
        2.5,
    )
    assert ts(first["ttl_at"]) == row["ttl_at"] == market.at(20)
    assert ts(first["placed_at"]) == row["placed_at"]
    assert book["bids"][0]["expected_value_usd"] is None
    assert [a["slot_id"] for a in book["asks"]] == ["soonest-a", "soonest-b", "sooner", "later"]
    sooner = book["asks"][2]
    assert (sooner["reserve_price_tokens"], ts(sooner["available_at"])) == (50, market.at(-5))


def test_order_book_depth_and_live_entries_only(market, ten_bids):
    book = market.order_book(3)
    assert [b["max_price_tokens"] for b in book["bids"]] == [100_000, 89_000, 78_000]
    assert [a["slot_id"] for a in book["asks"]] == FIVE_SLOTS[:3]
    assert market.order_book(0) == {"bids": [], "asks": []}
    assert len(market.order_book(10_000)["bids"]) == 10
    market.account("many", 10**6)
    for i in range(95):
        market.bid("many", f"many-{i}", 1 + i)
    assert len(market.order_book()["bids"]) == 100  # default depth
    assert len(market.order_book(10_000)["bids"]) == 105
    assert market.order_book(101)["bids"][-1]["max_price_tokens"] == 5  # 10 big bids, then 95..5
    market.clear(1)  # won bids and assigned slots leave the book
    book = market.order_book(6)
    assert [b["max_price_tokens"] for b in book["bids"]] == [45_000, 34_000, 23_000, 12_000, 1_000, 95]
    assert book["asks"] == []


@pytest.mark.parametrize(
    "depth, sqlstate",
    [
        pytest.param(-1, "22023", id="negative"),
        pytest.param(10_001, "22023", id="too-deep"),
        pytest.param(None, "22004", id="null"),
    ],
)
def test_order_book_bad_depth_is_rejected(market, depth, sqlstate):
    assert_rejected(market.conn, ORDER_BOOK, (depth,), sqlstate)


# ------------------------------------------------------------------- stats --


def test_stats_shape_fill_rate_and_roi(market):
    market.offer("s1")
    market.offer("s2")
    market.offer("s3")
    for i, price in enumerate([900, 600, 300]):
        market.account(f"a{i}")
        market.bid(f"a{i}", f"t{i}", price)
    market.clear(1)  # 3 slots, 3 bids: price 0
    market.settle("s1", 5, 7.0)
    market.settle("s2", 5, 8.0)
    market.settle("s3", 5, 9.0)
    market.clear(2)  # 3 slots, no bids
    for i, price in enumerate([1_000, 800, 700, 400]):
        market.account(f"b{i}")
        market.bid(f"b{i}", f"u{i}", price)
    market.clear(3)  # 3 slots, 4 bids: price 400

    st = market.stats()
    assert set(st) >= {"rounds", "fill_rate", "top_winners"}
    rounds = market.rounds()
    assert [set(r) for r in st["rounds"]] == [ROUND_KEYS] * 3
    assert [
        (r["round_id"], r["clearing_price_tokens"], r["slots_offered"], r["slots_filled"], r["bids_eligible"])
        for r in st["rounds"]
    ] == [
        (rounds[0]["round_id"], 0, 3, 3, 3),
        (rounds[1]["round_id"], None, 3, 0, 0),
        (rounds[2]["round_id"], 400, 3, 3, 4),
    ]
    assert ts(st["rounds"][0]["cleared_at"]) == market.at(1)
    assert st["fill_rate"] == pytest.approx(6 / 9)
    top = st["top_winners"]
    assert all(set(w) >= WINNER_KEYS for w in top)
    assert [(w["task_id"], w["max_price_tokens"], w["clearing_price_tokens"]) for w in top] == [
        ("u0", 1_000, 400),
        ("t0", 900, 0),
        ("u1", 800, 400),
        ("u2", 700, 400),
        ("t1", 600, 0),
        ("t2", 300, 0),
    ]
    # roi is NULL while unsettled and when the price was 0
    assert [w["roi"] for w in top] == [None] * 6
    assert top[1]["actual_impact"] == 7.0
    market.settle("s1", 1, 10.0)  # u0's slot (slot order: s1, s2, s3)
    top = market.stats()["top_winners"]
    assert top[0]["task_id"] == "u0"
    assert top[0]["actual_impact"] == 10.0
    assert top[0]["roi"] == 10.0 / 400  # unrounded double
    assert isinstance(top[0]["roi"], float)
    assert_audit_clean(market.conn)


def test_stats_roi_is_unrounded(market, one_win):
    market.settle("s1", 1, 10.0)
    (w,) = market.stats()["top_winners"]
    assert w["bid_id"] == one_win["winner"]
    assert w["bidder_id"] == "alice"
    assert w["roi"] == 10.0 / 200
    market.value(CANCEL, (one_win["loser"],))
    market.account("c")
    market.account("d")
    market.bid("c", "tc", 10)
    market.bid("d", "td", 3)
    market.clear(2)  # price 3
    market.settle("s1", 1, 10.0)
    roi = {w["task_id"]: w["roi"] for w in market.stats()["top_winners"]}
    assert roi["tc"] == 10.0 / 3 == 3.3333333333333335


# Doubles whose shortest decimal form does not survive a lossy (not correctly rounded) parser.
HARD_DOUBLES = [10.25 / 45_000, 0.00022776259360487078, 0.1 + 0.2, 1 / 3, 2.5]


def test_jsonb_results_carry_doubles_exactly(market):
    """roi must be the unrounded double actual_impact / clearing_price_tokens, and every double
    the JSON functions return (expected values, impacts) must be the stored one, bit for bit."""
    market.account("a", 10**9)
    bids = {market.bid("a", f"t{i}", 1_000 + i, ev=v): v for i, v in enumerate(HARD_DOUBLES)}
    for b in market.order_book()["bids"]:
        assert b["expected_value_usd"] == bids[b["bid_id"]], b
    for b, v in bids.items():
        assert market.bid_status(b)["expected_value_usd"] == v
    # one winner per round at price 45,000 (reserve), impact 10.25: roi = 10.25 / 45000
    market.offer("s1", reserve=45_000)
    market.account("w", 10**9)
    market.bid("w", "tw", 50_000)
    (row,) = market.clear(1)
    assert row["clearing_price_tokens"] == 45_000
    market.settle("s1", 1, 10.25)
    (w,) = [w for w in market.stats()["top_winners"] if w["task_id"] == "tw"]
    assert w["actual_impact"] == 10.25
    assert w["roi"] == 10.25 / 45_000 == 0.00022777777777777778


def test_stats_window_and_top_ten(market):
    days_ago = market.at(-4 * 24 * 60)
    for i in range(12):
        market.offer(f"s{i:02}", available_at=days_ago)
        market.account(f"a{i}")
        market.bid(f"a{i}", f"t{i}", 100 + i, ttl=60)
    market.offer("spare", available_at=days_ago)
    # a round three days ago (eligibility ignores placed_at): 12 winners at price 0, one spare slot
    assert len(market.clear(-3 * 24 * 60)) == 12
    market.account("z")
    market.bid("z", "tz", 5)
    market.offer("new")
    market.clear(1)
    st = market.stats()
    assert len(st["rounds"]) == 1  # the default window is the last 24 hours
    assert [w["task_id"] for w in st["top_winners"]] == ["tz"]
    st = market.stats(market.at(-4 * 24 * 60))
    assert len(st["rounds"]) == 2
    assert len(st["top_winners"]) == 10
    assert [w["max_price_tokens"] for w in st["top_winners"]] == list(range(111, 101, -1))
    empty = {"rounds": [], "rounds_truncated": False, "fill_rate": None, "top_winners": []}
    assert market.stats(market.at(2)) == empty
    assert_rejected(market.conn, STATS, (None,), "22004")


# -------------------------------------------------------------- bid_status --


def test_bid_status_won_open_and_unknown(market, one_win):
    won = market.bid_status(one_win["winner"])
    assert (won["bid_id"], won["status"], won["max_price_tokens"]) == (one_win["winner"], "won", 300)
    assert won["clearing_price_tokens"] == 200
    assert won["slot_id"] == "s1"
    lost = market.bid_status(one_win["loser"])
    assert (lost["bid_id"], lost["status"], lost["max_price_tokens"]) == (one_win["loser"], "open", 200)
    assert "200" in (lost["why_not_won"] or "")  # outbid at the clearing price
    market.settle("s1")
    assert market.bid_status(one_win["winner"])["status"] == "settled"
    assert_rejected(market.conn, BID_STATUS, (424_242,), "P0002")
    assert_rejected(market.conn, BID_STATUS, (None,), "22004")


def test_top_winners_leave_out_a_round_outside_the_window_between_two_inside(conn):
    """Round ids follow insertion, not cleared_at: a round cleared with an earlier `now` sits
    between two rounds of the window by id, and its winner is not one of the window's."""
    conn.execute("SELECT compute_auction.open_account('w', 'agent', 10000)")
    for i, (price, when) in enumerate([(100, "now()"), (900, "now() - interval '2 days'"), (200, "now()")]):
        conn.execute(f"SELECT compute_auction.offer_slot('ws{i}', now() - interval '3 days', 0)")
        conn.execute("SELECT compute_auction.place_bid('w', %s, %s)", (f"wt{i}", price))
        conn.execute(f"SELECT * FROM compute_auction.clear_round({when})")
    ids = [r[0] for r in conn.execute("SELECT round_id FROM compute_auction.compute_auction_rounds ORDER BY 1")]
    assert len(ids) == 3
    st = conn.execute("SELECT compute_auction.stats(now() - interval '1 day', false)").fetchone()[0]
    assert [w["task_id"] for w in st["top_winners"]] == ["wt2", "wt0"]
    st = conn.execute("SELECT compute_auction.stats(now() - interval '3 days', false)").fetchone()[0]
    assert [w["task_id"] for w in st["top_winners"]] == ["wt1", "wt2", "wt0"]
    assert_audit_clean(conn)
