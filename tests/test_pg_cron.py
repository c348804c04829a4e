"""Clearing scheduled by a real pg_cron, in a private cluster of its own.

The cluster (target/pgdata-cron, its own port) runs with shared_preload_libraries = 'pg_cron',
cron.use_background_workers = on and cron.database_name = 'crondb'. Three databases:

- crondb:  pg_cron and compute_auction. schedule_clearing() registers the job directly.
- otherdb: compute_auction only. schedule_clearing() raises 55000 whose hint is the exact
           cron.schedule_in_database(...) call; the test runs that call in crondb.
- drvdb:   compute_auction only, cleared by the driver (every second) and by a pg_cron job at
           the same time, while a feeder settles slots and places bids; no slot may be cleared
           twice.

Debian's pg_cron (1.4.2) has minute granularity, so everything is scheduled first and then
awaited once (usually about 60 s; the deadline, WAIT_S, only detects a hang); the individual
tests assert on what the module fixture observed. Nothing asserts how soon pg_cron ran or how
many rounds fell in a time window: the fixture waits for what the tests need.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from conftest import ROOT, Driver, free_tcp_port

BINDIR = os.environ.get("CA_PG_BINDIR", "/usr/lib/postgresql/15/bin")
RUNAS = os.environ.get("CA_PG_RUNAS", "postgres")
DATA_DIR = Path(os.environ.get("CA_CRON_DATA_DIR", str(ROOT / "target" / "pgdata-cron")))
DRIVER_BIN = os.environ.get("CA_DRIVER_BIN", str(ROOT / "target" / "release" / "compute-auction-driver"))

JOB = "compute_auction_clearing"
COMMAND = "SELECT compute_auction.run_cycle()"
WAIT_S = 400.0  # pg_cron fires at the next minute boundary (~60 s): this only detects a hang
DRVDB_ROUNDS = 10  # rounds drvdb must have (driver and pg_cron together) before the driver stops

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/postgresql/15/extension/pg_cron.control").exists(),
    reason="pg_cron (postgresql-15-cron) is not installed",
)


# ----------------------------------------------------------------- cluster --


def _as_pg(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["sudo", "-u", RUNAS, "--", *cmd], check=check, capture_output=True, text=True)


def _pg_ctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _as_pg(f"{BINDIR}/pg_ctl", "-D", str(DATA_DIR), *args, check=check)


class CronCluster:
    def __init__(self) -> None:
        self.port = free_tcp_port()

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{urllib.parse.quote(db, safe='')}"

    def connect(self, db: str, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.url(db), autocommit=autocommit, connect_timeout=5)

    def sql(self, db: str, query: str, params=None):
        with self.connect(db) as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else None

    def start(self) -> None:
        # a cluster left running by an interrupted earlier run
        if (DATA_DIR / "PG_VERSION").exists() and _pg_ctl("status", check=False).returncode == 0:
            _pg_ctl("-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(DATA_DIR, ignore_errors=True)
        DATA_DIR.mkdir(parents=True)
        shutil.chown(DATA_DIR, user=RUNAS)
        DATA_DIR.chmod(0o700)
        _as_pg(
            f"{BINDIR}/initdb", "-D", str(DATA_DIR), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"
        )
        with open(DATA_DIR / "postgresql.conf", "a") as f:
            f.write(
                "\n".join(
                    [
                        "listen_addresses = '127.0.0.1'",
                        f"port = {self.port}",
                        f"unix_socket_directories = '{DATA_DIR}'",
                        "max_connections = 100",
                        "shared_preload_libraries = 'pg_cron'",
                        "cron.use_background_workers = on",
                        "max_worker_processes = 20",
                        "cron.database_name = 'crondb'",
                        "log_min_messages = warning",
                        "",
                    ]
                )
            )
        _pg_ctl("-l", str(DATA_DIR / "server.log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        if _pg_ctl("status", check=False).returncode == 0:
            r = _pg_ctl("-m", "fast", "-w", "-t", "30", "stop", check=False)
            if r.returncode != 0:
                _pg_ctl("-m", "immediate", "-w", "stop", check=False)

    def log(self) -> str:
        try:
            return (DATA_DIR / "server.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""


# ----------------------------------------------------------------- helpers --


def seed(conn: psycopg.Connection, slots: int, bids: list[int]) -> None:
    for i, p in enumerate(bids):
        conn.execute("SELECT compute_auction.open_account(%s, 'agent', %s)", (f"agent{i}", 10 * p))
        conn.execute(
            "SELECT compute_auction.place_bid(%s, %s, %s, NULL, now() + interval '1 hour')",
            (f"agent{i}", f"task{i}", p),
        )
    for i in range(slots):
        conn.execute("SELECT compute_auction.offer_slot(%s)", (f"slot{i}",))


def hint_call(hint: str) -> str:
    """The cron.schedule_in_database(...) call in a hint (which may start with a short prose
    lead-in ending in ': '); the whole hint must be that call and nothing else after it."""
    m = re.fullmatch(r"(?:[^;:]*:\s+)?(SELECT cron\.schedule_in_database\(.*\);?)", hint, flags=re.S)
    assert m, f"hint is not a cron.schedule_in_database call: {hint!r}"
    return m.group(1)


def expected_call(db: str, schedule: str = "* * * * *") -> str:
    lit = lambda s: "'" + s.replace("'", "''") + "'"  # noqa: E731
    return f"SELECT cron.schedule_in_database({lit(JOB + ':' + db)}, {lit(schedule)}, {lit(COMMAND)}, {lit(db)});"


def cron_runs(cluster: CronCluster, db: str):
    return cluster.sql(
        "crondb",
        "SELECT d.jobid, d.status, d.return_message, d.start_time, d.end_time"
        "  FROM cron.job_run_details d WHERE d.database = %s ORDER BY d.start_time",
        (db,),
    )


def succeeded(runs) -> list:
    return [r for r in runs if r[1] == "succeeded"]


def rounds(cluster: CronCluster, db: str):
    return cluster.sql(
        db,
        "SELECT round_id, cleared_at, slots_offered, slots_filled, clearing_price_tokens"
        "  FROM compute_auction.compute_auction_rounds ORDER BY round_id",
    )


class Feeder(threading.Thread):
    """Keeps drvdb's market busy: settles won slots and places new bids, every 100 ms."""

    def __init__(self, url: str, slots: list[str], agents: list[str]):
        super().__init__(daemon=True)
        self.url, self.slots, self.agents = url, slots, agents
        self.stop_event = threading.Event()
        self.settled = 0
        self.placed = 0
        self.errors: list[str] = []

    def run(self) -> None:
        rng = random.Random(7)
        n = 0
        with psycopg.connect(self.url, autocommit=True) as c:
            for a in self.agents:
                c.execute("SELECT compute_auction.open_account(%s, 'agent', %s)", (a, 10**9))
            while not self.stop_event.is_set():
                try:
                    for s in self.slots:
                        won = c.execute(
                            "SELECT task_id, clearing_price_tokens FROM compute_auction.claim_slot(%s)", (s,)
                        ).fetchall()
                        if won:
                            c.execute(
                                "SELECT compute_auction.settle(%s, %s, %s)", (s, rng.randint(0, 500), rng.random())
                            )
                            self.settled += 1
                    open_bids = c.execute(
                        "SELECT count(*) FROM compute_auction.compute_auction_bids WHERE status = 'open'"
                    ).fetchone()[0]
                    for _ in range(max(0, 8 - open_bids)):
                        n += 1
                        c.execute(
                            "SELECT compute_auction.place_bid(%s, %s, %s)",
                            (rng.choice(self.agents), f"feed-{n}", rng.randint(1, 1000)),
                        )
                        self.placed += 1
                except psycopg.Error as e:  # recorded, asserted on by the test
                    self.errors.append(f"{e.sqlstate}: {e}")
                time.sleep(0.1)


@dataclass
class Observed:
    cluster: CronCluster
    same_db_job: int | None = None
    same_db_error: str | None = None
    other_sqlstate: str | None = None
    other_hint: str | None = None
    other_job: int | None = None
    custom_hint: str | None = None
    quoted_hint: str | None = None
    quoted_hint_ok: str | None = None
    jobs_after_scheduling: list = field(default_factory=list)
    scheduled_at: float = 0.0
    scheduled_db_at: object = None
    waited_s: float = 0.0
    runs: dict = field(default_factory=dict)
    rounds: dict = field(default_factory=dict)
    driver_window: tuple = ()
    driver_alive: bool = False
    driver_log: str = ""
    driver_health: int | None = None
    feeder: Feeder | None = None
    rounds_before: dict = field(default_factory=dict)
    # retention: schedule_pruning in crondb (registered, then unscheduled) and, through the hint,
    # for prunedb (where the job runs)
    prune_same_job: int | None = None
    prune_same_row: tuple = ()
    prune_unscheduled: list = field(default_factory=list)
    prune_jobs_left: list = field(default_factory=list)
    prune_other_sqlstate: str | None = None
    prune_other_hint: str | None = None
    prune_other_job: int | None = None
    prune_ledger_before: int = 0


def _http_status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


# ------------------------------------------------------------------ fixture --


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    assert Path(DRIVER_BIN).exists(), f"driver binary missing: {DRIVER_BIN} (scripts/test.sh builds it)"
    cluster = CronCluster()
    cluster.start()
    driver = None
    feeder = None
    try:
        with cluster.connect("postgres") as admin:
            for db in ("crondb", "otherdb", "drvdb", "odd'db", "prunedb"):
                admin.execute(f'CREATE DATABASE "{db}"')
        with cluster.connect("crondb") as c:
            c.execute("CREATE EXTENSION pg_cron")
            c.execute("CREATE EXTENSION compute_auction")
        for db in ("otherdb", "drvdb", "odd'db", "prunedb"):
            with cluster.connect(db) as c:
                c.execute("CREATE EXTENSION compute_auction")

        # the launcher gave up while crondb did not exist; it restarts on its own
        deadline = time.monotonic() + 120  # detects a hang only
        while not cluster.sql("postgres", "SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'"):
            assert time.monotonic() < deadline, "pg_cron launcher did not start:\n" + cluster.log()
            time.sleep(0.2)

        obs = Observed(cluster=cluster)
        with cluster.connect("crondb") as c:
            seed(c, slots=2, bids=[300, 200, 100])
        with cluster.connect("otherdb") as c:
            seed(c, slots=2, bids=[30, 20, 10])
        with cluster.connect("drvdb") as c:
            seed(c, slots=3, bids=[500, 400, 300, 200])
        for db in ("crondb", "otherdb", "drvdb"):
            obs.rounds_before[db] = len(rounds(cluster, db))

        # drvdb: the driver clears every second while the feeder keeps the market busy
        log_path = tmp_path_factory.mktemp("cron") / "driver.log"
        driver = Driver(DRIVER_BIN, cluster.url("drvdb"), free_tcp_port(), log_path, interval="1s")
        driver_started = cluster.sql("drvdb", "SELECT now()")[0][0]
        feeder = Feeder(cluster.url("drvdb"), ["slot0", "slot1", "slot2"], [f"feed{i}" for i in range(4)])
        feeder.start()
        obs.feeder = feeder

        # same database: schedule_clearing() registers the job itself
        obs.scheduled_db_at = cluster.sql("crondb", "SELECT now()")[0][0]
        with cluster.connect("crondb") as c:
            try:
                obs.same_db_job = c.execute("SELECT compute_auction.schedule_clearing('* * * * *')").fetchone()[0]
            except psycopg.Error as e:
                obs.same_db_error = f"{e.sqlstate}: {e}"

        # other database: 55000, and the hint is the call to run in the pg_cron database
        with cluster.connect("otherdb") as c:
            try:
                c.execute("SELECT compute_auction.schedule_clearing()")
            except psycopg.Error as e:
                obs.other_sqlstate, obs.other_hint = e.sqlstate, e.diag.message_hint
            try:
                c.execute("SELECT compute_auction.schedule_clearing('*/5 * * * *')")
            except psycopg.Error as e:
                obs.custom_hint = e.diag.message_hint
        with cluster.connect("odd'db") as c:
            try:
                c.execute("SELECT compute_auction.schedule_clearing()")
            except psycopg.Error as e:
                obs.quoted_hint = e.diag.message_hint
        if obs.other_hint:
            with cluster.connect("crondb") as c:
                obs.other_job = c.execute(hint_call(obs.other_hint)).fetchone()[0]
        if obs.quoted_hint:
            # the quoting must survive: run it, then roll it back
            with cluster.connect("crondb", autocommit=False) as c:
                try:
                    c.execute(hint_call(obs.quoted_hint))
                    obs.quoted_hint_ok = "ok"
                except psycopg.Error as e:
                    obs.quoted_hint_ok = f"{e.sqlstate}: {e}"
                c.rollback()

        # retention, same database: schedule_pruning registers the job, unschedule_pruning removes it
        with cluster.connect("crondb") as c:
            obs.prune_same_job = c.execute("SELECT compute_auction.schedule_pruning('30 days')").fetchone()[0]
            obs.prune_same_row = c.execute(
                "SELECT jobname, schedule, command, database FROM cron.job WHERE jobid = %s", (obs.prune_same_job,)
            ).fetchone()
            obs.prune_unscheduled = [
                c.execute("SELECT compute_auction.unschedule_pruning()").fetchone()[0] for _ in range(2)
            ]
            obs.prune_jobs_left = c.execute(
                "SELECT jobname FROM cron.job WHERE jobname LIKE 'compute_auction_pruning%'"
            ).fetchall()
        # retention, another database: a finished history, and the hinted job prunes it to "now"
        with cluster.connect("prunedb") as c:
            c.execute("SELECT compute_auction.open_account('p', 'agent', 1000)")
            c.execute("SELECT compute_auction.deposit('p', 10, 'refill', 'k1')")
            c.execute("SELECT compute_auction.cancel_bid(compute_auction.place_bid('p', 'pt', 100))")
            obs.prune_ledger_before = c.execute("SELECT count(*) FROM compute_auction.token_ledger").fetchone()[0]
            try:
                c.execute("SELECT compute_auction.schedule_pruning('0', '* * * * *')")
            except psycopg.Error as e:
                obs.prune_other_sqlstate, obs.prune_other_hint = e.sqlstate, e.diag.message_hint
        if obs.prune_other_hint:
            with cluster.connect("crondb") as c:
                obs.prune_other_job = c.execute(hint_call(obs.prune_other_hint)).fetchone()[0]

        # drvdb: a pg_cron job of its own (an administrator may name jobs as they like)
        with cluster.connect("crondb") as c:
            c.execute("SELECT cron.schedule_in_database(%s, '* * * * *', %s, 'drvdb')", (f"{JOB}_drvdb", COMMAND))
            obs.jobs_after_scheduling = c.execute(
                "SELECT jobid, jobname, database, schedule, command FROM cron.job ORDER BY jobid"
            ).fetchall()
        obs.scheduled_at = time.monotonic()

        # one wait for everything, however long it takes (WAIT_S only detects a hang): a
        # succeeded run and a new round in crondb and otherdb; in drvdb a succeeded run, at least
        # DRVDB_ROUNDS rounds, and two driver rounds after the cron run ended (so the driver and
        # the feeder overlapped it)
        def done() -> bool:
            crondb = (
                succeeded(cron_runs(cluster, "crondb")) and len(rounds(cluster, "crondb")) > obs.rounds_before["crondb"]
            )
            otherdb = (
                succeeded(cron_runs(cluster, "otherdb"))
                and len(rounds(cluster, "otherdb")) > obs.rounds_before["otherdb"]
            )
            drv_runs = succeeded(cron_runs(cluster, "drvdb"))
            drv_rounds = rounds(cluster, "drvdb")
            drvdb = (
                bool(drv_runs)
                and len(drv_rounds) >= DRVDB_ROUNDS
                and drv_runs[0][4] is not None
                and sum(1 for r in drv_rounds if r[1] > drv_runs[0][4]) >= 2
            )
            prunedb = bool(succeeded(cron_runs(cluster, "prunedb")))
            return bool(crondb and otherdb and drvdb and prunedb)

        while time.monotonic() - obs.scheduled_at < WAIT_S and not done():
            assert driver.proc.poll() is None, "the driver exited:\n" + driver.log()[-4000:]
            time.sleep(1)
        obs.waited_s = time.monotonic() - obs.scheduled_at

        feeder.stop_event.set()
        feeder.join(10)
        obs.driver_health = _http_status(driver.port, "/healthz")
        obs.driver_alive = driver.proc.poll() is None
        driver.stop(signal.SIGTERM, timeout=30)
        obs.driver_log = driver.log()[-4000:]
        obs.driver_window = (driver_started, cluster.sql("drvdb", "SELECT now()")[0][0])
        obs.runs["prunedb"] = cron_runs(cluster, "prunedb")
        for db in ("crondb", "otherdb", "drvdb"):
            obs.runs[db] = cron_runs(cluster, db)
            obs.rounds[db] = rounds(cluster, db)
        yield obs
    finally:
        if feeder is not None:
            feeder.stop_event.set()
        if driver is not None:
            driver.stop(signal.SIGKILL)
        cluster.stop()


# -------------------------------------------------------------------- tests --


def test_same_database_schedule_clearing_returns_the_job_id(observed):
    assert observed.same_db_error is None, observed.same_db_error
    assert isinstance(observed.same_db_job, int)
    jobs = {j[0]: j for j in observed.jobs_after_scheduling}
    assert observed.same_db_job in jobs, observed.jobs_after_scheduling
    _, name, db, schedule, command = jobs[observed.same_db_job]
    assert (name, db, schedule, command) == (f"{JOB}:crondb", "crondb", "* * * * *", COMMAND)


def test_same_database_job_runs_and_clears_a_round(observed):
    runs = observed.runs["crondb"]
    ok = succeeded(runs)
    assert ok, f"no succeeded pg_cron run in crondb after {observed.waited_s:.0f}s: {runs}\n{observed.cluster.log()}"
    assert {r[0] for r in ok} == {observed.same_db_job}
    new = observed.rounds["crondb"][observed.rounds_before["crondb"] :]
    assert new, "pg_cron ran but compute_auction_rounds has no new row"
    # the seeded market: two slots, bids 300/200/100 -> two winners at 100
    assert (new[0][2], new[0][3], new[0][4]) == (2, 2, 100)
    assert_runs_after_scheduling(observed, ok)


def assert_runs_after_scheduling(observed, ok_runs) -> None:
    """The job's runs were started by pg_cron after it was scheduled (not how soon: that is
    pg_cron's minute boundary plus however loaded the machine is)."""
    first = ok_runs[0][3]
    assert first >= observed.scheduled_db_at, f"first succeeded run at {first}, scheduled at {observed.scheduled_db_at}"
    assert all(r[4] is not None and r[4] >= r[3] for r in ok_runs), ok_runs


def test_other_database_schedule_clearing_is_55000_with_the_exact_call_as_hint(observed):
    assert observed.other_sqlstate == "55000"
    assert observed.other_hint, "no hint"
    assert hint_call(observed.other_hint) == expected_call("otherdb")
    assert hint_call(observed.custom_hint) == expected_call("otherdb", "*/5 * * * *")
    assert hint_call(observed.quoted_hint) == expected_call("odd'db")
    assert observed.quoted_hint_ok == "ok", observed.quoted_hint_ok


def test_jobs_for_two_databases_coexist(observed):
    """Following the hint for otherdb must not replace (or be swallowed by) crondb's own job:
    each database needs its own pg_cron job."""
    by_db = {j[2]: j for j in observed.jobs_after_scheduling if j[4] == COMMAND}
    assert set(by_db) == {"crondb", "otherdb", "drvdb"}, (
        f"cron.job after scheduling crondb, then the hinted call for otherdb: {observed.jobs_after_scheduling}"
    )
    assert by_db["crondb"][0] != by_db["otherdb"][0]
    assert observed.other_job == by_db["otherdb"][0]


def test_other_database_hinted_job_runs_and_clears_a_round(observed):
    runs = observed.runs["otherdb"]
    assert succeeded(runs), (
        f"no succeeded pg_cron run in otherdb after {observed.waited_s:.0f}s: {runs}; "
        f"jobs: {observed.jobs_after_scheduling}"
    )
    new = observed.rounds["otherdb"][observed.rounds_before["otherdb"] :]
    assert new, "pg_cron ran but otherdb has no new round"
    assert (new[0][2], new[0][3], new[0][4]) == (2, 2, 10)
    assert_runs_after_scheduling(observed, succeeded(runs))


def test_pg_cron_and_the_driver_never_clear_a_slot_twice(observed):
    cluster = observed.cluster
    runs = observed.runs["drvdb"]
    start, end = observed.driver_window
    during = [r for r in succeeded(runs) if start <= r[3] <= end]
    assert during, f"no succeeded pg_cron run in drvdb while the driver ran ({start}..{end}): {runs}"
    assert_runs_after_scheduling(observed, succeeded(runs))
    assert observed.driver_alive, observed.driver_log
    assert observed.driver_health == 200, observed.driver_log
    feeder = observed.feeder
    assert feeder.settled > 0 and feeder.placed > 0
    assert feeder.errors == [], feeder.errors[:5]
    # many rounds (the fixture waited for them), most by the driver, at least one by pg_cron
    assert len(observed.rounds["drvdb"]) >= DRVDB_ROUNDS

    with cluster.connect("drvdb") as c:
        assert (
            c.execute(
                "SELECT slot_id, count(*) FROM compute_auction.compute_auction_clears"
                " WHERE status = 'assigned' GROUP BY slot_id HAVING count(*) > 1"
            ).fetchall()
            == []
        )
        assert (
            c.execute(
                "SELECT bid_id FROM compute_auction.compute_auction_clears GROUP BY bid_id HAVING count(*) > 1"
            ).fetchall()
            == []
        )
        # per slot, each clear ended (settled/aborted) before the slot's next clear started
        rows = c.execute(
            "SELECT slot_id, round_id, status, slot_started_at, slot_finished_at"
            "  FROM compute_auction.compute_auction_clears ORDER BY slot_id, slot_started_at, round_id"
        ).fetchall()
        assert len(rows) > 3
        for a, b in itertools.pairwise(rows):
            if a[0] != b[0]:
                continue
            assert a[2] != "assigned", f"slot {a[0]} cleared again while assigned: {a} then {b}"
            assert a[4] is not None and a[4] <= b[3], f"slot {a[0]} overlapping clears: {a} then {b}"
        # every won or settled bid has exactly one clear, every clear one such bid
        assert (
            c.execute(
                "SELECT b.id, b.status, count(cl.bid_id) FROM compute_auction.compute_auction_bids b"
                "  LEFT JOIN compute_auction.compute_auction_clears cl ON cl.bid_id = b.id"
                " WHERE b.status IN ('won', 'settled') GROUP BY b.id, b.status HAVING count(cl.bid_id) <> 1"
            ).fetchall()
            == []
        )
        assert c.execute("SELECT check_name, detail FROM compute_auction.audit()").fetchall() == []


def test_audit_is_clean_everywhere(observed):
    for db in ("crondb", "otherdb", "drvdb"):
        assert observed.cluster.sql(db, "SELECT check_name, detail FROM compute_auction.audit()") == [], db


def test_unschedule_clearing_removes_the_job(observed):
    cluster = observed.cluster
    with cluster.connect("crondb") as c:
        before = c.execute("SELECT jobid, database FROM cron.job ORDER BY jobid").fetchall()
        assert c.execute("SELECT compute_auction.unschedule_clearing()").fetchone()[0] is True
        after = c.execute("SELECT jobid, database FROM cron.job ORDER BY jobid").fetchall()
        assert [j for j in after if j[1] == "crondb"] == []
        # only crondb's own job went away
        assert after == [j for j in before if j[1] != "crondb"]
        assert c.execute("SELECT compute_auction.unschedule_clearing()").fetchone()[0] is False
    with cluster.connect("otherdb") as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute("SELECT compute_auction.unschedule_clearing()")
        assert e.value.sqlstate == "55000"
        assert "cron.unschedule" in (e.value.diag.message_hint or "")


def test_schedule_pruning_registers_and_unschedule_pruning_removes_the_job(observed):
    assert isinstance(observed.prune_same_job, int)
    assert observed.prune_same_row == (
        "compute_auction_pruning:crondb",
        "0 * * * *",
        "SELECT compute_auction.prune_history('30 days')",
        "crondb",
    )
    assert observed.prune_unscheduled == [True, False]
    # read before prunedb's job was scheduled: crondb's own job is gone, the clearing job stays
    assert observed.prune_jobs_left == []


def test_hinted_pruning_job_runs_and_prunes_another_database(observed):
    assert observed.prune_other_sqlstate == "55000"
    assert hint_call(observed.prune_other_hint) == (
        "SELECT cron.schedule_in_database('compute_auction_pruning:prunedb', '* * * * *', "
        "'SELECT compute_auction.prune_history(''00:00:00'')', 'prunedb');"
    )
    ok = succeeded(observed.runs["prunedb"])
    assert ok, f"no succeeded pruning run in prunedb: {observed.runs['prunedb']}"
    assert {r[0] for r in ok} == {observed.prune_other_job}
    c = observed.cluster
    # open, deposit, escrow and release became one checkpoint; the cancelled bid is gone
    assert c.sql("prunedb", "SELECT entry_kind, delta_balance, balance_after FROM compute_auction.token_ledger") == [
        ("checkpoint", 1010, 1010)
    ]
    assert observed.prune_ledger_before == 4
    assert c.sql("prunedb", "SELECT count(*) FROM compute_auction.compute_auction_bids") == [(0,)]
    assert c.sql("prunedb", "SELECT check_name FROM compute_auction.audit()") == []
    # the deposit's key still answers
    assert c.sql("prunedb", "SELECT compute_auction.deposit('p', 10, 'refill', 'k1')") == [(1010,)]
