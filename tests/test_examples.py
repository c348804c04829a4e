"""The Python integration examples (examples/python/) against a brand-new database: the EV
scorer bids for each quest's unblocked tasks, the agent loop claims its slot's won task,
settles it with the run's cost and impact, and falls back to the old queue otherwise. Both are
used as a library (imported) and as scripts (subprocesses with the venv's python).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
import uuid

import psycopg
import pytest

from conftest import ROLES_SQL, ROOT, assert_audit_clean, snapshot

EXAMPLES = ROOT / "examples" / "python"
sys.path.insert(0, str(EXAMPLES))

import agent_loop  # noqa: E402
import ev_scorer  # noqa: E402
import low_balance  # noqa: E402


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def live_bids(conn, bidder):
    rows = conn.execute(
        "SELECT task_id, max_price_tokens, expected_value_usd FROM compute_auction.compute_auction_bids"
        " WHERE bidder_id = %s AND status = 'open' ORDER BY task_id",
        (bidder,),
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def expected_prices(tasks, balance, tokens_per_usd=100.0, bid_fraction=0.6):
    unblocked = [t for t in tasks if not t.blocked]
    cap = balance // len(unblocked)
    out = {}
    for t in unblocked:
        p = min(math.floor(bid_fraction * t.expected_value_usd * tokens_per_usd), cap)
        if p > 0:
            out[t.task_id] = p
    return out


# ------------------------------------------------------------------- scorer --


def test_ev_scorer_bids_for_each_quests_unblocked_tasks(fresh_db_url, conn):
    report = ev_scorer.main(fresh_db_url, fund_tokens=10_000)
    assert report["errors"] == {}
    assert set(report["quests"]) == set(ev_scorer.DEMO_BACKLOG)
    for quest_id, tasks in ev_scorer.DEMO_BACKLOG.items():
        rows = {r["task_id"]: r for r in report["quests"][quest_id]}
        assert set(rows) == {t.task_id for t in tasks}
        want = expected_prices(tasks, 10_000)
        assert want, "the demo backlog places bids"
        assert {
            t: (p, pytest.approx(next(x.expected_value_usd for x in tasks if x.task_id == t))) for t, p in want.items()
        } == live_bids(conn, quest_id)
        for t in tasks:
            if t.blocked:
                assert rows[t.task_id]["outcome"] == "skipped: blocked"
            elif t.task_id in want:
                assert (rows[t.task_id]["outcome"], rows[t.task_id]["max_price_tokens"]) == ("placed", want[t.task_id])
    assert_audit_clean(conn)

    # rescoring the same backlog changes nothing (no new ledger rows, same prices)
    ledger = conn.execute("SELECT count(*) FROM compute_auction.token_ledger").fetchone()[0]
    again = ev_scorer.main(fresh_db_url, fund_tokens=10_000)
    assert again["errors"] == {}
    assert conn.execute("SELECT count(*) FROM compute_auction.token_ledger").fetchone()[0] == ledger
    for quest_id in ev_scorer.DEMO_BACKLOG:
        assert [(r["task_id"], r["bid_id"], r["max_price_tokens"]) for r in again["quests"][quest_id]] == [
            (r["task_id"], r["bid_id"], r["max_price_tokens"]) for r in report["quests"][quest_id]
        ]


def test_ev_scorer_cancels_a_task_that_became_blocked(fresh_db_url, conn):
    backlog = {"quest-x": [ev_scorer.Task("x-1", 1.0, 10.0), ev_scorer.Task("x-2", 1.0, 20.0)]}
    ev_scorer.main(fresh_db_url, backlog, fund_tokens=50_000)
    assert set(live_bids(conn, "quest-x")) == {"x-1", "x-2"}
    backlog["quest-x"][0].blocked = True
    report = ev_scorer.main(fresh_db_url, backlog)
    assert [r["outcome"] for r in report["quests"]["quest-x"]] == ["cancelled: blocked", "replaced"]
    assert set(live_bids(conn, "quest-x")) == {"x-2"}
    assert_audit_clean(conn)


def test_ev_scorer_reports_a_quest_without_wallet_and_continues(fresh_db_url, conn):
    conn.execute("SELECT compute_auction.open_account('quest-ok', 'quest', 1000)")
    backlog = {
        "quest-missing": [ev_scorer.Task("m-1", 1.0, 5.0)],
        "quest-ok": [ev_scorer.Task("ok-1", 1.0, 5.0)],
    }
    report = ev_scorer.main(fresh_db_url, backlog)
    assert report["errors"]["quest-missing"].startswith("P0002")
    assert [r["outcome"] for r in report["quests"]["quest-ok"]] == ["placed"]
    assert live_bids(conn, "quest-missing") == {}


def test_ev_scorer_script(fresh_db_url, conn, tmp_path):
    backlog = tmp_path / "backlog.json"
    backlog.write_text(
        json.dumps(
            {
                "quest-a": [
                    {"task_id": "a-1", "success_probability": 0.5, "value_usd": 10},
                    {"task_id": "a-2", "expected_value_usd": 3.5},
                    {"task_id": "a-3", "success_probability": 0.9, "value_usd": 50, "blocked": True},
                ],
                "quest-b": [{"task_id": "b-1", "expected_value_usd": 100}],
            }
        )
    )
    r = run_script(
        "ev_scorer.py",
        "--dsn",
        fresh_db_url,
        "--backlog",
        str(backlog),
        "--fund",
        "5000",
        "--tokens-per-usd",
        "50",
        "--bid-fraction",
        "0.8",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["errors"] == {}
    assert live_bids(conn, "quest-a") == {"a-1": (200, 5.0), "a-2": (140, 3.5)}
    assert live_bids(conn, "quest-b") == {"b-1": (4000, 100.0)}
    assert [row["outcome"] for row in report["quests"]["quest-a"]] == ["placed", "placed", "skipped: blocked"]

    # human-readable output, and the exit status when a quest fails
    r = run_script("ev_scorer.py", "--dsn", fresh_db_url, "--backlog", str(backlog))
    assert r.returncode == 0, r.stderr
    assert "quest-a" in r.stdout and "replaced" in r.stdout
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"quest-nowallet": [{"task_id": "n-1", "expected_value_usd": 1}]}))
    r = run_script("ev_scorer.py", "--dsn", fresh_db_url, "--backlog", str(missing))
    assert r.returncode == 1
    assert "P0002" in r.stderr
    assert_audit_clean(conn)


def test_ev_scorer_readme_commands_with_the_shipped_backlog(fresh_db_url, conn):
    """examples/python/README.md's step 1 as written: the demo backlog with --fund, then the
    shipped backlog.json rescores the same two quests (one task became blocked, one unblocked,
    two are new)."""
    shipped = EXAMPLES / "backlog.json"
    r = run_script("ev_scorer.py", "--dsn", fresh_db_url, "--fund", "10000", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["errors"] == {}
    r = run_script(
        "ev_scorer.py",
        "--dsn",
        fresh_db_url,
        "--backlog",
        str(shipped),
        "--tokens-per-usd",
        "100",
        "--bid-fraction",
        "0.6",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["errors"] == {}
    backlog = ev_scorer.load_backlog(str(shipped))
    assert set(report["quests"]) == set(backlog) == set(ev_scorer.DEMO_BACKLOG)
    for quest_id, tasks in backlog.items():
        rows = {row["task_id"]: row for row in report["quests"][quest_id]}
        assert set(rows) == {t.task_id for t in tasks}
        for t in tasks:
            if t.blocked:  # it had a bid before: cancelled
                assert rows[t.task_id]["outcome"] == "cancelled: blocked", t.task_id
        bids = live_bids(conn, quest_id)
        assert set(bids) == {t.task_id for t in tasks if not t.blocked}
        for task_id, (price, _ev) in bids.items():
            assert price == rows[task_id]["max_price_tokens"]
    # the task that became blocked lost its bid, the one that was blocked now has one
    assert "perf-batch-ledger" not in live_bids(conn, "quest-perf")
    assert "docs-migration-guide" in live_bids(conn, "quest-docs")
    assert_audit_clean(conn)


# --------------------------------------------------------------- agent loop --


def fixed_run(cost: int, impact: float):
    calls = []

    def run(task_id: str) -> agent_loop.RunResult:
        calls.append(task_id)
        return agent_loop.RunResult(cost_tokens=cost, impact=impact)

    run.calls = calls
    return run


@pytest.fixture
def runner(cluster, conn, fresh_db):
    """A runner as docs/roles.sql's example creates it: a login member of compute_auction_runner.
    Returns (its role name, its DSN). An operator (conn) offers the slots naming it runner."""
    name = f"runner_{uuid.uuid4().hex[:8]}"
    conn.execute(ROLES_SQL)
    conn.execute(f"CREATE ROLE {name} LOGIN IN ROLE compute_auction_runner")
    yield name, cluster.url(fresh_db, user=name)
    with psycopg.connect(cluster.url(), autocommit=True) as su:
        su.execute(f"DROP ROLE IF EXISTS {name}")  # it owns nothing and holds no grant of its own


def offer(conn, slot_id: str, runner_role: str) -> None:
    """The operator's step: offers the slot, naming its runner."""
    conn.execute("SELECT compute_auction.offer_slot(%s, now(), 0, %s)", (slot_id, runner_role))


def clear_row(conn, slot_id):
    return conn.execute(
        "SELECT winning_task_id, bidder_id, status, clearing_price_tokens, max_price_tokens,"
        "       actual_cost_tokens, actual_impact, claimed_at IS NOT NULL, slot_finished_at IS NOT NULL"
        "  FROM compute_auction.compute_auction_clears WHERE slot_id = %s ORDER BY round_id DESC LIMIT 1",
        (slot_id,),
    ).fetchone()


def test_agent_loop_claims_settles_and_falls_back(fresh_db_url, conn, runner):
    role, dsn = runner
    ev_scorer.main(fresh_db_url, fund_tokens=10_000)
    bal_before = dict(
        conn.execute("SELECT account_id, balance_tokens + held_tokens FROM compute_auction.token_accounts").fetchall()
    )

    # nothing cleared yet: the operator offers the slot, the runner uses the old queue
    offer(conn, "slot-a", role)
    run = fixed_run(1234, 0.75)
    events = agent_loop.main(dsn, "slot-a", iterations=1, old_queue=["legacy-1"], run=run)
    assert events == [{"source": "old_queue", "task_id": "legacy-1", "cost_tokens": 1234, "impact": 0.75}]
    assert conn.execute("SELECT status FROM compute_auction.compute_slots WHERE slot_id = 'slot-a'").fetchone() == (
        "idle",
    )

    # a round assigns the slot to the best bid; the runner runs that task and settles it
    winner = conn.execute(
        "SELECT slot_id, bid_id, task_id, bidder_id, clearing_price_tokens FROM compute_auction.clear_round()"
    ).fetchall()
    assert len(winner) == 1
    _, bid_id, task_id, bidder, price = winner[0]
    queue = agent_loop.OldQueue(["legacy-2"])
    events = agent_loop.main(dsn, "slot-a", iterations=2, old_queue=queue, run=run)
    assert events[0] == {
        "source": "auction",
        "task_id": task_id,
        "bid_id": bid_id,
        "bidder_id": bidder,
        "clearing_price_tokens": price,
        "charged_tokens": price,
        "cost_tokens": 1234,
        "impact": 0.75,
    }
    # the second iteration has no won task any more: back to the old queue
    assert events[1]["source"] == "old_queue" and events[1]["task_id"] == "legacy-2"
    assert run.calls == ["legacy-1", task_id, "legacy-2"]

    row = clear_row(conn, "slot-a")
    assert row[:4] == (task_id, bidder, "settled", price)
    assert row[5:] == (1234, 0.75, True, True)  # cost, impact, claimed_at and slot_finished_at set
    assert conn.execute(
        "SELECT status FROM compute_auction.compute_auction_bids WHERE id = %s", (bid_id,)
    ).fetchone() == ("settled",)
    assert conn.execute("SELECT status FROM compute_auction.compute_slots WHERE slot_id = 'slot-a'").fetchone() == (
        "idle",
    )
    # the winner paid exactly the clearing price
    after = conn.execute(
        "SELECT balance_tokens + held_tokens FROM compute_auction.token_accounts WHERE account_id = %s", (bidder,)
    ).fetchone()[0]
    assert after == bal_before[bidder] - price

    # nothing anywhere: idle
    assert agent_loop.main(dsn, "slot-a", iterations=1, run=run) == [{"source": "idle"}]
    # a slot it is not runner of is not its to claim
    conn.execute("SELECT compute_auction.offer_slot('slot-other')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        agent_loop.main(dsn, "slot-other", iterations=1, run=run)
    assert_audit_clean(conn)


def test_agent_loop_aborts_a_run_that_fails(fresh_db_url, conn, runner):
    role, dsn = runner
    ev_scorer.main(fresh_db_url, fund_tokens=10_000)
    offer(conn, "slot-f", role)
    ((slot, bid_id, task_id, bidder, price),) = conn.execute("SELECT * FROM compute_auction.clear_round()").fetchall()
    max_price = conn.execute(
        "SELECT max_price_tokens FROM compute_auction.compute_auction_bids WHERE id = %s", (bid_id,)
    ).fetchone()[0]
    held_before = conn.execute(
        "SELECT held_tokens FROM compute_auction.token_accounts WHERE account_id = %s", (bidder,)
    ).fetchone()[0]

    def broken(task):
        raise RuntimeError("model endpoint unavailable")

    events = agent_loop.main(dsn, "slot-f", run=broken)
    assert events == [
        {
            "source": "auction",
            "task_id": task_id,
            "bid_id": bid_id,
            "bidder_id": bidder,
            "clearing_price_tokens": price,
            "aborted": True,
            "refunded_tokens": max_price,
        }
    ]
    assert conn.execute(
        "SELECT status FROM compute_auction.compute_auction_bids WHERE id = %s", (bid_id,)
    ).fetchone() == ("aborted",)
    assert (
        conn.execute(
            "SELECT held_tokens FROM compute_auction.token_accounts WHERE account_id = %s", (bidder,)
        ).fetchone()[0]
        == held_before - max_price
    )
    assert conn.execute("SELECT status FROM compute_auction.compute_slots WHERE slot_id = 'slot-f'").fetchone() == (
        "idle",
    )
    assert_audit_clean(conn)


def test_agent_loop_waits_for_the_next_round(fresh_db_url, conn, runner):
    role, dsn = runner
    ev_scorer.main(fresh_db_url, fund_tokens=10_000)
    offer(conn, "slot-w", role)
    winners = []

    def clear_later():
        # clear once the runner has found nothing to claim and is waiting (idle after claim_slot's
        # COMMIT, LISTENing since it connected); the deadline only detects a hang
        with psycopg.connect(fresh_db_url, autocommit=True) as c:
            deadline = time.monotonic() + 120
            while not c.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND usename = %s"
                " AND state = 'idle' AND query = 'COMMIT'",
                (role,),
            ).fetchone():
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            winners.extend(c.execute("SELECT task_id FROM compute_auction.clear_round()").fetchall())

    t = threading.Thread(target=clear_later)
    t.start()
    # the runner waits up to wait_s for the NOTIFY and falls back to the old queue without one,
    # so "auction" below means the NOTIFY woke it (wait_s only detects a hang)
    events = agent_loop.main(dsn, "slot-w", old_queue=["legacy"], run=fixed_run(10, 1.0), wait_s=300)
    t.join()
    assert winners, "the runner never waited after its claim_slot"
    assert events[0]["source"] == "auction", "the NOTIFY should have woken the runner"
    assert [(events[0]["task_id"],)] == winners
    assert clear_row(conn, "slot-w")[2] == "settled"
    assert_audit_clean(conn)


def test_agent_loop_script(fresh_db_url, conn, runner):
    role, dsn = runner
    ev_scorer.main(fresh_db_url, fund_tokens=10_000)
    offer(conn, "slot-s", role)
    r = run_script("agent_loop.py", "--dsn", dsn, "--slot", "slot-s", "--old-queue", "legacy-9")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line) for line in r.stdout.splitlines()][0]["source"] == "old_queue"

    ((_, bid_id, task_id, bidder, price),) = conn.execute("SELECT * FROM compute_auction.clear_round()").fetchall()
    before = snapshot(conn)
    r = run_script("agent_loop.py", "--dsn", dsn, "--slot", "slot-s", "--iterations", "2", "--old-queue", "legacy-10")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["source"] for e in events] == ["auction", "old_queue"]
    assert (events[0]["task_id"], events[0]["bid_id"], events[0]["charged_tokens"]) == (task_id, bid_id, price)
    cost, impact = events[0]["cost_tokens"], events[0]["impact"]
    expect = agent_loop.run_task(task_id)
    assert (cost, impact) == (expect.cost_tokens, expect.impact)
    row = clear_row(conn, "slot-s")
    assert row[2] == "settled" and row[5] == cost and row[6] == pytest.approx(impact)
    assert snapshot(conn) != before
    # a runner that is not the slot's stops with the error (42501), having changed nothing
    conn.execute("SELECT compute_auction.offer_slot('slot-nobodys')")
    before = snapshot(conn)
    other = run_script("agent_loop.py", "--dsn", dsn, "--slot", "slot-nobodys")
    assert other.returncode != 0 and "InsufficientPrivilege" in other.stderr
    assert snapshot(conn) == before
    assert_audit_clean(conn)


def test_scripts_print_usage_without_a_dsn():
    env_free = subprocess.run(
        [sys.executable, str(EXAMPLES / "agent_loop.py"), "--slot", "x"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert env_free.returncode == 2 and "--dsn" in env_free.stderr
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "ev_scorer.py")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2 and "--dsn" in r.stderr


# ----------------------------------------------------- through a failover (failover.py) --

import failover  # noqa: E402


def lose_the_ack(session: failover.Session, warn: bool = False) -> None:
    """The session connection's next COMMIT happens, but its answer is lost (the connection
    breaks) or, with warn, comes with the "might not have been replicated" WARNING."""
    conn = session.conn()
    real = conn.commit

    class Diag:
        message_primary = "canceling wait for synchronous replication due to user request"
        message_detail = (
            "The transaction has already committed locally, but might not have been replicated to the standby."
        )

    def commit():  # once: the next COMMIT is a normal one
        conn.commit = real
        real()
        if warn:
            session._notice(Diag())
            return
        conn.close()
        raise psycopg.OperationalError("server closed the connection unexpectedly (simulated)")

    conn.commit = commit


@pytest.mark.parametrize("warn", [False, True], ids=["connection-lost", "warning"])
def test_in_doubt_deposit_with_a_key_is_made_once(fresh_db_url, conn, warn):
    ev_scorer.main(fresh_db_url, fund_tokens=10_000)
    quest = next(iter(ev_scorer.DEMO_BACKLOG))
    before = conn.execute("SELECT balance_tokens FROM compute_auction.token_accounts WHERE account_id = %s", (quest,))
    before = before.fetchone()[0]
    with failover.Session(fresh_db_url) as s:
        lose_the_ack(s, warn)
        balance = ev_scorer.refill(s, quest, 700, "pr-4711")
        assert s.in_doubt == 1
    assert balance == before + 700
    rows = conn.execute(
        "SELECT count(*), sum(delta_balance) FROM compute_auction.token_ledger WHERE idempotency_key = 'pr-4711'"
    ).fetchone()
    assert rows == (1, 700)
    assert_audit_clean(conn)


def test_in_doubt_write_without_a_resolution_is_not_retried(fresh_db_url, conn):
    conn.execute("SELECT compute_auction.open_account('acct-x', 'agent', 1000)")
    with failover.Session(fresh_db_url) as s:
        lose_the_ack(s)
        with pytest.raises(failover.InDoubt):
            s.write("SELECT compute_auction.deposit('acct-x', 5, 'no key')")
    # it happened once, and was not made again
    assert conn.execute(
        "SELECT balance_tokens FROM compute_auction.token_accounts WHERE account_id = 'acct-x'"
    ).fetchone() == (1005,)


def test_agent_loop_resolves_an_in_doubt_settle_by_the_bids_status(fresh_db_url, conn, runner, monkeypatch):
    role, dsn = runner
    ev_scorer.main(fresh_db_url, fund_tokens=10_000)
    offer(conn, "slot-f", role)
    winner = conn.execute("SELECT bid_id, clearing_price_tokens FROM compute_auction.clear_round()").fetchone()
    real_write = failover.Session.write

    def write(self, sql, params=(), **kw):
        if "settle" in sql:
            lose_the_ack(self)
        return real_write(self, sql, params, **kw)

    monkeypatch.setattr(failover.Session, "write", write)
    events = agent_loop.main(dsn, "slot-f", iterations=1, run=fixed_run(10, 0.5))
    assert events[0]["charged_tokens"] == winner[1] and events[0]["bid_id"] == winner[0]
    row = clear_row(conn, "slot-f")
    assert row[2] == "settled" and row[5] == 10  # settled once, by the first call
    assert_audit_clean(conn)


def test_agent_loop_waits_for_its_own_slots_win(fresh_db_url, conn):
    """wait_for_win skips another slot's win and returns its own slot's (issue 26)."""
    with psycopg.connect(fresh_db_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {agent_loop.WON}")
        other = json.dumps({"bid_id": 1, "slot_id": "slot-other", "task_id": "t-1"})
        mine = json.dumps({"bid_id": 2, "slot_id": "slot-mine", "task_id": "t-2"})
        conn.execute("SELECT pg_notify(%s, %s), pg_notify(%s, %s)", (agent_loop.WON, other, agent_loop.WON, mine))
        got = agent_loop.wait_for_win(listener, "slot-mine", 60)  # 60 s only detects a hang
        assert got == json.loads(mine)
        # nothing more for its slot: it gives up when the time is up
        conn.execute("SELECT pg_notify(%s, %s)", (agent_loop.WON, other))
        assert agent_loop.wait_for_win(listener, "slot-mine", 0.5) is None


def test_low_balance_example_cancels_its_dearest_bids(fresh_db_url, conn):
    conn.execute("SELECT compute_auction.open_account('lb-agent', 'agent', 10000)")
    conn.execute("SELECT compute_auction.set_low_balance_threshold('lb-agent', 5000)")
    cheap = conn.execute("SELECT compute_auction.place_bid('lb-agent', 'lb-1', 500)").fetchone()[0]
    out: list = []
    t = threading.Thread(target=lambda: out.extend(low_balance.watch(fresh_db_url, "lb-agent", seconds=120)))
    t.start()
    # wait until the example LISTENs (the deadline only detects a hang), then cross the threshold
    deadline = time.monotonic() + 120
    while not conn.execute(
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%%' AND state = 'idle'"
    ).fetchone():
        assert time.monotonic() < deadline, "the example never listened"
        time.sleep(0.05)
    dear = conn.execute("SELECT compute_auction.place_bid('lb-agent', 'lb-2', 6000)").fetchone()[0]  # 3,500 left
    t.join(150)
    assert not t.is_alive()
    assert out == [
        {"account_id": "lb-agent", "balance_tokens": 3500, "threshold_tokens": 5000, "cancelled_bid_ids": [dear]}
    ]
    status = dict(conn.execute("SELECT id, status FROM compute_auction.compute_auction_bids").fetchall())
    assert status == {cheap: "open", dear: "cancelled"}
    assert_audit_clean(conn)
