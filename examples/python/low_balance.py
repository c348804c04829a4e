#!/usr/bin/env python3
"""An agent that reacts to a low-balance notice instead of polling its wallet.

An operator sets the agent's threshold once:

    SELECT compute_auction.set_low_balance_threshold('agent-7', 5000);

From then on every wallet change that takes the agent's spendable balance below 5,000 tokens
sends a NOTIFY on `compute_auction_low_balance` with the payload
`{"account_id": ..., "balance_tokens": ..., "threshold_tokens": ...}`, delivered when the change
commits. This agent LISTENs, and on a notice for its own account it conserves what is left: it
cancels its open bids priced above what it can still afford to lose (half its balance, say),
which returns their escrow at once, and it keeps its cheaper bids in the book until it refills
through good work (a deposit).

Run it:
    python examples/python/low_balance.py --dsn postgresql://agent_7@db/app --account agent-7 \
        [--seconds 60]

or import it:  `from low_balance import watch; watch(dsn, "agent-7", seconds=60)`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import psycopg

CHANNEL = "compute_auction_low_balance"


def conserve(conn: psycopg.Connection, account_id: str, balance: int) -> list[int]:
    """Cancels the account's open bids priced above half its balance (newest 20 live bids, as
    wallet() lists them); returns the cancelled bid ids."""
    wallet = conn.execute("SELECT compute_auction.wallet(%s)", (account_id,)).fetchone()[0]
    cancelled = []
    for bid in wallet["bids"]:
        if bid["status"] == "open" and bid["max_price_tokens"] > balance // 2:
            try:
                conn.execute("SELECT compute_auction.cancel_bid(%s)", (bid["bid_id"],))
            except psycopg.errors.ObjectNotInPrerequisiteState:
                continue  # 55000: it won or ended since wallet() listed it
            cancelled.append(bid["bid_id"])
    return cancelled


def watch(dsn: str, account_id: str, seconds: float = 60.0, stop_after: int | None = 1) -> list[dict]:
    """Listens for `seconds` (or until `stop_after` notices for `account_id`) and conserves on
    each; returns what it did: the notice's balance and threshold and the bids it cancelled."""
    done: list[dict] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and (stop_after is None or len(done) < stop_after):
            # every notice the generator yields (leaving it early would drop the rest of a
            # packet); the connection is free for queries only once it has returned
            notes = [json.loads(n.payload) for n in conn.notifies(timeout=left, stop_after=1)]
            for note in notes:
                if note["account_id"] == account_id:
                    cancelled = conserve(conn, account_id, note["balance_tokens"])
                    done.append({**note, "cancelled_bid_ids": cancelled})
    return done


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dsn", default=os.environ.get("DATABASE_URL"), help="libpq connection string (default: $DATABASE_URL)"
    )
    p.add_argument("--account", required=True, help="the agent's account id")
    p.add_argument("--seconds", type=float, default=60.0, help="how long to listen")
    a = p.parse_args(argv)
    if not a.dsn:
        p.error("--dsn or DATABASE_URL is required")
    for event in watch(a.dsn, a.account, a.seconds, stop_after=None):
        print(json.dumps(event))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
