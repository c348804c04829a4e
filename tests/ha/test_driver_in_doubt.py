"""The driver's rule for COMMITs under synchronous replication (issue 22): each cycle step runs in
an explicit transaction with SET LOCAL timeouts and is committed with none, and a COMMIT that
PostgreSQL answers with the WARNING "the transaction has already committed locally, but might
not have been replicated to the standby" is in doubt: logged, counted in
compute_auction_commits_in_doubt_total, never counted as a cleared round.

A private cluster (its own port, under target/) whose synchronous_standby_names names a standby
that never connects: every COMMIT that wrote something waits for it (wait_event SyncRep). The
driver's round waits there, longer than its --step-statement-timeout (so that timeout does not
apply to the COMMIT); then the test cancels the wait with pg_cancel_backend, which is exactly how
such a commit gets its WARNING. Once synchronous_standby_names is cleared, rounds commit normally
and are counted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from formation import PG_BINDIR, RUNAS, wait_for

from conftest import Driver, free_tcp_port, metrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sync_cluster():
    """(admin URL, operator URL) of a private cluster whose commits wait for a standby."""
    base = ROOT / "target" / f"ha-sync-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    data = base / "data"
    data.mkdir(parents=True)
    subprocess.run(["chown", "-R", f"{RUNAS}:{RUNAS}", str(base)], check=True)
    os.chmod(data, 0o700)
    port = int(os.environ["CA_HA_BASE_PORT"]) + 5 if os.environ.get("CA_HA_BASE_PORT") else free_tcp_port()
    pg = ["sudo", "-u", RUNAS, "--"]
    subprocess.run(
        [*pg, f"{PG_BINDIR}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--locale=C.UTF-8"],
        check=True,
        capture_output=True,
    )
    with open(data / "postgresql.conf", "a") as f:
        f.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{data}'\n")
    ctl = [*pg, f"{PG_BINDIR}/pg_ctl", "-D", str(data)]
    subprocess.run([*ctl, "-l", str(base / "server.log"), "-w", "start"], check=True, capture_output=True)
    admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute("CREATE EXTENSION compute_auction")
            c.execute((ROOT / "docs" / "roles.sql").read_text())
            c.execute("CREATE ROLE sync_driver LOGIN IN ROLE compute_auction_operator")
            c.execute("SELECT compute_auction.open_account('sync-agent', 'agent', 10000)")
            c.execute("SELECT compute_auction.offer_slot('sync-slot', now(), 0)")
            c.execute("SELECT compute_auction.place_bid('sync-agent', 'sync-task', 500)")
            c.execute("ALTER SYSTEM SET synchronous_standby_names = 'standby_that_never_comes'")
            c.execute("SELECT pg_reload_conf()")
        yield admin, f"postgresql://sync_driver@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def waiting_commit(admin: str):
    """(pid, xact_start) of the driver's backend while it waits for the standby, or None."""
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute("SET synchronous_commit = local")
        return c.execute(
            "SELECT pid, xact_start FROM pg_stat_activity"
            " WHERE application_name = 'compute-auction-driver' AND wait_event = 'SyncRep'"
        ).fetchone()


def test_a_commit_warned_unreplicated_is_in_doubt(sync_cluster, driver_bin, tmp_path):
    admin, url = sync_cluster
    port = free_tcp_port()
    d = Driver(driver_bin, url, port, tmp_path / "driver.log", "--step-statement-timeout", "1s")
    try:
        pid, started = wait_for(lambda: waiting_commit(admin), 60, "the driver's COMMIT to wait for the standby")
        # well past the step's 1 s statement_timeout, the same COMMIT still waits: it has none
        time.sleep(3)
        assert waiting_commit(admin) == (pid, started), d.log()
        assert metrics(port).get("compute_auction_commits_in_doubt_total") == 0
        with psycopg.connect(admin, autocommit=True) as c:
            assert c.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone() == (True,)

        def cancelled_and_counted():
            # every step that wrote something waits in its COMMIT, and the cycle is recorded once
            # all its steps are done: cancel each waiting COMMIT until the cycle is through
            if metrics(port).get("compute_auction_commits_in_doubt_total", 0) >= 1:
                return True
            if (w := waiting_commit(admin)) is not None:
                with psycopg.connect(admin, autocommit=True) as c:
                    c.execute("SELECT pg_cancel_backend(%s)", (w[0],))
            return False

        wait_for(cancelled_and_counted, 60, "the in-doubt count")
        log = d.log()
        assert "might not have been replicated" in log and "in doubt" in log, log[-3000:]
        m = metrics(port)
        # committed locally, but not counted as a cleared round
        assert m["compute_auction_rounds_cleared_total"] == 0, m
        with psycopg.connect(admin, autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM compute_auction.compute_auction_rounds").fetchone()[0] >= 1
            # without a standby to wait for, the next rounds commit and count
            c.execute("ALTER SYSTEM RESET synchronous_standby_names")
            c.execute("SELECT pg_reload_conf()")
        wait_for(lambda: metrics(port).get("compute_auction_rounds_cleared_total", 0) >= 1, 60, "a counted round")
    except AssertionError:
        print(d.log()[-6000:])
        raise
    finally:
        d.stop()
