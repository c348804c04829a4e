"""Bids (extension/src/bids.rs): place_bid's escrow, replacement and input checks, and
cancel_bid.

Split from the former test_compute_auction.py (issue 3's tests), used the way an existing Python
application uses the extension (psycopg 3). Time is never slept away: every test reads the
server's clock once (Market.t0) and passes explicit timestamps relative to it. Every error case
asserts the SQLSTATE and that a snapshot of every extension table is unchanged; tests that move
tokens end with assert_audit_clean(). Helpers: tests/helpers.py; fixtures market, ten_bids and
one_win: conftest.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from conftest import assert_audit_clean
from helpers import (
    CANCEL,
    LONG,
    PLACE,
    START,
    assert_rejected,
)

# ---------------------------------------------------------------- place_bid --


def test_place_bid_escrows_with_a_ledger_row_and_defaults(market):
    market.account("a", 1_000)
    bid_id = market.value("SELECT compute_auction.place_bid(%s, %s, %s)", ("a", "task-1", 400))
    row = market.bid_row(bid_id)
    assert (row["bidder_id"], row["task_id"], row["max_price_tokens"], row["status"]) == ("a", "task-1", 400, "open")
    assert row["expected_value_usd"] is None
    assert row["ttl_at"] - row["placed_at"] == timedelta(minutes=15)  # NULL ttl_at: 15 minutes after placed_at
    assert row["last_result"] is None
    assert market.balance("a") == (600, 400)
    (entry,) = market.ledger_for_bid(bid_id)
    assert (entry["account_id"], entry["entry_kind"], entry["delta_balance"], entry["delta_held"]) == (
        "a",
        "escrow",
        -400,
        400,
    )
    assert (entry["balance_after"], entry["held_after"]) == (600, 400)
    # the whole balance may be escrowed, with an expected value and a TTL just under 30 days
    b2 = market.value(PLACE, ("a", "task-2", 600, 12.5, market.at(30 * 24 * 60 - 1)))
    assert market.bid_row(b2)["expected_value_usd"] == 12.5
    assert market.balance("a") == (0, 1_000)
    assert_audit_clean(market.conn)


def test_replace_bid_same_id_escrow_adjusted(market):
    market.account("a", 1_000)
    b = market.bid("a", "t", 100, ev=1.0, ttl=10)
    placed = market.bid_row(b)["placed_at"]
    # raise: same id, only the difference moves
    assert market.bid("a", "t", 150, ev=2.0, ttl=20) == b
    row = market.bid_row(b)
    assert (row["max_price_tokens"], row["expected_value_usd"], row["ttl_at"]) == (150, 2.0, market.at(20))
    assert row["placed_at"] > placed  # a price change loses time priority
    assert market.balance("a") == (850, 150)
    # lower
    assert market.bid("a", "t", 80, ttl=5) == b
    assert market.balance("a") == (920, 80)
    # same price, new TTL: escrow and time priority untouched
    placed = market.bid_row(b)["placed_at"]
    assert market.bid("a", "t", 80, ttl=7) == b
    row = market.bid_row(b)
    assert (row["placed_at"], row["ttl_at"]) == (placed, market.at(7))
    assert market.balance("a") == (920, 80)
    moves = [(e["entry_kind"], e["delta_balance"], e["delta_held"]) for e in market.ledger_for_bid(b)]
    assert moves == [("escrow", -100, 100), ("escrow", -50, 50), ("release", 70, -70)]
    assert market.value("SELECT count(*) FROM compute_auction.compute_auction_bids") == 1
    assert_audit_clean(market.conn)


def test_replaced_bid_keeps_one_place_in_the_book(market):
    market.account("a")
    market.account("b")
    market.offer("s1")
    a = market.bid("a", "ta", 100)
    b = market.bid("b", "tb", 200)
    assert market.bid("a", "ta", 300) == a
    (row,) = market.clear(1)
    assert (row["bid_id"], row["clearing_price_tokens"]) == (a, 200)
    assert market.rounds()[0]["bids_eligible"] == 2
    assert market.bid_field(b, "last_result") == "outbid at 200"
    assert_audit_clean(market.conn)


def test_replace_by_another_bidder_is_rejected(market):
    market.account("a")
    market.account("b")
    market.bid("a", "shared-task", 100)
    assert_rejected(market.conn, PLACE, ("b", "shared-task", 500, None, market.at(10)), "23505")
    assert_audit_clean(market.conn)


def test_replace_after_won_is_rejected(market, one_win):
    ttl = market.at(10)
    assert_rejected(market.conn, PLACE, ("alice", "task-a", 999, None, ttl), "55000")
    assert_rejected(market.conn, PLACE, ("bob", "task-a", 999, None, ttl), "23505")
    assert_audit_clean(market.conn)


def test_replace_beyond_balance_is_rejected(market):
    market.account("a", 1_000)
    market.bid("a", "t", 600)
    assert_rejected(market.conn, PLACE, ("a", "t", 1_001, None, market.at(10)), "23514")
    assert market.bid("a", "t", 1_000) is not None  # exactly the balance is fine
    assert market.balance("a") == (0, 1_000)
    assert_audit_clean(market.conn)


def test_task_can_be_bid_again_once_its_bid_is_no_longer_live(market, one_win):
    market.settle("s1")
    again = market.bid("bob", "task-a", 50)
    assert again != one_win["winner"]
    assert market.bid_row(again)["status"] == "open"
    assert_audit_clean(market.conn)


def place_bid_bad_inputs():
    """(params builder taking the Market, sqlstate): 'rich' has START tokens, 'poor' has 100."""
    ok = lambda m: m.at(10)  # noqa: E731
    return [
        pytest.param(lambda m: ("poor", "t", 101, None, ok(m)), "23514", id="insufficient-balance"),
        pytest.param(lambda m: ("poor", "t", START, None, ok(m)), "23514", id="far-beyond-balance"),
        pytest.param(lambda m: ("rich", "t", 10, None, m.at(-1)), "22023", id="ttl-in-the-past"),
        pytest.param(lambda m: ("rich", "t", 10, None, m.at(-0.001)), "22023", id="ttl-just-past"),
        pytest.param(lambda m: ("rich", "t", 10, None, m.at(30 * 24 * 60 + 1)), "22023", id="ttl-over-30-days"),
        pytest.param(lambda m: ("rich", "t", 10, None, m.at(365 * 24 * 60)), "22023", id="ttl-a-year-ahead"),
        pytest.param(lambda m: ("rich", "t", 0, None, ok(m)), "22023", id="zero-price"),
        pytest.param(lambda m: ("rich", "t", -5, None, ok(m)), "22023", id="negative-price"),
        pytest.param(lambda m: ("rich", LONG, 10, None, ok(m)), "22001", id="257-char-task"),
        pytest.param(lambda m: (LONG, "t", 10, None, ok(m)), "22001", id="257-char-bidder"),
        pytest.param(lambda m: ("rich", "", 10, None, ok(m)), "22023", id="empty-task"),
        pytest.param(lambda m: ("", "t", 10, None, ok(m)), "22023", id="empty-bidder"),
        pytest.param(lambda m: ("rich", "t", 10, float("nan"), ok(m)), "22023", id="nan-expected-value"),
        pytest.param(lambda m: ("rich", "t", 10, float("inf"), ok(m)), "22023", id="inf-expected-value"),
        pytest.param(lambda m: ("rich", "t", 10, float("-inf"), ok(m)), "22023", id="minus-inf-expected-value"),
        pytest.param(lambda m: (None, "t", 10, None, ok(m)), "22004", id="null-bidder"),
        pytest.param(lambda m: ("rich", None, 10, None, ok(m)), "22004", id="null-task"),
        pytest.param(lambda m: ("rich", "t", None, None, ok(m)), "22004", id="null-price"),
        pytest.param(lambda m: ("nobody", "t", 10, None, ok(m)), "P0002", id="unknown-bidder"),
        pytest.param(lambda m: ("rich", "taken", 10, None, ok(m)), "23505", id="task-has-live-bid-by-another"),
    ]


@pytest.mark.parametrize("params, sqlstate", place_bid_bad_inputs())
def test_place_bid_bad_input_is_rejected_and_changes_nothing(market, params, sqlstate):
    market.account("rich")
    market.account("poor", 100)
    market.account("owner")
    market.bid("owner", "taken", 10)
    market.bid("rich", "existing", 10)
    assert_rejected(market.conn, PLACE, params(market), sqlstate)
    assert_audit_clean(market.conn)


# ------------------------------------------------------------------ cancel --


def test_cancel_releases_escrow(market):
    market.account("a", 1_000)
    market.account("b", 1_000)
    market.offer("s1")
    b = market.bid("a", "t", 400)
    assert market.value(CANCEL, (b,)) == 400
    assert market.bid_row(b)["status"] == "cancelled"
    assert market.balance("a") == (1_000, 0)
    assert [(e["entry_kind"], e["delta_balance"], e["delta_held"]) for e in market.ledger_for_bid(b)] == [
        ("escrow", -400, 400),
        ("release", 400, -400),
    ]
    # a cancelled bid takes no part in later rounds, and its task is free again
    assert market.clear(1) == []
    assert market.rounds()[0]["bids_eligible"] == 0
    other = market.bid("b", "t", 300)
    assert [r["bid_id"] for r in market.clear(2)] == [other]
    assert_audit_clean(market.conn)


def test_cancel_twice_unknown_won_or_null_is_rejected(market, one_win):
    conn = market.conn
    assert market.value(CANCEL, (one_win["loser"],)) == 200
    assert_rejected(conn, CANCEL, (one_win["loser"],), "55000")
    assert_rejected(conn, CANCEL, (one_win["winner"],), "55000")
    assert_rejected(conn, CANCEL, (987_654,), "P0002")
    assert_rejected(conn, CANCEL, (None,), "22004")
    assert_audit_clean(conn)


def test_cancel_expired_bid(market):
    market.account("a", 1_000)
    b = market.bid("a", "t", 100, ttl=5)
    market.refund(6)
    assert_rejected(market.conn, CANCEL, (b,), "55000")
    assert_audit_clean(market.conn)
