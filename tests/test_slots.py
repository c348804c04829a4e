"""Slots (extension/src/slots.rs): offer_slot, retire_slot and claim_slot.

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
    CLAIM,
    LONG,
    OFFER,
    RETIRE,
    assert_rejected,
)

# ------------------------------------------------------------------- slots --


def test_offer_slot_registers_and_reoffers(market):
    market.conn.execute("SELECT compute_auction.offer_slot(%s)", ("default",))
    s = market.slot("default")
    assert (s["status"], s["reserve_price_tokens"]) == ("idle", 0)
    assert s["available_at"] <= market.value("SELECT now()")
    market.offer("s", reserve=10, available_at=market.at(5))
    market.offer("s", reserve=20, available_at=market.at(7))  # re-offer an idle slot
    s = market.slot("s")
    assert (s["status"], s["reserve_price_tokens"], s["available_at"]) == ("idle", 20, market.at(7))
    assert market.value("SELECT count(*) FROM compute_auction.compute_slots") == 2


def test_offer_slot_on_assigned_slot_is_rejected(market, one_win):
    assert_rejected(market.conn, OFFER, ("s1", market.at(0), 5), "55000")
    assert_audit_clean(market.conn)


@pytest.mark.parametrize(
    "params, sqlstate",
    [
        pytest.param((None, None, 0), "22004", id="null-slot"),
        pytest.param(("n", None, 0), "22004", id="null-available-at"),
        pytest.param(("n", "now", None), "22004", id="null-reserve"),
        pytest.param(("", "now", 0), "22023", id="empty-slot"),
        pytest.param((LONG, "now", 0), "22001", id="257-char-slot"),
        pytest.param(("n", "now", -1), "22023", id="negative-reserve"),
        pytest.param(("s1", "now", -1), "22023", id="negative-reserve-existing-slot"),
    ],
)
def test_offer_slot_bad_input_is_rejected(market, params, sqlstate):
    market.offer("s1")
    slot, at, reserve = params
    assert_rejected(market.conn, OFFER, (slot, market.t0 if at == "now" else at, reserve), sqlstate)


def test_retire_idle_slot(market):
    market.account("a")
    market.offer("s1")
    market.offer("s2")
    market.conn.execute(RETIRE, ("s1",))
    assert market.slot("s1")["status"] == "retired"
    market.conn.execute(RETIRE, ("s1",))  # retiring a retired slot does nothing
    assert market.slot("s1")["status"] == "retired"
    b1 = market.bid("a", "t1", 100)
    b2 = market.bid("a", "t2", 90)
    assert [(r["slot_id"], r["bid_id"]) for r in market.clear(1)] == [("s2", b1)]
    assert market.rounds()[0]["slots_offered"] == 1
    assert market.claim("s1") == []
    assert [a["slot_id"] for a in market.order_book()["asks"]] == []
    # a retired slot can be offered again
    market.offer("s1")
    assert [(r["slot_id"], r["bid_id"]) for r in market.clear(2)] == [("s1", b2)]
    assert_audit_clean(market.conn)


def test_retire_assigned_slot_retires_after_settle(market, one_win):
    market.conn.execute(RETIRE, ("s1",))
    assert market.slot("s1")["status"] == "assigned"
    assert market.claim("s1") != []
    assert market.settle("s1", 1, 1.0) == 200
    assert market.slot("s1")["status"] == "retired"
    assert market.clear(2) == []
    assert market.rounds()[-1]["slots_offered"] == 0
    assert market.bid_field(one_win["loser"], "status") == "open"
    assert_audit_clean(market.conn)


def test_retire_unknown_or_bad_slot_is_rejected(market):
    assert_rejected(market.conn, RETIRE, ("no-such-slot",), "P0002")
    assert_rejected(market.conn, RETIRE, (None,), "22004")
    assert_rejected(market.conn, RETIRE, ("",), "22023")


def test_claim_slot(market, one_win):
    cur = market.conn.execute(CLAIM, ("s1",))
    assert [d.name for d in cur.description] == ["bid_id", "task_id", "bidder_id", "clearing_price_tokens"]
    assert cur.fetchall() == [(one_win["winner"], "task-a", "alice", 200)]
    assert market.claim("s1") == [(one_win["winner"], "task-a", "alice", 200)]  # asking again is fine
    market.offer("idle-slot")
    assert market.claim("idle-slot") == []
    market.settle("s1")
    assert market.claim("s1") == []
    assert_rejected(market.conn, CLAIM, ("no-such-slot",), "P0002")
    assert_rejected(market.conn, CLAIM, (None,), "22004")
