"""Issue 13, liveness part 1: no participant's open transaction can stall the market's cycle or
another participant; with issue 14 (part 2), settlement never waits on the winner's wallet.

The scenario: a hostile (or careless) agent, mallory, makes one ordinary call in a transaction
and leaves that transaction open, holding whatever the call locked. In turn (parametrized):

- replace_top_bid:       place_bid again on her committed top bid (her bid row, her account);
- bid_on_new_task:       place_bid on a task she has no bid on (her account row);
- submit_others_tasks:   submit_bids_for_tasks as a quest, listing another quest's tasks next to
                         one of her own (it must not lock the other quest's live bids);
- claim_claimed_slot:    claim_slot on a slot alice won and her runner already claimed (a repeat
                         claim: a pure read that locks nothing);
- claim_unclaimed_slot:  claim_slot on a slot bob won and nobody claimed yet (the first claim
                         takes that clear row, NOWAIT).

Meanwhile, in other connections with statement_timeout = 10 s (so a regression fails with 57014
instead of hanging), another agent's place_bid on an unrelated task, refund_unfilled,
abort_stale, clear_round and run_cycle all complete. What mallory holds is skipped and left for
a later cycle: a held bid is not a winner, round_skips and bid_status ("locked during round N")
say so, bids_eligible is the open unexpired bids minus the bids the round skipped; an expired
bid whose account is held, or a stale slot whose clear row is held, stays as it is. A stale slot
whose winner's account is held is aborted all the same (issue 14): its refund is recorded in
pending_entries, audit() counts it as applied and pending_balance shows it, and apply_pending()
applies it once the account is free. Once mallory's transaction ends, the next cycle picks all
of it up, each wallet entry is applied exactly once, and audit() finds nothing.

The expected rounds come from a model of the clearing rule (the winners are the top k of the
open, unexpired bids this round could lock; a bid skipped while the round scanned its top k+1
is recorded), applied to the committed book read just before each round.

Further cases: another bidder's place_bid on a task whose live bid its owner holds gets 23505
at once (55P03 within the bound when the owner's open call holds the task lock itself); 55P03
within the bound (never a hang) for agent-callable functions that would have to wait
(place_bid, cancel_bid, submit_bids_for_tasks, claim_slot); claim_slot's repeat claim is a pure
read; refund_unfilled and abort_stale leave only the rows that are held; settle and abort_slot
fail fast with 55P03 while the run's slot, clear or bid row is held. A held account delays
none of settle, abort_slot and abort_stale: they complete at once and leave the wallet entries
pending until apply_pending() (or the next run_cycle) can lock the account.

Holds last as long as the calls that check them; no test sleeps. The only time limit is the
10 s statement_timeout, which detects a hang: the calls normally take milliseconds, a 55P03
comes after the functions' 1 s lock_timeout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import assert_audit_clean, core_lock_key, snapshot, sqlstate_of
from helpers import ABORT, ABORT_STALE, CANCEL, CLAIM, PLACE, REFUND, SETTLE, Market

HANG = "10s"  # statement_timeout of every connection here: it only detects a hang
OPTIONS = f"-c statement_timeout={HANG}"

SUBMIT = (
    "SELECT task_id, bid_id, max_price_tokens, outcome  FROM compute_auction.submit_bids_for_tasks(%s, %s, %s, %s, %s)"
)
CLEAR_NOW = "SELECT * FROM compute_auction.clear_round()"
RUN_CYCLE = "SELECT compute_auction.run_cycle()"
CLEAR_XMIN = "SELECT xmin::text, claimed_at FROM compute_auction.compute_auction_clears WHERE slot_id = %s"
APPLY_PENDING = "SELECT compute_auction.apply_pending()"
PRUNE = "SELECT table_name, rows_removed, more FROM compute_auction.prune_history(%s::interval)"
PENDING_BALANCE = "SELECT * FROM compute_auction.pending_balance(%s)"
PENDING_OF = """
SELECT entry_kind, bid_id, slot_id, round_id, delta_balance, delta_held
  FROM compute_auction.pending_entries WHERE account_id = %s ORDER BY entry_id"""
PENDING_COUNT = "SELECT count(*) FROM compute_auction.pending_entries"

OTHERS_BIDS_NOWAIT = """
SELECT count(*) FROM (SELECT 1 FROM compute_auction.compute_auction_bids
                       WHERE bidder_id <> 'mallory' AND status IN ('open', 'won') FOR UPDATE NOWAIT) AS x"""
OTHERS_ACCOUNTS_NOWAIT = """
SELECT count(*) FROM (SELECT 1 FROM compute_auction.token_accounts
                       WHERE account_id <> 'mallory' FOR UPDATE NOWAIT) AS x"""
BOOK = """
SELECT id, max_price_tokens
  FROM compute_auction.compute_auction_bids
 WHERE status = 'open' AND ttl_at > now()
 ORDER BY max_price_tokens DESC, placed_at, id"""
IDLE_SLOTS = """
SELECT count(*), coalesce(max(reserve_price_tokens), 0)
  FROM compute_auction.compute_slots WHERE status = 'idle' AND available_at <= now()"""


# ----------------------------------------------------------------- helpers --


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


@dataclass
class Expected:
    """A round as the clearing rule says it must be, from the committed book before it."""

    slots: int
    winners: list[int]
    skipped: list[int]
    eligible: int
    price: int | None


def expect_round(c: psycopg.Connection, held: set[int]) -> Expected:
    """The model: the winners are the top k of the open, unexpired bids the round can lock (all
    but `held`); the bids in `held` it passes while it scans for its k+1 candidates are skipped;
    bids_eligible = open unexpired bids - skipped. Every slot here has reserve 0."""
    n_slots, max_reserve = c.execute(IDLE_SLOTS).fetchone()
    assert max_reserve == 0, "the model assumes reserve 0"
    book = c.execute(BOOK).fetchall()
    candidates: list[tuple[int, int]] = []
    skipped: list[int] = []
    if n_slots > 0:
        for bid_id, price in book:
            if len(candidates) == n_slots + 1:
                break
            if bid_id in held:
                skipped.append(bid_id)
            else:
                candidates.append((bid_id, price))
    k = min(n_slots, len(candidates))
    price = None if k == 0 else (candidates[k][1] if len(candidates) > k else 0)
    return Expected(n_slots, [b for b, _ in candidates[:k]], skipped, len(book) - len(skipped), price)


def latest_round(mk: Market) -> dict:
    return mk.rounds()[-1]


def check_round(mk: Market, exp: Expected, winners: list[int]) -> int:
    """The latest round is `exp`: its row, its skips, its winners. Returns its round_id."""
    r = latest_round(mk)
    n = r["round_id"]
    assert (r["slots_offered"], r["slots_filled"], r["clearing_price_tokens"], r["bids_eligible"]) == (
        exp.slots,
        len(exp.winners),
        exp.price,
        exp.eligible,
    ), (r, exp)
    skips = mk.value(
        "SELECT array_agg(bid_id ORDER BY bid_id) FROM compute_auction.round_skips WHERE round_id = %s", (n,)
    )
    assert sorted(skips or []) == sorted(exp.skipped), f"round {n} skipped {skips}, the rule says {exp.skipped}"
    assert sorted(winners) == sorted(exp.winners), f"round {n} winners {winners}, the rule says {exp.winners}"
    for b in exp.winners:
        assert (mk.bid_field(b, "status"), mk.bid_field(b, "round_id")) == ("won", n)
    for b in exp.skipped:
        assert mk.bid_field(b, "status") == "open"
        why = mk.bid_status(b)["why_not_won"]
        assert re.match(rf"locked during round {n}\b", why or ""), why
    return n


def pending_of(mk: Market, account: str) -> list[tuple]:
    """The account's pending wallet entries: (kind, bid, slot, round, delta_balance, delta_held)."""
    return [tuple(r) for r in mk.conn.execute(PENDING_OF, (account,)).fetchall()]


def pending_balance(mk: Market, account: str) -> tuple[int, int]:
    return tuple(mk.conn.execute(PENDING_BALANCE, (account,)).fetchone())


def ledger_kinds(mk: Market, bid_id: int) -> list[str]:
    return [e["entry_kind"] for e in mk.ledger_for_bid(bid_id)]


def clears_of(mk: Market, slot: str, round_id: int | None = None) -> list[str]:
    """The statuses of the slot's clears (of one round, if given)."""
    return [c["status"] for c in mk.clears() if c["slot_id"] == slot and round_id in (None, c["round_id"])]


# ============================================= the scenario: one hostile hold ==


@dataclass
class Hold:
    """What mallory's open transaction holds, as the new rules see it."""

    bids: set[int] = field(default_factory=set)  # bid rows (skipped by rounds)
    # her account row: her expired bid is left; her stale run is aborted, its refund left pending
    account: bool = False
    clear_slot: str | None = None  # a clear row (that stale slot is left)
    subjects: set[int] = field(default_factory=set)  # bids the round after the hold must include


@dataclass
class World:
    mk: Market
    won_slot: dict[str, str]  # bidder -> the slot its bid won in the setup round
    won_bid: dict[str, int]  # bidder -> its bid that won in the setup round
    setup_round: int
    stale_cutoff: object  # abort_stale(0 s, stale_cutoff) finds exactly the setup round's runs
    bids: dict[str, int]  # task -> bid id


def build_world(mk: Market) -> World:
    for a in ("mallory", "alice", "bob", "carol", "dave", "eve"):
        mk.account(a)
    mk.account("quest-q", kind="quest")
    # the setup round: alice, bob and mallory each win a run; alice's runner claims hers
    for s in ("run-1", "run-2", "run-3"):
        mk.offer(s)
    for bidder, price in (("alice", 900), ("bob", 800), ("mallory", 700)):
        mk.bid(bidder, f"{bidder}-won", price, ttl=60)
    won = mk.dicts(CLEAR_NOW)
    won_slot = {w["bidder_id"]: w["slot_id"] for w in won}
    won_bid = {w["bidder_id"]: w["bid_id"] for w in won}
    assert sorted(won_slot) == ["alice", "bob", "mallory"]
    assert len(mk.claim(won_slot["alice"])) == 1
    stale_cutoff = mk.value("SELECT clock_timestamp()")
    # the book the hostile hold meets
    bids = {}
    for bidder, task, price, ttl in (
        ("mallory", "m-top", 5000, 60),
        ("quest-q", "q-1", 4500, 60),
        ("carol", "c-1", 4000, 60),
        ("dave", "d-1", 3000, 60),
        ("quest-q", "q-2", 1500, 60),
        # one more bid above m-exp than the slots offered while mallory holds her account (her
        # aborted stale run is offered again too, issue 14), so that m-exp never wins
        ("dave", "d-2", 200, 60),
        ("bob", "b-deep", 100, 60),
        ("mallory", "m-exp", 50, 5),  # expire at t0+5min: refund_unfilled(now => t0+10min)
        ("carol", "c-exp", 60, 5),
    ):
        bids[task] = mk.bid(bidder, task, price, ttl=ttl)
    return World(mk, won_slot, won_bid, latest_round(mk)["round_id"], stale_cutoff, bids)


def act_replace_top_bid(h: psycopg.Connection, w: World) -> Hold:
    top = w.bids["m-top"]
    assert h.execute(PLACE, ("mallory", "m-top", 5100, None, w.mk.at(60))).fetchone()[0] == top
    return Hold(bids={top}, account=True, subjects={top})


def act_bid_on_new_task(h: psycopg.Connection, w: World) -> Hold:
    new = h.execute(PLACE, ("mallory", "m-new", 4200, None, w.mk.at(60))).fetchone()[0]
    return Hold(account=True, subjects={new})


def act_submit_others_tasks(h: psycopg.Connection, w: World) -> Hold:
    tasks = [{"task_id": t, "expected_value_usd": 51.0} for t in ("q-1", "q-2", "m-top")]
    rows = h.execute(SUBMIT, ("mallory", Jsonb(tasks), 100.0, 1.0, w.mk.at(60))).fetchall()
    assert rows == [
        ("q-1", None, None, "skipped: live bid by another bidder"),
        ("q-2", None, None, "skipped: live bid by another bidder"),
        ("m-top", w.bids["m-top"], 5100, "replaced"),
    ]
    return Hold(bids={w.bids["m-top"]}, account=True, subjects={w.bids["m-top"]})


def act_claim_claimed_slot(h: psycopg.Connection, w: World) -> Hold:
    slot = w.won_slot["alice"]
    before = h.execute(CLEAR_XMIN, (slot,)).fetchone()
    rows = h.execute(CLAIM, (slot,)).fetchall()
    assert [r[2] for r in rows] == ["alice"]
    # read in mallory's own transaction, which would see its own new row version
    assert h.execute(CLEAR_XMIN, (slot,)).fetchone() == before, "a repeat claim wrote a new row version"
    return Hold()  # a repeat claim is a pure read: it holds nothing


def act_claim_unclaimed_slot(h: psycopg.Connection, w: World) -> Hold:
    slot = w.won_slot["bob"]
    rows = h.execute(CLAIM, (slot,)).fetchall()
    assert [r[2] for r in rows] == ["bob"]
    return Hold(clear_slot=slot)  # the first claim holds the clear row until mallory commits


ACTIONS = {
    "replace_top_bid": act_replace_top_bid,
    "bid_on_new_task": act_bid_on_new_task,
    "submit_others_tasks": act_submit_others_tasks,
    "claim_claimed_slot": act_claim_claimed_slot,
    "claim_unclaimed_slot": act_claim_unclaimed_slot,
}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_hostile_open_transaction_stalls_nobody(mk, connect, action):
    w = build_world(mk)
    hostile = connect(autocommit=False)
    cycle = connect()
    eve = connect()

    hold = ACTIONS[action](hostile, w)
    assert in_txn(hostile), "mallory's transaction is left open"
    # she holds no row of another bidder: every other bid and account can be locked at once
    for sql in (OTHERS_BIDS_NOWAIT, OTHERS_ACCOUNTS_NOWAIT):
        assert cycle.execute(sql).fetchone()[0] > 0

    # another agent bids on an unrelated task
    e_bid = eve.execute(PLACE, ("eve", "e-task", 10, None, mk.at(60))).fetchone()[0]
    assert mk.bid_field(e_bid, "status") == "open"

    # refund_unfilled: carol's expired bid is refunded; mallory's only if her account is free
    left_exp = {w.bids["m-exp"]} if hold.account else set()
    want = (1, 60) if hold.account else (2, 110)
    assert tuple(cycle.execute(REFUND, (mk.at(10),)).fetchone()) == want
    assert mk.bid_field(w.bids["c-exp"], "status") == "expired"
    assert mk.bid_field(w.bids["m-exp"], "status") == ("open" if hold.account else "expired")

    # abort_stale: the setup round's runs are stale; a slot whose clear row mallory holds is left;
    # her own run is aborted even while she holds her account, its refund left pending
    left_slots = set()
    if hold.clear_slot:
        left_slots.add(hold.clear_slot)
    m_before = mk.balance("mallory")
    assert cycle.execute(ABORT_STALE, ("0 seconds", w.stale_cutoff)).fetchone()[0] == 3 - len(left_slots)
    for bidder, slot in w.won_slot.items():
        assert clears_of(mk, slot, w.setup_round) == (["assigned"] if slot in left_slots else ["aborted"]), (
            bidder,
            slot,
        )
        assert mk.slot(slot)["status"] == ("assigned" if slot in left_slots else "idle")
    m_bid, m_slot = w.won_bid["mallory"], w.won_slot["mallory"]
    assert mk.bid_field(m_bid, "status") == "aborted"
    if hold.account:  # the refund of her 700 waits for her account; the books count it already
        assert pending_of(mk, "mallory") == [("refund", m_bid, m_slot, w.setup_round, 700, -700)]
        assert mk.value(PENDING_COUNT) == 1
        assert mk.balance("mallory") == m_before
        assert ledger_kinds(mk, m_bid) == ["escrow"]
        assert pending_balance(mk, "mallory") == (m_before[0] + 700, m_before[1] - 700)
    else:  # her account was free: refunded at once
        assert mk.value(PENDING_COUNT) == 0
        assert mk.balance("mallory") == (m_before[0] + 700, m_before[1] - 700)
        assert ledger_kinds(mk, m_bid) == ["escrow", "refund"]
    assert_audit_clean(mk.conn)

    # clear_round: two new slots and the runs abort_stale freed
    mk.offer("p-1")
    mk.offer("p-2")
    exp = expect_round(mk.conn, hold.bids)
    winners = [r[1] for r in cycle.execute(CLEAR_NOW).fetchall()]
    check_round(mk, exp, winners)
    for b in hold.bids:
        assert b not in winners

    # run_cycle: one more slot
    mk.offer("p-3")
    exp = expect_round(mk.conn, hold.bids)
    out = cycle.execute(RUN_CYCLE).fetchone()[0]
    n = check_round(mk, exp, [x["bid_id"] for x in out["winners"]])
    assert out["round"]["round_id"] == n
    assert (out["bids_expired"], out["assignments_aborted"], out["pending_entries_applied"]) == (0, 0, 0)

    # prune_history (retention) does not wait for her either: it removes the finished history
    # it can lock (rolled back here, so that the rest of the test sees the history)
    cycle.execute("BEGIN")
    removed = {t: n for t, n, _more in cycle.execute(PRUNE, ("0 seconds",)).fetchall()}
    assert removed["compute_auction_bids"] > 0 and removed["token_ledger"] > 0, removed
    assert_audit_clean(cycle)
    cycle.execute("ROLLBACK")

    assert in_txn(hostile), "mallory's transaction stayed open throughout"
    assert mk.value(PENDING_COUNT) == (1 if hold.account else 0)
    assert_audit_clean(mk.conn)

    # the hold ends: the next cycle picks up everything it left
    hostile.commit()
    cycle.execute(REFUND, (mk.at(10),))
    for b in left_exp:
        assert mk.bid_field(b, "status") == "expired"
    assert (
        mk.value(
            "SELECT count(*) FROM compute_auction.compute_auction_bids WHERE status = 'open' AND ttl_at <= %s",
            (mk.at(10),),
        )
        == 0
    )
    assert cycle.execute(ABORT_STALE, ("0 seconds", w.stale_cutoff)).fetchone()[0] == len(left_slots)
    for slot in w.won_slot.values():
        assert clears_of(mk, slot, w.setup_round) == ["aborted"]
    # apply_pending: her pending refund, now that her account is free; exactly once
    assert cycle.execute(APPLY_PENDING).fetchone()[0] == (1 if hold.account else 0)
    assert cycle.execute(APPLY_PENDING).fetchone()[0] == 0
    assert mk.value(PENDING_COUNT) == 0
    for bidder, b in w.won_bid.items():
        assert ledger_kinds(mk, b) == ["escrow", "refund"], bidder
    mk.offer("p-4")
    exp = expect_round(mk.conn, set())
    assert exp.skipped == []
    winners = [r[1] for r in cycle.execute(CLEAR_NOW).fetchall()]
    check_round(mk, exp, winners)
    for b in hold.subjects:
        assert b in winners, f"bid {b}, held before, did not win the round after the hold"

    assert mk.value("SELECT count(*) FROM compute_auction.audit()") == 0
    for a in ("mallory", "alice", "bob", "carol", "dave", "eve", "quest-q"):
        mk.assert_journal(a)


TASK_LOCK_CLASS = core_lock_key("CLASS") + 1  # compute_auction_core::limits::locks::CLASS_TASK
TASK_LOCKS_OF = """
SELECT count(*) FROM pg_catalog.pg_locks
 WHERE locktype = 'advisory' AND pid = %s AND classid = %s AND objsubid = 2 AND granted"""


def test_a_submit_naming_others_tasks_leaves_their_task_locks_alone(mk, connect):
    """Mallory's submit_bids_for_tasks lists quest-q's two tasks beside her own and she leaves
    her transaction open: she holds the task lock of her own task only, so quest-q's own submit
    of its two tasks (which takes their task locks) replaces both at once instead of waiting a
    second for 55P03 on every call while she holds. Fails before the submit skipped the task
    locks of other bidders' tasks (55P03)."""
    w = build_world(mk)
    hostile = connect(autocommit=False)
    act_submit_others_tasks(hostile, w)
    assert in_txn(hostile)
    assert mk.value(TASK_LOCKS_OF, (hostile.info.backend_pid, TASK_LOCK_CLASS)) == 1  # m-top's
    quest = connect()
    tasks = [{"task_id": t, "expected_value_usd": 46.0} for t in ("q-1", "q-2")]
    rows = quest.execute(SUBMIT, ("quest-q", Jsonb(tasks), 100.0, 1.0, mk.at(60))).fetchall()
    assert [(t, b, o) for t, b, _p, o in rows] == [
        ("q-1", w.bids["q-1"], "replaced"),
        ("q-2", w.bids["q-2"], "replaced"),
    ], rows
    assert mk.bid_field(w.bids["q-1"], "max_price_tokens") == 4600
    hostile.rollback()
    assert_audit_clean(mk.conn)


def test_a_locked_bid_deeper_in_the_book_counts_as_eligible(mk, connect):
    """Two bids held: one within the top k+1 (skipped, recorded, not eligible) and one deeper
    in the book, which the round never reached (eligible, not recorded)."""
    for a in ("a1", "a2", "a3", "a4", "a5"):
        mk.account(a)
    ids = {a: mk.bid(a, f"t-{a}", p, ttl=60) for a, p in (("a1", 500), ("a2", 400), ("a3", 300), ("a4", 200))}
    ids["a5"] = mk.bid("a5", "t-a5", 100, ttl=60)
    mk.offer("s1")  # k = 1: the round scans for 2 candidates
    h2 = connect(autocommit=False)
    h5 = connect(autocommit=False)
    h2.execute(PLACE, ("a2", "t-a2", 400, None, mk.at(60)))  # ranked 2nd: within the scan
    h5.execute(PLACE, ("a5", "t-a5", 100, None, mk.at(60)))  # ranked 5th: never reached
    exp = expect_round(mk.conn, {ids["a2"], ids["a5"]})
    assert (exp.winners, exp.skipped, exp.eligible, exp.price) == ([ids["a1"]], [ids["a2"]], 4, 300)
    cycle = connect()
    winners = [r[1] for r in cycle.execute(CLEAR_NOW).fetchall()]
    n = check_round(mk, exp, winners)
    assert not re.match(rf"locked during round {n}\b", mk.bid_status(ids["a5"])["why_not_won"] or "")
    h2.rollback()
    h5.rollback()
    assert_audit_clean(mk.conn)


# ============================================== agent-callable functions: no wait ==


# How alice holds her own live bid on t1 in an open transaction, and what bob's place_bid on t1
# gets: another bidder's live bid is read before the task lock and without a lock, so 23505 at
# once, whatever alice holds (even the task lock itself).
HELD_TASK = {
    "cancel": "23505",  # cancel_bid not committed: her bid and account rows
    "account": "23505",  # place_bid on another task: her account row
    "replace": "23505",  # place_bid again on t1: the task lock, her bid and account rows
}


@pytest.mark.parametrize("hold_by", list(HELD_TASK))
def test_another_bidder_on_a_task_whose_bid_is_held_does_not_wait(mk, connect, hold_by):
    mk.account("alice")
    mk.account("bob")
    a = mk.bid("alice", "t1", 300, ttl=60)
    holder = connect(autocommit=False)
    if hold_by == "replace":
        holder.execute(PLACE, ("alice", "t1", 350, None, mk.at(60)))
    elif hold_by == "account":
        holder.execute(PLACE, ("alice", "t2", 10, None, mk.at(60)))
    else:
        holder.execute(CANCEL, (a,))
    before = snapshot(mk.conn)
    bob = connect()
    got = sqlstate_of(bob, PLACE, ("bob", "t1", 900, None, mk.at(60)))
    assert got == HELD_TASK[hold_by], f"got {got} (57014 means it waited until the statement timeout)"
    assert snapshot(mk.conn) == before
    assert in_txn(holder)
    holder.rollback()
    # alice's bid is still live: bob's retry gets 23505 at once
    assert sqlstate_of(bob, PLACE, ("bob", "t1", 900, None, mk.at(60))) == "23505"
    assert mk.bid_row(a)["status"] == "open"
    assert_audit_clean(mk.conn)


def _hold_place(c, mk, ids):
    c.execute(PLACE, ("alice", "t1", 350, None, mk.at(60)))


def _hold_place_new(c, mk, ids):
    c.execute(PLACE, ("alice", "t-new", 10, None, mk.at(60)))


def _hold_first_claim(c, mk, ids):
    c.execute(CLAIM, ("s1",))


def _submit_t1(c, mk, ids):
    c.execute(SUBMIT, ("alice", Jsonb([{"task_id": "t1", "expected_value_usd": 2.0}]), 100.0, 1.0, mk.at(60)))


# (holder's call, waiter's call): the waiter would have to wait for the holder
BOUNDED = {
    # the same bidder from a second connection, while the first holds the task lock
    "place_bid same task, same bidder": (
        _hold_place,
        lambda c, mk, ids: c.execute(PLACE, ("alice", "t1", 400, None, mk.at(60))),
    ),
    # another bidder on a task whose first bid is uncommitted: the task lock is held
    "place_bid on a task with an uncommitted first bid": (
        _hold_place_new,
        lambda c, mk, ids: c.execute(PLACE, ("bob", "t-new", 20, None, mk.at(60))),
    ),
    "cancel_bid of a bid being replaced": (_hold_place, lambda c, mk, ids: c.execute(CANCEL, (ids["t1"],))),
    "submit_bids_for_tasks on a locked task": (_hold_place, _submit_t1),
    "claim_slot first claim while another first claim is open": (
        _hold_first_claim,
        lambda c, mk, ids: c.execute(CLAIM, ("s1",)),
    ),
}


@pytest.mark.parametrize("case", list(BOUNDED))
def test_agent_calls_that_would_wait_fail_with_55P03(mk, connect, case):
    mk.account("alice")
    mk.account("bob")
    ids = {"t1": mk.bid("alice", "t1", 300, ttl=60)}
    mk.account("carol")
    mk.offer("s1")
    mk.bid("carol", "t-carol", 500, ttl=60)
    assert [r["bidder_id"] for r in mk.dicts(CLEAR_NOW)] == ["carol"]
    hold, wait = BOUNDED[case]
    holder = connect(autocommit=False)
    hold(holder, mk, ids)
    before = snapshot(mk.conn)
    waiter = connect()
    try:
        wait(waiter, mk, ids)
        got = None
    except psycopg.Error as e:
        got = e.sqlstate
    assert got == "55P03", f"{case}: got {got} (57014 means it waited until the statement timeout)"
    assert snapshot(mk.conn) == before
    assert in_txn(holder)
    holder.rollback()
    # once the hold ends the same call goes through
    wait(waiter, mk, ids)
    assert_audit_clean(mk.conn)


# ===================================================== claim_slot: repeat is a read ==


def test_a_repeat_claim_is_a_pure_read(mk, connect, one_win):
    slot = one_win["slot"]
    first = mk.claim(slot)
    xmin, claimed_at = mk.conn.execute(CLEAR_XMIN, (slot,)).fetchone()
    assert claimed_at is not None
    # a repeat claim: the same row, no new row version
    assert mk.claim(slot) == first
    assert mk.conn.execute(CLEAR_XMIN, (slot,)).fetchone() == (xmin, claimed_at)
    # a repeat claim in an open transaction holds no lock: the runner settles meanwhile
    poller = connect(autocommit=False)
    assert poller.execute(CLAIM, (slot,)).fetchall() == first
    runner = connect()
    assert runner.execute(
        "SELECT 1 FROM compute_auction.compute_auction_clears WHERE slot_id = %s FOR UPDATE NOWAIT", (slot,)
    ).fetchone() == (1,)
    assert runner.execute(SETTLE, (slot, 0, 1.0)).fetchone()[0] == 200
    poller.rollback()
    assert mk.conn.execute(
        "SELECT status FROM compute_auction.compute_auction_clears WHERE slot_id = %s", (slot,)
    ).fetchone() == ("settled",)
    assert_audit_clean(mk.conn)


def test_a_repeat_claim_does_not_wait_for_a_settle_in_progress(mk, connect, one_win):
    slot = one_win["slot"]
    first = mk.claim(slot)
    runner = connect(autocommit=False)
    runner.execute(SETTLE, (slot, 0, 1.0))  # uncommitted: holds slot, clear, bid and account
    poller = connect()
    assert poller.execute(CLAIM, (slot,)).fetchall() == first
    runner.commit()
    assert_audit_clean(mk.conn)


# ======================================== cycle functions leave only what is held ==


def hold_account(c: psycopg.Connection, mk: Market, bidder: str) -> None:
    """The bidder's own place_bid on a new task, left uncommitted: it holds the account row."""
    c.execute(PLACE, (bidder, f"{bidder}-elsewhere", 10, None, mk.at(60)))


@pytest.mark.parametrize("hold_by", ["account", "bid"])
def test_refund_unfilled_leaves_an_expired_bid_whose_rows_are_held(mk, connect, hold_by):
    amounts = {"alice": 100, "bob": 200, "carol": 300}
    exp = {}
    for a, p in amounts.items():
        mk.account(a)
        exp[a] = mk.bid(a, f"{a}-t", p, ttl=5)
    holder = connect(autocommit=False)
    if hold_by == "account":
        hold_account(holder, mk, "bob")
    else:  # bob replaces the expiring bid itself (same price and TTL): its bid and account rows
        holder.execute(PLACE, ("bob", "bob-t", 200, None, mk.at(5)))
    bob_before = mk.balance("bob")
    cycle = connect()
    assert tuple(cycle.execute(REFUND, (mk.at(10),)).fetchone()) == (2, 400)
    assert [mk.bid_field(exp[a], "status") for a in amounts] == ["expired", "open", "expired"]
    assert mk.balance("bob") == bob_before
    assert [e["entry_kind"] for e in mk.ledger_for_bid(exp["bob"])] == ["escrow"]
    assert mk.balance("alice") == (200_000, 0)
    assert in_txn(holder)
    if hold_by == "account":
        holder.commit()
    else:
        holder.rollback()
    assert tuple(cycle.execute(REFUND, (mk.at(10),)).fetchone()) == (1, 200)
    assert mk.bid_field(exp["bob"], "status") == "expired"
    assert [e["entry_kind"] for e in mk.ledger_for_bid(exp["bob"])] == ["escrow", "refund"]
    assert_audit_clean(mk.conn)
    for a in amounts:
        mk.assert_journal(a)


@pytest.mark.parametrize("hold_by", ["bid", "clear"])
def test_abort_stale_leaves_a_stale_slot_whose_rows_are_held(mk, connect, hold_by):
    for a in ("alice", "bob", "carol"):
        mk.account(a)
    for s in ("s1", "s2", "s3"):
        mk.offer(s)
    won = {}
    for a, p in (("alice", 300), ("bob", 200), ("carol", 100)):
        won[a] = mk.bid(a, f"{a}-t", p, ttl=60)
    slot_of = {r["bidder_id"]: r["slot_id"] for r in mk.dicts(CLEAR_NOW)}
    cutoff = mk.value("SELECT clock_timestamp()")
    holder = connect(autocommit=False)
    if hold_by == "bid":  # any transaction holding the winning bid's row
        holder.execute("SELECT 1 FROM compute_auction.compute_auction_bids WHERE id = %s FOR UPDATE", (won["bob"],))
    else:  # bob's runner claims for the first time and has not committed
        holder.execute(CLAIM, (slot_of["bob"],))
    bob_before = mk.balance("bob")
    cycle = connect()
    assert cycle.execute(ABORT_STALE, ("0 seconds", cutoff)).fetchone()[0] == 2
    assert {a: clears_of(mk, slot_of[a]) for a in slot_of} == {
        "alice": ["aborted"],
        "bob": ["assigned"],
        "carol": ["aborted"],
    }
    assert mk.bid_field(won["bob"], "status") == "won"
    assert mk.slot(slot_of["bob"])["status"] == "assigned"
    assert mk.balance("bob") == bob_before
    assert in_txn(holder)
    holder.commit()
    assert cycle.execute(ABORT_STALE, ("0 seconds", cutoff)).fetchone()[0] == 1
    assert mk.bid_field(won["bob"], "status") == "aborted"
    assert mk.value(PENDING_COUNT) == 0
    assert_audit_clean(mk.conn)
    for a in slot_of:
        mk.assert_journal(a)


def test_abort_stale_aborts_a_stale_slot_whose_winners_account_is_held(mk, connect):
    """Issue 14: the winner holding its own wallet neither delays the stale abort nor keeps its
    run assigned: the run is aborted at once, the refund is pending until the account is free."""
    for a in ("alice", "bob", "carol"):
        mk.account(a)
    for s in ("s1", "s2", "s3"):
        mk.offer(s)
    won = {}
    for a, p in (("alice", 300), ("bob", 200), ("carol", 100)):
        won[a] = mk.bid(a, f"{a}-t", p, ttl=60)
    slot_of = {r["bidder_id"]: r["slot_id"] for r in mk.dicts(CLEAR_NOW)}
    round_id = latest_round(mk)["round_id"]
    cutoff = mk.value("SELECT clock_timestamp()")
    holder = connect(autocommit=False)
    hold_account(holder, mk, "bob")
    bob_before = mk.balance("bob")
    cycle = connect()
    assert cycle.execute(ABORT_STALE, ("0 seconds", cutoff)).fetchone()[0] == 3
    assert {a: clears_of(mk, slot_of[a]) for a in slot_of} == {
        "alice": ["aborted"],
        "bob": ["aborted"],
        "carol": ["aborted"],
    }
    assert mk.bid_field(won["bob"], "status") == "aborted"
    assert mk.slot(slot_of["bob"])["status"] == "idle"
    # bob's refund is recorded, not applied: his wallet is untouched, the books count it
    assert mk.balance("bob") == bob_before
    assert ledger_kinds(mk, won["bob"]) == ["escrow"]
    assert pending_of(mk, "bob") == [("refund", won["bob"], slot_of["bob"], round_id, 200, -200)]
    assert mk.value(PENDING_COUNT) == 1  # alice's and carol's were applied at once
    for a in ("alice", "carol"):
        assert ledger_kinds(mk, won[a]) == ["escrow", "refund"]
    assert pending_balance(mk, "bob") == (bob_before[0] + 200, bob_before[1] - 200)
    assert_audit_clean(mk.conn)
    # apply_pending skips the held account without waiting
    assert cycle.execute(APPLY_PENDING).fetchone()[0] == 0
    assert mk.value(PENDING_COUNT) == 1
    assert in_txn(holder)
    holder.commit()
    after_hold = pending_balance(mk, "bob")  # bob's committed bid elsewhere, refund applied
    assert cycle.execute(ABORT_STALE, ("0 seconds", cutoff)).fetchone()[0] == 0
    assert cycle.execute(APPLY_PENDING).fetchone()[0] == 1
    assert cycle.execute(APPLY_PENDING).fetchone()[0] == 0
    assert mk.value(PENDING_COUNT) == 0
    assert mk.balance("bob") == after_hold
    assert ledger_kinds(mk, won["bob"]) == ["escrow", "refund"]
    assert_audit_clean(mk.conn)
    for a in slot_of:
        mk.assert_journal(a)


@pytest.mark.parametrize("call", ["settle", "abort_slot"])
@pytest.mark.parametrize("hold_by", ["bid", "clear", "slot"])
def test_settle_and_abort_fail_fast_while_the_winning_run_is_held(mk, connect, one_win, call, hold_by):
    slot, winner = one_win["slot"], one_win["winner"]
    holder = connect(autocommit=False)
    if hold_by == "bid":
        holder.execute("SELECT 1 FROM compute_auction.compute_auction_bids WHERE id = %s FOR UPDATE", (winner,))
    elif hold_by == "clear":  # the runner's first claim, not committed: it holds the clear row
        assert [r[2] for r in holder.execute(CLAIM, (slot,)).fetchall()] == ["alice"]
    else:
        holder.execute("SELECT 1 FROM compute_auction.compute_slots WHERE slot_id = %s FOR UPDATE", (slot,))
    sql, args = (SETTLE, (slot, 0, 1.0)) if call == "settle" else (ABORT, (slot, "runner crashed"))
    before = snapshot(mk.conn)
    runner = connect()
    assert sqlstate_of(runner, sql, args) == "55P03"
    assert snapshot(mk.conn) == before
    assert in_txn(holder)
    holder.commit()
    runner.execute(sql, args)
    assert mk.bid_field(winner, "status") == ("settled" if call == "settle" else "aborted")
    assert mk.value(PENDING_COUNT) == 0  # alice's account was free: applied at once
    assert_audit_clean(mk.conn)
    mk.assert_journal("alice")


@pytest.mark.parametrize("call", ["settle", "abort_slot"])
def test_settle_and_abort_complete_while_the_winners_account_is_held(mk, connect, one_win, call):
    """Issue 14: alice holding her own wallet does not delay her runner: the outcome is recorded
    at once, the charge and premium (or the refund) wait in pending_entries, and the next cycle
    applies them exactly once after the hold ends."""
    slot, winner = one_win["slot"], one_win["winner"]
    round_id = latest_round(mk)["round_id"]
    holder = connect(autocommit=False)
    hold_account(holder, mk, "alice")
    before = mk.balance("alice")
    spent_before = mk.value("SELECT total_spent FROM compute_auction.token_accounts WHERE account_id = 'alice'")
    runner = connect()
    if call == "settle":
        assert runner.execute(SETTLE, (slot, 0, 1.0)).fetchone()[0] == 200
        entries = [("charge", winner, slot, round_id, 0, -200), ("premium", winner, slot, round_id, 100, -100)]
        kinds, spent = ["escrow", "charge", "premium"], 200
    else:
        assert runner.execute(ABORT, (slot, "runner crashed")).fetchone()[0] == 300
        entries = [("refund", winner, slot, round_id, 300, -300)]
        kinds, spent = ["escrow", "refund"], 0
    status = "settled" if call == "settle" else "aborted"
    assert mk.bid_field(winner, "status") == status
    assert clears_of(mk, slot, round_id) == [status]
    assert mk.slot(slot)["status"] == "idle"
    # the wallet entries are pending: the wallet and its ledger are untouched, the books count them
    assert pending_of(mk, "alice") == entries
    assert mk.value(PENDING_COUNT) == len(entries)
    assert mk.balance("alice") == before
    assert ledger_kinds(mk, winner) == ["escrow"]
    db, dh = sum(e[4] for e in entries), sum(e[5] for e in entries)
    assert pending_balance(mk, "alice") == (before[0] + db, before[1] + dh)
    assert_audit_clean(mk.conn)
    # apply_pending skips the held account without waiting
    assert runner.execute(APPLY_PENDING).fetchone()[0] == 0
    assert pending_of(mk, "alice") == entries
    assert in_txn(holder)
    holder.commit()
    after_hold = pending_balance(mk, "alice")  # her committed bid elsewhere, entries applied
    # the next cycle applies them, and the freed slot is won again (bob's 200 beats her 10)
    out = runner.execute(RUN_CYCLE).fetchone()[0]
    assert out["pending_entries_applied"] == len(entries)
    assert [(x["bidder_id"], x["slot_id"]) for x in out["winners"]] == [("bob", slot)]
    assert runner.execute(APPLY_PENDING).fetchone()[0] == 0
    assert mk.value(PENDING_COUNT) == 0
    assert mk.balance("alice") == after_hold
    assert ledger_kinds(mk, winner) == kinds
    assert (
        mk.value("SELECT total_spent FROM compute_auction.token_accounts WHERE account_id = 'alice'")
        == spent_before + spent
    )
    assert_audit_clean(mk.conn)
    mk.assert_journal("alice")
    mk.assert_journal("bob")
