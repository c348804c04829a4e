"""Issue 26: the lookups behind the dashboard's Bids & wallets tab (wallet, task_status) and the
market_summary keys /metrics reads (docs/SQL_API.md)."""

from __future__ import annotations

import pytest

from conftest import snapshot, sqlstate_of

WALLET_KEYS = {
    "account_id",
    "kind",
    "owner_role",
    "low_balance_threshold",
    "balance_tokens",
    "held_tokens",
    "pending_balance_tokens",
    "pending_held_tokens",
    "total_deposited",
    "total_spent",
    "total_withdrawn",
    "open_bids",
    "won_bids",
    "bids",
    "recent_entries",
}


def wallet(market, account):
    return market.value("SELECT compute_auction.wallet(%s)", (account,))


def test_wallet_shows_balances_bids_and_newest_entries(market, one_win):
    for i in range(25):
        market.bid("alice", f"more-{i}", 10 + i)
    w = wallet(market, "alice")
    assert set(w) == WALLET_KEYS
    assert (w["balance_tokens"], w["held_tokens"]) == market.balance("alice")
    assert (w["open_bids"], w["won_bids"]) == (25, 1)
    live = market.dicts(
        "SELECT id FROM compute_auction.compute_auction_bids WHERE bidder_id = 'alice' AND status IN ('open', 'won')"
        " ORDER BY id DESC LIMIT 20"
    )
    assert [b["bid_id"] for b in w["bids"]] == [r["id"] for r in live]
    newest = market.dicts(
        "SELECT id, entry_kind, delta_balance, balance_after FROM compute_auction.token_ledger"
        " WHERE account_id = 'alice' ORDER BY id DESC LIMIT 20"
    )
    assert [(e["id"], e["entry_kind"], e["delta_balance"], e["balance_after"]) for e in w["recent_entries"]] == [
        tuple(r.values()) for r in newest
    ]
    market.settle(one_win["slot"], cost=10)
    w = wallet(market, "alice")
    assert w["total_spent"] == 200 and w["won_bids"] == 0
    assert [e["entry_kind"] for e in w["recent_entries"][:2]] == ["premium", "charge"]


def test_wallet_counts_pending_entries(market, one_win, fresh_db_url):
    import psycopg

    with psycopg.connect(fresh_db_url) as holder:
        holder.execute("SELECT 1 FROM compute_auction.token_accounts WHERE account_id = 'alice' FOR UPDATE")
        market.settle(one_win["slot"])  # alice's wallet is held: the charge and premium wait
        holder.rollback()
    w = wallet(market, "alice")
    pending = market.conn.execute("SELECT * FROM compute_auction.pending_balance('alice')").fetchone()
    assert (w["pending_balance_tokens"], w["pending_held_tokens"]) == pending
    assert (w["balance_tokens"], w["held_tokens"]) == market.balance("alice") != pending


def test_task_status_is_the_newest_bids_story(market, one_win):
    first = one_win["loser"]
    market.conn.execute("SELECT compute_auction.cancel_bid(%s)", (first,))
    again = market.bid("bob", "task-b", 250)
    t = market.value("SELECT compute_auction.task_status('task-b')")
    assert set(t) == {"task_id", "bids", "bids_truncated", "bid"}
    assert t["bids"] == [{"bid_id": again, "status": "open"}, {"bid_id": first, "status": "cancelled"}]
    assert t["bids_truncated"] is False
    assert t["bid"] == market.bid_status(again)


def test_task_status_lists_the_newest_100(market):
    market.account("c", 10_000_000)
    for _ in range(101):
        b = market.bid("c", "busy", 10)
        market.conn.execute("SELECT compute_auction.cancel_bid(%s)", (b,))
    t = market.value("SELECT compute_auction.task_status('busy')")
    assert len(t["bids"]) == 100 and t["bids_truncated"] is True and t["bid"]["bid_id"] == b


@pytest.mark.parametrize(
    ("sql", "args", "sqlstate"),
    [
        ("SELECT compute_auction.task_status(%s)", ("no-such-task",), "P0002"),
        ("SELECT compute_auction.task_status(%s)", (None,), "22004"),
        ("SELECT compute_auction.task_status(%s)", ("x" * 257,), "22001"),
        ("SELECT compute_auction.wallet(%s)", ("nobody",), "P0002"),
        ("SELECT compute_auction.wallet(%s)", (None,), "22004"),
        ("SELECT compute_auction.wallet(%s)", ("",), "22023"),
    ],
)
def test_lookup_errors(market, one_win, sql, args, sqlstate):
    before = snapshot(market.conn)
    assert sqlstate_of(market.conn, sql, args) == sqlstate
    assert snapshot(market.conn) == before


def test_market_summary_gives_the_last_price_and_the_tokens_held(market, one_win):
    m = market.value("SELECT compute_auction.market_summary()")
    held = market.value("SELECT sum(held_tokens)::bigint FROM compute_auction.token_accounts")
    assert m["tokens_held"] == held == 500  # alice's won 300 and bob's open 200
    assert m["last_clearing_price_tokens"] == 200
    market.offer("s2", reserve=10_000)
    market.clear(2)  # fills nothing: the last price stays the last round that filled a slot
    assert market.value("SELECT compute_auction.market_summary()")["last_clearing_price_tokens"] == 200


def test_market_summary_before_any_round(market):
    m = market.value("SELECT compute_auction.market_summary()")
    assert m["last_clearing_price_tokens"] is None and m["tokens_held"] == 0
