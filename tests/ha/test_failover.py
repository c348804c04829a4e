"""Issue 22: automatic failover on pg_auto_failover with nothing acknowledged lost, checked the
way Jepsen checks databases: by the clients' own books, not the system's.

The fixture builds a formation from nothing (formation.py: monitor + primary + synchronous
secondary, tuned timeouts, pg_cron preloaded on both data nodes), installs the extension and
docs/roles.sql on the primary, and tears everything down at the end, also on failure.

The test runs, against the formation's multi-host URI (target_session_attrs=read-write):
- `compute-auction-driver serve` (interval 1 s), connected as an operator login;
- 8 load clients (threads, one connection each, reconnecting through the same URI) placing
  bids (a new task id for every placement), replacing and cancelling them, depositing and
  withdrawing with idempotency keys, claiming and settling won slots. Every operation is one
  explicit transaction: the statement, then COMMIT. A client books an operation only once its
  COMMIT returned without the "might not have been replicated" WARNING (caught with psycopg's
  notice handler). An operation whose COMMIT broke (or warned) is IN DOUBT: never retried, and
  resolved after the run from the server's state (deposit/withdraw by idempotency key,
  place_bid by (bidder_id, task_id), a replace by the bid's price (each replace changes it), a
  cancel by the bid's status, a claim by the clear's claimed_at, a settle by the clear's status
  and its unique actual_cost_tokens tag);
- three failovers, each a SIGKILL of the whole primary node (pg_autoctl supervisor, its
  children and the postmaster); the old primary is then started again and must rejoin as
  secondary before the next one. After each kill, clearing must resume on the new primary
  before a 90 s deadline (the gap is printed, never asserted); after the first, pg_cron's
  schedule_clearing() job must run on the new primary (Debian's pg_cron fires once a minute).

At the end, after run_cycle() on the final primary: every acknowledged operation is there; the
sum of balance + held over all accounts equals the setup total + deposits − withdrawals −
charges by the clients' books, to the token; audit() is empty; no slot was assigned twice and
no bid won twice; every error a client saw was a connection error during a failover or a
SQLSTATE documented in docs/SQL_API.md ("Errors and SQLSTATEs").

No rate or duration is asserted: the deadlines only detect a hang.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import itertools
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from formation import Formation, wait_for

ROOT = Path(__file__).resolve().parents[2]
DB = "compute_auction_ha"
CLIENTS = 8
AGENTS = 32
SLOTS = 12
INITIAL = 1_000_000
FAILOVERS = 3
RESUME_DEADLINE = 90.0  # s from a kill to the first round on the new primary: detects a hang only
CRON_DEADLINE = 180.0  # s; pg_cron fires once a minute
JOB = f"compute_auction_clearing:{DB}"
UNREPLICATED = "might not have been replicated"
UTC = datetime.UTC


def documented_sqlstates() -> set[str]:
    """The SQLSTATEs of docs/SQL_API.md's "Errors and SQLSTATEs" table (the extension's), and the
    ones it names there as PostgreSQL's own that a client may see (40P01, 57014)."""
    text = (ROOT / "docs" / "SQL_API.md").read_text()
    section = text.split("## Errors and SQLSTATEs", 1)[1].split("\n## ", 1)[0]
    codes = set(re.findall(r"^\| `([0-9A-Z]{5})` \|", section, re.M))
    codes |= set(re.findall(r"`([0-9A-Z]{5})`\s+\((?:deadlock|statement timeout)\)", section))
    assert {"23514", "55000", "55P03", "P0002"} <= codes, codes
    return codes


def is_connection_error(e: BaseException, conn) -> bool:
    if isinstance(e, psycopg.InterfaceError):
        return True
    st = getattr(e, "sqlstate", None)
    if st is None:
        return isinstance(e, psycopg.OperationalError) or (conn is not None and (conn.closed or conn.broken))
    return st.startswith("08") or st in ("57P01", "57P02", "57P03")


def free_ports(n: int) -> list[int]:
    """n free ports: CA_HA_BASE_PORT, +1, ... when set, else ones the kernel picks."""
    if os.environ.get("CA_HA_BASE_PORT"):
        base = int(os.environ["CA_HA_BASE_PORT"])
        return list(range(base, base + n))
    out, socks = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        out.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return out


# ----------------------------------------------------------------------------- the formation --


@pytest.fixture(scope="module")
def formation():
    base = ROOT / "target" / f"ha-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    ports = free_ports(4)
    f = Formation(base, (ports[0], ports[1], ports[2]), DB)
    f.http_port = ports[3]
    try:
        f.build(
            [
                "shared_preload_libraries = 'pg_cron'",
                f"cron.database_name = '{DB}'",
                "cron.use_background_workers = on",
                "max_worker_processes = 16",
                "max_connections = 100",
                # the clone's pg_basebackup and each rejoin wait for a checkpoint: keep them short
                "checkpoint_timeout = '30s'",
                "log_min_messages = warning",
            ]
        )
        primary, _ = f.wait_healthy()
        with psycopg.connect(f.node_url(primary), autocommit=True) as c:
            c.execute("CREATE EXTENSION compute_auction")
            c.execute((ROOT / "docs" / "roles.sql").read_text())
            c.execute("CREATE ROLE ha_driver LOGIN IN ROLE compute_auction_operator")
            c.execute("CREATE ROLE ha_client LOGIN IN ROLE compute_auction_operator")
            c.execute("CREATE EXTENSION pg_cron")
        print("formation:", "; ".join(f.events), "| pg_autoctl show uri:", f.show_uri().strip())
        yield f
    finally:
        f.teardown()
        for n in f.nodes.values():  # keep the logs (target/ha-<pid>/logs), not the data
            shutil.rmtree(n.pgdata, ignore_errors=True)
        shutil.rmtree(f.monitor_pgdata, ignore_errors=True)


# ---------------------------------------------------------------------------- client books --


@dataclass
class Op:
    kind: str  # place, replace, cancel, deposit, withdraw, claim, settle
    args: dict
    state: str = "pending"  # acked / failed / doubt, then doubt -> applied / not_applied
    result: object = None
    t0: float = 0.0
    t1: float = 0.0
    warned: bool = False  # the COMMIT returned the "might not have been replicated" WARNING


@dataclass
class Book:
    ops: list[Op] = field(default_factory=list)
    errors: collections.Counter = field(default_factory=collections.Counter)  # sqlstate -> n
    conn_errors: list = field(default_factory=list)  # (time, op kind, message, connection born)
    unexpected: list = field(default_factory=list)


class Client(threading.Thread):
    def __init__(self, cid: int, uri: str, agents: list[str], slots: list[str], stop: threading.Event, seed: int):
        super().__init__(name=f"client{cid}", daemon=True)
        self.cid, self.uri, self.agents, self.slots, self.stop = cid, uri, agents, slots, stop
        self.rng = random.Random(seed)
        self.seq = itertools.count(1)
        self.book = Book()
        self.conn: psycopg.Connection | None = None
        self.born = 0.0
        self.warned = False
        self.open_bids: dict[str, dict] = {}  # task -> {"bidder", "bid_id", "price"}: own, last op acked

    # -- connection --
    def on_notice(self, diag) -> None:
        if UNREPLICATED in (diag.message_detail or "") or UNREPLICATED in (diag.message_primary or ""):
            self.warned = True

    def connect(self) -> bool:
        while not self.stop.is_set():
            try:
                self.conn = psycopg.connect(self.uri, application_name=f"ha-{self.name}")
                self.conn.add_notice_handler(self.on_notice)
                self.born = time.monotonic()
                return True
            except psycopg.Error as e:
                now = time.monotonic()
                self.book.conn_errors.append((now, "connect", str(e).strip()[:200], now))
                time.sleep(0.2)
        return False

    def drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    def do(self, kind: str, sql: str, params: tuple, **args) -> Op:
        """One operation: the statement, then COMMIT. acked only when the COMMIT returned without
        the unreplicated WARNING; doubt when the COMMIT broke or warned; failed otherwise."""
        op = Op(kind, args, t0=time.monotonic())
        self.book.ops.append(op)
        if self.conn is None and not self.connect():
            op.state = "failed"  # never sent: the run is over
            return op
        phase = "statement"
        try:
            rows = self.conn.execute(sql, params).fetchall()
            phase = "commit"
            self.warned = False
            self.conn.commit()
            op.t1 = time.monotonic()
            if self.warned:
                op.state, op.warned = "doubt", True
            else:
                op.state, op.result = "acked", rows
        except psycopg.Error as e:
            op.t1 = time.monotonic()
            if is_connection_error(e, self.conn):
                self.book.conn_errors.append((op.t1, kind, str(e).strip()[:200], self.born))
                op.state = "doubt" if phase == "commit" else "failed"
                self.drop()
            else:
                # the server refused the statement (or the COMMIT of a failed transaction): no effect
                op.state = "failed"
                op.result = e.sqlstate
                self.book.errors[e.sqlstate or "?"] += 1
                with contextlib.suppress(psycopg.Error):
                    self.conn.rollback()
        return op

    # -- operations --
    def run(self) -> None:
        kinds = ["place", "replace", "cancel", "deposit", "withdraw", "claim_settle"]
        weights = [25, 10, 8, 10, 8, 25]
        try:
            while not self.stop.is_set():
                getattr(self, "op_" + self.rng.choices(kinds, weights)[0])()
                time.sleep(0.005)
        except Exception as e:  # a bug here must fail the test, loudly
            self.book.unexpected.append(f"{self.name} crashed: {e!r}")
            raise
        finally:
            self.drop()

    PLACE = "SELECT compute_auction.place_bid(%s, %s, %s::bigint)"

    def op_place(self) -> None:
        bidder, task = self.rng.choice(self.agents), f"ha-c{self.cid}-t{next(self.seq)}"
        price = self.rng.randint(1, 5000)
        op = self.do("place", self.PLACE, (bidder, task, price), bidder=bidder, task=task, price=price)
        if op.state == "acked":
            self.open_bids[task] = {"bidder": bidder, "bid_id": op.result[0][0], "price": price}
            op.args["bid_id"] = op.result[0][0]

    def op_replace(self) -> None:
        if not self.open_bids:
            return self.op_place()
        task = self.rng.choice(list(self.open_bids))
        b = self.open_bids[task]
        price = b["price"] + self.rng.choice([-1, 1]) * self.rng.randint(1, 500)
        if price < 1:
            price = b["price"] + 1
        op = self.do(
            "replace",
            self.PLACE,
            (b["bidder"], task, price),
            bidder=b["bidder"],
            task=task,
            price=price,
            old=b["price"],
        )
        op.args["bid_id"] = b["bid_id"]
        if op.state == "acked":
            # the same id (replaced in place), or a new bid when the old one is no longer live
            # (it won and was settled, or expired) and the task was free again
            op.args["new_id"] = b["bid_id"] = op.result[0][0]
            b["price"] = price
        else:
            self.open_bids.pop(task)  # won (55000), unaffordable, or in doubt: leave it alone

    def op_cancel(self) -> None:
        if not self.open_bids:
            return self.op_place()
        task = self.rng.choice(list(self.open_bids))
        b = self.open_bids.pop(task)
        self.do("cancel", "SELECT compute_auction.cancel_bid(%s)", (b["bid_id"],), **b, task=task)

    def money(self, kind: str) -> None:
        account = self.rng.choice(self.agents)
        amount = self.rng.randint(1, 20_000)
        if kind == "withdraw" and self.rng.random() < 0.05:
            amount = 10**12  # more than any wallet holds: 23514
        key = f"ha-{kind}-c{self.cid}-{next(self.seq)}"
        self.do(
            kind,
            f"SELECT compute_auction.{kind}(%s, %s::bigint, %s, %s)",  # kind: deposit or withdraw
            (account, amount, f"ha {kind}", key),
            account=account,
            amount=amount,
            key=key,
        )

    def op_deposit(self) -> None:
        self.money("deposit")

    def op_withdraw(self) -> None:
        self.money("withdraw")

    def op_claim_settle(self) -> None:
        slot = self.rng.choice(self.slots)
        op = self.do("claim", "SELECT bid_id FROM compute_auction.claim_slot(%s)", (slot,), slot=slot)
        if op.state != "acked" or not op.result:
            return
        op.args["bid_id"] = op.result[0][0]
        tag = 10_000_000 * (self.cid + 1) + next(self.seq)  # unique: actual_cost_tokens identifies the settle
        s = self.do(
            "settle",
            "SELECT compute_auction.settle(%s, %s::bigint, %s::float8)",
            (slot, tag, self.rng.uniform(0, 10)),
            slot=slot,
            tag=tag,
            bid_id=op.args["bid_id"],
        )
        if s.state == "acked":
            s.args["charged"] = s.result[0][0]


# --------------------------------------------------------------------------------- helpers --


def driver_metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def first_round_after(f: Formation, since: datetime.datetime):
    """cleared_at of the first round after `since`, on the current primary (None: not yet)."""
    p = f.primary()
    if p is None:
        return None
    with psycopg.connect(f.node_url(p), autocommit=True) as c:
        return c.execute(
            "SELECT min(cleared_at) FROM compute_auction.compute_auction_rounds WHERE cleared_at > %s", (since,)
        ).fetchone()[0]


def cron_run_after(f: Formation, since: datetime.datetime):
    """A succeeded run of the clearing job that started after `since`, on the current primary."""
    p = f.primary()
    if p is None:
        return None
    with psycopg.connect(f.node_url(p), autocommit=True) as c:
        return c.execute(
            "SELECT d.start_time, d.return_message FROM cron.job_run_details d JOIN cron.job j USING (jobid)"
            " WHERE j.jobname = %s AND d.status = 'succeeded' AND d.start_time > %s ORDER BY d.start_time LIMIT 1",
            (JOB, since),
        ).fetchone()


# ------------------------------------------------------------------------------------ test --


def test_failover_loses_nothing_acknowledged(formation, tmp_path):
    f = formation
    t_start = time.monotonic()
    documented = documented_sqlstates()
    primary, _ = f.wait_healthy()
    agents = [f"ha-agent-{i:02d}" for i in range(AGENTS)]
    slots = [f"ha-slot-{i:02d}" for i in range(SLOTS)]
    with psycopg.connect(f.node_url(primary), autocommit=True) as c:
        with c.transaction():
            for a in agents:
                c.execute("SELECT compute_auction.open_account(%s, 'agent', %s::bigint)", (a, INITIAL))
            for i, s in enumerate(slots):
                c.execute("SELECT compute_auction.offer_slot(%s, now(), %s::bigint)", (s, (i % 4) * 100))
        baseline = c.execute("SELECT sum(balance_tokens + held_tokens)::bigint FROM compute_auction.token_accounts")
        baseline = baseline.fetchone()[0]
        job_id = c.execute("SELECT compute_auction.schedule_clearing()").fetchone()[0]
    assert baseline == AGENTS * INITIAL

    driver_bin = os.environ.get("CA_DRIVER_BIN", str(ROOT / "target" / "release" / "compute-auction-driver"))
    assert Path(driver_bin).exists(), f"driver binary missing: {driver_bin}"
    driver_log = tmp_path / "driver.log"
    with open(driver_log, "wb") as log:
        driver = subprocess.Popen(
            [driver_bin, "serve", "--interval", "1s", "--max-backoff", "1s", "--listen", f"127.0.0.1:{f.http_port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DATABASE_URL": f.uri("ha_driver"), "RUST_LOG": "info", "NO_COLOR": "1"},
        )
    stop = threading.Event()
    clients = [
        Client(i, f.uri("ha_client"), agents, slots, stop, seed)
        for i, seed in enumerate(random.sample(range(10**6), CLIENTS))
    ]
    windows: list[list[float]] = []  # [kill, healthy again] per failover (monotonic)
    report: dict = {"failovers": [], "cron": None}
    try:
        wait_for(lambda: driver_metrics(f.http_port).get("compute_auction_rounds_cleared_total", 0) >= 1, 60, "a round")
        for cl in clients:
            cl.start()
        time.sleep(8)  # load before the first kill

        for n in range(1, FAILOVERS + 1):
            old, _ = f.wait_healthy()
            time.sleep(2)
            killed_at_wall = datetime.datetime.now(UTC)
            killed_at = time.monotonic()
            windows.append([killed_at, float("inf")])
            f.kill_node(old)
            new = wait_for(
                lambda o=old: (p := f.primary()) is not None and p.name != o.name and p,
                RESUME_DEADLINE,
                f"a new primary after killing {old.name}",
            )
            promoted = time.monotonic() - killed_at
            resumed = wait_for(
                lambda t=killed_at_wall: first_round_after(f, t),
                max(1.0, RESUME_DEADLINE - (time.monotonic() - killed_at)),
                f"clearing to resume after killing {old.name}",
            )
            gap = (resumed - killed_at_wall).total_seconds()
            assert gap < RESUME_DEADLINE, gap
            f.restart_node(old)
            f.wait_healthy(120)
            healthy = time.monotonic() - killed_at
            windows[-1][1] = time.monotonic()
            entry = {
                "n": n,
                "killed": old.name,
                "new_primary": new.name,
                "promoted_after_s": round(promoted, 1),
                "clearing_gap_s": round(gap, 1),
                "formation_healthy_after_s": round(healthy, 1),
            }
            report["failovers"].append(entry)
            print(f"failover {n}: {entry}", flush=True)
            if n == 1:
                # pg_cron's job is in the replicated catalog; pg_cron runs jobs only on a primary
                run = wait_for(
                    lambda t=killed_at_wall: cron_run_after(f, t), CRON_DEADLINE, "pg_cron's job on the new primary"
                )
                report["cron"] = {
                    "job_id": job_id,
                    "first_run_after_failover_s": round((run[0] - killed_at_wall).total_seconds(), 1),
                    "on": new.name,
                    "return_message": run[1],
                }
                print(f"pg_cron after failover 1: {report['cron']}", flush=True)
            time.sleep(6)  # load on the healthy formation before the next kill
    finally:
        stop.set()
        for cl in clients:
            cl.join(60)
        drv_metrics = driver_metrics(f.http_port)
        driver.send_signal(signal.SIGTERM)
        try:
            driver.wait(40)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait(10)
    assert not [cl.name for cl in clients if cl.is_alive()], "clients hung"
    load_seconds = time.monotonic() - t_start

    primary, _ = f.wait_healthy()
    violations: list[str] = []
    with psycopg.connect(f.node_url(primary), autocommit=True) as c:
        # the cycle applies every pending wallet entry (a winner may have held its wallet)
        c.execute("SELECT compute_auction.run_cycle()")
        left = c.execute("SELECT count(*) FROM compute_auction.pending_entries").fetchone()[0]
        if left:
            violations.append(f"{left} pending wallet entries left after run_cycle()")
        summary = check_books(c, clients, baseline, violations)
        audit = c.execute("SELECT check_name, detail FROM compute_auction.audit()").fetchall()
        if audit:
            violations.append(f"audit() returned {audit[:10]}")
        check_slots(c, violations)

    # errors: connection errors only during a failover, SQLSTATEs only documented ones
    grace = 5.0
    wins = [(b - 0.5, e + grace) for b, e in windows]
    conn_in, conn_out, sqlstates = 0, [], collections.Counter()
    for cl in clients:
        violations += cl.book.unexpected
        sqlstates.update(cl.book.errors)
        for t, kind, msg, born in cl.book.conn_errors:
            if any(b <= t <= e or (born <= e and t >= b) for b, e in wins):
                conn_in += 1
            else:
                conn_out.append((round(t - t_start, 1), kind, msg))
    for x in conn_out[:10]:
        violations.append(f"connection error outside a failover: {x}")
    undocumented = {k: v for k, v in sqlstates.items() if k not in documented}
    if undocumented:
        violations.append(f"undocumented SQLSTATEs seen by clients: {undocumented}")
    drv_lines = [ln for ln in driver_log.read_text(errors="replace").splitlines() if "SQLSTATE" in ln]
    for ln in drv_lines:
        code = re.search(r"SQLSTATE ([0-9A-Z]{5})", ln).group(1)
        if not (code in documented or code.startswith("08") or code.startswith("57P")):
            violations.append(f"driver log: {ln[:300]}")

    report.update(summary)
    report["errors"] = {"sqlstates": dict(sqlstates), "connection_in_failovers": conn_in, "outside": len(conn_out)}
    report["driver"] = {
        k.replace("compute_auction_", ""): drv_metrics.get(k)
        for k in (
            "compute_auction_rounds_cleared_total",
            "compute_auction_commits_in_doubt_total",
            "compute_auction_leadership_acquired_total",
            "compute_auction_database_unavailable_total",
        )
    }
    report["seconds"] = round(load_seconds, 1)
    print("\n=== HA failover test ===")
    for k, v in report.items():
        print(f"{k}: {v}")
    print(f"violations: {violations or 'none'}", flush=True)

    assert len(report["failovers"]) == FAILOVERS
    assert report["cron"] is not None
    assert summary["acked"]["deposit"] > 0 and summary["acked"]["settle"] > 0 and summary["acked"]["place"] > 0
    assert conn_in > 0, "the failovers broke no client connection: did they happen?"
    assert violations == [], "\n".join(violations)


# ------------------------------------------------------------------------------ the checks --


def check_books(c: psycopg.Connection, clients: list[Client], baseline: int, violations: list[str]) -> dict:
    """Resolves every in-doubt operation from the server's state, checks every acknowledged one,
    and the money: sum(balance + held) = baseline + deposits - withdrawals - charges."""
    ledger = {
        (kind, key): (acct, n, delta)
        for kind, key, acct, n, delta in c.execute(
            "SELECT entry_kind, idempotency_key, min(account_id), count(*), sum(delta_balance)::bigint"
            "  FROM compute_auction.token_ledger WHERE idempotency_key LIKE 'ha-%' GROUP BY 1, 2"
        )
    }
    bids = collections.defaultdict(list)  # (bidder, task) -> [(id, price, status)]
    bid_by_id = {}
    for bid_id, bidder, task, price, status in c.execute(
        "SELECT id, bidder_id, task_id, max_price_tokens, status::text FROM compute_auction.compute_auction_bids"
    ):
        bids[(bidder, task)].append((bid_id, price, status))
        bid_by_id[bid_id] = (bid_id, price, status)
    clears = c.execute(
        "SELECT slot_id, bid_id, status::text, actual_cost_tokens, clearing_price_tokens, claimed_at"
        "  FROM compute_auction.compute_auction_clears"
    ).fetchall()
    by_tag = {(r[0], r[3]): r for r in clears if r[3] is not None}
    by_slot_bid = {(r[0], r[1]): r for r in clears}
    won = {r[1] for r in clears}
    money = {"deposit": 0, "withdraw": 0, "charge": 0}
    acked, doubt = collections.Counter(), collections.Counter()
    seen_keys = set()
    for cl in clients:
        for op in cl.book.ops:
            a = op.args
            if op.state == "doubt":
                doubt[op.kind + (" (warned)" if op.warned else "")] += 1
            if op.kind in ("deposit", "withdraw"):
                seen_keys.add((op.kind, a["key"]))
                row = ledger.get((op.kind, a["key"]))
                if op.state == "doubt":
                    op.state = "applied" if row else "not_applied"
                if op.state in ("acked", "applied"):
                    sign = 1 if op.kind == "deposit" else -1
                    if row != (a["account"], 1, sign * a["amount"]):
                        violations.append(f"{op.state} {op.kind} {a['key']}: ledger has {row}")
                        continue
                    money[op.kind] += a["amount"]
                elif row is not None:
                    violations.append(f"failed {op.kind} {a['key']} has a ledger row {row}")
            elif op.kind == "place":
                # a new task: this bid, and the bids of later replaces once it was no longer live
                rows = bids.get((a["bidder"], a["task"]), [])
                if op.state == "doubt":
                    op.state = "applied" if rows else "not_applied"
                if op.state == "acked" and a["bid_id"] not in [r[0] for r in rows]:
                    violations.append(f"acknowledged place_bid {a} is not in compute_auction_bids: {rows}")
                if op.state in ("failed", "not_applied") and rows:
                    violations.append(f"place_bid {a} {op.state} but the bid exists: {rows}")
            elif op.kind == "replace":
                rows = bids.get((a["bidder"], a["task"]), [])
                if op.state == "doubt":  # every replace changes the price
                    mine = [r for r in rows if r[0] >= a["bid_id"]]
                    op.state = "applied" if any(r[1] == a["price"] for r in mine) else "not_applied"
                if op.state == "acked" and a["new_id"] not in [r[0] for r in rows]:
                    violations.append(f"acknowledged replace {a}: bid rows {rows}")
            elif op.kind == "cancel":
                row = bid_by_id.get(a["bid_id"])
                if op.state == "doubt":
                    op.state = "applied" if row and row[2] == "cancelled" else "not_applied"
                if op.state == "acked" and (row is None or row[2] != "cancelled" or a["bid_id"] in won):
                    violations.append(f"acknowledged cancel of bid {a['bid_id']}: {row}, won: {a['bid_id'] in won}")
            elif op.kind == "claim":
                if op.state == "doubt":
                    op.state = (
                        "applied" if any(r[0] == a["slot"] and r[5] is not None for r in clears) else "not_applied"
                    )
                if op.state == "acked" and op.result:
                    r = by_slot_bid.get((a["slot"], a["bid_id"]))
                    if r is None or r[5] is None:
                        violations.append(f"acknowledged claim of {a['slot']} (bid {a['bid_id']}): clear {r}")
            elif op.kind == "settle":
                r = by_tag.get((a["slot"], a["tag"]))
                if op.state == "doubt":
                    op.state = "applied" if r and r[2] == "settled" else "not_applied"
                    if r:
                        a["charged"] = r[4]
                if op.state in ("acked", "applied"):
                    if r is None or r[2] != "settled" or r[4] != a["charged"] or r[1] != a["bid_id"]:
                        violations.append(f"{op.state} settle {a}: clear {r}")
                        continue
                    money["charge"] += a["charged"]
                elif r is not None:
                    violations.append(f"failed settle {a} but the clear has its tag: {r}")
            if op.state == "acked":
                acked[op.kind] += 1
    # every bid's price is the last one a client had acknowledged for it (a replace in doubt
    # ends the client's use of that task, so nothing acknowledged comes after it)
    last_price: dict[int, int | None] = {}
    for cl in clients:
        for op in cl.book.ops:
            if op.kind == "place" and op.state == "acked":
                last_price[op.args["bid_id"]] = op.args["price"]
            elif op.kind == "replace" and op.state == "acked":
                last_price[op.args["new_id"]] = op.args["price"]
            elif op.kind == "replace" and op.state in ("applied", "not_applied"):
                last_price[op.args["bid_id"]] = None  # either price may stand
    for bid_id, price in last_price.items():
        if price is not None and bid_by_id.get(bid_id, (None, None))[1] != price:
            violations.append(f"bid {bid_id}: last acknowledged price {price}, the server has {bid_by_id.get(bid_id)}")
    for k in ledger:
        if k[0] in ("deposit", "withdraw") and k not in seen_keys:
            violations.append(f"ledger has {k} that no client made")
    tags = {(a.args["slot"], a.args["tag"]) for cl in clients for a in cl.book.ops if a.kind == "settle"}
    for k, r in by_tag.items():
        if k not in tags:
            violations.append(f"a settled clear no client settled: {r}")
    resolved = collections.Counter(
        f"{op.kind} {op.state}" for cl in clients for op in cl.book.ops if op.state in ("applied", "not_applied")
    )
    total = c.execute("SELECT sum(balance_tokens + held_tokens)::bigint FROM compute_auction.token_accounts")
    total = total.fetchone()[0]
    expected = baseline + money["deposit"] - money["withdraw"] - money["charge"]
    if total != expected:
        violations.append(
            f"money: sum(balance + held) = {total}, the clients' books say {expected} "
            f"({baseline} + {money['deposit']} - {money['withdraw']} - {money['charge']}): off by {total - expected}"
        )
    return {
        "acked": dict(acked),
        "in_doubt": dict(doubt),
        "in_doubt_resolved": dict(resolved),
        "books": {**money, "baseline": baseline, "expected_total": expected, "actual_total": total},
    }


def check_slots(c: psycopg.Connection, violations: list[str]) -> None:
    """No slot assigned twice (at most one 'assigned' clear per slot, lifetimes that do not
    overlap), no bid won twice, each clear's bid in the matching state."""
    rows = c.execute(
        "SELECT c.slot_id, c.round_id, c.bid_id, c.status::text, c.slot_started_at, c.slot_finished_at, b.status::text"
        "  FROM compute_auction.compute_auction_clears c JOIN compute_auction.compute_auction_bids b ON b.id = c.bid_id"
        " ORDER BY c.slot_id, c.round_id"
    ).fetchall()
    want = {"assigned": "won", "settled": "settled", "aborted": "aborted"}
    per_slot, per_bid = collections.defaultdict(list), collections.Counter()
    for r in rows:
        per_slot[r[0]].append(r)
        per_bid[r[2]] += 1
        if want.get(r[3]) != r[6]:
            violations.append(f"clear {r[:4]} but its bid is {r[6]}")
    violations += [f"bid {b} won {n} clears" for b, n in per_bid.items() if n > 1]
    for slot, rs in per_slot.items():
        if sum(r[3] == "assigned" for r in rs) > 1:
            violations.append(f"slot {slot} has several assigned clears: {rs}")
        for prev, nxt in itertools.pairwise(rs):
            if prev[5] is None or nxt[4] < prev[5]:
                violations.append(f"slot {slot} assigned twice: {prev[:6]} overlaps {nxt[:6]}")
