"""Issue 14, liveness part 2: settlement never waits on the winner's wallet, and holding a lock
never avoids a charge (commit 6b22ad8, extension/src/settlement.rs).

The scenario (fixture one_win): alice's bid of 300 won slot s1 against bob's 200, clearing price
200, so settling charges alice 200 from escrow and returns the premium 100. Alice then holds her
own wallet: a place_bid of hers on another task, left uncommitted in an autocommit=False
connection (it holds her token_accounts row). Meanwhile, from other connections with
statement_timeout = 10 s (a regression fails with 57014 or 55P03 instead of hanging):

- settle (test_settle_while_the_winner_holds_its_wallet, 4 variants: the hold ends by rollback
  or commit; the entries are then applied by apply_pending() or by run_cycle()) returns the 200
  at once; bid and clear are 'settled', the slot is idle and is won again in the next round (a
  round cleared with carol's new bid assigns s1 to it); pending_entries holds the charge
  (0, -200) and the premium (+100, -100) for alice's bid; no charge or premium is in
  token_ledger yet; audit() is empty; pending_balance('alice') is the applied result and
  balance('alice') the raw one; apply_pending() while the hold lasts applies 0 without waiting.
  After the hold ends the chosen step applies 2 entries: the ledger has exactly one charge and
  one premium row for the bid, pending_entries is empty, balance = what pending_balance said,
  audit() is still empty, and a second apply_pending() applies 0.
- abort_slot (test_abort_slot_while_the_winner_holds_its_wallet): the same with the refund
  (+300, -300) pending, applied exactly once.
- abort_stale (test_abort_stale_while_the_winner_holds_its_wallet): the stale slot IS aborted
  with its refund pending (abort_stale no longer needs the winner's account).
- a settlement recorded while the wallet is held is never aborted
  (test_a_settlement_recorded_while_held_is_never_aborted): abort_stale with a 0 s timeout
  then aborts nothing for that slot (it does abort bob's stale assignment next to it, so the call
  really runs with everything stale); the charge is applied later and no refund ever appears.
- with the account free (test_settle_and_abort_apply_at_once_when_the_account_is_free) settle
  and abort_slot apply their entries in their own transaction: no pending row remains.
- errors: pending_balance(NULL) 22004, '' 22023, 257 characters 22001, unknown account P0002;
  apply_pending() with nothing pending returns 0 and changes nothing. Each asserts the SQLSTATE
  and a snapshot of every extension table unchanged.

Why each fails on the code before 6b22ad8 (9e389d1): there, settle and abort_slot lock the
winner's account with the functions' 1 s lock_timeout, so with alice's wallet held they fail
with 55P03 after 1 s (the first runner call of the settle and abort_slot tests); abort_stale
skips a slot whose winner's account is held (SKIP LOCKED on the account) and returns 0 where
the abort_stale test expects 1; the recorded-settlement test's settle fails with 55P03 the same
way; and pending_entries, apply_pending() and pending_balance() do not exist (42P01 / 42883),
which fails the at-once test (it reads pending_entries and calls pending_balance and
apply_pending) and the error tests (42883 instead of 22004/22023/22001/P0002; apply_pending()
does not exist).

Holds last as long as the calls that check them; no test sleeps or times anything.
"""

from __future__ import annotations

import psycopg
import pytest

from conftest import assert_audit_clean, metrics, snapshot, sqlstate_of, wait_until
from helpers import ABORT, ABORT_STALE, LONG, PLACE, SETTLE, START, Market, assert_rejected

HANG = "10s"  # statement_timeout of every connection here: it only detects a hang
OPTIONS = f"-c statement_timeout={HANG}"

APPLY = "SELECT compute_auction.apply_pending()"
RUN_CYCLE = "SELECT compute_auction.run_cycle()"
PENDING_BALANCE = "SELECT * FROM compute_auction.pending_balance(%s)"
PENDING = """
SELECT account_id, bid_id, slot_id, round_id, entry_kind, delta_balance, delta_held
  FROM compute_auction.pending_entries ORDER BY entry_id"""


@pytest.fixture
def connect(fresh_db_url):
    """Factory of connections to the test database with statement_timeout = 10 s; closed (an
    open transaction rolled back) at teardown."""
    opened: list[psycopg.Connection] = []

    def make(autocommit: bool = True) -> psycopg.Connection:
        c = psycopg.connect(fresh_db_url, autocommit=autocommit, options=OPTIONS)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def mk(conn) -> Market:
    """The operator's Market client (its connection also gets the hang-detecting timeout)."""
    conn.execute(f"SET statement_timeout = '{HANG}'")
    return Market(conn)


def in_txn(c: psycopg.Connection) -> bool:
    return c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


def hold_wallet(c: psycopg.Connection, mk: Market, bidder: str, price: int = 10) -> int:
    """The bidder's own place_bid on a new task, left uncommitted: it holds the account row."""
    assert not c.autocommit
    bid = c.execute(PLACE, (bidder, f"{bidder}-elsewhere", price, None, mk.at(60))).fetchone()[0]
    assert in_txn(c)
    return bid


def end_hold(c: psycopg.Connection, how: str) -> None:
    assert in_txn(c), "the hold ended before the test meant it to"
    if how == "commit":
        c.commit()
    else:
        c.rollback()


def pending(mk: Market) -> list[tuple]:
    return [tuple(r) for r in mk.conn.execute(PENDING).fetchall()]


def pending_balance(mk: Market, account: str) -> tuple[int, int]:
    return tuple(mk.conn.execute(PENDING_BALANCE, (account,)).fetchone())


def wallet_rows(mk: Market, bid_id: int) -> list[tuple]:
    """(entry_kind, delta_balance, delta_held) of the bid's ledger rows after its escrow."""
    return [
        (e["entry_kind"], e["delta_balance"], e["delta_held"])
        for e in mk.ledger_for_bid(bid_id)
        if e["entry_kind"] in ("charge", "premium", "refund")
    ]


def apply_step(mk: Market, runner: psycopg.Connection, step: str) -> int:
    """The cycle step that applies pending entries: apply_pending() or run_cycle()."""
    if step == "apply_pending":
        return runner.execute(APPLY).fetchone()[0]
    out = runner.execute(RUN_CYCLE).fetchone()[0]
    assert "pending_entries_applied" in out, out
    return out["pending_entries_applied"]


def round_id_of(mk: Market, slot: str, bid_id: int) -> int:
    return mk.value(
        "SELECT round_id FROM compute_auction.compute_auction_clears WHERE slot_id = %s AND bid_id = %s",
        (slot, bid_id),
    )


def assert_won_again(mk: Market, slot: str, minutes: float) -> None:
    """The freed slot takes part in the next round: carol's new (top) bid wins it."""
    mk.account("carol")
    carol = mk.bid("carol", "carol-t", 250, ttl=60)
    rows = mk.clear(minutes)
    assert [(r["slot_id"], r["bid_id"]) for r in rows] == [(slot, carol)], rows
    assert mk.slot(slot)["status"] == "assigned"
    assert mk.bid_field(carol, "status") == "won"


# ------------------------------------------------------------------ settle --


@pytest.mark.parametrize("step", ["apply_pending", "run_cycle"])
@pytest.mark.parametrize("end", ["rollback", "commit"])
def test_settle_while_the_winner_holds_its_wallet(mk, connect, one_win, end, step):
    slot, winner = one_win["slot"], one_win["winner"]
    raw = (START - 300, 300)  # alice's committed wallet: 300 in escrow for the won bid
    assert mk.balance("alice") == raw
    holder = connect(autocommit=False)
    hold_wallet(holder, mk, "alice")
    runner = connect()

    # settle returns at once with the price to be charged (9e389d1: 55P03 after 1 s)
    assert runner.execute(SETTLE, (slot, 7, 1.5)).fetchone()[0] == 200
    assert in_txn(holder)
    (c,) = [c for c in mk.clears() if c["bid_id"] == winner]
    assert (c["status"], c["actual_cost_tokens"], c["actual_impact"]) == ("settled", 7, 1.5)
    assert mk.bid_field(winner, "status") == "settled"
    assert mk.slot(slot)["status"] == "idle"
    rnd = round_id_of(mk, slot, winner)
    assert pending(mk) == [
        ("alice", winner, slot, rnd, "charge", 0, -200),
        ("alice", winner, slot, rnd, "premium", 100, -100),
    ]
    assert wallet_rows(mk, winner) == []  # nothing applied: the wallet is untouched
    assert mk.balance("alice") == raw
    assert pending_balance(mk, "alice") == (START - 200, 0)
    assert_audit_clean(mk.conn)  # pending entries count as applied
    # the cycle's step skips the held account and does not wait for it
    assert runner.execute(APPLY).fetchone()[0] == 0
    assert len(pending(mk)) == 2

    # the freed slot is won again in the next round, while alice still holds her wallet
    assert_won_again(mk, slot, 2)
    assert in_txn(holder)
    assert_audit_clean(mk.conn)

    end_hold(holder, end)
    expected = (START - 200, 0) if end == "rollback" else (START - 210, 10)
    assert pending_balance(mk, "alice") == expected
    assert apply_step(mk, runner, step) == 2
    assert pending(mk) == []
    assert wallet_rows(mk, winner) == [("charge", 0, -200), ("premium", 100, -100)]
    assert mk.balance("alice") == expected == pending_balance(mk, "alice")
    assert mk.value("SELECT total_spent FROM compute_auction.token_accounts WHERE account_id = 'alice'") == 200
    assert_audit_clean(mk.conn)
    mk.assert_journal("alice")
    # applied exactly once
    assert runner.execute(APPLY).fetchone()[0] == 0
    assert wallet_rows(mk, winner) == [("charge", 0, -200), ("premium", 100, -100)]
    assert mk.balance("alice") == expected
    assert_audit_clean(mk.conn)


def test_the_drivers_cycle_applies_pending_entries(mk, connect, one_win, drivers, fresh_db_url):
    """The driver's own cycle (serve, its apply_pending step), not a SQL call of the test's:
    while alice holds her wallet its rounds skip her pending charge and premium without waiting
    (they stay pending, rounds keep coming); once the hold ends a later cycle applies both,
    exactly once, and counts them in compute_auction_pending_entries_applied_total."""
    slot, winner = one_win["slot"], one_win["winner"]
    holder = connect(autocommit=False)
    hold_wallet(holder, mk, "alice")
    assert connect().execute(SETTLE, (slot, 7, 1.5)).fetchone()[0] == 200
    assert len(pending(mk)) == 2
    d = drivers(fresh_db_url)
    rounds = "compute_auction_rounds_cleared_total"
    wait_until(lambda: metrics(d.port).get(rounds, 0) >= 2, 60, what="two rounds of the driver's")
    assert in_txn(holder)
    assert len(pending(mk)) == 2, "the driver's cycle applied entries of a held account"
    end_hold(holder, "rollback")
    wait_until(lambda: pending(mk) == [], 60, what="the driver's cycle to apply the entries")
    assert wallet_rows(mk, winner) == [("charge", 0, -200), ("premium", 100, -100)]
    assert mk.balance("alice") == (START - 200, 0)
    assert metrics(d.port).get("compute_auction_pending_entries_applied_total") == 2
    assert_audit_clean(mk.conn)


# ------------------------------------------------------------------- abort --


@pytest.mark.parametrize("end", ["rollback", "commit"])
def test_abort_slot_while_the_winner_holds_its_wallet(mk, connect, one_win, end):
    slot, winner = one_win["slot"], one_win["winner"]
    raw = (START - 300, 300)
    holder = connect(autocommit=False)
    hold_wallet(holder, mk, "alice")
    runner = connect()

    # the whole escrow, refunded later (9e389d1: 55P03 after 1 s)
    assert runner.execute(ABORT, (slot, "runner crashed")).fetchone()[0] == 300
    assert in_txn(holder)
    assert mk.bid_field(winner, "status") == "aborted"
    assert [c["status"] for c in mk.clears() if c["bid_id"] == winner] == ["aborted"]
    assert mk.slot(slot)["status"] == "idle"
    rnd = round_id_of(mk, slot, winner)
    assert pending(mk) == [("alice", winner, slot, rnd, "refund", 300, -300)]
    assert wallet_rows(mk, winner) == []
    assert mk.balance("alice") == raw
    assert pending_balance(mk, "alice") == (START, 0)
    assert_audit_clean(mk.conn)
    assert runner.execute(APPLY).fetchone()[0] == 0

    assert_won_again(mk, slot, 2)
    assert_audit_clean(mk.conn)

    end_hold(holder, end)
    expected = (START, 0) if end == "rollback" else (START - 10, 10)
    assert pending_balance(mk, "alice") == expected
    assert runner.execute(APPLY).fetchone()[0] == 1
    assert pending(mk) == []
    assert wallet_rows(mk, winner) == [("refund", 300, -300)]
    assert mk.balance("alice") == expected
    assert mk.value("SELECT total_spent FROM compute_auction.token_accounts WHERE account_id = 'alice'") == 0
    assert_audit_clean(mk.conn)
    mk.assert_journal("alice")
    assert runner.execute(APPLY).fetchone()[0] == 0
    assert wallet_rows(mk, winner) == [("refund", 300, -300)]
    assert_audit_clean(mk.conn)


# ------------------------------------------------------------- abort_stale --


def test_abort_stale_while_the_winner_holds_its_wallet(mk, connect, one_win):
    slot, winner = one_win["slot"], one_win["winner"]
    cutoff = mk.at(2)  # one_win's round was cleared at t0+1 min: its assignment is stale by then
    holder = connect(autocommit=False)
    hold_wallet(holder, mk, "alice")
    cycle = connect()

    # 9e389d1 skipped the slot (its winner's account was held) and returned 0
    assert cycle.execute(ABORT_STALE, ("0 seconds", cutoff)).fetchone()[0] == 1
    assert in_txn(holder)
    assert mk.bid_field(winner, "status") == "aborted"
    (c,) = [c for c in mk.clears() if c["bid_id"] == winner]
    assert (c["status"], c["abort_reason"]) == ("aborted", "stale: not settled in time")
    assert mk.slot(slot)["status"] == "idle"
    rnd = round_id_of(mk, slot, winner)
    assert pending(mk) == [("alice", winner, slot, rnd, "refund", 300, -300)]
    assert mk.balance("alice") == (START - 300, 300)
    assert pending_balance(mk, "alice") == (START, 0)
    assert_audit_clean(mk.conn)
    assert cycle.execute(APPLY).fetchone()[0] == 0
    assert cycle.execute(ABORT_STALE, ("0 seconds", cutoff)).fetchone()[0] == 0  # once

    end_hold(holder, "rollback")
    assert cycle.execute(APPLY).fetchone()[0] == 1
    assert pending(mk) == []
    assert wallet_rows(mk, winner) == [("refund", 300, -300)]
    assert mk.balance("alice") == (START, 0)
    assert_audit_clean(mk.conn)
    mk.assert_journal("alice")
    assert cycle.execute(APPLY).fetchone()[0] == 0


def test_a_settlement_recorded_while_held_is_never_aborted(mk, connect, one_win):
    slot, winner = one_win["slot"], one_win["winner"]
    holder = connect(autocommit=False)
    hold_wallet(holder, mk, "alice")
    runner = connect()
    assert runner.execute(SETTLE, (slot, 3, 0.5)).fetchone()[0] == 200  # 9e389d1: 55P03
    rnd = round_id_of(mk, slot, winner)
    want_pending = [
        ("alice", winner, slot, rnd, "charge", 0, -200),
        ("alice", winner, slot, rnd, "premium", 100, -100),
    ]
    assert pending(mk) == want_pending

    # a stale assignment next to it, which the same call does abort (bob wins s2 at t0+1.5 min)
    mk.offer("s2")
    (r,) = mk.clear(1.5)
    assert (r["slot_id"], r["bid_id"]) == ("s2", one_win["loser"])
    cycle = connect()
    # at t0+2 min with a 0 s timeout every assignment is stale: the settled one is not one any more
    assert cycle.execute(ABORT_STALE, ("0 seconds", mk.at(2))).fetchone()[0] == 1
    assert {c["bid_id"]: c["status"] for c in mk.clears()} == {winner: "settled", one_win["loser"]: "aborted"}
    assert mk.bid_field(winner, "status") == "settled"
    bob_round = round_id_of(mk, "s2", one_win["loser"])
    assert pending(mk) == want_pending  # no refund recorded for alice (bob's was applied at once)
    assert wallet_rows(mk, one_win["loser"]) == [("refund", 200, -200)]
    assert_audit_clean(mk.conn)
    assert cycle.execute(APPLY).fetchone()[0] == 0  # alice still holds her wallet
    assert in_txn(holder)
    assert bob_round != rnd

    end_hold(holder, "commit")
    assert cycle.execute(APPLY).fetchone()[0] == 2
    assert pending(mk) == []
    assert wallet_rows(mk, winner) == [("charge", 0, -200), ("premium", 100, -100)]  # never a refund
    assert mk.balance("alice") == (START - 210, 10)
    assert cycle.execute(ABORT_STALE, ("0 seconds", mk.at(3))).fetchone()[0] == 0
    assert wallet_rows(mk, winner) == [("charge", 0, -200), ("premium", 100, -100)]
    assert_audit_clean(mk.conn)
    mk.assert_journal("alice")


# -------------------------------------------------------- the common case --


@pytest.mark.parametrize("call", ["settle", "abort_slot"])
def test_settle_and_abort_apply_at_once_when_the_account_is_free(mk, one_win, call):
    slot, winner = one_win["slot"], one_win["winner"]
    if call == "settle":
        assert mk.settle(slot, 1, 1.0) == 200
        want, after = [("charge", 0, -200), ("premium", 100, -100)], (START - 200, 0)
    else:
        assert mk.abort(slot) == 300
        want, after = [("refund", 300, -300)], (START, 0)
    assert pending(mk) == []  # applied in settle's / abort_slot's own transaction
    assert wallet_rows(mk, winner) == want
    assert mk.balance("alice") == after == pending_balance(mk, "alice")
    assert mk.value(APPLY) == 0
    assert wallet_rows(mk, winner) == want
    assert_audit_clean(mk.conn)
    mk.assert_journal("alice")


# ------------------------------------------------------------------ errors --


@pytest.mark.parametrize(
    "account, sqlstate",
    [
        pytest.param(None, "22004", id="null"),
        pytest.param("", "22023", id="empty"),
        pytest.param(LONG, "22001", id="257-chars"),
        pytest.param("no-such-account", "P0002", id="unknown"),
    ],
)
def test_pending_balance_bad_input_is_rejected(mk, one_win, account, sqlstate):
    assert_rejected(mk.conn, PENDING_BALANCE, (account,), sqlstate)
    assert_audit_clean(mk.conn)


def test_pending_balance_of_an_account_with_nothing_pending_is_its_balance(mk, one_win):
    for a in ("alice", "bob"):
        assert pending_balance(mk, a) == mk.balance(a)


def test_apply_pending_with_nothing_pending_changes_nothing(mk, one_win):
    before = snapshot(mk.conn)
    assert mk.value(APPLY) == 0
    assert snapshot(mk.conn) == before
    mk.settle(one_win["slot"], 1, 1.0)  # applied at once: still nothing pending
    before = snapshot(mk.conn)
    assert mk.value(APPLY) == 0
    assert snapshot(mk.conn) == before
    assert sqlstate_of(mk.conn, "SELECT compute_auction.apply_pending(1)") == "42883"  # no arguments
    assert_audit_clean(mk.conn)
