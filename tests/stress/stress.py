#!/usr/bin/env python3
"""compute_auction under load with faults: a stress test that stops by itself.

For --seconds (default 60; then on until clearing has made --min-rounds rounds, see below),
--clients (default 16) threads, each with its own connection,
run a random mix of place_bid (new), replace (place_bid on the thread's own open task),
cancel_bid, deposit, withdraw, claim_slot, settle and abort_slot over --agents pre-opened
accounts and --slots offered slots, and hold_wallet (issue 14): a winner (an agent with an
assigned clear; else any agent) opens a transaction that locks its own account (place_bid on a
fresh task) and holds it 0.05-0.5 s, then rolls back or commits; half the time its runner (the
client's second connection) settles the won slot during the hold, which must return at once
with the entries left in compute_auction.pending_entries (the client checks that, from inside
the hold), for the driver's cycle or run_cycle to apply once the wallet is free; while

  * compute-auction-driver `serve --interval 1s` clears every second (leader loop, refunds,
    stale aborts, pending entries applied),
  * a dedicated clearing thread calls `SELECT * FROM compute_auction.clear_round()` in a loop
    (it serializes with the driver through the extension's clearing lock) to measure clearing
    capacity under the load,
  * a fault thread SIGKILLs the driver and starts it again, and restarts PostgreSQL once with
    a fast shutdown (`pg_ctl restart -m fast`).

Clients reconnect after connection errors. Every deposit and withdraw carries a unique
idempotency_key and every settle a unique tag (its actual_cost_tokens), so an operation whose
commit was in doubt when its connection died is resolved afterwards: deposits and withdrawals by
their key in compute_auction.token_ledger, settles by (slot_id, tag) in compute_auction_clears
(whose clearing_price_tokens is what the winner was charged). Half of the in-doubt deposits and
withdrawals are retried at once with the same key instead (exercising the idempotent replay).
A fast shutdown almost never leaves a committed-but-unanswered operation, so --simulate-doubt
(default 1%) of the successful ones also "lose" their answer and go through the same lookup,
which must then find them.

At the end (with clients and driver stopped) it checks, and exits 1 if any check fails:
  * audit() returns no rows while entries are still pending (it counts them as applied); then
    `SELECT compute_auction.apply_pending()` (nobody holds a wallet any more) applies every
    pending entry and leaves none, and the checks below run on the applied books;
  * audit() returns no rows;
  * sum(balance_tokens + held_tokens) over all accounts equals, to the token, the total after
    setup + deposits - withdrawals - charges by the clients' own books; every key the clients
    saw applied has exactly one ledger row with the right amount and every key that failed has
    none; every settle a client saw succeed is a 'settled' clear with the charge it returned,
    and no settled clear exists that no client asked for; the ledger's 'charge' rows add up to
    the settles' charges; and per account, balance + held = initial + its deposits - its
    withdrawals - the prices of the clears it won and settled;
  * no slot was assigned twice: per slot at most one 'assigned' clear (the newest), and the
    clears of a slot have non-overlapping lifetimes [slot_started_at, slot_finished_at];
    every clear's bid is in the matching state (assigned/won, settled/settled, aborted/aborted),
    no bid won two clears, and each round wrote exactly slots_filled clears at its one price;
  * a bid a client cancelled is 'cancelled' and never won;
  * no deadlock (SQLSTATE 40P01) was seen by any client, the clearing thread or the driver (its
    log), and pg_stat_database.deadlocks of the database did not grow;
  * clearing made progress under the load: the load phase runs for --seconds and then on until
    the driver and the clearing thread have cleared --min-rounds (default 240) rounds, however
    slow the machine is; only if that takes longer than --hang-seconds (default 5 x --seconds
    + 300) is clearing reported as hung (no rate is asserted: a loaded machine is just slower);
  * every other error was a documented SQLSTATE (22023, 23505, 23514, 55000, 55P03, P0002, 40001) or a
    connection error inside the PostgreSQL restart window;
  * the faults really happened and the driver was clearing again after them.

Options widen the races: --run-cycle-every N makes every Nth call of the clearing thread
run_cycle() (what pg_cron calls), --assignment-timeout S makes the driver and run_cycle abort
assignments older than S seconds (abort_stale racing settle), --agents/--slots set contention.

It prints operations per second, rounds per second, errors by SQLSTATE and what the wallet holds
did (wallet_holds: held_winner/held_other, settled_while_held, settles_left_pending, committed,
rolled_back; pending_entries_at_end: before/applied/left); --summary-json writes
the same as JSON. Run it with the project's venv: target/venv/bin/python tests/stress/stress.py.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]

# The documented SQLSTATEs a client may see under this workload (docs: errors.rs / SQL API).
EXPECTED_SQLSTATES = {
    "22023": "invalid_parameter_value",
    "23505": "unique_violation (task has a live bid by another bidder)",
    "23514": "check_violation (insufficient funds)",
    "55000": "object_not_in_prerequisite_state",
    "P0002": "no_data_found",
    "40001": "serialization_failure (clear_round: book kept changing)",
    "55P03": "lock_not_available (a participant's call waited its 1 s lock_timeout: retry)",
}
DEADLOCK = "40P01"
CONN = "conn"  # pseudo-SQLSTATE of connection errors

OPS = {
    # op name: weight
    "place_bid": 22,
    "replace": 10,
    "cancel_bid": 9,
    "deposit": 8,
    "withdraw": 8,
    "claim_slot": 7,
    "settle": 18,
    "abort_slot": 8,
    "contested_bid": 3,  # place_bid on another client's task with another bidder: 23505 or new
    "replay_key": 3,  # deposit again with a used key: same amount -> no-op, other -> 22023
    "cancel_unknown": 1,  # cancel_bid of a bid that does not exist: P0002
    "settle_blind": 2,  # settle without claiming first (often 55000: nothing assigned)
    "hold_wallet": 3,  # a winner holds its own wallet open (place_bid in a transaction) while it is settled
}

INITIAL_TOKENS = 200_000


def is_connection_error(e: BaseException, conn: psycopg.Connection | None) -> bool:
    if isinstance(e, psycopg.InterfaceError):
        return True
    st = getattr(e, "sqlstate", None)
    if st is None:
        return isinstance(e, psycopg.OperationalError) or (conn is not None and (conn.closed or conn.broken))
    return st.startswith("08") or st in ("57P01", "57P02", "57P03")


# --------------------------------------------------------------------------- infrastructure ---


class Cluster:
    """The test cluster, as in tests/conftest.py (pg_ctl through sudo as the cluster's owner)."""

    def __init__(self, data_dir: str, bindir: str, runas: str) -> None:
        self.data_dir, self.bindir, self.runas = data_dir, bindir, runas

    def restart_fast(self) -> None:
        cmd = [
            "sudo",
            "-u",
            self.runas,
            "--",
            f"{self.bindir}/pg_ctl",
            "-D",
            self.data_dir,
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "-l",
            f"{self.data_dir}/server.log",
            "restart",
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)


class Driver:
    """compute-auction-driver serve, restartable; its stderr goes to one log file."""

    def __init__(self, binary: str, url: str, port: int, log_path: Path, extra: list[str]) -> None:
        self.binary, self.url, self.port, self.log_path, self.extra = binary, url, port, log_path, extra
        self.proc: subprocess.Popen | None = None
        self.generation = 0

    def start(self) -> None:
        self.generation += 1
        with open(self.log_path, "ab") as log:  # the driver keeps its own copy of the descriptor
            log.write(f"\n===== driver start #{self.generation} at {time.time():.3f} =====\n".encode())
            log.flush()
            env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "serve",
                    "--database-url",
                    self.url,
                    "--interval",
                    "1s",
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--max-backoff",
                    "1s",
                    *self.extra,
                ],
                stdout=log,
                stderr=log,
                env=env,
            )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> dict[str, float] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except (OSError, urllib.error.URLError):
            return None
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def wait_leader(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.metrics()
            if m and m.get("compute_auction_leader") == 1 and m.get("compute_auction_rounds_cleared_total", 0) >= 1:
                return True
            time.sleep(0.25)
        return False


# ------------------------------------------------------------------------------ client books ---


@dataclass
class Money:
    """A deposit or withdrawal: state is 'applied', 'failed' or 'doubt' (resolved at the end)."""

    key: str
    account: str
    amount: int
    state: str
    retried: bool = False
    simulated: bool = False  # succeeded, but the client "lost" the answer (--simulate-doubt)


@dataclass
class Settle:
    slot: str
    tag: int
    state: str  # applied / failed / doubt
    charged: int | None = None
    simulated: bool = False


@dataclass
class Stats:
    ok: collections.Counter = field(default_factory=collections.Counter)  # op -> n
    errors: collections.Counter = field(default_factory=collections.Counter)  # (op, sqlstate) -> n
    latencies: dict = field(default_factory=lambda: collections.defaultdict(list))  # op -> [s]
    # (monotonic t, op, message, monotonic time the failed connection was opened)
    conn_errors: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)  # (t, op, sqlstate, message)
    deadlocks: list = field(default_factory=list)  # (t, op, message)


class Shared:
    """What the threads share: the run's settings, the stop flag and a few cross-client lists."""

    def __init__(self, args, url: str, run: str, agents: list[str], slots: list[str]) -> None:
        self.args, self.url, self.run = args, url, run
        self.agents, self.slots = agents, slots
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.tags = itertools.count(1)
        self.recent_tasks: collections.deque = collections.deque(maxlen=500)  # (task, bidder)
        self.lock = threading.Lock()


class Worker(threading.Thread):
    """One connection; reconnects after connection errors."""

    def __init__(self, shared: Shared, name: str, seed: int) -> None:
        super().__init__(name=name, daemon=True)
        self.sh = shared
        self.rng = random.Random(seed)
        self.conn: psycopg.Connection | None = None
        # id(connection) -> when it was opened: a connection the restart killed may sit idle
        # (a client's runner connection) and report the loss long after the restart window
        self.born: dict[int, float] = {}
        self.stats = Stats()
        self.finished = False

    # connection handling
    def connect(self) -> bool:
        while not self.sh.stop.is_set():
            try:
                self.conn = psycopg.connect(
                    self.sh.url,
                    autocommit=True,
                    connect_timeout=3,
                    application_name=f"ca-stress-{self.name}",
                    options="-c statement_timeout=30000",
                )
                self.born[id(self.conn)] = time.monotonic()
                return True
            except psycopg.Error as e:
                now = time.monotonic()
                self.stats.conn_errors.append((now, "connect", str(e).strip()[:200], now))
                time.sleep(0.2 + self.rng.random() * 0.3)
        return False

    def drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):  # already broken
                self.conn.close()
        self.conn = None

    def call(self, op: str, query: str, params=(), tx: bool = False):
        """Runs one statement (autocommit, or in an explicit short transaction).
        Returns ('ok', rows) | ('err', sqlstate) | ('conn', None)."""
        if self.conn is None and not self.connect():
            return "conn", None
        t = time.monotonic()
        try:
            if tx:
                with self.conn.transaction():
                    rows = self.conn.execute(query, params).fetchall()
            else:
                rows = self.conn.execute(query, params).fetchall()
            self.stats.ok[op] += 1
            self.stats.latencies[op].append(time.monotonic() - t)
            return "ok", rows
        except psycopg.Error as e:
            return self.failed(op, e, t)

    def failed(self, op: str, e: psycopg.Error, t: float):
        """Counts a failed call that started at t: ('err', sqlstate) or ('conn', None)."""
        now = time.monotonic()
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        if is_connection_error(e, self.conn):
            self.stats.conn_errors.append((now, op, msg, self.born.pop(id(self.conn), now)))
            self.stats.errors[(op, CONN)] += 1
            self.drop()
            return "conn", None
        st = e.sqlstate or "?????"
        self.stats.errors[(op, st)] += 1
        self.stats.latencies[op].append(now - t)
        if st == DEADLOCK:
            self.stats.deadlocks.append((now, op, msg))
        elif st not in EXPECTED_SQLSTATES:
            self.stats.unexpected.append((now, op, st, msg))
        return "err", st

    def unexpected(self, op: str, what: str) -> None:
        self.stats.unexpected.append((time.monotonic(), op, "-", what))


class Client(Worker):
    def __init__(self, shared: Shared, cid: int, seed: int) -> None:
        super().__init__(shared, f"c{cid:02d}", seed)
        self.cid = cid
        self.seq = itertools.count(1)
        self.bids: dict[str, tuple[str, int]] = {}  # own open-ish bids: task -> (bidder, bid id)
        self.deposits: list[Money] = []
        self.withdrawals: list[Money] = []
        self.settles: list[Settle] = []
        self.cancelled: list[int] = []  # bid ids whose cancel_bid succeeded
        self.runner: psycopg.Connection | None = None  # a second connection: the held winner's runner
        self.holds = collections.Counter()  # what op_hold_wallet did (summary "wallet_holds")
        self.ops = list(OPS)
        self.weights = [OPS[o] for o in self.ops]

    def run(self) -> None:
        try:
            while not self.sh.stop.is_set():
                op = self.rng.choices(self.ops, self.weights)[0]
                getattr(self, "op_" + op)()
        except Exception as e:  # noqa: BLE001 - a bug in this program must fail the run, loudly
            self.unexpected("client", f"client thread crashed: {e!r}")
            raise
        finally:
            self.drop()
            if self.runner is not None:
                with contextlib.suppress(Exception):
                    self.runner.close()
            self.finished = True

    # helpers
    def agent(self) -> str:
        return self.rng.choice(self.sh.agents)

    def slot(self) -> str:
        return self.rng.choice(self.sh.slots)

    def track(self, task: str, bidder: str, bid_id: int) -> None:
        self.bids[task] = (bidder, bid_id)
        if len(self.bids) > 60:  # forget the oldest: it has most likely won, expired or gone
            self.bids.pop(next(iter(self.bids)))

    def bid_args(self):
        # now and then more than any wallet holds: 23514, nothing changes
        price = self.rng.randint(1, 5_000) if self.rng.random() < 0.97 else 10**12
        ev = round(self.rng.uniform(0, 500), 2) if self.rng.random() < 0.5 else None
        ttl = self.rng.uniform(2, 8) if self.rng.random() < 0.3 else None  # short TTLs expire
        return price, ev, ttl

    PLACE = (
        "SELECT compute_auction.place_bid(%s, %s, %s, %s, "
        "CASE WHEN %s::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => %s::float8) END)"
    )

    # operations
    def op_place_bid(self) -> None:
        bidder, task = self.agent(), f"st-{self.sh.run}-c{self.cid}-{next(self.seq)}"
        price, ev, ttl = self.bid_args()
        r, v = self.call("place_bid", self.PLACE, (bidder, task, price, ev, ttl, ttl))
        if r == "ok":
            self.track(task, bidder, v[0][0])
            self.sh.recent_tasks.append((task, bidder))

    def op_replace(self) -> None:
        if not self.bids:
            return self.op_place_bid()
        task = self.rng.choice(list(self.bids))
        bidder, old_id = self.bids[task]
        price, ev, ttl = self.bid_args()
        r, v = self.call("replace", self.PLACE, (bidder, task, price, ev, ttl, ttl), tx=self.rng.random() < 0.3)
        if r == "ok":
            self.track(task, bidder, v[0][0])
        elif r == "err":
            self.bids.pop(task, None)  # won (55000) or unaffordable: stop tracking it

    def op_cancel_bid(self) -> None:
        if not self.bids:
            return self.op_place_bid()
        task = self.rng.choice(list(self.bids))
        _, bid_id = self.bids.pop(task)
        r, v = self.call("cancel_bid", "SELECT compute_auction.cancel_bid(%s)", (bid_id,))
        if r == "ok":
            self.cancelled.append(bid_id)

    def op_cancel_unknown(self) -> None:
        r, _ = self.call("cancel_unknown", "SELECT compute_auction.cancel_bid(%s)", (-self.rng.randint(1, 10**9),))
        if r == "ok":
            self.unexpected("cancel_unknown", "cancel_bid of a nonexistent bid succeeded")

    def op_contested_bid(self) -> None:
        if not self.sh.recent_tasks:
            return
        task, owner = self.rng.choice(self.sh.recent_tasks)
        bidder = self.agent()
        while bidder == owner:
            bidder = self.agent()
        price, ev, ttl = self.bid_args()
        r, v = self.call("contested_bid", self.PLACE, (bidder, task, price, ev, ttl, ttl))
        if r == "ok":  # the owner's bid was no longer live: this is a new bid of ours
            self.track(task, bidder, v[0][0])

    def money(self, kind: str) -> None:
        account = self.agent()
        amount = self.rng.randint(1, 20_000) if kind == "deposit" else self.rng.randint(1, 10_000)
        if kind == "withdraw" and self.rng.random() < 0.05:
            amount = 10**12  # more than any wallet holds: 23514, nothing changes
        key = f"sk-{self.sh.run}-{kind}-c{self.cid}-{next(self.seq)}"
        q = f"SELECT compute_auction.{kind}(%s, %s, %s, %s)"
        params = (account, amount, f"stress {kind}", key)
        book = self.deposits if kind == "deposit" else self.withdrawals
        tx = self.rng.random() < 0.5
        r, _ = self.call(kind, q, params, tx=tx)
        m = Money(key, account, amount, {"ok": "applied", "err": "failed", "conn": "doubt"}[r])
        if r == "conn" and self.rng.random() < 0.5:
            # retry with the same key until it is decided (or the run ends): applied once at most
            m.retried = True
            while m.state == "doubt" and not self.sh.stop.is_set():
                r, _ = self.call(kind + "_retry", q, params, tx=tx)
                if r != "conn":
                    m.state = "applied" if r == "ok" else "failed"
        if m.state == "applied" and self.rng.random() < self.sh.args.simulate_doubt:
            m.state, m.simulated = "doubt", True
        book.append(m)

    def op_deposit(self) -> None:
        self.money("deposit")

    def op_withdraw(self) -> None:
        self.money("withdraw")

    def op_replay_key(self) -> None:
        done = [m for m in self.deposits if m.state == "applied"]
        if not done:
            return self.op_deposit()
        m = self.rng.choice(done)
        same = self.rng.random() < 0.7
        amount = m.amount if same else m.amount + self.rng.randint(1, 100)
        r, _ = self.call(
            "replay_key",
            "SELECT compute_auction.deposit(%s, %s, %s, %s)",
            (m.account, amount, "stress deposit replay", m.key),
        )
        if r == "ok" and not same:
            self.unexpected("replay_key", f"deposit with used key {m.key} and another amount succeeded")
        # a successful same-amount replay must move nothing: the final books would show it

    def op_claim_slot(self) -> None:
        self.call("claim_slot", "SELECT * FROM compute_auction.claim_slot(%s)", (self.slot(),))

    def claimed(self, op: str) -> str | None:
        """claim_slot on a random slot: the slot if it has an assignment, else None."""
        slot = self.slot()
        r, rows = self.call(op + ":claim", "SELECT * FROM compute_auction.claim_slot(%s)", (slot,))
        return slot if r == "ok" and rows else None

    def settle(self, op: str, slot: str) -> None:
        tag = next(self.sh.tags)
        impact = self.rng.uniform(0, 100)
        r, v = self.call(
            op, "SELECT compute_auction.settle(%s, %s, %s)", (slot, tag, impact), tx=self.rng.random() < 0.3
        )
        s = Settle(slot, tag, {"ok": "applied", "err": "failed", "conn": "doubt"}[r])
        if r == "ok":
            s.charged = v[0][0]
            if self.rng.random() < self.sh.args.simulate_doubt:
                s.state, s.simulated, s.charged = "doubt", True, None
        self.settles.append(s)

    def op_settle(self) -> None:
        slot = self.claimed("settle")
        if slot is not None:
            self.settle("settle", slot)

    def op_settle_blind(self) -> None:
        self.settle("settle_blind", self.slot())

    def op_abort_slot(self) -> None:
        slot = self.claimed("abort_slot")
        if slot is not None:
            self.call("abort_slot", "SELECT compute_auction.abort_slot(%s, %s)", (slot, f"stress abort {self.name}"))

    WON = (
        "SELECT c.slot_id, c.bidder_id, c.bid_id FROM compute_auction.compute_auction_clears c"
        " WHERE c.status = 'assigned' AND c.slot_id LIKE %s ORDER BY random() LIMIT 1"
    )
    SETTLED_BY_TAG = (
        "SELECT c.bid_id, c.bidder_id, (SELECT count(*) FROM compute_auction.pending_entries p"
        " WHERE p.bid_id = c.bid_id) FROM compute_auction.compute_auction_clears c"
        " WHERE c.slot_id = %s AND c.actual_cost_tokens = %s"
    )

    def as_runner(self, fn) -> None:
        """Runs fn with self.conn swapped for the runner connection (made on first use)."""
        main, self.conn = self.conn, self.runner
        try:
            fn()
        finally:
            self.runner, self.conn = self.conn, main

    def op_hold_wallet(self) -> None:
        """A winner (an agent with an assigned clear; else any agent) opens a transaction that
        locks its own account — place_bid on a fresh task — and holds it 0.05-0.5 s, then rolls
        back or commits. Half the time its runner (this client's second connection) settles the
        won slot during the hold: the settle must not wait (55P03 would be the old behaviour)
        and its entries must be pending, for nobody can apply them while the wallet is held."""
        r, rows = self.call("hold_wallet:pick", self.WON, (f"ss-{self.sh.run}-%",))
        if r != "ok":
            return
        slot, bidder, won_bid = rows[0] if rows else (None, self.agent(), None)
        if self.conn is None and not self.connect():
            return
        task = f"st-{self.sh.run}-c{self.cid}-{next(self.seq)}"
        price, ev, _ = self.bid_args()
        price = min(price, 5_000)
        hold = self.rng.uniform(0.05, 0.5)
        commit = self.rng.random() < 0.5
        t = time.monotonic()
        conn = self.conn
        try:
            conn.execute("BEGIN")
            bid_id = conn.execute(self.PLACE, (bidder, task, price, ev, None, None)).fetchone()[0]
            self.holds["held" + ("_winner" if slot else "_other")] += 1
            if slot is not None and self.rng.random() < 0.5:
                before = len(self.settles)
                self.as_runner(lambda: self.settle("hold_wallet:settle", slot))
                s = self.settles[before] if len(self.settles) > before else None
                if s is not None and s.state == "applied":
                    row = conn.execute(self.SETTLED_BY_TAG, (slot, s.tag)).fetchone()
                    # the pick may be stale: the slot settled and won again by someone else
                    if row is not None and row[1] == bidder:
                        self.holds["settled_while_held"] += 1
                        if row[2]:
                            self.holds["settles_left_pending"] += 1
                        else:
                            self.unexpected(
                                "hold_wallet",
                                f"settle({slot}) of bid {row[0]} succeeded while {bidder} held its wallet, "
                                "but no pending entry of that bid is in pending_entries",
                            )
                    else:
                        self.holds["settled_another_assignment"] += 1
                elif s is not None:
                    self.holds["settle_while_held_" + s.state] += 1
            time.sleep(hold)
            conn.execute("COMMIT" if commit else "ROLLBACK")
            self.stats.ok["hold_wallet"] += 1
            self.stats.latencies["hold_wallet"].append(time.monotonic() - t)
            self.holds["committed" if commit else "rolled_back"] += 1
            if commit:
                self.track(task, bidder, bid_id)
                self.sh.recent_tasks.append((task, bidder))
        except psycopg.Error as e:
            if self.failed("hold_wallet", e, t)[0] == "err" and self.conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self.conn.execute("ROLLBACK")


class Clearer(Worker):
    """Calls clear_round() back to back: the clearing capacity under the load."""

    def __init__(self, shared: Shared, seed: int) -> None:
        super().__init__(shared, "clearer", seed)

    def run(self) -> None:
        try:
            every = self.sh.args.run_cycle_every
            for n in itertools.count(1):
                if self.sh.stop.is_set():
                    break
                if every and n % every == 0:  # as pg_cron would: refunds, stale aborts and a round
                    timeout = self.sh.args.assignment_timeout or 3600
                    self.call("run_cycle", "SELECT compute_auction.run_cycle(make_interval(secs => %s))", (timeout,))
                else:
                    self.call("clear_round", "SELECT * FROM compute_auction.clear_round()")
                if self.sh.args.clear_pause > 0:
                    time.sleep(self.sh.args.clear_pause)
        finally:
            self.drop()
            self.finished = True


# ------------------------------------------------------------------------------------ faults ---


class Faults(threading.Thread):
    """SIGKILLs the driver and restarts it, then restarts PostgreSQL (fast), at set times."""

    def __init__(self, shared: Shared, driver: Driver, cluster: Cluster) -> None:
        super().__init__(name="faults", daemon=True)
        self.sh, self.driver, self.cluster = shared, driver, cluster
        a = shared.args
        self.plan = []
        if not a.no_driver_kill:
            self.plan.append((a.seconds * a.driver_kill_at, "driver"))
        if not a.no_pg_restart:
            self.plan.append((a.seconds * a.pg_restart_at, "postgres"))
        self.plan.sort()
        self.events: list[dict] = []
        self.pg_windows: list[tuple[float, float]] = []  # monotonic (begin, end)
        self.errors: list[str] = []
        self.driver_rounds_after_restart: float | None = None

    def wait_until(self, at: float) -> bool:
        while time.monotonic() - self.sh.t0 < at:
            if self.sh.stop.wait(0.05):
                return False
        return True

    def rel(self) -> float:
        return round(time.monotonic() - self.sh.t0, 2)

    def run(self) -> None:
        for at, what in self.plan:
            if not self.wait_until(at):
                return
            if what == "driver":
                t = self.rel()
                self.driver.kill()
                self.events.append({"event": "driver SIGKILL", "at_s": t})
                if self.sh.stop.wait(self.sh.args.driver_down):
                    return
                self.driver.start()
                self.events.append({"event": "driver restarted", "at_s": self.rel()})
            else:
                begin = time.monotonic()
                t = self.rel()
                try:
                    self.cluster.restart_fast()
                    ok = True
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
                    ok = False
                    err = getattr(e, "stderr", b"") or b""
                    self.errors.append(f"pg_ctl restart failed: {e} {err.decode(errors='replace')[:300]}")
                end = time.monotonic()
                self.pg_windows.append((begin, end))
                self.events.append(
                    {
                        "event": "PostgreSQL fast restart" + ("" if ok else " FAILED"),
                        "at_s": t,
                        "took_s": round(end - begin, 2),
                    }
                )
                # the driver's own counter right after the restart: it must grow afterwards
                m = self.driver.metrics()
                self.driver_rounds_after_restart = (m or {}).get("compute_auction_rounds_cleared_total", 0.0)


# ------------------------------------------------------------------------------------ checks ---


def connect_retry(url: str, timeout: float = 60.0) -> psycopg.Connection:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=3)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def rounds_since(url: str, r0: int) -> int | None:
    """Rounds cleared after round r0, or None while the database is unreachable (the restart)."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as c:
            return c.execute(
                "SELECT count(*) FROM compute_auction.compute_auction_rounds WHERE round_id > %s", (r0,)
            ).fetchone()[0]
    except psycopg.Error:
        return None


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def check_everything(
    c: psycopg.Connection, sh: Shared, clients: list[Client], baseline: int, violations: list[str], summary: dict
) -> None:
    run = sh.run
    like = f"s%-{run}-%"

    # 0. the entries still pending (settles and aborts recorded while a winner held its wallet,
    # not yet applied by a cycle): audit() must already count them as applied; then apply them
    # all (every client has stopped, so nobody holds a wallet) and audit again.
    pending_before = c.execute("SELECT count(*) FROM compute_auction.pending_entries").fetchone()[0]
    rows = c.execute("SELECT check_name, detail FROM compute_auction.audit()").fetchall()
    if rows:
        violations.append(f"audit() with {pending_before} entries pending returned {len(rows)} row(s): {rows[:10]}")
    applied = c.execute("SELECT compute_auction.apply_pending()").fetchone()[0]
    left = c.execute("SELECT count(*) FROM compute_auction.pending_entries").fetchone()[0]
    holds = collections.Counter()
    for cl in clients:
        holds.update(cl.holds)
    summary["wallet_holds"] = dict(holds)
    summary["pending_entries_at_end"] = {"before": pending_before, "applied": applied, "left": left}
    if applied != pending_before or left != 0:
        violations.append(
            f"apply_pending() at the end applied {applied} of {pending_before} pending entries, {left} left"
        )

    # 1. audit()
    rows = c.execute("SELECT check_name, detail FROM compute_auction.audit()").fetchall()
    summary["audit_rows"] = [list(r) for r in rows]
    if rows:
        violations.append(f"audit() returned {len(rows)} row(s): {rows[:10]}")

    # 2. deposits/withdrawals: resolve in-doubt by key, verify the decided ones against the ledger
    ledger = {}
    for kind in ("deposit", "withdraw"):
        for key, account, n, delta in c.execute(
            "SELECT idempotency_key, min(account_id), count(*), sum(delta_balance)::bigint"
            "  FROM compute_auction.token_ledger WHERE entry_kind = %s AND idempotency_key LIKE %s"
            " GROUP BY idempotency_key",
            (kind, f"sk-{run}-%"),
        ):
            ledger[(kind, key)] = (account, n, delta)
    books = {"deposit": 0, "withdraw": 0, "charge": 0}
    doubt = collections.Counter()
    seen_keys = set()
    for cl in clients:
        for kind, lst in (("deposit", cl.deposits), ("withdraw", cl.withdrawals)):
            sign = 1 if kind == "deposit" else -1
            for m in lst:
                seen_keys.add((kind, m.key))
                row = ledger.get((kind, m.key))
                if m.state == "doubt":
                    which = "simulated_" if m.simulated else ""
                    doubt[which + kind] += 1
                    m.state = "applied" if row else "failed"
                    doubt[which + kind + "_applied"] += bool(row)
                    if m.simulated and not row:
                        violations.append(f"{kind} {m.key} succeeded but its key is not in token_ledger")
                if m.state == "applied":
                    if row is None:
                        violations.append(f"{kind} {m.key} ({m.amount} to {m.account}) succeeded but has no ledger row")
                        continue
                    if row != (m.account, 1, sign * m.amount):
                        violations.append(
                            f"{kind} {m.key}: ledger has {row}, client expected ({m.account}, 1, {sign * m.amount})"
                        )
                    books[kind] += m.amount
                elif row is not None:
                    violations.append(f"{kind} {m.key} failed for the client but the ledger has {row}")
                if m.retried:
                    doubt[kind + "_retried"] += 1
    for k in ledger:
        if k not in seen_keys:
            violations.append(f"ledger has a {k[0]} with key {k[1]} that no client made")

    # 3. settles: resolve by (slot, tag) in compute_auction_clears
    settled = {
        (s, tag): (price, st)
        for s, tag, price, st in c.execute(
            "SELECT slot_id, actual_cost_tokens, clearing_price_tokens, status FROM "
            "compute_auction.compute_auction_clears"
            " WHERE slot_id LIKE %s AND actual_cost_tokens IS NOT NULL",
            (like,),
        )
    }
    known = set()
    for cl in clients:
        for s in cl.settles:
            known.add((s.slot, s.tag))
            hit = settled.get((s.slot, s.tag))
            if s.state == "doubt":
                which = "simulated_" if s.simulated else ""
                doubt[which + "settle"] += 1
                s.state = "applied" if hit else "failed"
                s.charged = hit[0] if hit else None
                doubt[which + "settle_applied"] += bool(hit)
                if s.simulated and not hit:
                    violations.append(f"settle({s.slot}) tag {s.tag} succeeded but no clear has its tag")
            if s.state == "applied":
                if hit is None or hit[1] != "settled":
                    violations.append(
                        f"settle({s.slot}) tag {s.tag} returned {s.charged} but no settled clear has that tag: {hit}"
                    )
                    continue
                if hit[0] != s.charged:
                    violations.append(
                        f"settle({s.slot}) tag {s.tag} charged {s.charged} but the clear's price is {hit[0]}"
                    )
                books["charge"] += s.charged
            elif hit is not None:
                violations.append(f"settle({s.slot}) tag {s.tag} failed for the client but clear is {hit}")
    for k, v in settled.items():
        if k not in known:
            violations.append(f"settled clear on slot {k[0]} with tag {k[1]} that no client settled: {v}")
    summary["in_doubt"] = dict(doubt)

    # 4. the money: all accounts, to the token
    total = c.execute(
        "SELECT coalesce(sum(balance_tokens + held_tokens), 0)::bigint FROM compute_auction.token_accounts"
    ).fetchone()[0]
    expected = baseline + books["deposit"] - books["withdraw"] - books["charge"]
    kinds = dict(
        c.execute(
            "SELECT entry_kind, sum(delta_balance + delta_held)::bigint FROM compute_auction.token_ledger"
            " WHERE account_id LIKE %s GROUP BY entry_kind",
            (like,),
        ).fetchall()
    )
    summary["books"] = {
        "total_after_setup": baseline,
        "deposits": books["deposit"],
        "withdrawals": books["withdraw"],
        "charges": books["charge"],
        "expected_total": expected,
        "actual_total": total,
        "ledger_net_by_kind": kinds,
    }
    if total != expected:
        violations.append(
            f"money: sum(balance+held) = {total}, clients' books say {expected} "
            f"(= {baseline} + {books['deposit']} deposits - {books['withdraw']} withdrawals - "
            f"{books['charge']} charges); "
            f"off by {total - expected}; ledger net by kind: {kinds}"
        )
    # per account: the same books, with each settled clear charged to its winner
    per_acct = collections.Counter({a: INITIAL_TOKENS for a in sh.agents})
    for cl in clients:
        for m in cl.deposits:
            per_acct[m.account] += m.amount if m.state == "applied" else 0
        for m in cl.withdrawals:
            per_acct[m.account] -= m.amount if m.state == "applied" else 0
    for bidder, charged in c.execute(
        "SELECT bidder_id, sum(clearing_price_tokens)::bigint FROM compute_auction.compute_auction_clears"
        " WHERE slot_id LIKE %s AND status = 'settled' GROUP BY bidder_id",
        (like,),
    ):
        per_acct[bidder] -= charged
    wrong = [
        (a, t, per_acct[a])
        for a, t in c.execute(
            "SELECT account_id, (balance_tokens + held_tokens)::bigint FROM compute_auction.token_accounts"
            " WHERE account_id LIKE %s ORDER BY account_id",
            (like,),
        )
        if t != per_acct[a]
    ]
    for a, t, want in wrong[:10]:
        violations.append(
            f"account {a}: balance+held = {t}, books (initial + deposits - withdrawals - its settled clears) say {want}"
        )
    charge_ledger = -(kinds.get("charge") or 0)
    if charge_ledger != books["charge"]:
        violations.append(f"charges: ledger 'charge' rows sum to {charge_ledger}, settles returned {books['charge']}")

    # 5. no slot assigned twice; clear lifetimes per slot do not overlap; bid states match
    clears = c.execute(
        "SELECT c.slot_id, c.round_id, c.bid_id, c.status, c.slot_started_at, c.slot_finished_at, b.status"
        "  FROM compute_auction.compute_auction_clears c"
        "  LEFT JOIN compute_auction.compute_auction_bids b ON b.id = c.bid_id"
        " WHERE c.slot_id LIKE %s ORDER BY c.slot_id, c.round_id",
        (like,),
    ).fetchall()
    per_slot = collections.defaultdict(list)
    bid_seen = collections.Counter()
    want_bid = {"assigned": "won", "settled": "settled", "aborted": "aborted"}
    for row in clears:
        per_slot[row[0]].append(row)
        bid_seen[row[2]] += 1
        if row[6] != want_bid[row[3]]:
            violations.append(f"clear (slot {row[0]}, round {row[1]}) is {row[3]} but its bid {row[2]} is {row[6]}")
    for b, n in bid_seen.items():
        if n > 1:
            violations.append(f"bid {b} won {n} clears")
    overlaps = 0
    for slot, rows in per_slot.items():
        assigned = [r for r in rows if r[3] == "assigned"]
        if len(assigned) > 1:
            violations.append(f"slot {slot} has {len(assigned)} 'assigned' clears: rounds {[r[1] for r in assigned]}")
        for prev, nxt in itertools.pairwise(rows):
            if prev[5] is None or nxt[4] < prev[5]:
                overlaps += 1
                if overlaps <= 10:
                    violations.append(
                        f"slot {slot} assigned twice: round {prev[1]} ({prev[3]}, {prev[4]} .. {prev[5]}) "
                        f"overlaps round {nxt[1]} ({nxt[3]}, started {nxt[4]})"
                    )
    # each round wrote exactly slots_filled clears, all at the round's one price
    for r in c.execute(
        "SELECT r.round_id, r.slots_filled, r.clearing_price_tokens, count(c.slot_id),"
        "       min(c.clearing_price_tokens), max(c.clearing_price_tokens)"
        "  FROM compute_auction.compute_auction_rounds r"
        "  LEFT JOIN compute_auction.compute_auction_clears c ON c.round_id = r.round_id"
        " GROUP BY r.round_id HAVING count(c.slot_id) <> r.slots_filled"
        "    OR (count(c.slot_id) > 0 AND (min(c.clearing_price_tokens) <> r.clearing_price_tokens"
        "                              OR max(c.clearing_price_tokens) <> r.clearing_price_tokens))"
        " LIMIT 10"
    ).fetchall():
        violations.append(f"round {r[0]}: slots_filled {r[1]} at {r[2]} but {r[3]} clears priced {r[4]}..{r[5]}")
    status = dict(
        c.execute("SELECT slot_id, status FROM compute_auction.compute_slots WHERE slot_id LIKE %s", (like,)).fetchall()
    )
    for slot, st in status.items():
        has = any(r[3] == "assigned" for r in per_slot.get(slot, []))
        if (st == "assigned") != has:
            violations.append(f"slot {slot} is {st} but has {'an' if has else 'no'} assigned clear")
    summary["clears"] = dict(collections.Counter(r[3] for r in clears))

    # 6. a cancelled bid never wins
    ids = [b for cl in clients for b in cl.cancelled]
    if ids:
        bad = c.execute(
            "SELECT b.id, b.status, c.round_id FROM compute_auction.compute_auction_bids b"
            "  LEFT JOIN compute_auction.compute_auction_clears c ON c.bid_id = b.id"
            " WHERE b.id = ANY(%s) AND (b.status <> 'cancelled' OR c.bid_id IS NOT NULL)",
            (ids,),
        ).fetchall()
        for b in bad[:10]:
            violations.append(f"bid {b[0]} was cancelled by a client but is {b[1]} (clear round {b[2]})")
    summary["bids"] = dict(
        c.execute(
            "SELECT status, count(*) FROM compute_auction.compute_auction_bids WHERE bidder_id LIKE %s GROUP BY status",
            (like,),
        ).fetchall()
    )


def server_deadlocks(c: psycopg.Connection) -> int:
    c.execute("SELECT pg_stat_clear_snapshot()")
    return c.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def driver_log_errors(path: Path) -> tuple[collections.Counter, list[str]]:
    """SQLSTATEs in the driver's log (it writes '... (SQLSTATE xxxxx)' for SQL errors)."""
    codes = collections.Counter()
    lines = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return codes, lines
    for line in text.splitlines():
        m = re.search(r"SQLSTATE ([0-9A-Z]{5})", line)
        if m or "deadlock" in line.lower():
            code = m.group(1) if m else DEADLOCK
            codes[code] += 1
            lines.append(line.strip()[:400])
    return codes, lines


# -------------------------------------------------------------------------------------- main ---


def parse_args(argv=None):
    env = os.environ
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=60.0, help="length of the load phase (default 60)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--agents", type=int, default=200)
    p.add_argument("--slots", type=int, default=20)
    p.add_argument(
        "--database-url",
        help="an existing database with the extension (nothing else may write to it "
        "during the run); default: a fresh database created through --admin-url",
    )
    p.add_argument(
        "--admin-url",
        default=env.get("CA_ADMIN_URL", f"postgresql://postgres@127.0.0.1:{env.get('CA_TEST_PORT', '28826')}/postgres"),
    )
    p.add_argument(
        "--keep-db",
        choices=["always", "on-failure", "never"],
        default="on-failure",
        help="keep the database this program created (default: on failure, to investigate)",
    )
    p.add_argument(
        "--driver-bin", default=env.get("CA_DRIVER_BIN", str(ROOT / "target" / "release" / "compute-auction-driver"))
    )
    p.add_argument("--driver-port", type=int, default=0, help="HTTP port of the driver (default: a free one)")
    p.add_argument("--pg-data-dir", default=env.get("CA_TEST_DATA_DIR", str(ROOT / "target" / "pgdata-test")))
    p.add_argument("--pg-bindir", default=env.get("CA_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
    p.add_argument("--pg-runas", default=env.get("CA_PG_RUNAS", "postgres"))
    p.add_argument("--driver-kill-at", type=float, default=0.25, help="fraction of the run (default 0.25)")
    p.add_argument("--driver-down", type=float, default=2.0, help="seconds the driver stays dead (default 2)")
    p.add_argument("--pg-restart-at", type=float, default=0.5, help="fraction of the run (default 0.5)")
    p.add_argument("--no-driver-kill", action="store_true")
    p.add_argument("--no-pg-restart", action="store_true")
    p.add_argument(
        "--restart-grace",
        type=float,
        default=5.0,
        help="connection errors up to this long after PostgreSQL is back still count as the restart's",
    )
    p.add_argument("--clear-pause", type=float, default=0.0, help="sleep between the clearing thread's rounds")
    p.add_argument(
        "--run-cycle-every",
        type=int,
        default=0,
        help="make every Nth call of the clearing thread run_cycle() (pg_cron's call) instead of "
        "clear_round() (default 0: never)",
    )
    p.add_argument(
        "--assignment-timeout",
        type=float,
        default=None,
        help="seconds after which the driver (and run_cycle) abort unsettled assignments with "
        "abort_stale, racing the clients' settles (default: the driver's 1 h)",
    )
    p.add_argument(
        "--min-rounds",
        type=int,
        default=240,
        help="rounds (driver + clearing thread) the load phase must reach: it runs for --seconds and "
        "then on until this many have been cleared (default 240)",
    )
    p.add_argument(
        "--hang-seconds",
        type=float,
        default=None,
        help="clearing is reported hung if --min-rounds are not reached this long after the load "
        "started (default 5 x --seconds + 300)",
    )
    p.add_argument(
        "--simulate-doubt",
        type=float,
        default=0.01,
        help="fraction of successful deposits, withdrawals and settles whose answer the client "
        "forgets, so they are resolved like real in-doubt ones (the real ones are few and, "
        "after a fast shutdown, almost never committed)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--summary-json", help="also write the summary here as JSON")
    p.add_argument("--log-dir", help="where the driver log goes (default: a temporary directory)")
    return p.parse_args(argv)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_db(url: str, db: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{db}"


def main(argv=None) -> int:
    args = parse_args(argv)
    cleanup: list = []

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        return run(args, cleanup)
    finally:  # also on errors and ^C: stop the threads and never leave a driver behind
        for f in reversed(cleanup):
            with contextlib.suppress(Exception):
                f()


def run(args, cleanup: list) -> int:
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:8]
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="ca-stress-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    violations: list[str] = []
    summary: dict = {
        "seed": seed,
        "run": run_id,
        "seconds": args.seconds,
        "clients": args.clients,
        "agents": args.agents,
        "slots": args.slots,
        "log_dir": str(log_dir),
    }

    created_db = None
    if args.database_url:
        url = args.database_url
    else:
        created_db = f"stress_{run_id}"
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {created_db}")
        url = with_db(args.admin_url, created_db)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE EXTENSION compute_auction")
    summary["database_url"] = url

    agents = [f"sa-{run_id}-{i:03d}" for i in range(args.agents)]
    slots = [f"ss-{run_id}-{i:02d}" for i in range(args.slots)]
    with psycopg.connect(url, autocommit=True) as c:
        with c.transaction():
            for a in agents:
                c.execute("SELECT compute_auction.open_account(%s, 'agent', %s)", (a, INITIAL_TOKENS))
            for i, s in enumerate(slots):
                c.execute("SELECT compute_auction.offer_slot(%s, now(), %s)", (s, (i % 5) * 500))
        baseline = c.execute(
            "SELECT coalesce(sum(balance_tokens + held_tokens), 0)::bigint FROM compute_auction.token_accounts"
        ).fetchone()[0]

    port = args.driver_port or free_port()
    driver_log = log_dir / "driver.log"
    extra = ["--assignment-timeout", f"{args.assignment_timeout:g}"] if args.assignment_timeout else []
    driver = Driver(args.driver_bin, url, port, driver_log, extra)
    cleanup.append(driver.stop)
    cluster = Cluster(args.pg_data_dir, args.pg_bindir, args.pg_runas)
    print(
        f"compute_auction stress: {args.seconds:g} s, {args.clients} clients, {args.agents} accounts, "
        f"{args.slots} slots, seed {seed}, database {url}",
        flush=True,
    )
    driver.start()
    if not driver.wait_leader(60):
        violations.append(f"the driver did not start clearing within 60 s (log: {driver_log})")

    with psycopg.connect(url, autocommit=True) as c:
        r0, server_t0 = c.execute(
            "SELECT coalesce(max(round_id), 0), clock_timestamp() FROM compute_auction.compute_auction_rounds"
        ).fetchone()
        deadlocks0 = server_deadlocks(c)

    sh = Shared(args, url, run_id, agents, slots)
    cleanup.append(sh.stop.set)
    clients = [Client(sh, i, rng.randrange(2**31)) for i in range(args.clients)]
    clearer = Clearer(sh, rng.randrange(2**31))
    faults = Faults(sh, driver, cluster)
    for t in clients:
        t.start()
    clearer.start()
    faults.start()

    deadline = sh.t0 + args.seconds
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    # then on until clearing has made --min-rounds rounds, however long that takes
    hang_at = sh.t0 + (args.hang_seconds if args.hang_seconds is not None else 5 * args.seconds + 300)
    while (made := rounds_since(url, r0)) is None or made < args.min_rounds:
        if time.monotonic() > hang_at:
            violations.append(
                f"clearing made only {made} of --min-rounds {args.min_rounds} rounds in "
                f"{time.monotonic() - sh.t0:.0f} s (hung?)"
            )
            break
        time.sleep(1.0)
    sh.stop.set()
    load_elapsed = time.monotonic() - sh.t0
    faults.join(timeout=150)
    hung = []
    for t in clients + [clearer]:
        t.join(timeout=60)
        if t.is_alive():
            hung.append(t.name)
    if hung:
        violations.append(f"threads still running 60 s after the end (hung in a lock wait?): {hung}")
    if faults.is_alive():
        violations.append("the fault thread did not finish (pg_ctl restart hung?)")
    violations.extend(faults.errors)

    # the driver must be clearing again after its kill and the restart
    m_end = driver.metrics() or {}
    driver_alive = driver.alive()
    summary["driver"] = {
        "alive_at_end": driver_alive,
        "generation": driver.generation,
        "rounds_cleared_total_final_process": m_end.get("compute_auction_rounds_cleared_total"),
        "leader_at_end": m_end.get("compute_auction_leader"),
        "degraded_at_end": m_end.get("compute_auction_degraded"),
    }
    if not driver_alive:
        violations.append(f"the driver exited during the run (code {driver.proc.poll() if driver.proc else None})")
    elif m_end.get("compute_auction_leader") != 1:
        violations.append(f"the driver is not the clearing leader at the end: {m_end or 'no /metrics'}")
    if faults.pg_windows and driver_alive:
        before = faults.driver_rounds_after_restart or 0.0
        after = m_end.get("compute_auction_rounds_cleared_total", 0.0)
        summary["driver"]["rounds_after_pg_restart"] = after - before
        if after <= before:
            violations.append(f"the driver did not clear any round after the PostgreSQL restart ({before} -> {after})")
    driver.stop()

    # rounds per second over the load phase (driver + clearing thread), from the rounds table
    c = connect_retry(url)
    server_t1 = server_t0 + datetime.timedelta(seconds=load_elapsed)
    rounds, filled = c.execute(
        "SELECT count(*), coalesce(sum(slots_filled), 0) FROM compute_auction.compute_auction_rounds"
        " WHERE round_id > %s AND cleared_at BETWEEN %s AND %s",
        (r0, server_t0, server_t1),
    ).fetchone()
    span = (server_t1 - server_t0).total_seconds()
    windows = c.execute(
        "SELECT floor(extract(epoch FROM cleared_at - %s) / 5)::int AS w, count(*) FROM "
        "compute_auction.compute_auction_rounds"
        " WHERE round_id > %s AND cleared_at BETWEEN %s AND %s GROUP BY 1 ORDER BY 1",
        (server_t0, r0, server_t0, server_t1),
    ).fetchall()
    per_window = {w: n / 5.0 for w, n in windows}
    full_windows = [per_window.get(w, 0.0) for w in range(int(span // 5))]
    rps = rounds / span if span > 0 else 0.0
    summary["clearing"] = {
        "rounds": rounds,
        "seconds": round(span, 2),
        "min_rounds": args.min_rounds,
        "rounds_per_second": round(rps, 2),
        "slots_filled": int(filled),
        "min_5s_window_rounds_per_second": min(full_windows) if full_windows else None,
        "clearing_thread_rounds_ok": clearer.stats.ok["clear_round"] + clearer.stats.ok["run_cycle"],
    }

    check_everything(c, sh, clients, baseline, violations, summary)
    # the server's own count of deadlocks detected in this database (driver included)
    deadlocks1 = server_deadlocks(c)
    summary["server_deadlocks_in_database"] = deadlocks1 - deadlocks0
    if deadlocks1 != deadlocks0:
        violations.append(
            f"pg_stat_database.deadlocks of this database grew by {deadlocks1 - deadlocks0} during the run"
        )
    c.close()

    # errors: deadlocks, undocumented SQLSTATEs, connection errors outside the restart windows
    workers = clients + [clearer]
    errors = collections.Counter()
    by_op = collections.defaultdict(collections.Counter)
    ok = collections.Counter()
    lat = collections.defaultdict(list)
    conn_in, conn_out = 0, []
    wins = [(b - 0.2, e + args.restart_grace) for b, e in faults.pg_windows]
    for w in workers:
        ok.update(w.stats.ok)
        for (op, st), n in w.stats.errors.items():
            by_op[op][st] += n
            if st != CONN:
                errors[st] += n
        for op, xs in w.stats.latencies.items():
            lat[op].extend(xs)
        for t, op, msg, born in w.stats.conn_errors:
            # inside a window, or later on a connection opened before a window ended (the restart
            # killed it while it sat idle; the loss shows on its next use)
            if any(b <= t <= e or (born <= e and t >= b) for b, e in wins):
                conn_in += 1
            else:
                conn_out.append((round(t - sh.t0, 2), w.name, op, msg))
        for t, op, msg in w.stats.deadlocks:
            violations.append(f"deadlock (40P01) in {w.name} {op} at {t - sh.t0:.2f} s: {msg}")
        for t, op, st, msg in w.stats.unexpected[:20]:
            violations.append(f"unexpected error in {w.name} {op} at {t - sh.t0:.2f} s: SQLSTATE {st}: {msg}")
    for t in conn_out[:20]:
        violations.append(f"connection error outside the restart window: at {t[0]} s in {t[1]} {t[2]}: {t[3]}")
    if len(conn_out) > 20:
        violations.append(f"... and {len(conn_out) - 20} more connection errors outside the restart window")
    drv_codes, drv_lines = driver_log_errors(driver_log)
    summary["driver"]["errors_by_sqlstate"] = dict(drv_codes)
    for line in drv_lines:
        code = re.search(r"SQLSTATE ([0-9A-Z]{5})", line)
        code = code.group(1) if code else DEADLOCK
        if code == DEADLOCK or not (code in EXPECTED_SQLSTATES or code.startswith("08") or code.startswith("57P")):
            violations.append(f"driver log: {line}")

    total_ops = sum(ok.values()) + sum(n for w in workers for (op, st), n in w.stats.errors.items())
    client_ops = sum(n for cl in clients for n in cl.stats.ok.values()) + sum(
        n for cl in clients for n in cl.stats.errors.values()
    )
    summary["operations"] = {
        "client_calls": client_ops,
        "client_calls_per_second": round(client_ops / load_elapsed, 1),
        "all_calls_incl_clearing_thread": total_ops,
        "load_seconds": round(load_elapsed, 2),
    }
    summary["by_op"] = {
        op: {
            "ok": ok[op],
            "errors": dict(by_op[op]),
            "p50_ms": round(pct(lat[op], 0.5) * 1000, 1),
            "p99_ms": round(pct(lat[op], 0.99) * 1000, 1),
            "max_ms": round(max(lat[op], default=0) * 1000, 1),
        }
        for op in sorted(set(ok) | set(by_op))
    }
    summary["errors_by_sqlstate"] = dict(sorted(errors.items()))
    summary["errors_by_sqlstate"]["connection (restart window)"] = conn_in
    summary["errors_by_sqlstate"]["connection (outside)"] = len(conn_out)
    summary["errors_by_sqlstate"]["40P01 deadlock"] = errors.get(DEADLOCK, 0)
    summary["faults"] = faults.events
    if not args.no_driver_kill and not any(e["event"] == "driver restarted" for e in faults.events):
        violations.append("the driver was not killed and restarted during the run")
    if not args.no_pg_restart and not any(e["event"] == "PostgreSQL fast restart" for e in faults.events):
        violations.append("PostgreSQL was not restarted during the run")
    summary["violations"] = violations
    summary["passed"] = not violations

    print_summary(summary)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2, default=str))

    if created_db and (args.keep_db == "never" or (args.keep_db == "on-failure" and not violations)):
        try:
            with connect_retry(args.admin_url) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {created_db} WITH (FORCE)")
        except psycopg.Error as e:
            print(f"(could not drop {created_db}: {e})")
    elif created_db:
        print(f"database kept for investigation: {url}")
    return 0 if not violations else 1


def print_summary(s: dict) -> None:
    o, cl = s["operations"], s["clearing"]
    print(
        "\nfaults: "
        + "; ".join(
            f"{e['event']} at {e['at_s']} s" + (f" ({e['took_s']} s)" if "took_s" in e else "") for e in s["faults"]
        )
        or "none"
    )
    print(
        f"operations: {o['client_calls']} client calls in {o['load_seconds']} s = {o['client_calls_per_second']} ops/s"
    )
    print(f"  {'op':<18}{'ok':>8}  {'p50 ms':>7}{'p99 ms':>8}{'max ms':>9}  errors")
    for op, v in s["by_op"].items():
        print(f"  {op:<18}{v['ok']:>8}  {v['p50_ms']:>7}{v['p99_ms']:>8}{v['max_ms']:>9}  {v['errors'] or ''}")
    print(
        f"clearing: {cl['rounds']} rounds in {cl['seconds']} s = {cl['rounds_per_second']} rounds/s "
        f"(min over 5 s windows {cl['min_5s_window_rounds_per_second']}/s), {cl['slots_filled']} slots filled"
    )
    print(f"errors by SQLSTATE: {s['errors_by_sqlstate']}")
    print(f"driver: {s['driver']}")
    print(f"in doubt (at the restart, and simulated), resolved by lookup: {s.get('in_doubt', {})}")
    b = s.get("books", {})
    print(
        f"books: sum(balance+held) = {b.get('actual_total')}, clients' books = {b.get('expected_total')} "
        f"(after setup {b.get('total_after_setup')} + deposits {b.get('deposits')} - withdrawals "
        f"{b.get('withdrawals')} "
        f"- charges {b.get('charges')})"
    )
    print(f"clears: {s.get('clears')}; bids: {s.get('bids')}; audit rows: {len(s.get('audit_rows', []))}")
    print(f"wallet holds: {s.get('wallet_holds')}; pending entries at the end: {s.get('pending_entries_at_end')}")
    if s["violations"]:
        print(f"\nFAILED: {len(s['violations'])} violation(s):")
        for v in s["violations"]:
            print(f"  - {v}")
    else:
        print(
            "\nPASSED: audit clean, books balance to the token, no slot assigned twice, no deadlock, "
            "only documented errors"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
