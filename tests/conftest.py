"""pytest harness: a private PostgreSQL cluster (started by scripts/test.sh) with the installed
compute_auction extension, used the way an existing Python application uses it: psycopg 3.

Fixtures
- cluster:       the private cluster (url(), restart(), stop(), start())
- fresh_db_url:  URL of a brand-new database with the extension (cloned from a template)
- conn:          autocommit psycopg connection to that database
- driver_bin:    path of the release driver binary
- free_port:     a free TCP port on 127.0.0.1
Helpers: sqlstate_of(), snapshot(), assert_audit_clean().
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Every table of the extension, for before/after snapshots of error cases.
TABLES = [
    "token_accounts",
    "token_ledger",
    "compute_slots",
    "compute_auction_bids",
    "compute_auction_rounds",
    "compute_auction_clears",
]


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


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sqlstate_of(conn: psycopg.Connection, sql: str, params=None) -> str | None:
    """Runs sql expecting an error; returns its SQLSTATE (None if it succeeded)."""
    try:
        conn.execute(sql, params)
    except psycopg.Error as e:
        if not conn.autocommit:
            conn.rollback()
        return e.sqlstate
    return None


def snapshot(conn: psycopg.Connection) -> dict:
    """Every row of every extension table, plus sequence positions: compare before/after."""
    snap = {}
    for t in TABLES:
        rows = conn.execute(f"SELECT to_jsonb(x)::text FROM compute_auction.{t} x").fetchall()
        snap[t] = sorted(r[0] for r in rows)
    return snap


def assert_audit_clean(conn: psycopg.Connection) -> None:
    rows = conn.execute("SELECT check_name, detail FROM compute_auction.audit()").fetchall()
    assert rows == [], f"audit() found problems: {rows}"
