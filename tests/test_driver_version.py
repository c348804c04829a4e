"""The driver's one extension-version check: `serve` and `clear` refuse a database whose
compute_auction extension is older than the driver's MIN_EXTENSION_VERSION (0.2.0), or missing,
and exit non-zero with a message naming the found and needed versions and how to upgrade; at
0.2.0 (a fresh install, or 0.1.0 upgraded in place) they run. A database that is unreachable at
start-up is retried as before, and checked once it answers.

0.1.0 is installed next to the current release by scripts/test.sh (see tests/test_upgrade.py).
"""

from __future__ import annotations

import subprocess
import uuid

import psycopg
import pytest
from psycopg import sql

from conftest import http_json, metrics, wait_until

OLD_VERSION = "0.1.0"
MIN_VERSION = "0.2.0"


def _admin(cluster, dbname="postgres"):
    return psycopg.connect(cluster.url(dbname), autocommit=True)


@pytest.fixture
def database(cluster):
    """A factory of new databases (dropped at teardown): database(version) creates the
    extension at that version, database(None) none."""
    made = []

    def make(version: str | None) -> str:
        name = f"ver_{uuid.uuid4().hex[:10]}"
        with _admin(cluster) as a:
            a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        if version is not None:
            with _admin(cluster, name) as su:
                available = su.execute(
                    "SELECT version FROM pg_available_extension_versions WHERE name = 'compute_auction'"
                ).fetchall()
                assert (version,) in available, f"compute_auction {version} is not installed ({available})"
                su.execute(sql.SQL("CREATE EXTENSION compute_auction VERSION {}").format(sql.Literal(version)))
        return name

    yield make
    with _admin(cluster) as a:
        for name in made:
            a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run(driver_bin: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """A driver command that is expected to end by itself (the timeout only detects a hang)."""
    return subprocess.run([driver_bin, *args], capture_output=True, text=True, timeout=timeout)


def assert_too_old(p: subprocess.CompletedProcess, found: str) -> None:
    assert p.returncode != 0, p
    err = p.stderr
    assert f"version {found}" in err, err
    assert f"version {MIN_VERSION} or later" in err, err
    assert "ALTER EXTENSION compute_auction UPDATE" in err, err


def test_serve_refuses_an_older_extension(cluster, database, driver_bin, free_port):
    db = database(OLD_VERSION)
    p = run(driver_bin, "serve", "--database-url", cluster.url(db), "--listen", f"127.0.0.1:{free_port}")
    assert_too_old(p, OLD_VERSION)
    # it never took part: no round, and the leader lock was never held
    with _admin(cluster, db) as c:
        assert c.execute("SELECT count(*) FROM compute_auction.compute_auction_rounds").fetchone()[0] == 0


def test_clear_refuses_an_older_extension(cluster, database, driver_bin):
    db = database(OLD_VERSION)
    p = run(driver_bin, "clear", "--database-url", cluster.url(db))
    assert_too_old(p, OLD_VERSION)
    with _admin(cluster, db) as c:
        assert c.execute("SELECT count(*) FROM compute_auction.compute_auction_rounds").fetchone()[0] == 0


@pytest.mark.parametrize("command", ["serve", "clear"])
def test_a_database_without_the_extension_is_refused(cluster, database, driver_bin, free_port, command):
    db = database(None)
    extra = ["--listen", f"127.0.0.1:{free_port}"] if command == "serve" else []
    p = run(driver_bin, command, "--database-url", cluster.url(db), *extra)
    assert p.returncode != 0, p
    assert "not installed" in p.stderr and f"version {MIN_VERSION} or later" in p.stderr, p.stderr
    assert "CREATE EXTENSION compute_auction" in p.stderr, p.stderr


def test_serve_and_clear_run_at_the_minimum_version(cluster, database, drivers, driver_bin):
    db = database(MIN_VERSION)
    p = run(driver_bin, "clear", "--database-url", cluster.url(db))
    assert p.returncode == 0, p.stderr
    d = drivers(cluster.url(db))
    wait_until(lambda: metrics(d.port).get("compute_auction_rounds_cleared_total", 0) >= 1, 60, what="a round")
    status, body = http_json(d.port, "/healthz")
    assert status == 200 and body["leader"] is True, body


def test_an_upgraded_database_is_accepted(cluster, database, drivers, driver_bin):
    db = database(OLD_VERSION)
    assert run(driver_bin, "clear", "--database-url", cluster.url(db)).returncode != 0
    with _admin(cluster, db) as su:
        su.execute(sql.SQL("ALTER EXTENSION compute_auction UPDATE TO {}").format(sql.Literal(MIN_VERSION)))
    d = drivers(cluster.url(db))
    wait_until(lambda: metrics(d.port).get("compute_auction_rounds_cleared_total", 0) >= 1, 60, what="a round")


def test_unreachable_at_start_up_is_retried_then_checked(cluster, database, drivers):
    """The database does not exist yet (unreachable): the driver serves and retries; once the
    database appears with 0.1.0, the driver's first contact finds it too old and it exits."""
    # the database appears at once with its extension: a copy of a template made beforehand
    template = database(OLD_VERSION)
    name = f"ver_late_{uuid.uuid4().hex[:10]}"
    d = drivers(cluster.url(name))
    try:
        wait_until(
            lambda: metrics(d.port).get("compute_auction_database_unavailable_total", 0) >= 1, 60, what="a retry"
        )
        assert d.proc.poll() is None, d.log()
        with _admin(cluster) as a:
            a.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
        wait_until(lambda: d.proc.poll() is not None, 60, what="the driver to exit")
        assert d.proc.returncode != 0
        log = d.log()
        assert f"version {OLD_VERSION}" in log and "ALTER EXTENSION compute_auction UPDATE" in log, log
        with _admin(cluster, name) as c:
            assert c.execute("SELECT count(*) FROM compute_auction.compute_auction_rounds").fetchone()[0] == 0
    finally:
        with _admin(cluster) as a:
            a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
