"""pytest harness: a private PostgreSQL cluster (started by scripts/test.sh) with the installed
compute_auction extension, used the way an existing Python application uses it: psycopg 3.

Fixtures
- cluster:       the private cluster (url(), restart(), stop(), start())
- fresh_db_url:  URL of a brand-new database with the extension (cloned from a template)
- conn:          autocommit psycopg connection to that database
- driver_bin:    path of the release driver binary
- free_port:     a free TCP port on 127.0.0.1
- market:        a helpers.Market client on `conn`; ten_bids (the acceptance scenario's book)
                 and one_win (one slot won by alice's 300 against bob's 200) on top of it
- drivers:       factory of running `compute-auction-driver serve` processes (Driver), all
                 stopped at teardown; Driver itself for fixtures of a wider scope
Helpers: sqlstate_of(), snapshot(), assert_audit_clean(), wait_until(), http(), http_json(),
metrics(), free_tcp_port().

Deadlines in these helpers only detect a hang: they are many times the normal time, and no
test asserts how fast something happened or how many things happened in a time window.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest

from helpers import FIVE_SLOTS, PLACING_ORDER, TEN_TTL, Market

ROOT = Path(__file__).resolve().parent.parent


class Cluster:
    def __init__(self) -> None:
        self.port = int(os.environ.get("CA_TEST_PORT", "28826"))
        self.data_dir = os.environ.get("CA_TEST_DATA_DIR", str(ROOT / "target" / "pgdata-test"))
        self.bindir = os.environ.get("CA_PG_BINDIR", "/usr/lib/postgresql/15/bin")
        self.runas = os.environ.get("CA_PG_RUNAS", "postgres")

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def _pg_ctl(self, *args: str) -> None:
        cmd = ["sudo", "-u", self.runas, "--", f"{self.bindir}/pg_ctl", "-D", self.data_dir, *args]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        self._pg_ctl("-l", f"{self.data_dir}/server.log", "-w", "-t", "60", "start")

    def restart(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "-t", "60", "-l", f"{self.data_dir}/server.log", "restart")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)


# One template per pytest process, so concurrent pytest runs on one cluster don't collide.
TEMPLATE = f"ca_template_{os.getpid()}"


@pytest.fixture(scope="session")
def cluster():
    c = Cluster()
    c.wait_ready()
    with psycopg.connect(c.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {TEMPLATE}")
    with psycopg.connect(c.url(TEMPLATE), autocommit=True) as t:
        t.execute("CREATE EXTENSION compute_auction")
    yield c
    try:
        c.wait_ready()
        with psycopg.connect(c.url(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
    except psycopg.Error:
        pass


def new_database(cluster: Cluster, with_extension: bool = True) -> str:
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        if with_extension:
            admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        else:
            admin.execute(f"CREATE DATABASE {name}")
    return name


def drop_database(cluster: Cluster, name: str) -> None:
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except psycopg.OperationalError:
        pass  # the cluster may be down at the end of a fault test


@pytest.fixture
def fresh_db(cluster: Cluster):
    name = new_database(cluster)
    yield name
    drop_database(cluster, name)


@pytest.fixture
def fresh_db_url(cluster: Cluster, fresh_db: str) -> str:
    return cluster.url(fresh_db)


@pytest.fixture
def conn(fresh_db_url: str):
    with psycopg.connect(fresh_db_url, autocommit=True) as c:
        yield c


@pytest.fixture
def driver_bin() -> str:
    path = os.environ.get("CA_DRIVER_BIN", str(ROOT / "target" / "release" / "compute-auction-driver"))
    assert Path(path).exists(), f"driver binary missing: {path} (scripts/test.sh builds it)"
    return path


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    return free_tcp_port()


# ------------------------------------------------------------------ the driver --


def core_lock_key(name: str) -> int:
    """An advisory-lock key of compute_auction_core::limits::locks (extension/core/src/limits.rs),
    the one place the extension and the driver take them from."""
    text = (ROOT / "extension" / "core" / "src" / "limits.rs").read_text()
    m = re.search(rf"pub const {name}: i32 = (0x[0-9a-fA-F_]+|[0-9_]+);", text)
    assert m, f"locks::{name} not in limits.rs"
    return int(m.group(1).replace("_", ""), 0)


# The driver's leader lock (pg_advisory_lock(classid, objid)): hold it to keep a driver on standby.
LEADER_LOCK = (core_lock_key("CLASS"), core_lock_key("DRIVER_LEADER"))
# clear_round's transaction lock.
CLEARING_LOCK = (core_lock_key("CLASS"), core_lock_key("CLEARING"))


def wait_until(fn, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Polls fn() until it returns a truthy value; returns it. `timeout` only detects a hang."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # polled conditions may fail while things start
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")
        time.sleep(interval)


def http(port: int, path: str, timeout: float = 5.0):
    """GET → (status, headers, body bytes); never raises for HTTP errors."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def http_json(port: int, path: str, timeout: float = 5.0):
    status, headers, body = http(port, path, timeout)
    assert headers.get("Content-Type", "").startswith("application/json"), (
        path,
        status,
        headers.get("Content-Type"),
        body[:200],
    )
    return status, json.loads(body)


def metrics(port: int) -> dict[str, float]:
    status, headers, body = http(port, "/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class Driver:
    """A running `compute-auction-driver serve` (RUST_LOG=info), its log in a file; the
    constructor returns once /healthz answers. interval=None leaves --interval at its default."""

    def __init__(self, binary: str, url: str, port: int, log: Path, *extra: str, interval: str | None = "1s") -> None:
        self.port = port
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed by stop(), which the owner always calls
        cmd = [binary, "serve", "--database-url", url, "--listen", f"127.0.0.1:{port}"]
        if interval is not None:
            cmd += ["--interval", interval]
        self.proc = subprocess.Popen(
            [*cmd, *extra], stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "info"}
        )
        try:
            wait_until(self._listening, 60, what=f"driver on port {port} to listen")
        except BaseException:
            self.stop()
            raise

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"driver exited with {self.proc.returncode}:\n{self.log()}")
        try:
            http(self.port, "/healthz", timeout=3)
            return True
        except OSError:
            return False

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def is_leader(self) -> bool:
        return metrics(self.port).get("compute_auction_leader") == 1.0

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signals the driver and waits for it (SIGKILL after `timeout`); returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def drivers(driver_bin, tmp_path):
    """Factory of Driver processes (drivers(url, port=None, *extra, interval="1s")), all stopped
    at teardown."""
    started: list[Driver] = []

    def start(url: str, port: int | None = None, *extra: str, interval: str | None = "1s") -> Driver:
        d = Driver(
            driver_bin,
            url,
            port or free_tcp_port(),
            tmp_path / f"driver{len(started)}.log",
            *extra,
            interval=interval,
        )
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


# ------------------------------------------------------------ the auction's market --
# (Market and the scenario's constants: tests/helpers.py)


@pytest.fixture
def market(conn) -> Market:
    return Market(conn)


@pytest.fixture
def ten_bids(market):
    """Ten agents with START tokens, one bid each (TTL t0+10min), and five idle slots."""
    bids = {}  # price -> (bid_id, agent, task)
    for price in PLACING_ORDER:
        agent = market.account(f"agent-{price}")
        task = f"task-{price}"
        bids[price] = (market.bid(agent, task, price, ev=price / 1000, ttl=TEN_TTL), agent, task)
    for s in FIVE_SLOTS:
        market.offer(s)
    return bids


@pytest.fixture
def one_win(market):
    """One slot won by alice's bid (price 300) against bob's (200): clearing price 200."""
    market.account("alice")
    market.account("bob")
    market.offer("s1")
    a = market.bid("alice", "task-a", 300)
    b = market.bid("bob", "task-b", 200)
    rows = market.clear(1)
    assert [(r["bid_id"], r["clearing_price_tokens"]) for r in rows] == [(a, 200)]
    return {"winner": a, "loser": b, "slot": "s1"}


def sqlstate_of(conn: psycopg.Connection, sql: str, params=None) -> str | None:
    """Runs sql expecting an error; returns its SQLSTATE (None if it succeeded)."""
    try:
        conn.execute(sql, params)
    except psycopg.Error as e:
        if not conn.autocommit:
            conn.rollback()
        return e.sqlstate
    return None


# Every table of the extension: pg_depend deptype 'e' on pg_extension compute_auction, relkind
# 'r' or 'p', read from the catalog so that a new table is covered without touching this file.
# Sequences are left out on purpose: nextval() is not rolled back with its transaction, so a
# call that failed after an INSERT (open_account + a failing deposit in one statement, a unique
# violation) moves a sequence while changing nothing else; asserting their positions would
# assert something PostgreSQL does not promise.
EXTENSION_TABLES = """
SELECT c.relname::text, format('%I.%I', n.nspname, c.relname)
  FROM pg_depend d
  JOIN pg_extension e ON e.oid = d.refobjid
  JOIN pg_class c ON c.oid = d.objid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
   AND d.deptype = 'e' AND e.extname = 'compute_auction' AND c.relkind IN ('r', 'p')
 ORDER BY 1
"""


def extension_tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(name, schema-qualified name) of each of the extension's tables, sorted."""
    return [(r[0], r[1]) for r in conn.execute(EXTENSION_TABLES).fetchall()]


def snapshot(conn: psycopg.Connection) -> dict:
    """Every row of every extension table, keyed by table name (each table's rows sorted, so the
    snapshot does not depend on physical order): compare before/after. Not sequences: see
    EXTENSION_TABLES."""
    snap = {}
    for name, qualified in extension_tables(conn):
        rows = conn.execute(f"SELECT to_jsonb(x)::text FROM {qualified} x").fetchall()
        snap[name] = sorted(r[0] for r in rows)
    assert snap, "no compute_auction tables in this database (is the extension installed?)"
    return snap


def assert_audit_clean(conn: psycopg.Connection) -> None:
    rows = conn.execute("SELECT check_name, detail FROM compute_auction.audit()").fetchall()
    assert rows == [], f"audit() found problems: {rows}"


# docs/roles.sql, as an administrator runs it
ROLES_SQL = (ROOT / "docs" / "roles.sql").read_text()


@pytest.fixture
def roles(cluster, fresh_db):
    """Group roles from docs/roles.sql plus login roles alice, bob (agents), op (operator) and
    run1, run2 (runners). Wallets acct-alice and acct-bob are their agents'; quest-42 has no
    owner. Slot s1 is run1's, s2 run2's, s0 has no runner. The connections are autocommit and
    carry the login role's name as conns["names"][who]."""
    suffix = uuid.uuid4().hex[:8]
    names = {k: f"{k}_{suffix}" for k in ("alice", "bob", "op", "run1", "run2")}
    with psycopg.connect(cluster.url(fresh_db), autocommit=True) as su:
        su.execute(ROLES_SQL)
        for who in ("alice", "bob"):
            su.execute(f"CREATE ROLE {names[who]} LOGIN IN ROLE compute_auction_agent")
        su.execute(f"CREATE ROLE {names['op']} LOGIN IN ROLE compute_auction_operator")
        for who in ("run1", "run2"):
            su.execute(f"CREATE ROLE {names[who]} LOGIN IN ROLE compute_auction_runner")
        for who in ("alice", "bob"):
            su.execute("SELECT compute_auction.open_account(%s, 'agent', 1000, %s)", (f"acct-{who}", names[who]))
        su.execute("SELECT compute_auction.open_account('quest-42', 'quest', 5000)")
        su.execute("SELECT compute_auction.offer_slot('s1', now() - interval '1 minute', 0, %s)", (names["run1"],))
        su.execute("SELECT compute_auction.offer_slot('s2', now() - interval '1 minute', 0, %s)", (names["run2"],))
        su.execute("SELECT compute_auction.offer_slot('s0', now() - interval '1 minute')")
    conns = {k: psycopg.connect(cluster.url(fresh_db, user=v), autocommit=True) for k, v in names.items()}
    conns["names"] = names
    yield conns
    for k, c in conns.items():
        if k != "names":
            c.close()
    with psycopg.connect(cluster.url(), autocommit=True) as su:
        su.execute(f"DROP DATABASE IF EXISTS {fresh_db} WITH (FORCE)")
        for v in names.values():
            su.execute(f"DROP ROLE IF EXISTS {v}")
