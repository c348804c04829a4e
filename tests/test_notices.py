"""Issue 26: push notice of what happens to bids and wallets (docs/SQL_API.md "Notifications").

Every notice here is received by a real LISTEN connection. A test that expects none sends a
sentinel NOTIFY from the market's own session after the change and reads until the sentinel:
one session's notices arrive in commit order, so what was not received before the sentinel
was never sent. The 60 s timeouts only detect a hang.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from conftest import assert_audit_clean, snapshot, sqlstate_of
from helpers import Market

CHANNELS = [
    "compute_auction_cleared",
    "compute_auction_bid_won",
    "compute_auction_bids_refunded",
    "compute_auction_run_aborted",
    "compute_auction_low_balance",
]
SENTINEL = "compute_auction_test_sentinel"
LIMIT = 8000  # NOTIFY refuses payloads of this many bytes or more


@pytest.fixture
def listener(fresh_db_url):
    with psycopg.connect(fresh_db_url, autocommit=True) as c:
        for ch in CHANNELS + [SENTINEL]:
            c.execute(f"LISTEN {ch}")
        yield c


def received(listener, market: Market) -> list[tuple[str, dict]]:
    """Every notice up to a sentinel the market's session sends now, as (channel, payload)."""
    market.conn.execute(f"NOTIFY {SENTINEL}")
    out = []
    for n in listener.notifies(timeout=60):
        if n.channel == SENTINEL:
            return out
        assert len(n.payload.encode()) < LIMIT, n.channel
        out.append((n.channel, json.loads(n.payload)))
    raise AssertionError(f"no sentinel within 60 s; received {out}")


def on(notes, channel) -> list[dict]:
    return [p for ch, p in notes if ch == channel]


def test_each_winner_is_announced_with_its_slot_and_price(listener, market, ten_bids):
    rows = market.clear(1)
    notes = received(listener, market)
    won = on(notes, "compute_auction_bid_won")
    (rnd,) = market.rounds()
    want = [
        {
            "bid_id": r["bid_id"],
            "bidder_id": r["bidder_id"],
            "task_id": r["task_id"],
            "slot_id": r["slot_id"],
            "round_id": rnd["round_id"],
            "clearing_price_tokens": r["clearing_price_tokens"],
        }
        for r in rows
    ]
    assert len(want) == 5
    assert sorted(won, key=lambda p: p["bid_id"]) == sorted(want, key=lambda p: p["bid_id"])
    (cleared,) = on(notes, "compute_auction_cleared")
    assert cleared == {"round_id": rnd["round_id"], "clearing_price_tokens": 45_000, "slots_filled": 5}


def test_cleared_payload_text_is_0_1_0s(fresh_db_url, market, ten_bids):
    with psycopg.connect(fresh_db_url, autocommit=True) as c:
        c.execute("LISTEN compute_auction_cleared")
        market.clear(1)
        (n,) = list(c.notifies(timeout=60, stop_after=1))
    (rnd,) = market.rounds()
    assert n.payload == f'{{"round_id" : {rnd["round_id"]}, "clearing_price_tokens" : 45000, "slots_filled" : 5}}'


def test_an_abort_announces_the_run_and_then_the_refund(listener, market, one_win):
    (rnd,) = [r for r in market.rounds() if r["slots_filled"]]
    market.abort("s1", "runner crashed")
    notes = received(listener, market)
    assert on(notes, "compute_auction_run_aborted") == [
        {
            "slot_id": "s1",
            "bid_id": one_win["winner"],
            "bidder_id": "alice",
            "round_id": rnd["round_id"],
            "reason": "runner crashed",
            "reason_truncated": False,
        }
    ]
    # alice's account was free: the refund reached her wallet in the same transaction
    assert on(notes, "compute_auction_bids_refunded") == [
        {
            "account_id": "alice",
            "status": "aborted",
            "bid_ids": [one_win["winner"]],
            "tokens_refunded": 300,
            "part": 1,
            "parts": 1,
        }
    ]


def test_a_long_abort_reason_is_cut_in_the_notice_only(listener, market, one_win):
    reason = "x" * 5000
    market.abort("s1", reason)
    (p,) = on(received(listener, market), "compute_auction_run_aborted")
    assert p["reason"] == "x" * 1000 and p["reason_truncated"] is True
    assert market.clears()[0]["abort_reason"] == reason


def test_a_pending_refund_is_announced_when_it_reaches_the_wallet(listener, market, one_win, fresh_db_url):
    with psycopg.connect(fresh_db_url) as holder:  # alice's own open transaction holds her wallet
        holder.execute("SELECT 1 FROM compute_auction.token_accounts WHERE account_id = 'alice' FOR UPDATE")
        market.abort("s1")
        notes = received(listener, market)
        assert len(on(notes, "compute_auction_run_aborted")) == 1
        assert on(notes, "compute_auction_bids_refunded") == []
        holder.rollback()
    assert market.value("SELECT compute_auction.apply_pending()") == 1
    (p,) = on(received(listener, market), "compute_auction_bids_refunded")
    assert (p["account_id"], p["status"], p["bid_ids"], p["tokens_refunded"]) == (
        "alice",
        "aborted",
        [one_win["winner"]],
        300,
    )


def test_a_refund_of_1200_bids_of_one_account_is_3_notices(listener, market):
    market.account("many", 10_000_000)
    market.account("few", 10_000)
    ids = [
        r[0]
        for r in market.conn.execute(
            "SELECT compute_auction.place_bid('many', 't-' || i, 10 + i, NULL, %s) FROM generate_series(1, 1200) i",
            (market.at(5),),
        ).fetchall()
    ]
    few = [market.bid("few", f"f-{i}", 7, ttl=5) for i in range(3)]
    assert market.refund(6) == (1203, sum(10 + i for i in range(1, 1201)) + 21)
    notes = on(received(listener, market), "compute_auction_bids_refunded")
    many = [p for p in notes if p["account_id"] == "many"]
    assert [(p["part"], p["parts"], len(p["bid_ids"])) for p in many] == [(1, 3, 500), (2, 3, 500), (3, 3, 200)]
    assert [i for p in many for i in p["bid_ids"]] == sorted(ids)
    assert sum(p["tokens_refunded"] for p in many) == sum(10 + i for i in range(1, 1201))
    assert {p["status"] for p in many} == {"expired"}
    assert [(p["bid_ids"], p["tokens_refunded"], p["parts"]) for p in notes if p["account_id"] == "few"] == [
        (few, 21, 1)
    ]
    assert len(notes) == 4
    assert_audit_clean(market.conn)


def test_long_account_ids_still_fit_the_limit(listener, market):
    account = "a" * 256
    market.account(account, 10_000_000)
    market.conn.execute(
        "SELECT compute_auction.place_bid(%s, 't-' || i, 5, NULL, %s) FROM generate_series(1, 1200) i",
        (account, market.at(5)),
    )
    market.refund(6)
    notes = on(received(listener, market), "compute_auction_bids_refunded")  # received() checks the size
    assert sum(len(p["bid_ids"]) for p in notes) == 1200 and all(len(p["bid_ids"]) <= 500 for p in notes)


def test_cancels_in_one_transaction_are_one_notice(listener, market, fresh_db_url):
    market.account("alice")
    bids = [market.bid("alice", f"t-{i}", 100 + i) for i in range(10)]
    with market.conn.transaction():
        for b in bids:
            market.conn.execute("SELECT compute_auction.cancel_bid(%s)", (b,))
    (p,) = on(received(listener, market), "compute_auction_bids_refunded")
    assert p == {
        "account_id": "alice",
        "status": "cancelled",
        "bid_ids": bids,
        "tokens_refunded": sum(100 + i for i in range(10)),
        "part": 1,
        "parts": 1,
    }


def test_nothing_is_announced_for_a_rolled_back_change(listener, market, ten_bids):
    market.account("rich", 2_000)
    market.value("SELECT compute_auction.set_low_balance_threshold('rich', 1000)")
    assert received(listener, market) == []  # 2,000 is above the threshold
    before = snapshot(market.conn)
    with pytest.raises(psycopg.errors.RaiseException), market.conn.transaction():
        market.bid("rich", "t-rich", 1500)  # balance 500: below the threshold
        b = market.bid("rich", "t-gone", 100)
        market.conn.execute("SELECT compute_auction.cancel_bid(%s)", (b,))
        market.clear(1)  # five winners
        market.refund(30)  # every other bid expires
        market.conn.execute("DO $$ BEGIN RAISE 'roll it all back'; END $$")
    assert received(listener, market) == []
    assert snapshot(market.conn) == before


def test_a_rolled_back_savepoint_takes_its_refunds_with_it(listener, market):
    market.account("alice")
    kept, dropped, inner = (market.bid("alice", f"t-{i}", 100) for i in range(3))
    with market.conn.transaction():
        market.conn.execute("SELECT compute_auction.cancel_bid(%s)", (kept,))
        with pytest.raises(psycopg.errors.RaiseException), market.conn.transaction():  # SAVEPOINT
            market.conn.execute("SELECT compute_auction.cancel_bid(%s)", (dropped,))
            with market.conn.transaction():  # a nested savepoint released into it
                market.conn.execute("SELECT compute_auction.cancel_bid(%s)", (inner,))
            market.conn.execute("DO $$ BEGIN RAISE 'roll back to the savepoint'; END $$")
    (p,) = on(received(listener, market), "compute_auction_bids_refunded")
    assert p["bid_ids"] == [kept]
    assert market.bid_field(dropped, "status") == market.bid_field(inner, "status") == "open"


def test_low_balance_is_announced_when_the_wallet_falls_below(listener, market):
    market.account("alice", 1000)
    assert market.value("SELECT compute_auction.set_low_balance_threshold('alice', 500)") is None
    assert received(listener, market) == []
    market.bid("alice", "t-1", 400)  # 600: still above
    assert received(listener, market) == []
    b = market.bid("alice", "t-2", 200)  # 400: below
    assert on(received(listener, market), "compute_auction_low_balance") == [
        {"account_id": "alice", "balance_tokens": 400, "threshold_tokens": 500}
    ]
    market.bid("alice", "t-3", 100)  # 300: already below, no new notice
    assert on(received(listener, market), "compute_auction_low_balance") == []
    market.conn.execute("SELECT compute_auction.cancel_bid(%s)", (b,))  # 500: back at the threshold
    market.conn.execute("SELECT compute_auction.withdraw('alice', 1, 'test')")  # 499: below again
    assert on(received(listener, market), "compute_auction_low_balance") == [
        {"account_id": "alice", "balance_tokens": 499, "threshold_tokens": 500}
    ]
    # a threshold the balance is already below is announced at once; NULL clears it
    assert market.value("SELECT compute_auction.set_low_balance_threshold('alice', 600)") == 500
    assert on(received(listener, market), "compute_auction_low_balance") == [
        {"account_id": "alice", "balance_tokens": 499, "threshold_tokens": 600}
    ]
    assert market.value("SELECT compute_auction.set_low_balance_threshold('alice', NULL)") == 600
    market.conn.execute("SELECT compute_auction.deposit('alice', 1000, 'test')")
    market.conn.execute("SELECT compute_auction.withdraw('alice', 1400, 'test')")
    assert on(received(listener, market), "compute_auction_low_balance") == []
    assert (
        market.value("SELECT low_balance_threshold FROM compute_auction.token_accounts WHERE account_id = 'alice'")
        is None
    )
    assert_audit_clean(market.conn)


def test_a_quests_batch_of_bids_crossing_the_threshold_is_announced_once(listener, market):
    market.account("quest-1", 10_000, kind="quest")
    market.value("SELECT compute_auction.set_low_balance_threshold('quest-1', 5000)")
    rows = market.conn.execute(
        "SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', %s::jsonb, tokens_per_usd => 100)",
        (json.dumps([{"task_id": f"q-{i}", "expected_value_usd": 50} for i in range(3)]),),
    ).fetchall()
    assert [r[3] for r in rows] == ["placed"] * 3  # 3 x 3,000 escrowed in one batch
    assert on(received(listener, market), "compute_auction_low_balance") == [
        {"account_id": "quest-1", "balance_tokens": 1000, "threshold_tokens": 5000}
    ]


@pytest.mark.parametrize(
    ("args", "sqlstate"),
    [
        (("alice", 0), "22023"),
        (("alice", -5), "22023"),
        (("nobody", 10), "P0002"),
        ((None, 10), "22004"),
        (("", 10), "22023"),
        (("x" * 257, 10), "22001"),
    ],
)
def test_set_low_balance_threshold_errors(market, args, sqlstate):
    market.account("alice")
    market.value("SELECT compute_auction.set_low_balance_threshold('alice', 7)")
    before = snapshot(market.conn)
    got = sqlstate_of(market.conn, "SELECT compute_auction.set_low_balance_threshold(%s, %s)", args)
    assert got == sqlstate
    assert snapshot(market.conn) == before


def test_only_operators_set_thresholds(roles):
    alice, op = roles["alice"], roles["op"]
    before = snapshot(op)
    assert sqlstate_of(alice, "SELECT compute_auction.set_low_balance_threshold('acct-alice', 10)") == "42501"
    assert snapshot(op) == before
    assert op.execute("SELECT compute_auction.set_low_balance_threshold('acct-alice', 10)").fetchone() == (None,)


def test_a_released_savepoint_and_a_plpgsql_handler_keep_or_drop_theirs(listener, market):
    """RELEASE hands a savepoint's refunds to its parent; an EXCEPTION block that caught an
    error drops its own (PL/pgSQL runs it in a subtransaction)."""
    market.account("alice")
    released, caught = market.bid("alice", "t-rel", 100), market.bid("alice", "t-exc", 100)
    with market.conn.transaction():
        with market.conn.transaction():  # SAVEPOINT ... RELEASE
            market.conn.execute("SELECT compute_auction.cancel_bid(%s)", (released,))
        market.conn.execute(
            "DO $$ BEGIN PERFORM compute_auction.cancel_bid(%s); RAISE 'undo it';"
            " EXCEPTION WHEN raise_exception THEN NULL; END $$".replace("%s", str(caught))
        )
    (p,) = on(received(listener, market), "compute_auction_bids_refunded")
    assert p["bid_ids"] == [released]
    assert market.bid_field(caught, "status") == "open"
