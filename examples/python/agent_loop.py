#!/usr/bin/env python3
"""An agent runner that asks the auction for work before its old task queue.

Each agent slot runs one task at a time. Before picking work the runner calls

    SELECT * FROM compute_auction.claim_slot(slot_id)

which returns the task its slot won in the last clearing round (or no row). If it won one, the
runner runs it and reports the run with

    SELECT compute_auction.settle(slot_id, actual_cost_tokens, actual_impact)

(the winner is charged the clearing price, its premium comes back, and the slot is offered
again). If the run cannot happen, `abort_slot` refunds the winner in full. Without a won task
the runner falls back to the application's old task queue, exactly as before the auction.

Optionally it LISTENs on `compute_auction_bid_won` and waits a little for a bid to win its
slot before falling back, instead of polling: the notice names the slot, so a round that fills
other slots does not wake it.

It survives a failover (failover.py, docs/OPERATIONS.md): give it the formation's multi-host URI
(`...@db1,db2/app?target_session_attrs=read-write`) and it reconnects with it. A claim is safe to
repeat (a second claim_slot is a read). A settle or abort whose COMMIT is in doubt is never
repeated blindly: the bid's status (bid_status) says whether it happened.

The runner connects as its own login role, a member of compute_auction_runner (docs/roles.sql),
and runs only the slot an operator named it runner of. Offering the slot is that operator's
step, done once, not the runner's:

    -- as an operator
    CREATE ROLE runner_1 LOGIN IN ROLE compute_auction_runner;
    SELECT compute_auction.offer_slot('agent-slot-1', now(), 0, 'runner_1');

Run it:
    python examples/python/agent_loop.py --dsn postgresql://runner_1@db/app --slot agent-slot-1 \
        [--iterations 10] [--old-queue legacy-1,legacy-2] [--wait 5]

or import it:  `from agent_loop import main; main(dsn, "agent-slot-1", ...)`.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg

from failover import Session


@dataclass
class RunResult:
    cost_tokens: int  # what the run consumed (model tokens, in the market's token unit)
    impact: float  # the application's measure of what the run achieved


def run_task(task_id: str) -> RunResult:
    """Stand-in for the agent's real work: deterministic numbers derived from the task id.
    Replace with the call into your agent; raise to report that the run could not happen."""
    h = hashlib.sha256(task_id.encode()).digest()
    return RunResult(cost_tokens=100 + h[0] * 10, impact=round(h[1] / 255, 3))


class OldQueue:
    """The application's task queue from before the auction (here: an in-memory FIFO)."""

    def __init__(self, task_ids: Iterable[str] = ()):
        self._q = collections.deque(task_ids)

    def next(self) -> str | None:
        return self._q.popleft() if self._q else None

    def __len__(self) -> int:
        return len(self._q)


def claim(session: Session, slot_id: str):
    """(bid_id, task_id, bidder_id, clearing_price_tokens) of the slot's won task, or None. The
    first claim stamps claimed_at; a repeated one is a read, so an in-doubt claim is repeated."""
    rows = session.write(
        "SELECT bid_id, task_id, bidder_id, clearing_price_tokens FROM compute_auction.claim_slot(%s)",
        (slot_id,),
        idempotent=True,
    )
    return rows[0] if rows else None


WON = "compute_auction_bid_won"


def wait_for_win(conn: psycopg.Connection, slot_id: str, seconds: float) -> dict | None:
    """Waits up to `seconds` for a NOTIFY compute_auction_bid_won naming `slot_id` (needs
    `LISTEN compute_auction_bid_won` first) and returns its payload: bid_id, bidder_id,
    task_id, slot_id, round_id, clearing_price_tokens. Notices for other slots are skipped."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        # read every notice the generator yields (several may arrive in one packet; leaving it
        # early would drop the rest), then look for this slot's
        batch = [json.loads(n.payload) for n in conn.notifies(timeout=left, stop_after=1) if n.channel == WON]
        mine = [p for p in batch if p.get("slot_id") == slot_id]
        if mine:
            return mine[0]
    return None


def ended(bid_id: int, status: str, column: str):
    """A resolver for an in-doubt settle or abort: it happened if the bid is now `status`; the
    tokens it returned are then read from the clear's row, by the bid (bid_status has them)."""

    def resolve(session: Session):
        st = session.read("SELECT compute_auction.bid_status(%s)", (bid_id,))[0][0]
        if st.get("status") != status:
            return None  # it did not happen: the slot still has the run assigned
        return [(st.get(column),)]

    return resolve


def step(
    session: Session,
    slot_id: str,
    old_queue: OldQueue,
    run: Callable[[str], RunResult] = run_task,
    wait_s: float = 0.0,
) -> dict:
    """One unit of work: the auction's task if the slot won one (waiting up to `wait_s` for a
    bid to win it when none has, if the connection LISTENs), else the old queue's."""
    won = claim(session, slot_id)
    if won is None and wait_s > 0 and wait_for_win(session.conn(), slot_id, wait_s) is not None:
        won = claim(session, slot_id)
    if won is not None:
        bid_id, task_id, bidder_id, price = won
        try:
            result = run(task_id)
        except Exception as e:  # the run never happened: full refund, slot offered again
            refunded = session.write(
                "SELECT compute_auction.abort_slot(%s, %s)",
                (slot_id, f"run failed: {e}"[:500]),
                resolve=ended(bid_id, "aborted", "max_price_tokens"),
            )
            if refunded is None:  # in doubt, and it did not happen: now it may be tried again
                refunded = session.write(
                    "SELECT compute_auction.abort_slot(%s, %s)", (slot_id, f"run failed: {e}"[:500])
                )
            return {
                "source": "auction",
                "task_id": task_id,
                "bid_id": bid_id,
                "bidder_id": bidder_id,
                "clearing_price_tokens": price,
                "aborted": True,
                "refunded_tokens": refunded[0][0],
            }
        settle = ("SELECT compute_auction.settle(%s, %s, %s)", (slot_id, result.cost_tokens, result.impact))
        charged = session.write(*settle, resolve=ended(bid_id, "settled", "clearing_price_tokens"))
        if charged is None:  # in doubt, and it did not happen: settling now is not a repeat
            charged = session.write(*settle)
        return {
            "source": "auction",
            "task_id": task_id,
            "bid_id": bid_id,
            "bidder_id": bidder_id,
            "clearing_price_tokens": price,
            "charged_tokens": charged[0][0],
            "cost_tokens": result.cost_tokens,
            "impact": result.impact,
        }

    task_id = old_queue.next()
    if task_id is None:
        return {"source": "idle"}
    result = run(task_id)
    return {"source": "old_queue", "task_id": task_id, "cost_tokens": result.cost_tokens, "impact": result.impact}


def main(
    dsn: str,
    slot_id: str,
    iterations: int = 1,
    old_queue: OldQueue | Iterable[str] | None = None,
    run: Callable[[str], RunResult] = run_task,
    wait_s: float = 0.0,
) -> list[dict]:
    """Runs `iterations` steps on `slot_id` and returns what each did."""
    queue = old_queue if isinstance(old_queue, OldQueue) else OldQueue(old_queue or ())
    events: list[dict] = []
    listen = (lambda c: c.execute(f"LISTEN {WON}")) if wait_s > 0 else None
    with Session(dsn, on_connect=listen) as session:
        for _ in range(iterations):
            events.append(step(session, slot_id, queue, run, wait_s))
    return events


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dsn", default=os.environ.get("DATABASE_URL"), help="libpq connection string (default: $DATABASE_URL)"
    )
    p.add_argument("--slot", required=True, help="the slot this runner's login role is runner of")
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--old-queue", default="", help="comma-separated task ids of the old queue (demo)")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for a clearing round before using the old queue",
    )
    args = p.parse_args(argv)
    if not args.dsn:
        p.error("--dsn or DATABASE_URL is required")
    old = [t for t in args.old_queue.split(",") if t]
    events = main(
        args.dsn,
        args.slot,
        args.iterations,
        old,
        wait_s=args.wait,
    )
    for e in events:
        print(json.dumps(e, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
