"""Quest bidding (submit_bids_for_tasks), the proportional fallback (allocate_proportional) and
bid advice (price_to_win), against the installed extension through psycopg 3.

Fixtures come from conftest.py: conn (autocommit, brand-new database), fresh_db_url.
"""

from __future__ import annotations

import json
import math
import time
from fractions import Fraction

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import assert_audit_clean, snapshot, sqlstate_of

I64_MAX = 2**63 - 1

# PostgreSQL's own JSON parser reports nesting it cannot follow as 54001
# (stack_depth_limit_exceeded); the wrappers report a well-parsed but wrongly shaped value as
# 22023. Either is a documented SQLSTATE; XX000 (internal error) never is.
DEEP_NESTING_STATES = {"22023", "54001"}


# ----------------------------------------------------------------- helpers --


def open_account(conn, account: str, tokens: int, kind: str = "quest") -> None:
    conn.execute("SELECT compute_auction.open_account(%s, %s, %s)", (account, kind, tokens))


def submit(conn, quest, tasks, tokens_per_usd=100.0, bid_fraction=None, ttl_at=None):
    """Calls submit_bids_for_tasks; returns its rows as dicts, in order."""
    if bid_fraction is None and ttl_at is None:
        cur = conn.execute(
            "SELECT task_id, bid_id, max_price_tokens, outcome  FROM compute_auction.submit_bids_for_tasks(%s, %s, %s)",
            (quest, Jsonb(tasks), tokens_per_usd),
        )
    else:
        cur = conn.execute(
            "SELECT task_id, bid_id, max_price_tokens, outcome"
            "  FROM compute_auction.submit_bids_for_tasks(%s, %s, %s, %s, %s)",
            (quest, Jsonb(tasks), tokens_per_usd, 0.6 if bid_fraction is None else bid_fraction, ttl_at),
        )
    return [dict(task_id=r[0], bid_id=r[1], max_price_tokens=r[2], outcome=r[3]) for r in cur.fetchall()]


def by_task(rows):
    return {r["task_id"]: r for r in rows}


def task(task_id, ev, blocked=None):
    t = {"task_id": task_id, "expected_value_usd": ev}
    if blocked is not None:
        t["blocked"] = blocked
    return t


def balance(conn, account):
    return conn.execute("SELECT balance_tokens, held_tokens FROM compute_auction.balance(%s)", (account,)).fetchone()


def ledger_rows(conn, account):
    return conn.execute(
        "SELECT entry_kind, delta_balance, delta_held, bid_id FROM compute_auction.token_ledger"
        " WHERE account_id = %s ORDER BY id",
        (account,),
    ).fetchall()


def bid_row(conn, bid_id):
    return conn.execute(
        "SELECT bidder_id, task_id, max_price_tokens, expected_value_usd, status"
        "  FROM compute_auction.compute_auction_bids WHERE id = %s",
        (bid_id,),
    ).fetchone()


def live_bids(conn, bidder):
    """{task_id: (bid_id, max_price_tokens, status)} of the bidder's open and won bids."""
    rows = conn.execute(
        "SELECT task_id, id, max_price_tokens, status FROM compute_auction.compute_auction_bids"
        " WHERE bidder_id = %s AND status IN ('open', 'won')",
        (bidder,),
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def price(bid_fraction, ev, tokens_per_usd, cap):
    """The spec's formula: clamp(floor(bid_fraction * ev * tokens_per_usd), 0, cap)."""
    raw = bid_fraction * ev * tokens_per_usd
    if raw <= 0 or math.isnan(raw):
        return 0
    return cap if raw >= cap else min(math.floor(raw), cap)


def snap(conn) -> dict:
    """snapshot() plus the fallback allocations table."""
    s = snapshot(conn)
    rows = conn.execute("SELECT to_jsonb(x)::text FROM compute_auction.quest_budget_allocations x").fetchall()
    s["quest_budget_allocations"] = sorted(r[0] for r in rows)
    return s


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


# ======================================================= submit_bids_for_tasks ==


def test_prices_follow_the_formula_and_escrow_each_bid(conn):
    open_account(conn, "quest-a", 10**9)
    evs = [10.0, 1.0, 0.5, 123.456, 0.07, 3.3333]
    tasks = [task(f"t{i}", ev) for i, ev in enumerate(evs)]
    rows = submit(conn, "quest-a", tasks, tokens_per_usd=100.0, bid_fraction=0.6)

    assert [r["task_id"] for r in rows] == [t["task_id"] for t in tasks], "one row per task, in input order"
    cap = 10**9 // len(tasks)
    total = 0
    for r, ev in zip(rows, evs, strict=True):
        want = price(0.6, ev, 100.0, cap)
        assert want == math.floor(0.6 * ev * 100.0)  # far below the cap here
        assert r["max_price_tokens"] == want, (r, ev)
        assert r["outcome"] == "placed"
        assert bid_row(conn, r["bid_id"]) == ("quest-a", r["task_id"], want, ev, "open")
        total += want
    assert balance(conn, "quest-a") == (10**9 - total, total)
    escrows = [row for row in ledger_rows(conn, "quest-a") if row[0] == "escrow"]
    assert sorted((row[3], -row[1], row[2]) for row in escrows) == sorted(
        (r["bid_id"], r["max_price_tokens"], r["max_price_tokens"]) for r in rows
    )
    assert_audit_clean(conn)


def test_a_backlog_of_new_bids_is_journaled_in_order_with_time_priority_in_input_order(conn):
    """The new bids of one call are placed together (book::open_many): each still has its own
    escrow row, the journal's balance_after/held_after run in bid order, bid ids and placed_at
    follow the planner's order, and every bid counts in the open-bid counter, beside a
    replaced bid of the same call."""
    open_account(conn, "quest-a", 10**6)
    submit(conn, "quest-a", [task("old", 5.0)], tokens_per_usd=100.0)
    tasks = [task("old", 7.0)] + [task(f"n{i}", 1.0 + i) for i in range(40)]
    rows = submit(conn, "quest-a", tasks, tokens_per_usd=100.0)
    assert [r["outcome"] for r in rows] == ["replaced"] + ["placed"] * 40
    new = [r["bid_id"] for r in rows[1:]]
    assert new == sorted(new), "ids in input order"
    placed = conn.execute(
        "SELECT placed_at FROM compute_auction.compute_auction_bids WHERE id = ANY(%s) ORDER BY id", (new,)
    ).fetchall()
    # the clock may read the same microsecond twice; the book breaks such ties by id
    assert all(a[0] <= b[0] for a, b in zip(placed, placed[1:], strict=False)), "time priority in input order"
    bal = held = 0
    for e in conn.execute(
        "SELECT delta_balance, delta_held, balance_after, held_after, entry_kind, bid_id"
        "  FROM compute_auction.token_ledger WHERE account_id = 'quest-a' ORDER BY id"
    ).fetchall():
        bal, held = bal + e[0], held + e[1]
        assert (e[2], e[3]) == (bal, held), e
    escrowed = conn.execute(
        "SELECT bid_id FROM compute_auction.token_ledger WHERE account_id = 'quest-a' AND entry_kind = 'escrow'"
        "   AND bid_id = ANY(%s) ORDER BY id",
        (new,),
    ).fetchall()
    assert [r[0] for r in escrowed] == new
    assert balance(conn, "quest-a") == (bal, held)
    summary = conn.execute("SELECT compute_auction.market_summary()").fetchone()[0]
    assert summary["open_bids"] == 41
    assert_audit_clean(conn)


def test_default_bid_fraction_is_0_6_and_ttl_defaults_to_15_minutes(conn):
    open_account(conn, "q", 10**6)
    rows = submit(conn, "q", [task("x", 12.5)], tokens_per_usd=40.0)
    assert rows[0]["max_price_tokens"] == math.floor(0.6 * 12.5 * 40.0) == 300
    ttl_minutes = conn.execute(
        "SELECT extract(epoch FROM ttl_at - now()) / 60 FROM compute_auction.compute_auction_bids WHERE id = %s",
        (rows[0]["bid_id"],),
    ).fetchone()[0]
    assert 14 < float(ttl_minutes) <= 15.01


def test_explicit_ttl_is_used(conn):
    open_account(conn, "q", 10**6)
    ttl = conn.execute("SELECT date_trunc('second', now() + interval '2 hours')").fetchone()[0]
    rows = submit(conn, "q", [task("x", 1.0)], tokens_per_usd=100.0, bid_fraction=1.0, ttl_at=ttl)
    got = conn.execute(
        "SELECT ttl_at FROM compute_auction.compute_auction_bids WHERE id = %s", (rows[0]["bid_id"],)
    ).fetchone()[0]
    assert got == ttl


def test_cap_is_the_budget_over_the_unblocked_task_count(conn):
    open_account(conn, "q", 1000)
    tasks = [
        task("a", 1e6),
        task("b", 1e6),
        task("c", 1e6),
        task("d", 1e6, blocked=True),
        task("e", 0.5, blocked=False),
    ]
    rows = by_task(submit(conn, "q", tasks, tokens_per_usd=100.0, bid_fraction=1.0))
    cap = 1000 // 4  # four unblocked tasks; the blocked one does not count
    assert [rows[t]["max_price_tokens"] for t in "abc"] == [cap] * 3
    assert rows["e"]["max_price_tokens"] == 50  # below the cap: the formula
    assert rows["d"] == dict(task_id="d", bid_id=None, max_price_tokens=None, outcome="skipped: blocked")
    assert balance(conn, "q") == (1000 - 3 * cap - 50, 3 * cap + 50)
    assert_audit_clean(conn)


def test_cap_counts_tasks_skipped_for_other_bidders(conn):
    open_account(conn, "q", 900)
    open_account(conn, "agent", 10_000, kind="agent")
    conn.execute("SELECT compute_auction.place_bid('agent', 'taken', 77)")
    rows = by_task(submit(conn, "q", [task("a", 1e9), task("b", 1e9), task("taken", 1e9)]))
    assert rows["taken"]["outcome"] == "skipped: live bid by another bidder"
    assert rows["a"]["max_price_tokens"] == rows["b"]["max_price_tokens"] == 900 // 3


def test_budget_adds_the_quests_own_open_bids_on_these_tasks_only(conn):
    open_account(conn, "q", 1000)
    # an open bid of the quest on a task that is not in the list is not part of the budget
    conn.execute("SELECT compute_auction.place_bid('q', 'elsewhere', 100)")
    rows = by_task(submit(conn, "q", [task("a", 1e9), task("b", 1e9)]))
    assert rows["a"]["max_price_tokens"] == rows["b"]["max_price_tokens"] == 900 // 2 == 450
    assert balance(conn, "q") == (0, 1000)

    # spendable 0 + own open bids on a and b (900): the same prices again
    again = by_task(submit(conn, "q", [task("a", 1e9), task("b", 1e9)]))
    assert {t: (r["bid_id"], r["max_price_tokens"], r["outcome"]) for t, r in again.items()} == {
        "a": (rows["a"]["bid_id"], 450, "replaced"),
        "b": (rows["b"]["bid_id"], 450, "replaced"),
    }

    # more tokens: a larger budget, the escrow grows by the difference only
    conn.execute("SELECT compute_auction.deposit('q', 300, 'good work')")
    more = by_task(submit(conn, "q", [task("a", 1e9), task("b", 1e9)]))
    assert more["a"]["max_price_tokens"] == more["b"]["max_price_tokens"] == 1200 // 2
    assert balance(conn, "q") == (0, 1300)

    # only a listed: budget = spendable 0 + a's 600 (b's and elsewhere's escrow stay out)
    only_a = submit(conn, "q", [task("a", 1e9)])
    assert only_a == [dict(task_id="a", bid_id=rows["a"]["bid_id"], max_price_tokens=600, outcome="replaced")]
    assert live_bids(conn, "q") == {
        "a": (rows["a"]["bid_id"], 600, "open"),
        "b": (rows["b"]["bid_id"], 600, "open"),
        "elsewhere": (
            conn.execute("SELECT id FROM compute_auction.compute_auction_bids WHERE task_id = 'elsewhere'").fetchone()[
                0
            ],
            100,
            "open",
        ),
    }
    assert_audit_clean(conn)


def test_empty_wallet_places_nothing(conn):
    open_account(conn, "broke", 0)
    rows = submit(conn, "broke", [task("a", 50.0), task("b", 10.0)])
    assert [r["outcome"] for r in rows] == ["skipped: zero price", "skipped: zero price"]
    assert [r["bid_id"] for r in rows] == [None, None]
    assert live_bids(conn, "broke") == {}
    assert ledger_rows(conn, "broke") == []


def test_resubmitting_the_same_list_is_idempotent(conn):
    open_account(conn, "q", 5_000)
    open_account(conn, "agent", 1_000, kind="agent")
    conn.execute("SELECT compute_auction.place_bid('agent', 'theirs', 10)")
    tasks = [
        task("a", 40.0),
        task("b", 2.5),
        task("c", 1e6),
        task("d", 0.001),
        task("e", 9.0, blocked=True),
        task("theirs", 5.0),
    ]
    first = submit(conn, "q", tasks, tokens_per_usd=100.0)
    held = balance(conn, "q")
    ledger_before = ledger_rows(conn, "q")
    all_ledger = conn.execute("SELECT count(*) FROM compute_auction.token_ledger").fetchone()[0]
    bids_before = conn.execute("SELECT count(*) FROM compute_auction.compute_auction_bids").fetchone()[0]
    accounts_before = conn.execute(
        "SELECT account_id, balance_tokens, held_tokens, total_deposited, total_spent, total_withdrawn"
        "  FROM compute_auction.token_accounts ORDER BY 1"
    ).fetchall()

    for _ in range(3):
        again = submit(conn, "q", tasks, tokens_per_usd=100.0)
        assert [(r["task_id"], r["bid_id"], r["max_price_tokens"]) for r in again] == [
            (r["task_id"], r["bid_id"], r["max_price_tokens"]) for r in first
        ]
        assert [r["outcome"] for r in again] == [
            "replaced" if r["outcome"] in ("placed", "replaced") else r["outcome"] for r in first
        ]
        assert balance(conn, "q") == held
        assert ledger_rows(conn, "q") == ledger_before, "no escrow or release on an identical re-submission"
        assert conn.execute("SELECT count(*) FROM compute_auction.token_ledger").fetchone()[0] == all_ledger
        assert conn.execute("SELECT count(*) FROM compute_auction.compute_auction_bids").fetchone()[0] == bids_before
        assert (
            conn.execute(
                "SELECT account_id, balance_tokens, held_tokens, total_deposited, total_spent, total_withdrawn"
                "  FROM compute_auction.token_accounts ORDER BY 1"
            ).fetchall()
            == accounts_before
        )
    # the cap was binding on c: the idempotence must hold there too
    assert by_task(first)["c"]["max_price_tokens"] == 5_000 // 5
    assert_audit_clean(conn)


def test_a_changed_price_replaces_the_bid_in_place(conn):
    open_account(conn, "q", 100_000)
    first = submit(conn, "q", [task("a", 10.0)], tokens_per_usd=100.0, bid_fraction=1.0)[0]
    assert (first["max_price_tokens"], first["outcome"]) == (1000, "placed")

    up = submit(conn, "q", [task("a", 25.0)], tokens_per_usd=100.0, bid_fraction=1.0)[0]
    assert (up["bid_id"], up["max_price_tokens"], up["outcome"]) == (first["bid_id"], 2500, "replaced")
    assert balance(conn, "q") == (97_500, 2_500)

    down = submit(conn, "q", [task("a", 4.0)], tokens_per_usd=100.0, bid_fraction=1.0)[0]
    assert (down["bid_id"], down["max_price_tokens"], down["outcome"]) == (first["bid_id"], 400, "replaced")
    assert balance(conn, "q") == (99_600, 400)

    assert (
        conn.execute("SELECT count(*) FROM compute_auction.compute_auction_bids WHERE task_id = 'a'").fetchone()[0] == 1
    )
    row = bid_row(conn, first["bid_id"])
    assert row == ("q", "a", 400, 4.0, "open")
    assert ledger_rows(conn, "q")[1:] == [
        ("escrow", -1000, 1000, first["bid_id"]),
        ("escrow", -1500, 1500, first["bid_id"]),
        ("release", 2100, -2100, first["bid_id"]),
    ]
    assert_audit_clean(conn)


def test_zero_price_cancels_the_existing_open_bid(conn):
    open_account(conn, "q", 10_000)
    placed = by_task(submit(conn, "q", [task("a", 5.0), task("b", 5.0)]))
    # EV 0, and an EV so small the price floors to 0
    rows = by_task(submit(conn, "q", [task("a", 0), task("b", 0.001), task("c", 0.0)]))
    assert rows["a"] == dict(
        task_id="a", bid_id=placed["a"]["bid_id"], max_price_tokens=None, outcome="skipped: zero price"
    )
    assert rows["b"] == dict(
        task_id="b", bid_id=placed["b"]["bid_id"], max_price_tokens=None, outcome="skipped: zero price"
    )
    assert rows["c"] == dict(task_id="c", bid_id=None, max_price_tokens=None, outcome="skipped: zero price")
    assert bid_row(conn, placed["a"]["bid_id"])[4] == "cancelled"
    assert bid_row(conn, placed["b"]["bid_id"])[4] == "cancelled"
    assert balance(conn, "q") == (10_000, 0)
    assert_audit_clean(conn)


def test_a_blocked_task_cancels_its_open_bid(conn):
    open_account(conn, "q", 10_000)
    placed = by_task(submit(conn, "q", [task("a", 5.0), task("b", 5.0)]))
    rows = by_task(submit(conn, "q", [task("a", 5.0, blocked=True), task("b", 5.0), task("c", 7.0, blocked=True)]))
    assert rows["a"] == dict(
        task_id="a", bid_id=placed["a"]["bid_id"], max_price_tokens=None, outcome="cancelled: blocked"
    )
    assert rows["b"]["outcome"] == "replaced"
    assert rows["c"] == dict(task_id="c", bid_id=None, max_price_tokens=None, outcome="skipped: blocked")
    assert bid_row(conn, placed["a"]["bid_id"])[4] == "cancelled"
    assert set(live_bids(conn, "q")) == {"b"}
    assert balance(conn, "q") == (10_000 - 300, 300)
    releases = [r for r in ledger_rows(conn, "q") if r[0] == "release"]
    assert releases == [("release", 300, -300, placed["a"]["bid_id"])]
    assert_audit_clean(conn)


def test_another_bidders_live_bid_and_a_won_task_are_reported_and_skipped(conn):
    open_account(conn, "q", 100_000)
    open_account(conn, "agent", 100_000, kind="agent")
    theirs = conn.execute("SELECT compute_auction.place_bid('agent', 'theirs', 5000)").fetchone()[0]
    their_won = conn.execute("SELECT compute_auction.place_bid('agent', 'their-won', 9000)").fetchone()[0]
    mine = by_task(submit(conn, "q", [task("mine-won", 100.0)], bid_fraction=1.0))["mine-won"]
    conn.execute("SELECT compute_auction.offer_slot('s1')")
    conn.execute("SELECT compute_auction.offer_slot('s2')")
    won = conn.execute("SELECT bid_id FROM compute_auction.clear_round()").fetchall()
    assert sorted(r[0] for r in won) == sorted([mine["bid_id"], their_won])
    before = snap(conn)
    agent_before = balance(conn, "agent")

    rows = by_task(
        submit(
            conn,
            "q",
            [
                task("theirs", 50.0),
                task("their-won", 50.0),
                task("mine-won", 100.0),
                task("fresh", 1.0),
            ],
        )
    )
    assert rows["theirs"] == dict(
        task_id="theirs", bid_id=None, max_price_tokens=None, outcome="skipped: live bid by another bidder"
    )
    assert rows["their-won"] == dict(
        task_id="their-won", bid_id=None, max_price_tokens=None, outcome="skipped: live bid by another bidder"
    )
    assert rows["mine-won"] == dict(
        task_id="mine-won", bid_id=mine["bid_id"], max_price_tokens=None, outcome="skipped: already won"
    )
    assert rows["fresh"]["outcome"] == "placed"
    # nothing of the other bidder's, or of the won bid, changed
    assert bid_row(conn, theirs) == ("agent", "theirs", 5000, None, "open")
    assert bid_row(conn, their_won)[4] == "won"
    assert bid_row(conn, mine["bid_id"])[2:] == (10_000, 100.0, "won")
    assert balance(conn, "agent") == agent_before
    after = snap(conn)
    assert after["compute_auction_clears"] == before["compute_auction_clears"]

    # a won task stays won even when the scorer now reports it blocked
    again = by_task(submit(conn, "q", [task("mine-won", 100.0, blocked=True)]))
    assert again["mine-won"]["outcome"] == "skipped: already won"
    assert bid_row(conn, mine["bid_id"])[4] == "won"
    assert_audit_clean(conn)


def test_an_error_part_way_through_leaves_nothing_changed(conn):
    """The cancels run before the placements; a placement that fails (a TTL in the past) must
    roll the cancels back too: one call, one transaction."""
    open_account(conn, "q", 10_000)
    placed = by_task(submit(conn, "q", [task("a", 5.0), task("b", 5.0), task("c", 5.0)]))
    before = snap(conn)
    sql = "SELECT * FROM compute_auction.submit_bids_for_tasks('q', %s, 100, 0.6, now() - interval '1 second')"
    tasks = [task("a", 5.0, blocked=True), task("b", 0.0), task("c", 1.0), task("d", 9.0)]
    assert sqlstate_of(conn, sql, (Jsonb(tasks),)) == "22023"
    assert snap(conn) == before
    # a TTL too far ahead, the same
    sql = "SELECT * FROM compute_auction.submit_bids_for_tasks('q', %s, 100, 0.6, now() + interval '31 days')"
    assert sqlstate_of(conn, sql, (Jsonb(tasks),)) == "22023"
    assert snap(conn) == before
    assert {t: v[2] for t, v in live_bids(conn, "q").items()} == {"a": "open", "b": "open", "c": "open"}
    assert placed["a"]["bid_id"] == live_bids(conn, "q")["a"][0]


def test_the_callers_transaction_rolls_back_the_whole_call(fresh_db_url, conn):
    open_account(conn, "q", 10_000)
    submit(conn, "q", [task("a", 5.0)])
    before = snap(conn)
    with psycopg.connect(fresh_db_url) as tx:
        rows = submit(tx, "q", [task("a", 50.0), task("b", 7.0), task("c", 1.0, blocked=True)])
        assert {r["outcome"] for r in rows} == {"replaced", "placed", "skipped: blocked"}
        tx.rollback()
    assert snap(conn) == before


def test_unknown_quest_is_p0002_and_changes_nothing(conn):
    open_account(conn, "q", 10_000)
    submit(conn, "q", [task("a", 5.0)])
    before = snap(conn)
    sql = "SELECT * FROM compute_auction.submit_bids_for_tasks('nobody', %s, 100)"
    assert sqlstate_of(conn, sql, (Jsonb([task("a", 5.0), task("z", 1.0)]),)) == "P0002"
    assert snap(conn) == before


def test_huge_numbers_clamp_to_the_cap(conn):
    open_account(conn, "rich", I64_MAX)
    rows = submit(conn, "rich", [task("a", 1e308)], tokens_per_usd=1e308, bid_fraction=1.0)
    assert rows[0]["max_price_tokens"] == I64_MAX
    assert balance(conn, "rich") == (0, I64_MAX)
    # re-submission with the whole wallet in escrow: still the same price, no overflow
    again = submit(conn, "rich", [task("a", 1e308)], tokens_per_usd=1e308, bid_fraction=1.0)
    assert (again[0]["bid_id"], again[0]["max_price_tokens"]) == (rows[0]["bid_id"], I64_MAX)
    # two tasks split it
    split = by_task(submit(conn, "rich", [task("a", 1e300), task("b", 1e15)], tokens_per_usd=1e6, bid_fraction=1.0))
    assert split["a"]["max_price_tokens"] == split["b"]["max_price_tokens"] == I64_MAX // 2
    assert_audit_clean(conn)


BAD_SUBMIT = [
    # (id, quest, tasks (json text or None), tokens_per_usd, bid_fraction, sqlstate)
    ("null-quest", None, "[]", 100, 0.6, "22004"),
    ("null-tasks", "q", None, 100, 0.6, "22004"),
    ("null-tokens-per-usd", "q", "[]", None, 0.6, "22004"),
    ("null-bid-fraction", "q", "[]", 100, None, "22004"),
    ("tasks-object", "q", '{"task_id": "a", "expected_value_usd": 1}', 100, 0.6, "22023"),
    ("tasks-string", "q", '"a"', 100, 0.6, "22023"),
    ("tasks-number", "q", "1", 100, 0.6, "22023"),
    ("tasks-json-null", "q", "null", 100, 0.6, "22023"),
    ("entry-number", "q", "[1]", 100, 0.6, "22023"),
    ("entry-null", "q", "[null]", 100, 0.6, "22023"),
    ("entry-array", "q", "[[]]", 100, 0.6, "22023"),
    ("missing-task-id", "q", '[{"expected_value_usd": 1}]', 100, 0.6, "22023"),
    ("missing-ev", "q", '[{"task_id": "a"}]', 100, 0.6, "22023"),
    ("null-ev", "q", '[{"task_id": "a", "expected_value_usd": null}]', 100, 0.6, "22023"),
    ("task-id-number", "q", '[{"task_id": 7, "expected_value_usd": 1}]', 100, 0.6, "22023"),
    ("ev-string", "q", '[{"task_id": "a", "expected_value_usd": "1"}]', 100, 0.6, "22023"),
    ("blocked-string", "q", '[{"task_id": "a", "expected_value_usd": 1, "blocked": "yes"}]', 100, 0.6, "22023"),
    ("blocked-number", "q", '[{"task_id": "a", "expected_value_usd": 1, "blocked": 1}]', 100, 0.6, "22023"),
    ("good-then-bad-entry", "q", '[{"task_id": "a", "expected_value_usd": 1}, {"task_id": "b"}]', 100, 0.6, "22023"),
    ("empty-task-id", "q", '[{"task_id": "", "expected_value_usd": 1}]', 100, 0.6, "22023"),
    ("long-task-id", "q", json.dumps([task("x" * 257, 1)]), 100, 0.6, "22001"),
    ("duplicate-task", "q", json.dumps([task("a", 1), task("a", 2)]), 100, 0.6, "22023"),
    ("negative-ev", "q", json.dumps([task("a", 1), task("b", -0.01)]), 100, 0.6, "22023"),
    ("negative-ev-blocked", "q", json.dumps([task("b", -5, blocked=True)]), 100, 0.6, "22023"),
    ("zero-tokens-per-usd", "q", json.dumps([task("a", 1)]), 0, 0.6, "22023"),
    ("negative-tokens-per-usd", "q", json.dumps([task("a", 1)]), -1, 0.6, "22023"),
    ("nan-tokens-per-usd", "q", json.dumps([task("a", 1)]), float("nan"), 0.6, "22023"),
    ("inf-tokens-per-usd", "q", json.dumps([task("a", 1)]), float("inf"), 0.6, "22023"),
    ("zero-bid-fraction", "q", json.dumps([task("a", 1)]), 100, 0.0, "22023"),
    ("negative-bid-fraction", "q", json.dumps([task("a", 1)]), 100, -0.1, "22023"),
    ("bid-fraction-above-one", "q", json.dumps([task("a", 1)]), 100, 1.0000001, "22023"),
    ("bid-fraction-two", "q", json.dumps([task("a", 1)]), 100, 2.0, "22023"),
    ("nan-bid-fraction", "q", json.dumps([task("a", 1)]), 100, float("nan"), "22023"),
    ("inf-bid-fraction", "q", json.dumps([task("a", 1)]), 100, float("inf"), "22023"),
    ("ev-beyond-double", "q", '[{"task_id": "a", "expected_value_usd": 1e400}]', 100, 0.6, "22003"),
    ("ev-1000-digits", "q", '[{"task_id": "a", "expected_value_usd": ' + "9" * 1000 + "}]", 100, 0.6, "22003"),
    ("empty-quest", "", json.dumps([task("a", 1)]), 100, 0.6, "22023"),
    ("long-quest", "q" * 257, json.dumps([task("a", 1)]), 100, 0.6, "22001"),
]


@pytest.fixture
def quest_with_bids(conn):
    """A quest with open bids, an agent with one, and a won bid: state an error must not touch."""
    open_account(conn, "q", 50_000)
    open_account(conn, "agent", 50_000, kind="agent")
    submit(conn, "q", [task("a", 5.0), task("b", 7.0), task("w", 99.0)])
    conn.execute("SELECT compute_auction.place_bid('agent', 'other', 123)")
    conn.execute("SELECT compute_auction.offer_slot('s1')")
    conn.execute("SELECT * FROM compute_auction.clear_round()")
    return conn


@pytest.mark.parametrize("case", BAD_SUBMIT, ids=[c[0] for c in BAD_SUBMIT])
def test_bad_submit_input_is_an_error_that_changes_nothing(quest_with_bids, case):
    conn = quest_with_bids
    _, quest, tasks, tpu, frac, state = case
    before = snap(conn)
    got = sqlstate_of(
        conn,
        "SELECT * FROM compute_auction.submit_bids_for_tasks(%s, %s::jsonb, %s, %s)",
        (quest, tasks, tpu, frac),
    )
    assert got == state
    assert snap(conn) == before
    assert_audit_clean(conn)


def test_text_that_is_not_json_is_22p02(quest_with_bids):
    conn = quest_with_bids
    before = snap(conn)
    got = sqlstate_of(
        conn, "SELECT * FROM compute_auction.submit_bids_for_tasks('q', %s::jsonb, 100)", ('[{"task_id": ',)
    )
    assert got == "22P02"
    assert snap(conn) == before


@pytest.mark.parametrize("shape", ["array", "entry", "blocked"])
@pytest.mark.parametrize("depth", [5000, 100_000])
def test_deeply_nested_tasks_json_is_a_documented_error(quest_with_bids, shape, depth):
    conn = quest_with_bids
    nested = deep(depth)
    tasks = {
        "array": nested,
        "entry": "[" + nested + "]",
        "blocked": '[{"task_id": "a", "expected_value_usd": 1, "blocked": ' + nested + "}]",
    }[shape]
    before = snap(conn)
    got = sqlstate_of(conn, "SELECT * FROM compute_auction.submit_bids_for_tasks('q', %s::jsonb, 100)", (tasks,))
    assert got in DEEP_NESTING_STATES, got
    assert snap(conn) == before
    # the session is still usable afterwards
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_deeply_nested_unknown_field_is_ignored(quest_with_bids):
    """Fields other than task_id, expected_value_usd and blocked are the caller's business."""
    conn = quest_with_bids
    tasks = '[{"task_id": "a", "expected_value_usd": 5, "notes": ' + deep(5000) + "}]"
    rows = conn.execute(
        "SELECT outcome FROM compute_auction.submit_bids_for_tasks('q', %s::jsonb, 100)", (tasks,)
    ).fetchall()
    assert rows == [("replaced",)]


# ======================================================= allocate_proportional ==


def allocate(conn, day, budget, quests, source=None):
    if source is None:
        cur = conn.execute(
            "SELECT quest_id, allocated_tokens FROM compute_auction.allocate_proportional(%s, %s, %s)",
            (day, budget, Jsonb(quests)),
        )
    else:
        cur = conn.execute(
            "SELECT quest_id, allocated_tokens FROM compute_auction.allocate_proportional(%s, %s, %s, %s)",
            (day, budget, Jsonb(quests), source),
        )
    return cur.fetchall()


def quests(*evs, prefix="q"):
    return [{"quest_id": f"{prefix}{i}", "expected_value": ev} for i, ev in enumerate(evs)]


def stored(conn, day):
    return conn.execute(
        "SELECT quest_id, allocated_tokens, share, source FROM compute_auction.quest_budget_allocations"
        " WHERE day = %s ORDER BY quest_id",
        (day,),
    ).fetchall()


def hamilton(budget: int, weights) -> list[int]:
    """Exact largest-remainder split (ties to the earlier entry), in rational arithmetic."""
    ws = [Fraction(w) for w in weights]
    total = sum(ws)
    if total == 0:
        ws = [Fraction(1)] * len(ws)
        total = Fraction(len(ws))
    quotas = [w * budget / total for w in ws]
    floors = [q.numerator // q.denominator for q in quotas]
    left = budget - sum(floors)
    order = sorted(range(len(ws)), key=lambda i: (-(quotas[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    return floors


def test_shares_are_proportional_to_expected_value(conn):
    rows = allocate(conn, "2025-03-01", 1000, quests(1, 2, 3, 4))
    assert rows == [("q0", 100), ("q1", 200), ("q2", 300), ("q3", 400)]
    st = stored(conn, "2025-03-01")
    assert [(r[0], r[1]) for r in st] == rows
    assert [r[2] for r in st] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert {r[3] for r in st} == {"proportional"}
    assert (
        conn.execute(
            "SELECT count(*) FROM compute_auction.quest_budget_allocations"
            " WHERE created_at IS NULL OR created_at > now() + interval '1 second'"
        ).fetchone()[0]
        == 0
    )


@pytest.mark.parametrize(
    "budget, evs, want",
    [
        (100, [1, 1, 1], [34, 33, 33]),
        (10, [5, 5, 5], [4, 3, 3]),
        (1, [2, 2, 2], [1, 0, 0]),
        (2, [1, 1, 1], [1, 1, 0]),
        (100, [3] * 7, [15, 15, 14, 14, 14, 14, 14]),
        (1009, [2, 3, 5, 7, 11, 13], [49, 74, 123, 172, 271, 320]),
        (997, [0.5, 0.25, 0.25], [499, 249, 249]),
        (7919, [17, 19, 23, 29, 31], None),
        (104729, [1.1, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7], None),
        (0, [1, 2, 3], [0, 0, 0]),
        (5, [1e-9, 1, 1e9], [0, 0, 5]),
    ],
)
def test_largest_remainder_sums_to_exactly_the_budget(conn, budget, evs, want):
    rows = allocate(conn, "2025-03-02", budget, quests(*evs))
    got = [r[1] for r in rows]
    assert sum(got) == budget
    expected = hamilton(budget, [str(e) if isinstance(e, float) else e for e in evs])
    if want is not None:
        assert expected == want  # the hand computation and the reference agree
    assert got == expected
    assert [r[1] for r in stored(conn, "2025-03-02")] == [r[1] for r in sorted(rows)]


def test_many_awkward_splits_sum_to_the_budget_and_stay_within_one_token(conn):
    primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]
    for n in range(1, len(primes) + 1):
        for budget in (1, 13, 97, 1000, 10**6 + 3, 2**40 + 15):
            evs = primes[:n]
            got = [r[1] for r in allocate(conn, "2025-03-03", budget, quests(*evs))]
            assert sum(got) == budget, (budget, evs, got)
            total = sum(evs)
            for g, w in zip(got, evs, strict=True):
                quota = Fraction(w * budget, total)
                assert math.floor(quota) <= g <= math.ceil(quota), (budget, evs, got)
            assert got == hamilton(budget, evs), (budget, evs)


def test_rerunning_a_day_replaces_its_rows(conn):
    allocate(conn, "2025-03-04", 900, quests(1, 1, 1))
    allocate(conn, "2025-03-05", 50, quests(1, prefix="other"))
    rows = allocate(
        conn,
        "2025-03-04",
        1000,
        [{"quest_id": "q1", "expected_value": 3}, {"quest_id": "new", "expected_value": 1}],
        source="fallback",
    )
    assert sorted(rows) == [("new", 250), ("q1", 750)]
    assert stored(conn, "2025-03-04") == [("new", 250, 0.25, "fallback"), ("q1", 750, 0.75, "fallback")]
    # another day is untouched
    assert stored(conn, "2025-03-05") == [("other0", 50, 1.0, "proportional")]
    # and again, with the same input: the same rows, not duplicates
    allocate(
        conn,
        "2025-03-04",
        1000,
        [{"quest_id": "q1", "expected_value": 3}, {"quest_id": "new", "expected_value": 1}],
        source="fallback",
    )
    assert stored(conn, "2025-03-04") == [("new", 250, 0.25, "fallback"), ("q1", 750, 0.75, "fallback")]


def test_quests_with_zero_expected_value_get_nothing(conn):
    rows = allocate(
        conn,
        "2025-03-06",
        1001,
        [
            {"quest_id": "idle", "expected_value": 0},
            {"quest_id": "busy", "expected_value": 3},
            {"quest_id": "zero", "expected_value": 0.0},
            {"quest_id": "also", "expected_value": 4},
        ],
    )
    assert dict(rows) == {"idle": 0, "busy": 429, "zero": 0, "also": 572}
    st = {r[0]: r for r in stored(conn, "2025-03-06")}
    assert st["idle"][2] == 0 and st["zero"][2] == 0
    assert st["busy"][2] == pytest.approx(3 / 7)


def test_all_zero_expected_values_split_evenly(conn):
    """Documented in extension/core/src/tokens.rs: no signal at all, so an even split."""
    rows = allocate(conn, "2025-03-07", 100, quests(0, 0, 0))
    assert [r[1] for r in rows] == [34, 33, 33]
    assert [r[2] for r in stored(conn, "2025-03-07")] == pytest.approx([1 / 3] * 3)


def test_huge_budget_splits_exactly(conn):
    rows = allocate(conn, "2025-03-08", I64_MAX, quests(1, 1, 1))
    assert [r[1] for r in rows] == hamilton(I64_MAX, [1, 1, 1])
    assert sum(r[1] for r in rows) == I64_MAX


def test_huge_budget_shares_stay_within_one_token_of_their_quota(conn):
    """Largest remainder means every share is the floor or the ceiling of its exact quota, also
    for budgets beyond 2**53 where a double cannot hold every token count."""
    evs = ["3", "1e-300", "7"]
    rows = allocate(
        conn, "2025-03-09", I64_MAX, [{"quest_id": f"q{i}", "expected_value": float(e)} for i, e in enumerate(evs)]
    )
    got = [r[1] for r in rows]
    assert sum(got) == I64_MAX
    assert got == hamilton(I64_MAX, [Fraction(float(e)) for e in evs])


def test_huge_expected_values_keep_their_proportions(conn):
    """EVs whose sum overflows a double must still be split by proportion, not evenly."""
    rows = allocate(conn, "2025-03-10", 1000, quests(1e308, 1e308, 1))
    got = dict(rows)
    assert got["q2"] == 0, f"a quest with EV 1 next to two of EV 1e308 got {got['q2']} of 1000 tokens"
    assert got == {"q0": 500, "q1": 500, "q2": 0}
    shares = {r[0]: r[2] for r in stored(conn, "2025-03-10")}
    assert shares == pytest.approx({"q0": 0.5, "q1": 0.5, "q2": 0.0})


BAD_ALLOCATE = [
    # (id, day, budget, quests json text, source, sqlstate)
    ("null-day", None, 100, '[{"quest_id": "a", "expected_value": 1}]', "proportional", "22004"),
    ("null-budget", "2025-04-01", None, '[{"quest_id": "a", "expected_value": 1}]', "proportional", "22004"),
    ("null-quests", "2025-04-01", 100, None, "proportional", "22004"),
    ("null-source", "2025-04-01", 100, '[{"quest_id": "a", "expected_value": 1}]', None, "22004"),
    ("negative-budget", "2025-04-01", -1, '[{"quest_id": "a", "expected_value": 1}]', "proportional", "22023"),
    ("quests-object", "2025-04-01", 100, '{"quest_id": "a", "expected_value": 1}', "proportional", "22023"),
    ("quests-string", "2025-04-01", 100, '"a"', "proportional", "22023"),
    ("quests-json-null", "2025-04-01", 100, "null", "proportional", "22023"),
    ("entry-number", "2025-04-01", 100, "[1]", "proportional", "22023"),
    ("entry-null", "2025-04-01", 100, "[null]", "proportional", "22023"),
    ("missing-quest-id", "2025-04-01", 100, '[{"expected_value": 1}]', "proportional", "22023"),
    ("missing-ev", "2025-04-01", 100, '[{"quest_id": "a"}]', "proportional", "22023"),
    ("ev-string", "2025-04-01", 100, '[{"quest_id": "a", "expected_value": "1"}]', "proportional", "22023"),
    ("quest-id-number", "2025-04-01", 100, '[{"quest_id": 1, "expected_value": 1}]', "proportional", "22023"),
    (
        "good-then-bad",
        "2025-04-01",
        100,
        '[{"quest_id": "a", "expected_value": 1}, {"quest_id": "b"}]',
        "proportional",
        "22023",
    ),
    (
        "negative-ev",
        "2025-04-01",
        100,
        '[{"quest_id": "a", "expected_value": 1}, {"quest_id": "b", "expected_value": -1}]',
        "proportional",
        "22023",
    ),
    (
        "duplicate-quest",
        "2025-04-01",
        100,
        '[{"quest_id": "a", "expected_value": 1}, {"quest_id": "a", "expected_value": 2}]',
        "proportional",
        "22023",
    ),
    ("empty-quest-id", "2025-04-01", 100, '[{"quest_id": "", "expected_value": 1}]', "proportional", "22023"),
    (
        "long-quest-id",
        "2025-04-01",
        100,
        json.dumps([{"quest_id": "x" * 257, "expected_value": 1}]),
        "proportional",
        "22001",
    ),
    ("ev-beyond-double", "2025-04-01", 100, '[{"quest_id": "a", "expected_value": 1e400}]', "proportional", "22003"),
]


@pytest.fixture
def allocated_day(conn):
    allocate(conn, "2025-04-01", 600, quests(1, 2))
    allocate(conn, "2025-04-02", 600, quests(1, 2))
    return conn


@pytest.mark.parametrize("case", BAD_ALLOCATE, ids=[c[0] for c in BAD_ALLOCATE])
def test_bad_allocate_input_is_an_error_that_keeps_the_days_rows(allocated_day, case):
    conn = allocated_day
    _, day, budget, qs, source, state = case
    before = snap(conn)
    got = sqlstate_of(
        conn,
        "SELECT * FROM compute_auction.allocate_proportional(%s::date, %s::bigint, %s::jsonb, %s)",
        (day, budget, qs, source),
    )
    assert got == state
    assert snap(conn) == before


@pytest.mark.parametrize("depth", [5000, 100_000])
def test_deeply_nested_quests_json_is_a_documented_error(allocated_day, depth):
    conn = allocated_day
    before = snap(conn)
    for qs in (deep(depth), "[" + deep(depth) + "]", '[{"quest_id": "a", "expected_value": ' + deep(depth) + "}]"):
        got = sqlstate_of(
            conn, "SELECT * FROM compute_auction.allocate_proportional('2025-04-01', 10, %s::jsonb)", (qs,)
        )
        assert got in DEEP_NESTING_STATES, got
    assert snap(conn) == before


# ================================================================= price_to_win ==


def advice(conn) -> dict:
    return conn.execute("SELECT compute_auction.price_to_win()").fetchone()[0]


def ref_clear(bids: list[int], reserves: list[int]):
    """The spec's rule: (k, price) for bids and slot reserves."""
    b = sorted(bids, reverse=True)
    r = sorted(reserves)
    k = 0
    while k < min(len(b), len(r)) and b[k] >= r[k]:
        k += 1
    if k == 0:
        return 0, None
    return k, max(r[k - 1], b[k] if k < len(b) else 0)


def ref_price_to_win(bids: list[int], reserves: list[int]):
    """The smallest x that wins a slot when placed now (after every existing bid >= x)."""
    if not reserves:
        return None
    for x in range(1, max(bids + reserves + [0]) + 2):
        pos = sum(1 for p in bids if p >= x)
        k, _ = ref_clear(bids + [x], reserves)
        if pos < k:
            return x
    raise AssertionError("unreachable")


def would_win(url: str, price: int) -> bool:
    """Places price for the probe account and clears the round, in a transaction rolled back."""
    with psycopg.connect(url) as c:
        try:
            bid = c.execute("SELECT compute_auction.place_bid('probe', 'probe-task', %s)", (price,)).fetchone()[0]
            winners = [r[0] for r in c.execute("SELECT bid_id FROM compute_auction.clear_round()").fetchall()]
            return bid in winners
        finally:
            c.rollback()


def setup_market(conn, bids: list[int], reserves: list[int]) -> None:
    open_account(conn, "probe", 10**9, kind="agent")
    for i, p in enumerate(bids):
        open_account(conn, f"agent{i}", p, kind="agent")
        conn.execute("SELECT compute_auction.place_bid(%s, %s, %s)", (f"agent{i}", f"task{i}", p))
    for i, r in enumerate(reserves):
        conn.execute("SELECT compute_auction.offer_slot(%s, now() - interval '1 minute', %s)", (f"slot{i}", r))


def test_price_to_win_shape(conn):
    # an empty market: no slot at all, so nothing to advise for the next slot either
    assert advice(conn) == {
        "slots_available": 0,
        "price_to_win_now": None,
        "slots_free": 1,
        "slots_counted": 0,
        "slots_capped": True,
        "price_to_win": None,
        "next_slot_id": None,
        "next_slot_at": None,
        "next_slot_estimated": None,
        "run_duration_estimate_s": None,
        "price_window_s": 86400,
        "recent_clearing_p50": None,
        "recent_clearing_p90": None,
    }


def test_price_to_win_is_null_without_a_free_slot(conn):
    setup_market(conn, [500, 300], [])
    # a slot that is not available yet, and one that is assigned, do not count
    conn.execute("SELECT compute_auction.offer_slot('later', now() + interval '1 hour', 0)")
    conn.execute("SELECT compute_auction.offer_slot('busy', now() - interval '1 minute', 0)")
    conn.execute("SELECT * FROM compute_auction.clear_round()")
    conn.execute("SELECT compute_auction.offer_slot('gone', now() - interval '1 minute', 0)")
    conn.execute("SELECT compute_auction.retire_slot('gone')")
    a = advice(conn)
    assert a["slots_available"] == 0
    assert a["price_to_win_now"] is None


@pytest.mark.parametrize(
    "bids, reserves",
    [
        ([], [0]),
        ([], [50]),
        ([100, 80, 10], [0, 0]),
        ([100], [0, 120]),
        ([100], [0, 0]),
        ([500, 250, 150, 100, 50], [10, 200, 300]),
        ([40, 40, 40], [0, 0]),
        ([7, 7], [7, 7, 7]),
        ([1000, 900, 800], [950, 950]),
        ([5, 4, 3, 2, 1], [0, 0, 0, 0, 0]),
    ],
)
def test_price_to_win_is_the_bid_that_would_just_win(fresh_db_url, conn, bids, reserves):
    setup_market(conn, bids, reserves)
    a = advice(conn)
    assert a["slots_available"] == len(reserves)
    p = a["price_to_win_now"]
    assert p == ref_price_to_win(bids, reserves)
    before = snap(conn)
    assert would_win(fresh_db_url, p), f"a bid of {p} should win a slot"
    if p > 1:
        assert not would_win(fresh_db_url, p - 1), f"a bid of {p - 1} should lose"
    assert snap(conn) == before  # the probes were rolled back


def test_price_to_win_ignores_bids_past_their_ttl(fresh_db_url, conn):
    setup_market(conn, [100], [0, 0])
    open_account(conn, "late", 1000, kind="agent")
    # placed and priced in one transaction (one now()), so the bid is live however slow the machine
    with conn.transaction():
        conn.execute("SELECT compute_auction.place_bid('late', 'late-task', 900, NULL, now() + interval '1 second')")
        assert advice(conn)["price_to_win_now"] == 101  # two slots, two bids: beat the lower one
    # then wait for its TTL to pass on the server's clock (the deadline only detects a hang)
    deadline = time.monotonic() + 60
    while conn.execute(
        "SELECT now() <= ttl_at FROM compute_auction.compute_auction_bids WHERE task_id = 'late-task'"
    ).fetchone()[0]:
        assert time.monotonic() < deadline, "the server clock did not pass the TTL"
        time.sleep(0.1)
    # the 900 bid is still 'open' (nobody ran refund_unfilled) but no longer eligible
    assert conn.execute(
        "SELECT status FROM compute_auction.compute_auction_bids WHERE task_id = 'late-task'"
    ).fetchone() == ("open",)
    a = advice(conn)
    assert a["price_to_win_now"] == 1
    assert would_win(fresh_db_url, 1)


def test_price_to_win_after_the_book_changes(fresh_db_url, conn):
    setup_market(conn, [300, 200, 100], [0, 0])
    assert advice(conn)["price_to_win_now"] == 201
    conn.execute("SELECT compute_auction.place_bid('probe', 'other', 250)")
    assert advice(conn)["price_to_win_now"] == 251
    bid = conn.execute("SELECT id FROM compute_auction.compute_auction_bids WHERE task_id = 'task0'").fetchone()[0]
    conn.execute("SELECT compute_auction.cancel_bid(%s)", (bid,))
    assert advice(conn)["price_to_win_now"] == 201
    assert would_win(fresh_db_url, 201) and not would_win(fresh_db_url, 200)


def make_round(conn, price: int, i: int, now_sql: str = "now()") -> None:
    """One round cleared at `price` (a lone bid over a slot whose reserve is `price`)."""
    conn.execute("SELECT compute_auction.offer_slot('ps', now() - interval '3 days', %s)", (price,))
    conn.execute("SELECT compute_auction.place_bid('pa', %s, %s)", (f"pt{i}", price + 5))
    got = conn.execute(f"SELECT clearing_price_tokens FROM compute_auction.clear_round({now_sql})").fetchall()
    assert got == [(price,)]
    conn.execute("SELECT compute_auction.abort_slot('ps', 'test round')")


def test_recent_clearing_percentiles_cover_the_last_24_hours(conn):
    open_account(conn, "pa", 10**9, kind="agent")
    # older than 24 h: not counted
    make_round(conn, 1_000_000, 0, "now() - interval '25 hours'")
    for i, p in enumerate([70, 10, 100, 40, 90, 20, 60, 30, 80, 50], start=1):
        make_round(conn, p, i)
    # rounds that filled nothing have no price: not counted either
    conn.execute("SELECT compute_auction.retire_slot('ps')")
    conn.execute("SELECT * FROM compute_auction.clear_round()")
    conn.execute("SELECT compute_auction.offer_slot('empty', now() - interval '1 minute', 0)")
    conn.execute("SELECT * FROM compute_auction.clear_round()")
    assert (
        conn.execute(
            "SELECT count(*) FROM compute_auction.compute_auction_rounds WHERE clearing_price_tokens IS NULL"
        ).fetchone()[0]
        == 2
    )
    a = advice(conn)
    want50 = conn.execute(
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY p) FROM unnest(ARRAY[10,20,30,40,50,60,70,80,90,100]) p"
    ).fetchone()[0]
    assert (a["recent_clearing_p50"], a["recent_clearing_p90"]) == (want50, 90) == (50, 90)
    assert a["slots_available"] == 1 and a["price_to_win_now"] == 1
    assert_audit_clean(conn)


def test_percentiles_of_a_single_round(conn):
    open_account(conn, "pa", 10**6, kind="agent")
    make_round(conn, 37, 1)
    a = advice(conn)
    assert (a["recent_clearing_p50"], a["recent_clearing_p90"]) == (37, 37)
