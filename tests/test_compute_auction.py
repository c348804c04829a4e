"""Issue 3: the auction (bids, slots, uniform (k+1)th-price clearing, settlement and refunds),
used the way an existing Python application uses the extension (psycopg 3).

Time is never slept away: every test reads the server's clock once (Market.t0) and passes
explicit ttl_at / clear_round(now => ...) / refund_unfilled(now => ...) / abort_stale(now => ...)
timestamps relative to it. Every error case asserts the SQLSTATE and that a snapshot of every
extension table is unchanged; tests that move tokens end with assert_audit_clean().
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import assert_audit_clean, snapshot, sqlstate_of

START = 200_000  # every agent's starting balance

PLACE = "SELECT compute_auction.place_bid(%s::text, %s::text, %s::bigint, %s::float8, %s::timestamptz)"
CANCEL = "SELECT compute_auction.cancel_bid(%s::bigint)"
OFFER = "SELECT compute_auction.offer_slot(%s::text, %s::timestamptz, %s::bigint)"
RETIRE = "SELECT compute_auction.retire_slot(%s::text)"
CLEAR = "SELECT * FROM compute_auction.clear_round(now => %s::timestamptz)"
CLAIM = "SELECT * FROM compute_auction.claim_slot(%s::text)"
SETTLE = "SELECT compute_auction.settle(%s::text, %s::bigint, %s::float8)"
ABORT = "SELECT compute_auction.abort_slot(%s::text, %s::text)"
ABORT_STALE = "SELECT compute_auction.abort_stale(older_than => %s::interval, now => %s::timestamptz)"
REFUND = "SELECT * FROM compute_auction.refund_unfilled(now => %s::timestamptz)"
ORDER_BOOK = "SELECT compute_auction.order_book(%s::int)"
STATS = "SELECT compute_auction.stats(%s::timestamptz)"
BID_STATUS = "SELECT compute_auction.bid_status(%s::bigint)"

BOOK_BID_KEYS = {"bid_id", "bidder_id", "task_id", "max_price_tokens", "expected_value_usd", "ttl_at", "placed_at"}
BOOK_ASK_KEYS = {"slot_id", "available_at", "reserve_price_tokens"}
ROUND_KEYS = {"round_id", "cleared_at", "clearing_price_tokens", "slots_offered", "slots_filled", "bids_eligible"}
WINNER_KEYS = {"bid_id", "task_id", "bidder_id", "max_price_tokens", "clearing_price_tokens", "actual_impact", "roi"}


# ----------------------------------------------------------------- helpers --


def ts(text: str) -> datetime:
    """A timestamptz as rendered in jsonb."""
    return datetime.fromisoformat(text)


def assert_rejected(conn, sql: str, params, sqlstate: str) -> None:
    """The call fails with exactly `sqlstate` and leaves every extension table unchanged."""
    before = snapshot(conn)
    assert sqlstate_of(conn, sql, params) == sqlstate
    assert snapshot(conn) == before


class Market:
    """A thin client over the SQL API, with times relative to the server clock at setup (t0)."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.t0: datetime = self.value("SELECT now()")

    # time
    def at(self, minutes: float) -> datetime:
        return self.t0 + timedelta(minutes=minutes)

    # raw access
    def value(self, sql, params=None):
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def dicts(self, sql, params=None) -> list[dict]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(sql, params).fetchall()

    # writes
    def account(self, account_id: str, tokens: int = START, kind: str = "agent") -> str:
        self.conn.execute(
            "SELECT compute_auction.open_account(%s::text, %s::text, %s::bigint)", (account_id, kind, tokens)
        )
        return account_id

    def offer(self, slot_id: str, reserve: int = 0, available_at: datetime | None = None) -> str:
        self.conn.execute(OFFER, (slot_id, available_at or self.at(-1), reserve))
        return slot_id

    def bid(self, bidder: str, task: str, price: int, ev: float | None = None, ttl: float = 10) -> int:
        """ttl: minutes after t0."""
        return self.value(PLACE, (bidder, task, price, ev, self.at(ttl)))

    def clear(self, minutes: float = 1) -> list[dict]:
        return self.dicts(CLEAR, (self.at(minutes),))

    def settle(self, slot_id: str, cost: int = 0, impact: float = 0.0) -> int:
        return self.value(SETTLE, (slot_id, cost, impact))

    def abort(self, slot_id: str, reason: str = "runner crashed") -> int:
        return self.value(ABORT, (slot_id, reason))

    def refund(self, minutes: float) -> tuple[int, int]:
        return tuple(self.conn.execute(REFUND, (self.at(minutes),)).fetchone())

    # reads
    def balance(self, account_id: str) -> tuple[int, int]:
        return tuple(self.conn.execute("SELECT * FROM compute_auction.balance(%s)", (account_id,)).fetchone())

    def bid_row(self, bid_id: int) -> dict:
        return self.dicts("SELECT * FROM compute_auction.compute_auction_bids WHERE id = %s", (bid_id,))[0]

    def bid_field(self, bid_id: int, field: str):
        return self.bid_row(bid_id)[field]

    def slot(self, slot_id: str) -> dict:
        return self.dicts("SELECT * FROM compute_auction.compute_slots WHERE slot_id = %s", (slot_id,))[0]

    def rounds(self) -> list[dict]:
        return self.dicts("SELECT * FROM compute_auction.compute_auction_rounds ORDER BY round_id")

    def clears(self) -> list[dict]:
        return self.dicts("SELECT * FROM compute_auction.compute_auction_clears ORDER BY round_id, slot_id")

    def ledger_for_bid(self, bid_id: int) -> list[dict]:
        return self.dicts("SELECT * FROM compute_auction.token_ledger WHERE bid_id = %s ORDER BY id", (bid_id,))

    def order_book(self, depth: int | None = None) -> dict:
        if depth is None:
            return self.value("SELECT compute_auction.order_book()")
        return self.value(ORDER_BOOK, (depth,))

    def stats(self, since: datetime | None = None) -> dict:
        if since is None:
            return self.value("SELECT compute_auction.stats()")
        return self.value(STATS, (since,))

    def bid_status(self, bid_id: int) -> dict:
        return self.value(BID_STATUS, (bid_id,))

    def claim(self, slot_id: str) -> list[tuple]:
        return self.conn.execute(CLAIM, (slot_id,)).fetchall()

    def assert_journal(self, account_id: str) -> None:
        """Each ledger row's balance_after/held_after is the running sum; the sums are the account."""
        bal = held = 0
        for e in self.dicts(
            "SELECT * FROM compute_auction.token_ledger WHERE account_id = %s ORDER BY id", (account_id,)
        ):
            bal += e["delta_balance"]
            held += e["delta_held"]
            assert (e["balance_after"], e["held_after"]) == (bal, held), e
        assert self.balance(account_id) == (bal, held)

    def circulation(self) -> int:
        return self.value("SELECT sum(balance_tokens + held_tokens) FROM compute_auction.token_accounts")


@pytest.fixture
def market(conn) -> Market:
    return Market(conn)


# The acceptance scenario's book: ten distinct agents, bids spanning 1,000 to 100,000 tokens,
# placed in an order unrelated to their prices.
TEN_PRICES = [1_000, 12_000, 23_000, 34_000, 45_000, 56_000, 67_000, 78_000, 89_000, 100_000]
PLACING_ORDER = [45_000, 1_000, 100_000, 23_000, 78_000, 56_000, 12_000, 89_000, 34_000, 67_000]
TEN_TTL = 10  # minutes after t0
FIVE_SLOTS = [f"slot-{i}" for i in range(1, 6)]


@pytest.fixture
def ten_bids(market):
    """Ten agents with START tokens, one bid each (TTL t0+10min), and five idle slots."""
    bids = {}  # price -> (bid_id, agent, task)
    for price in PLACING_ORDER:
        agent = market.account(f"agent-{price}")
        task = f"task-{price}"
        bids[price] = (market.bid(agent, task, price, ev=price / 1000, ttl=TEN_TTL), agent, task)
    for s in FIVE_SLOTS:
        market.offer(s)
    return bids


@pytest.fixture
def one_win(market):
    """One slot won by alice's bid (price 300) against bob's (200): clearing price 200."""
    market.account("alice")
    market.account("bob")
    market.offer("s1")
    a = market.bid("alice", "task-a", 300)
    b = market.bid("bob", "task-b", 200)
    rows = market.clear(1)
    assert [(r["bid_id"], r["clearing_price_tokens"]) for r in rows] == [(a, 200)]
    return {"winner": a, "loser": b, "slot": "s1"}


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
        (s, *ten_bids[p]) for s, p in zip(FIVE_SLOTS, winners)
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
    for s, p in zip(FIVE_SLOTS, winners):
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


# ---------------------------------------------------------------- place_bid --


def test_place_bid_escrows_with_a_ledger_row_and_defaults(market):
    market.account("a", 1_000)
    bid_id = market.value("SELECT compute_auction.place_bid(%s, %s, %s)", ("a", "task-1", 400))
    row = market.bid_row(bid_id)
    assert (row["bidder_id"], row["task_id"], row["max_price_tokens"], row["status"]) == ("a", "task-1", 400, "open")
    assert row["expected_value_usd"] is None
    assert row["ttl_at"] - row["placed_at"] == timedelta(minutes=15)  # NULL ttl_at: now() + 15 minutes
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


LONG = "x" * 257


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
        t.join(1.5)
        assert t.is_alive(), "the second clear_round did not wait for the first"
        first.commit()
    t.join(30)
    assert not t.is_alive()
    assert result["rows"] == []
    assert [c["status"] for c in market.clears()].count("assigned") == 1
    assert_audit_clean(market.conn)


def test_listen_notifies_after_a_round_with_winners(fresh_db_url, market, ten_bids):
    with psycopg.connect(fresh_db_url, autocommit=True) as listener:
        listener.execute("LISTEN compute_auction_cleared")
        rows = market.clear(1)
        notes = list(listener.notifies(timeout=10, stop_after=1))
    assert len(notes) == 1, "no notification within 10 s"
    assert notes[0].channel == "compute_auction_cleared"
    payload = json.loads(notes[0].payload)
    (rnd,) = market.rounds()

    def field(word):
        (key,) = [k for k in payload if word in k]
        return payload[key]

    assert field("round") == rnd["round_id"]
    assert field("price") == 45_000 == rows[0]["clearing_price_tokens"]
    assert field("filled") == 5


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
    assert market.stats(market.at(2)) == {"rounds": [], "fill_rate": None, "top_winners": []}
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
