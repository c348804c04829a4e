"""Issue 21's batch cell: submit_bids_for_tasks with 1,000 tasks in one call, per bid, divided
by one single-client place_bid round trip.

One database cloned from the intake template (10,000 funded agent accounts), plus a quest
account with ample tokens. Repetitions alternate: one submit_bids_for_tasks call for 1,000 new
tasks (so every row is `placed`), then 1,000 place_bid calls on one connection (prepared,
autocommit, each on a new task), both timed at the client. Repetition 0 warms both and is not
counted.
"""

from __future__ import annotations

import json
import random
import statistics
import time

TASKS = 1_000
QUEST = "bench-quest"
QUEST_TOKENS = 1_000_000_000_000
TOKENS_PER_USD = 100.0


def tasks_json(rep: int, rnd: random.Random) -> str:
    return json.dumps([{"task_id": f"sq-{rep}-{i}", "expected_value_usd": rnd.randint(1, 100)} for i in range(TASKS)])


def submit_once(c, rep: int, rnd: random.Random) -> tuple[float, dict]:
    """One submit_bids_for_tasks call: its ms and the outcomes it reported."""
    doc = tasks_json(rep, rnd)
    t = time.perf_counter()
    rows = c.execute(
        "SELECT outcome FROM compute_auction.submit_bids_for_tasks(%s, %s::jsonb, %s)",
        (QUEST, doc, TOKENS_PER_USD),
    ).fetchall()
    ms = (time.perf_counter() - t) * 1000
    outcomes: dict = {}
    for (o,) in rows:
        outcomes[o] = outcomes.get(o, 0) + 1
    return ms, outcomes


def place_bids(c, rep: int, rnd: random.Random, accounts: int) -> float:
    """TASKS single place_bid round trips on one connection: mean ms per call."""
    t = time.perf_counter()
    for i in range(TASKS):
        c.execute(
            "SELECT compute_auction.place_bid(%s, %s, %s::bigint)",
            (f"acct-{rnd.randint(1, accounts)}", f"pb-{rep}-{i}", rnd.randint(1, 100_000)),
            prepare=True,
        )
    return (time.perf_counter() - t) * 1000 / TASKS


def breakdown(b, db: str, rnd: random.Random, rep: int) -> dict:
    """One more submit_bids_for_tasks call under pg_stat_statements with nested statements
    tracked (untimed for the ratio): where a call's time goes."""
    b.sql(db, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def call(c, i):
        submit_once(c, rep + i, rnd)

    return b.stmt_breakdown(db, call, f"compute_auction.submit_bids_for_tasks ({TASKS:,} new tasks)", 1)


def run(b, template: str, accounts: int) -> dict:
    reps = 3 if b.quick else 5
    db = "batch"
    b.create_db(db, template)
    b.sql(db, "SELECT compute_auction.open_account(%s, 'quest', %s)", (QUEST, QUEST_TOKENS))
    b.log(f"batch: submit_bids_for_tasks of {TASKS:,} tasks vs {TASKS:,} place_bid round trips, {reps} repetitions")
    rnd = random.Random(21)
    res: dict = {"tasks": TASKS, "reps": reps, "submit_ms": [], "place_bid_ms": [], "outcomes": []}
    with b.conn(db) as c:
        for rep in range(reps + 1):
            ms, outcomes = submit_once(c, rep, rnd)
            per_call = place_bids(c, rep, rnd, accounts)
            if rep == 0:
                continue
            res["submit_ms"].append(ms)
            res["place_bid_ms"].append(per_call)
            res["outcomes"].append(outcomes)
    res["breakdown"] = breakdown(b, db, rnd, reps + 1)
    res["submit_per_bid_ms"] = statistics.median(res["submit_ms"]) / TASKS
    res["place_bid_round_trip_ms"] = statistics.median(res["place_bid_ms"])
    res["ratio"] = res["submit_per_bid_ms"] / res["place_bid_round_trip_ms"]
    res["audit_rows"] = b.audit(db, "batch")
    b.log(
        f"batch: submit {res['submit_per_bid_ms']:.3f} ms per bid, place_bid {res['place_bid_round_trip_ms']:.3f} ms "
        f"per round trip ({res['ratio']:.2f}x); outcomes {res['outcomes'][-1]}; audit rows {res['audit_rows']}"
    )
    b.sql("postgres", f'DROP DATABASE "{db}"')
    return res
