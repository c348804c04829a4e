"""Helpers shared by the auction's SQL API tests (test_bids, test_clearing, test_settlement,
test_slots, test_reporting): the SQL calls, the jsonb key sets, the Market client and the
acceptance scenario's book. The fixtures built on them (market, ten_bids, one_win) are in
conftest.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
from psycopg.rows import dict_row

import conftest  # a module import: conftest imports this module for its fixtures

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

LONG = "x" * 257  # one character over the 256-character id limit


def ts(text: str) -> datetime:
    """A timestamptz as rendered in jsonb."""
    return datetime.fromisoformat(text)


def assert_rejected(conn, sql: str, params, sqlstate: str) -> None:
    """The call fails with exactly `sqlstate` and leaves every extension table unchanged."""
    before = conftest.snapshot(conn)
    assert conftest.sqlstate_of(conn, sql, params) == sqlstate
    assert conftest.snapshot(conn) == before


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


# The acceptance scenario's book: ten distinct agents, bids spanning 1,000 to 100,000 tokens,
# placed in an order unrelated to their prices.
TEN_PRICES = [1_000, 12_000, 23_000, 34_000, 45_000, 56_000, 67_000, 78_000, 89_000, 100_000]
PLACING_ORDER = [45_000, 1_000, 100_000, 23_000, 78_000, 56_000, 12_000, 89_000, 34_000, 67_000]
TEN_TTL = 10  # minutes after t0
FIVE_SLOTS = [f"slot-{i}" for i in range(1, 6)]
