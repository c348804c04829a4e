#!/usr/bin/env python3
"""An existing application's EV scorer, moved from the proportional budget to the auction.

The application already scores the open tasks of each quest by expected value (EV, in USD).
It used to turn those scores into a fixed daily token split per quest; now it asks the
`compute_auction` extension to bid on the quest's behalf, once per quest:

    SELECT * FROM compute_auction.submit_bids_for_tasks(quest_id, tasks, tokens_per_usd, bid_fraction)

One call per quest places, re-prices or cancels the quest's bids in one transaction. The call is
idempotent, so the scorer can simply run on every rescoring (cron, a queue consumer, ...).
Blocked tasks are sent too, flagged `"blocked": true`: the extension bids only for the
unblocked ones and cancels the open bid of a task that became blocked.

It survives a failover (failover.py, docs/OPERATIONS.md): give it the formation's multi-host URI
and it reconnects with it; a submit whose COMMIT is in doubt is simply made again, which is safe
because the call is idempotent (the same tasks give the same bids).

Run it:
    python examples/python/ev_scorer.py --dsn postgresql://app@db/app [--backlog backlog.json]

or import it:  `from ev_scorer import main; main(dsn, backlog=...)`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from failover import Session


@dataclass
class Task:
    """A task of the application's backlog, as its scorer sees it."""

    task_id: str
    success_probability: float
    value_usd: float
    blocked: bool = False  # waiting on another task, a review, a human...

    @property
    def expected_value_usd(self) -> float:
        # The application's own model; anything that yields a non-negative USD value works.
        return max(0.0, self.success_probability * self.value_usd)


# Stand-in for the application's backlog (in a real application: its own tables or tracker).
DEMO_BACKLOG: dict[str, list[Task]] = {
    "quest-docs": [
        Task("docs-api-reference", 0.9, 12.0),
        Task("docs-tutorial", 0.6, 30.0),
        Task("docs-migration-guide", 0.5, 40.0, blocked=True),
    ],
    "quest-perf": [
        Task("perf-index-bids", 0.7, 80.0),
        Task("perf-batch-ledger", 0.4, 55.0),
        Task("perf-cache-order-book", 0.2, 5.0),
    ],
}


def load_backlog(path: str) -> dict[str, list[Task]]:
    """Reads {"quest-id": [{"task_id", "success_probability", "value_usd", "blocked"?}, ...]}.
    An entry may give "expected_value_usd" directly instead of probability and value."""
    with open(path) as f:
        raw = json.load(f)
    backlog: dict[str, list[Task]] = {}
    for quest_id, tasks in raw.items():
        backlog[quest_id] = []
        for t in tasks:
            if "expected_value_usd" in t:
                backlog[quest_id].append(
                    Task(t["task_id"], 1.0, float(t["expected_value_usd"]), bool(t.get("blocked", False)))
                )
            else:
                backlog[quest_id].append(
                    Task(
                        t["task_id"],
                        float(t["success_probability"]),
                        float(t["value_usd"]),
                        bool(t.get("blocked", False)),
                    )
                )
    return backlog


def scored(tasks: Iterable[Task]) -> list[dict]:
    """The `tasks` argument of submit_bids_for_tasks."""
    return [{"task_id": t.task_id, "expected_value_usd": t.expected_value_usd, "blocked": t.blocked} for t in tasks]


def ensure_wallet(session: Session, quest_id: str, tokens: int) -> None:
    """Demo convenience: opens the quest's wallet with `tokens` if it does not exist yet (made
    again when in doubt: then it exists, 23505, and keeps its balance)."""
    with contextlib.suppress(psycopg.errors.UniqueViolation):  # it exists: keep its balance
        session.write("SELECT compute_auction.open_account(%s, 'quest', %s)", (quest_id, tokens), idempotent=True)


def refill(session: Session, quest_id: str, tokens: int, key: str) -> int:
    """A deposit with an idempotency key (e.g. the id of the work it pays for): when its COMMIT
    is in doubt it is made again with the same key, which returns the first call's balance and
    moves no tokens if the first one happened. Returns the spendable balance."""
    return session.write(
        "SELECT compute_auction.deposit(%s, %s, %s, %s)", (quest_id, tokens, "refill", key), idempotent=True
    )[0][0]


def submit_for_quest(
    session: Session,
    quest_id: str,
    tasks: Iterable[Task],
    tokens_per_usd: float,
    bid_fraction: float,
    ttl_at=None,
) -> list[dict]:
    """One call, one transaction: the quest's bids now reflect `tasks` (made again when in
    doubt: it is idempotent)."""
    rows = session.write(
        "SELECT task_id, bid_id, max_price_tokens, outcome"
        "  FROM compute_auction.submit_bids_for_tasks(%s, %s, %s, %s, %s)",
        (quest_id, Jsonb(scored(tasks)), tokens_per_usd, bid_fraction, ttl_at),
        idempotent=True,
    )
    return [{"task_id": r[0], "bid_id": r[1], "max_price_tokens": r[2], "outcome": r[3]} for r in rows]


def main(
    dsn: str,
    backlog: Mapping[str, Iterable[Task]] | None = None,
    tokens_per_usd: float = 100.0,
    bid_fraction: float = 0.6,
    fund_tokens: int = 0,
    ttl_at=None,
) -> dict:
    """Submits every quest's scored backlog. Returns
    {"quests": {quest_id: [rows]}, "errors": {quest_id: "SQLSTATE: message"}}.
    A quest whose call fails (e.g. no wallet: P0002) is reported and the others still bid."""
    backlog = DEMO_BACKLOG if backlog is None else backlog
    report: dict = {"quests": {}, "errors": {}}
    with Session(dsn) as session:
        for quest_id, tasks in backlog.items():
            if fund_tokens > 0:
                ensure_wallet(session, quest_id, fund_tokens)
            try:
                report["quests"][quest_id] = submit_for_quest(
                    session, quest_id, list(tasks), tokens_per_usd, bid_fraction, ttl_at
                )
            except psycopg.Error as e:
                report["errors"][quest_id] = f"{e.sqlstate}: {e.diag.message_primary or e}"
    return report


def _print(report: dict) -> None:
    for quest_id, rows in report["quests"].items():
        print(quest_id)
        for r in rows:
            price = "" if r["max_price_tokens"] is None else f"{r['max_price_tokens']} tokens"
            bid = "" if r["bid_id"] is None else f"bid {r['bid_id']}"
            print(f"  {r['task_id']:<28} {r['outcome']:<36} {price:<16} {bid}")
    for quest_id, err in report["errors"].items():
        print(f"{quest_id}: error {err}", file=sys.stderr)


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dsn", default=os.environ.get("DATABASE_URL"), help="libpq connection string (default: $DATABASE_URL)"
    )
    p.add_argument("--backlog", help="JSON file {quest_id: [tasks]} (default: a small demo backlog)")
    p.add_argument("--tokens-per-usd", type=float, default=100.0)
    p.add_argument("--bid-fraction", type=float, default=0.6, help="share of a task's EV to bid, in (0, 1]")
    p.add_argument("--fund", type=int, default=0, metavar="TOKENS", help="demo: open missing quest wallets with TOKENS")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if not args.dsn:
        p.error("--dsn or DATABASE_URL is required")
    backlog = load_backlog(args.backlog) if args.backlog else None
    report = main(args.dsn, backlog, args.tokens_per_usd, args.bid_fraction, args.fund)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(cli())
