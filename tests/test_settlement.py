"""Settlement (extension/src/settlement.rs): settle, abort_slot, abort_stale and
refund_unfilled (expiry of open bids past their TTL).

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
    ABORT,
    ABORT_STALE,
    CLEAR,
    LONG,
    REFUND,
    SETTLE,
    START,
    assert_rejected,
)

# ------------------------------------------------------------------ settle --


def test_settle_charges_clearing_price_and_returns_premium(market, one_win):
    before = market.circulation()
    assert market.settle("s1", cost=42, impact=3.5) == 200
    assert market.balance("alice") == (START - 200, 0)
    assert market.dicts("SELECT total_spent FROM compute_auction.token_accounts WHERE account_id = 'alice'") == [
        {"total_spent": 200}
    ]
    entries = market.ledger_for_bid(one_win["winner"])[1:]  # after the escrow
    assert sum(e["delta_held"] for e in entries) == -300
    assert sum(e["delta_balance"] for e in entries) == 100  # the premium, 300 - 200
    assert {e["entry_kind"] for e in entries} == {"charge", "premium"}
    assert all(e["account_id"] == "alice" for e in entries)
    # the clearing price leaves circulation: nobody is credited with it
    assert market.circulation() == before - 200
    (c,) = market.clears()
    assert (c["status"], c["actual_cost_tokens"], c["actual_impact"]) == ("settled", 42, 3.5)
    assert c["slot_finished_at"] is not None
    assert market.bid_field(one_win["winner"], "status") == "settled"
    slot = market.slot("s1")
    assert slot["status"] == "idle"
    assert slot["available_at"] == c["slot_finished_at"]  # available again from the settlement
    market.assert_journal("alice")
    # the loser is untouched and wins the re-offered slot in the next round
    assert market.bid_field(one_win["loser"], "status") == "open"
    assert [r["bid_id"] for r in market.clear(2)] == [one_win["loser"]]
    assert_audit_clean(market.conn)


def test_settle_twice_is_rejected(market, one_win):
    market.settle("s1", 1, 1.0)
    assert_rejected(market.conn, SETTLE, ("s1", 1, 1.0), "55000")
    assert_audit_clean(market.conn)


def test_settle_unknown_or_idle_slot_is_rejected(market, one_win):
    market.offer("idle-slot")
    assert_rejected(market.conn, SETTLE, ("no-such-slot", 1, 1.0), "P0002")
    assert_rejected(market.conn, SETTLE, ("idle-slot", 1, 1.0), "55000")
    assert_audit_clean(market.conn)


@pytest.mark.parametrize(
    "params, sqlstate",
    [
        pytest.param((None, 1, 1.0), "22004", id="null-slot"),
        pytest.param(("s1", None, 1.0), "22004", id="null-cost"),
        pytest.param(("s1", 1, None), "22004", id="null-impact"),
        pytest.param(("", 1, 1.0), "22023", id="empty-slot"),
        pytest.param((LONG, 1, 1.0), "22001", id="257-char-slot"),
        pytest.param(("s1", -1, 1.0), "22023", id="negative-cost"),
        pytest.param(("s1", 1, float("nan")), "22023", id="nan-impact"),
        pytest.param(("s1", 1, float("inf")), "22023", id="inf-impact"),
    ],
)
def test_settle_bad_input_is_rejected(market, one_win, params, sqlstate):
    assert_rejected(market.conn, SETTLE, params, sqlstate)
    assert_audit_clean(market.conn)


# ------------------------------------------------------------------- abort --


def test_abort_slot_refunds_in_full_and_frees_the_slot(market, one_win):
    assert market.abort("s1", "runner crashed") == 300  # the whole escrow, not the price
    assert market.balance("alice") == (START, 0)
    assert market.bid_field(one_win["winner"], "status") == "aborted"
    (c,) = market.clears()
    assert c["status"] == "aborted"
    slot = market.slot("s1")
    assert slot["status"] == "idle"
    assert slot["available_at"] <= market.value("SELECT now()")  # available again at once
    refund = market.ledger_for_bid(one_win["winner"])[-1]
    assert (refund["delta_balance"], refund["delta_held"]) == (300, -300)
    assert market.claim("s1") == []
    # the slot takes part in the very next round
    assert [r["bid_id"] for r in market.dicts(CLEAR, (market.value("SELECT now()"),))] == [one_win["loser"]]
    assert_audit_clean(market.conn)


def test_abort_twice_unknown_idle_or_bad_input_is_rejected(market, one_win):
    market.offer("idle-slot")
    market.abort("s1")
    conn = market.conn
    assert_rejected(conn, ABORT, ("s1", "again"), "55000")
    assert_rejected(conn, ABORT, ("idle-slot", "r"), "55000")
    assert_rejected(conn, ABORT, ("no-such-slot", "r"), "P0002")
    assert_rejected(conn, ABORT, (None, "r"), "22004")
    assert_rejected(conn, ABORT, ("s1", None), "22004")
    assert_rejected(conn, ABORT, ("", "r"), "22023")
    assert_rejected(conn, ABORT, (LONG, "r"), "22001")
    assert_audit_clean(conn)


def test_settle_after_abort_is_rejected(market, one_win):
    market.abort("s1")
    assert_rejected(market.conn, SETTLE, ("s1", 1, 1.0), "55000")
    assert_audit_clean(market.conn)


def test_abort_stale_aborts_only_old_assignments(market):
    for s in ("old-1", "old-2", "settled", "new"):
        market.offer(s)
    bids = {}
    for name, price in (("a", 400), ("b", 300), ("c", 200)):
        market.account(name)
        bids[name] = market.bid(name, f"t-{name}", price, ttl=500)
    market.clear(0)  # round at t0: a -> new, b -> old-1, c -> old-2 (slot_id order)
    market.settle("new")  # a settled: never touched by abort_stale
    market.account("d")
    market.bid("d", "t-d", 100, ttl=500)
    market.offer("late")
    market.clear(45)  # round at t0+45min: d -> late
    stale = lambda older, minutes: market.value(ABORT_STALE, (older, market.at(minutes)))  # noqa: E731

    assert stale("1 hour", 59) == 0
    assert stale("1 hour", 61) == 2  # only the two assignments of the first round
    for name in ("b", "c"):
        assert market.bid_field(bids[name], "status") == "aborted"
        assert market.balance(name) == (START, 0)
    assert market.slot("old-1")["status"] == "idle" and market.slot("old-2")["status"] == "idle"
    assert {c["slot_id"]: c["status"] for c in market.clears()} == {
        "new": "settled",
        "old-1": "aborted",
        "old-2": "aborted",
        "late": "assigned",
    }
    assert stale("1 hour", 61) == 0
    assert stale("10 minutes", 50) == 0
    assert stale("10 minutes", 56) == 1
    assert market.balance("d") == (START, 0)
    assert market.value("SELECT compute_auction.abort_stale()") == 0
    assert_audit_clean(market.conn)


def test_abort_stale_with_defaults(market, one_win):
    # the round was cleared at t0+1min; by default nothing is an hour old yet
    assert market.value("SELECT compute_auction.abort_stale()") == 0
    assert market.value("SELECT compute_auction.abort_stale(now => %s::timestamptz)", (market.at(62),)) == 1
    assert market.balance("alice") == (START, 0)
    assert_audit_clean(market.conn)


@pytest.mark.parametrize(
    "older_than, now_minutes, sqlstate",
    [
        pytest.param("-1 minute", 0, "22023", id="negative-older-than"),
        pytest.param(None, 0, "22004", id="null-older-than"),
        pytest.param("1 hour", None, "22004", id="null-now"),
    ],
)
def test_abort_stale_bad_input_is_rejected(market, one_win, older_than, now_minutes, sqlstate):
    now = None if now_minutes is None else market.at(now_minutes)
    assert_rejected(market.conn, ABORT_STALE, (older_than, now), sqlstate)


# ------------------------------------------------------------------ expiry --


def test_refund_unfilled_expires_open_bids_past_their_ttl(market, one_win):
    market.account("c", 1_000)
    short = [market.bid("c", "short-1", 100, ttl=5), market.bid("c", "short-2", 50, ttl=8)]
    long = market.bid("c", "long", 25, ttl=30)
    # the loser of one_win has TTL t0+10 min; the won bid is never expired
    assert market.refund(4) == (0, 0)
    assert market.refund(9) == (2, 150)
    for b in short:
        assert market.bid_field(b, "status") == "expired"
    assert market.balance("c") == (1_000 - 25, 25)
    refunds = [e for b in short for e in market.ledger_for_bid(b) if e["entry_kind"] == "refund"]
    assert sorted((e["delta_balance"], e["delta_held"]) for e in refunds) == [(50, -50), (100, -100)]
    assert market.refund(9) == (0, 0)
    assert market.refund(11) == (1, 200)  # bob's losing bid
    assert market.balance("bob") == (START, 0)
    assert market.bid_field(one_win["winner"], "status") == "won"
    assert market.bid_field(long, "status") == "open"
    assert market.balance("alice") == (START - 300, 300)
    for acct in ("alice", "bob", "c"):
        market.assert_journal(acct)
    assert_audit_clean(market.conn)


def test_refund_unfilled_default_now_and_null(market):
    market.account("a", 1_000)
    market.bid("a", "t", 100, ttl=5)
    assert market.dicts("SELECT * FROM compute_auction.refund_unfilled()") == [
        {"bids_expired": 0, "tokens_refunded": 0}
    ]
    assert_rejected(market.conn, REFUND, (None,), "22004")
    assert_audit_clean(market.conn)


def test_expired_bids_do_not_win(market):
    market.account("a")
    market.account("b")
    market.offer("s1")
    market.bid("a", "ta", 1_000, ttl=5)  # expired by the round, not yet refunded
    b = market.bid("b", "tb", 10, ttl=20)
    (row,) = market.clear(10)
    assert (row["bid_id"], row["clearing_price_tokens"]) == (b, 0)
    assert market.rounds()[0]["bids_eligible"] == 1
    assert_audit_clean(market.conn)


BIGINT_MAX = 9_223_372_036_854_775_807


def test_refunds_beyond_bigint_never_stop_the_market(conn):
    """Two bids that escrow 5e18 tokens each expire together: their refunds (1e19) do not fit in
    a bigint. refund_unfilled refunds what fits and leaves the other bid for its next call (it
    used to fail with 22003 every time, and run_cycle with it), and the lifetime tokens-refunded
    counter saturates at the bigint maximum instead of failing every later round's fold (it
    made clear_round fail with 22003 for good)."""
    huge = 5_000_000_000_000_000_000
    for who in ("whale1", "whale2"):
        conn.execute("SELECT compute_auction.open_account(%s, 'agent', %s)", (who, huge))
        conn.execute(
            "SELECT compute_auction.place_bid(%s, %s, %s, NULL, now() + interval '1 minute')", (who, f"{who}-t", huge)
        )
    later = "now() + interval '2 minutes'"
    assert conn.execute(f"SELECT * FROM compute_auction.refund_unfilled({later})").fetchone() == (1, huge)
    assert conn.execute(f"SELECT * FROM compute_auction.refund_unfilled({later})").fetchone() == (1, huge)
    assert conn.execute(f"SELECT * FROM compute_auction.refund_unfilled({later})").fetchone() == (0, 0)
    statuses = conn.execute("SELECT status FROM compute_auction.compute_auction_bids ORDER BY id").fetchall()
    assert statuses == [("expired",), ("expired",)]
    for who in ("whale1", "whale2"):
        assert conn.execute("SELECT * FROM compute_auction.balance(%s)", (who,)).fetchone() == (huge, 0)
    # the market keeps clearing, and the counter says "at least the bigint maximum"
    conn.execute("SELECT compute_auction.offer_slot('s-whale')")
    for _ in range(2):
        conn.execute("SELECT * FROM compute_auction.clear_round()").fetchall()
        conn.execute("SELECT compute_auction.run_cycle()")
    summary = conn.execute("SELECT compute_auction.market_summary()").fetchone()[0]
    assert summary["tokens_refunded_total"] == BIGINT_MAX
    assert_audit_clean(conn)
