"""The auction's clearing (extension/src/clearing.rs): the acceptance scenario (ten bids, five
slots), the uniform (k+1)th-price rule with reserves, and clear_round's rows, its lock against
a concurrent round, its now => argument and its NOTIFY.

Split from the former test_compute_auction.py (issue 3's tests), used the way an existing Python
application uses the extension (psycopg 3). Time is never slept away: every test reads the
server's clock once (Market.t0) and passes explicit timestamps relative to it. Every error case
asserts the SQLSTATE and that a snapshot of every extension table is unchanged; tests that move
tokens end with assert_audit_clean(). Helpers: tests/helpers.py; fixtures market, ten_bids and
one_win: conftest.py.
"""

from __future__ import annotations

import json
import re
import threading

import psycopg
import pytest

from conftest import assert_audit_clean, wait_until
from helpers import (
    CANCEL,
    CLEAR,
    FIVE_SLOTS,
    START,
    TEN_PRICES,
    TEN_TTL,
    assert_rejected,
)

# ------------------------------------------------------ acceptance scenario --


def test_acceptance_ten_bids_five_slots(market, ten_bids):
    ranked = sorted(TEN_PRICES, reverse=True)
    winners, losers = ranked[:5], ranked[5:]
    price = ranked[5]  # the 6th-highest bid
    assert price == 45_000

    rows = market.clear(1)

    # the clearing price equals the 6th-highest bid; the winners are the five highest
    assert {r["clearing_price_tokens"] for r in rows} == {price}
    assert sorted(r["bid_id"] for r in rows) == sorted(ten_bids[p][0] for p in winners)
    # the i-th bid wins the i-th slot (all reserves 0 and same time: slot_id order)
    assert [(r["slot_id"], r["bid_id"], r["bidder_id"], r["task_id"]) for r in rows] == [
        (s, *ten_bids[p]) for s, p in zip(FIVE_SLOTS, winners, strict=True)
    ]
    (rnd,) = market.rounds()
    assert (rnd["slots_offered"], rnd["bids_eligible"], rnd["slots_filled"], rnd["clearing_price_tokens"]) == (
        5,
        10,
        5,
        price,
    )
    clears = market.clears()
    assert len(clears) == 5
    for c in clears:
        assert c["status"] == "assigned"
        assert c["round_id"] == rnd["round_id"]
        assert c["clearing_price_tokens"] == price
        assert c["runner_up_task_id"] == ten_bids[price][2]
    # winners' escrow stays held until settlement; losers stay open
    for p in winners:
        assert market.bid_field(ten_bids[p][0], "status") == "won"
        assert market.balance(ten_bids[p][1]) == (START - p, p)
    for p in losers:
        assert market.bid_field(ten_bids[p][0], "status") == "open"

    # settle all five, with distinct realised impacts
    impact = {p: p / 10_000 + 0.25 for p in winners}
    for s, p in zip(FIVE_SLOTS, winners, strict=True):
        assert market.settle(s, cost=p // 100, impact=impact[p]) == price
    for p in winners:
        bid_id, agent, _ = ten_bids[p]
        assert market.balance(agent) == (START - price, 0)  # fell by exactly the clearing price
        assert market.bid_field(bid_id, "status") == "settled"
    for c in market.clears():
        p = c["max_price_tokens"]
        assert c["status"] == "settled"
        assert c["actual_impact"] == impact[p]
        assert c["actual_cost_tokens"] == p // 100
        assert c["slot_finished_at"] is not None

    # the losers, once their TTL has passed and refund_unfilled ran, have exactly their start
    for p in losers:
        assert market.balance(ten_bids[p][1]) == (START - p, p)
    assert market.refund(TEN_TTL + 1) == (5, sum(losers))
    for p in losers:
        assert market.balance(ten_bids[p][1]) == (START, 0)
        assert market.bid_field(ten_bids[p][0], "status") == "expired"
    for _, agent, _ in ten_bids.values():
        market.assert_journal(agent)
    assert_audit_clean(market.conn)

    # impact and roi (= impact / clearing price, unrounded double) in stats()
    top = market.stats()["top_winners"]
    assert [w["max_price_tokens"] for w in top] == winners
    for w in top:
        assert w["actual_impact"] == impact[w["max_price_tokens"]]
        assert w["roi"] == impact[w["max_price_tokens"]] / price


# ---------------------------------------------------------- clearing rule --

# (reserves of slots s0.., bid prices placed in this order (bid i by agent i on task i),
#  expected [(slot, bid index)] winners, price, runner-up bid index, runner-up last_result)
CLEARING_CASES = [
    pytest.param([0, 0], [], [], None, None, None, id="no-bids"),
    pytest.param([], [500, 400], [], None, None, None, id="no-slots"),
    pytest.param([0, 0, 0], [500, 400], [("s0", 0), ("s1", 1)], 0, None, None, id="fewer-bids-than-slots-price-0"),
    pytest.param(
        [100, 200, 300],
        [1_000, 900],
        [("s0", 0), ("s1", 1)],
        200,
        None,
        None,
        id="fewer-bids-than-slots-price-is-kth-reserve",
    ),
    pytest.param([250], [1_000], [("s0", 0)], 250, None, None, id="single-bid-pays-reserve"),
    pytest.param(
        [0, 0], [100, 50, 50], [("s0", 0), ("s1", 1)], 50, 2, "outbid at 50", id="tie-at-boundary-earlier-bid-wins"
    ),
    pytest.param([0], [70, 70, 70], [("s0", 0)], 70, 1, "outbid at 70", id="three-way-tie-earliest-wins"),
    pytest.param(
        [0, 500, 1_000],
        [800, 600, 300],
        [("s0", 0), ("s1", 1)],
        500,
        2,
        "below reserve",
        id="reserve-leaves-slot-unfilled-price-is-reserve",
    ),
    pytest.param(
        [0, 100],
        [1_000, 800, 600],
        [("s0", 0), ("s1", 1)],
        600,
        2,
        "outbid at 600",
        id="price-is-next-bid-above-reserve",
    ),
    pytest.param(
        [0, 700],
        [1_000, 800, 600],
        [("s0", 0), ("s1", 1)],
        700,
        2,
        "outbid at 700",
        id="price-is-reserve-above-next-bid",
    ),
    pytest.param(
        [0, 900], [1_000, 800, 600], [("s0", 0)], 800, 1, "below reserve", id="second-slot-reserve-above-second-bid"
    ),
    pytest.param([2_000, 3_000], [1_000, 800], [], None, 0, "below reserve", id="all-bids-below-reserve"),
    pytest.param(
        [300, 0, 100],
        [50, 400, 150, 90],
        [("s1", 1), ("s2", 2)],
        100,
        3,
        "below reserve",
        id="slots-filled-cheapest-reserve-first",
    ),
    pytest.param(
        [0, 0, 0],
        [5, 1_000, 20, 7],
        [("s0", 1), ("s1", 2), ("s2", 3)],
        5,
        0,
        "outbid at 5",
        id="winners-are-the-top-k-by-price",
    ),
]


@pytest.mark.parametrize("reserves, prices, winners, price, runner_up, runner_up_result", CLEARING_CASES)
def test_clearing_rule(market, reserves, prices, winners, price, runner_up, runner_up_result):
    for i, r in enumerate(reserves):
        market.offer(f"s{i}", reserve=r)
    agents = [market.account(f"agent-{i}") for i in range(len(prices))]
    bids = [market.bid(agents[i], f"task-{i}", p) for i, p in enumerate(prices)]

    rows = market.clear(1)

    assert [(r["slot_id"], r["bid_id"]) for r in rows] == [(s, bids[i]) for s, i in winners]
    assert all(r["clearing_price_tokens"] == price for r in rows)
    assert all(r["task_id"] == f"task-{bids.index(r['bid_id'])}" for r in rows)
    (rnd,) = market.rounds()
    assert rnd["slots_offered"] == len(reserves)
    assert rnd["bids_eligible"] == len(prices)
    assert rnd["slots_filled"] == len(winners)
    assert rnd["clearing_price_tokens"] == price
    clears = market.clears()
    assert [(c["slot_id"], c["bid_id"]) for c in clears] == sorted((s, bids[i]) for s, i in winners)
    runner_up_task = None if runner_up is None else f"task-{runner_up}"
    for c in clears:
        assert c["clearing_price_tokens"] == price
        assert c["runner_up_task_id"] == runner_up_task
    won = {bids[i] for _, i in winners}
    for i, b in enumerate(bids):
        row = market.bid_row(b)
        assert row["status"] == ("won" if b in won else "open")
        if b not in won:
            assert row["last_result"] == (runner_up_result if i == runner_up else None)
        assert market.balance(agents[i]) == (START - prices[i], prices[i])  # escrow still held
    filled = {s for s, _ in winners}
    for i in range(len(reserves)):
        assert market.slot(f"s{i}")["status"] == ("assigned" if f"s{i}" in filled else "idle")
    assert_audit_clean(market.conn)


def test_settle_at_reserve_price_charges_the_reserve(market):
    market.offer("cheap", reserve=100)
    market.offer("dear", reserve=200)
    market.offer("unfilled", reserve=300)
    market.account("a")
    market.account("b")
    a = market.bid("a", "ta", 1_000)
    b = market.bid("b", "tb", 900)
    rows = market.clear(1)
    assert [(r["slot_id"], r["bid_id"], r["clearing_price_tokens"]) for r in rows] == [
        ("cheap", a, 200),
        ("dear", b, 200),
    ]
    assert market.settle("cheap") == 200
    assert market.settle("dear") == 200
    assert market.balance("a") == (START - 200, 0)
    assert market.balance("b") == (START - 200, 0)
    assert market.slot("unfilled")["status"] == "idle"
    assert_audit_clean(market.conn)


def test_price_zero_round_settles_for_free(market):
    market.account("a")
    market.offer("s1")
    market.offer("s2")
    b = market.bid("a", "t", 500)
    (row,) = market.clear(1)
    assert (row["bid_id"], row["clearing_price_tokens"]) == (b, 0)
    assert market.clears()[0]["runner_up_task_id"] is None
    assert market.settle(row["slot_id"], 0, 2.0) == 0
    assert market.balance("a") == (START, 0)
    assert market.dicts("SELECT total_spent FROM compute_auction.token_accounts WHERE account_id='a'") == [
        {"total_spent": 0}
    ]
    assert_audit_clean(market.conn)


def test_last_result_is_written_only_on_the_k_plus_first_bid(market):
    for s in ("s1", "s2", "s3"):
        market.offer(s)
    prices = [900, 800, 700, 600, 500, 400]
    bids = [market.bid(market.account(f"a{i}"), f"t{i}", p) for i, p in enumerate(prices)]
    rows = market.clear(1)
    assert [r["bid_id"] for r in rows] == bids[:3]
    assert market.bid_field(bids[3], "last_result") == "outbid at 600"
    assert market.bid_field(bids[4], "last_result") is None
    assert market.bid_field(bids[5], "last_result") is None
    assert {c["runner_up_task_id"] for c in market.clears()} == {"t3"}
    assert_audit_clean(market.conn)


def test_losers_stay_open_and_win_later_rounds(market, ten_bids):
    market.clear(1)
    for s in FIVE_SLOTS[:2]:
        market.settle(s)
    # two slots are idle again: the next two bids win at the 8th-highest price
    rows = market.clear(2)
    assert [r["bid_id"] for r in rows] == [ten_bids[45_000][0], ten_bids[34_000][0]]
    assert {r["clearing_price_tokens"] for r in rows} == {23_000}
    assert market.rounds()[-1]["bids_eligible"] == 5
    assert_audit_clean(market.conn)


# -------------------------------------------------------------- clear_round --


def test_every_call_writes_a_round_row(market):
    assert market.dicts("SELECT * FROM compute_auction.clear_round()") == []
    assert market.clear(1) == []
    market.offer("s1")
    assert market.clear(2) == []
    rounds = market.rounds()
    assert len(rounds) == 3
    for r in rounds:
        assert (r["slots_filled"], r["bids_eligible"], r["clearing_price_tokens"]) == (0, 0, None)
    assert [r["slots_offered"] for r in rounds] == [0, 0, 1]
    assert [r["cleared_at"] for r in rounds[1:]] == [market.at(1), market.at(2)]
    assert market.clears() == []


def test_bids_eligible_counts_open_unexpired_bids(market):
    for i in range(6):
        market.account(f"a{i}")
    b = [
        market.bid("a0", "t0", 500, ttl=30),
        market.bid("a1", "t1", 400, ttl=30),
        market.bid("a2", "t2", 300, ttl=5),  # expired at the rounds below, not yet refunded
        market.bid("a3", "t3", 200, ttl=8),  # expired at the rounds below, not yet refunded
        market.bid("a4", "t4", 100, ttl=30),
        market.bid("a5", "t5", 50, ttl=30),
    ]
    market.value(CANCEL, (b[5],))
    market.clear(10)  # no slots: k = 0
    assert market.rounds()[-1]["bids_eligible"] == 3
    market.offer("s1")
    rows = market.clear(10)
    assert [r["bid_id"] for r in rows] == [b[0]]
    assert market.rounds()[-1]["bids_eligible"] == 3
    assert market.clear(10) == []  # the winner is no longer eligible
    assert market.rounds()[-1]["bids_eligible"] == 2
    assert market.clear(1) == []  # earlier: the short bids are eligible again
    assert market.rounds()[-1]["bids_eligible"] == 4
    assert market.refund(10) == (2, 500)
    market.clear(10)
    assert market.rounds()[-1]["bids_eligible"] == 2
    assert market.clear(40) == []
    assert market.rounds()[-1]["bids_eligible"] == 0
    assert_audit_clean(market.conn)


def test_clear_round_with_now_in_the_past_and_future(market):
    market.account("a")
    market.account("b")
    market.offer("past-slot", available_at=market.at(-120))
    market.offer("future-slot", available_at=market.at(60))
    a = market.bid("a", "ta", 300, ttl=30)
    b = market.bid("b", "tb", 200, ttl=90)
    # an hour ahead: a's TTL has passed, both slots are available; same reserve, so the sooner
    # available_at (past-slot) is filled first
    rows = market.clear(70)
    assert [(r["slot_id"], r["bid_id"], r["clearing_price_tokens"]) for r in rows] == [("past-slot", b, 0)]
    assert market.rounds()[-1]["slots_offered"] == 2
    assert market.rounds()[-1]["bids_eligible"] == 1
    # now an hour in the past (need not increase): only the past slot existed, and it is taken
    assert market.clear(-60) == []
    assert market.rounds()[-1]["slots_offered"] == 0
    # the future slot is not available at a time before its available_at
    assert market.clear(30) == []
    assert market.clear(61) == []  # the future slot is available now, but a's TTL (t0+30) has passed
    assert market.rounds()[-1]["slots_offered"] == 1
    market.abort("past-slot")
    market.offer("past-slot", available_at=market.at(-120))  # re-offer the idle slot
    # an hour in the past a's bid is live again (eligibility ignores placed_at)
    rows = market.clear(-60)
    assert [(r["slot_id"], r["bid_id"], r["clearing_price_tokens"]) for r in rows] == [("past-slot", a, 0)]
    assert market.clears()[-1]["slot_started_at"] == market.at(-60)
    assert [r["cleared_at"] for r in market.rounds()] == [market.at(m) for m in (70, -60, 30, 61, -60)]
    assert_audit_clean(market.conn)


def test_clear_round_null_now_is_rejected(market):
    assert_rejected(market.conn, CLEAR, (None,), "22004")


def test_clears_rows_record_the_round(market, ten_bids):
    rows = market.clear(1)
    (rnd,) = market.rounds()
    by_bid = {r["bid_id"]: r for r in rows}
    for c in market.clears():
        r = by_bid[c["bid_id"]]
        assert (c["slot_id"], c["bidder_id"], c["winning_task_id"]) == (r["slot_id"], r["bidder_id"], r["task_id"])
        assert c["max_price_tokens"] == int(r["task_id"].split("-")[1])
        assert c["runner_up_task_id"] == "task-45000"
        assert c["slot_started_at"] == market.at(1)
        assert (c["slot_finished_at"], c["actual_cost_tokens"], c["actual_impact"]) == (None, None, None)
        assert market.bid_field(c["bid_id"], "round_id") == rnd["round_id"]


def test_concurrent_clear_rounds_never_fill_a_slot_twice(fresh_db_url, market, one_win):
    market.settle("s1")
    market.account("c")
    market.bid("c", "task-c", 250)
    with psycopg.connect(fresh_db_url) as first:  # a transaction that holds its round open
        assert len(first.execute("SELECT * FROM compute_auction.clear_round()").fetchall()) == 1
        result = {}

        def second_round():
            with psycopg.connect(fresh_db_url, autocommit=True) as c:
                result["rows"] = c.execute("SELECT * FROM compute_auction.clear_round()").fetchall()

        t = threading.Thread(target=second_round)
        t.start()
        # the second round waits on a lock the first holds: seen in pg_stat_activity (its wait),
        # not guessed from a sleep; the deadline only detects a hang
        wait_until(
            lambda: (
                market.value(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE '%clear_round%'"
                )
                == 1
                or not t.is_alive()
            ),
            60,
            what="the second clear_round to wait on the first's lock",
        )
        assert t.is_alive(), "the second clear_round did not wait for the first"
        first.commit()
    t.join(60)
    assert not t.is_alive()
    assert result["rows"] == []
    assert [c["status"] for c in market.clears()].count("assigned") == 1
    assert_audit_clean(market.conn)


def test_listen_notifies_after_a_round_with_winners(fresh_db_url, market, ten_bids):
    with psycopg.connect(fresh_db_url, autocommit=True) as listener:
        listener.execute("LISTEN compute_auction_cleared")
        rows = market.clear(1)
        notes = list(listener.notifies(timeout=60, stop_after=1))  # the timeout only detects a hang
    assert len(notes) == 1, "no notification within 60 s"
    assert notes[0].channel == "compute_auction_cleared"
    payload = json.loads(notes[0].payload)
    (rnd,) = market.rounds()

    def field(word):
        (key,) = [k for k in payload if word in k]
        return payload[key]

    assert field("round") == rnd["round_id"]
    assert field("price") == 45_000 == rows[0]["clearing_price_tokens"]
    assert field("filled") == 5


def test_a_generic_plan_of_the_round_reads_only_the_top_of_the_book(conn):
    """clear_round's statements are prepared once per backend, and PostgreSQL may run them with
    a generic plan (plan_cache_mode = force_generic_plan forces one). The scan for the bids
    ahead of the last candidate (clearing.rs AHEAD) must still be a range of the book index
    bounded by the candidate's price, not the whole open book with the price as a filter:
    at 1M open bids that was 0.6 s a round (issue 21's benchmark). auto_explain shows the plan
    each nested statement ran with."""
    conn.execute("SELECT compute_auction.open_account('a', 'agent', 10000000000)")
    conn.execute(
        "SELECT count(compute_auction.place_bid('a', 't' || i, 1 + i % 5000)) FROM generate_series(1, 3000) AS i"
    )
    conn.execute("SELECT compute_auction.offer_slot('s1', now() - interval '1 minute', 0)")
    conn.execute("SELECT compute_auction.offer_slot('s2', now() - interval '1 minute', 0)")
    conn.execute("ANALYZE compute_auction.compute_auction_bids")
    conn.execute("LOAD 'auto_explain'")
    for setting in (
        "plan_cache_mode = force_generic_plan",
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_nested_statements = on",
        "auto_explain.log_analyze = on",
        "auto_explain.log_level = notice",
        "client_min_messages = notice",
    ):
        conn.execute(f"SET {setting}")
    plans: list[str] = []
    conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
    won = conn.execute("SELECT count(*) FROM compute_auction.clear_round()").fetchone()[0]
    conn.execute("RESET ALL")
    assert won == 2
    ahead = [p for p in plans if "id <> ALL" in p]
    assert ahead, "auto_explain showed no plan of the bids-ahead scan"
    for p in ahead:
        # the bound is an index condition, so the scan stops at the candidate's price
        assert "compute_auction_bids_book_idx" in p and "Index Cond: (max_price_tokens >=" in p, p
        removed = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", p)]
        assert all(n < 100 for n in removed), p
