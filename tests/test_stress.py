"""Load with faults: runs tests/stress/stress.py at its bounded default length (60 s and then
until clearing has made its --min-rounds, however slow the machine; set CA_STRESS_SECONDS for a
longer run) against a fresh database of the test cluster, with the
release driver clearing every second, the driver SIGKILLed and restarted, and PostgreSQL
restarted once (fast shutdown), and winners holding their own wallets open while they are
settled (issue 14; its books are checked after apply_pending()). The program checks the
invariants itself (see its docstring) and exits non-zero on any violation; this wrapper
asserts its exit status and its summary.

Fixtures come from conftest.py: cluster, fresh_db_url, driver_bin, free_port.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

STRESS_PY = Path(__file__).resolve().parent / "stress" / "stress.py"
_spec = importlib.util.spec_from_file_location("stress", STRESS_PY)
assert _spec is not None and _spec.loader is not None
STRESS = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("stress", STRESS)  # dataclasses look their module up in sys.modules
_spec.loader.exec_module(STRESS)


def test_stress_with_faults(cluster, fresh_db_url, driver_bin, free_port, tmp_path):
    summary_path = tmp_path / "summary.json"
    cmd = [
        sys.executable,
        str(STRESS_PY),
        "--database-url",
        fresh_db_url,
        "--admin-url",
        cluster.url(),
        "--driver-bin",
        driver_bin,
        "--driver-port",
        str(free_port),
        "--pg-data-dir",
        cluster.data_dir,
        "--pg-bindir",
        cluster.bindir,
        "--pg-runas",
        cluster.runas,
        "--summary-json",
        str(summary_path),
        "--log-dir",
        str(tmp_path),
    ]
    seconds = float(os.environ.get("CA_STRESS_SECONDS", "60"))
    if "CA_STRESS_SECONDS" in os.environ:
        cmd += ["--seconds", str(seconds)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # stress.py's own hang limit is 5 x seconds + 300 (it waits for its rounds, however slow)
        stdout, stderr = proc.communicate(timeout=5 * seconds + 900)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: stress.py stops its threads and its driver
        stdout, stderr = proc.communicate(timeout=120)
    print(stdout)
    print(stderr, file=sys.stderr)
    cluster.wait_ready(60)  # the cluster is back up for the tests that follow
    assert summary_path.exists(), (
        f"stress.py wrote no summary (exit {proc.returncode}):\n{stdout[-4000:]}\n{stderr[-4000:]}"
    )
    s = json.loads(summary_path.read_text())

    assert s["violations"] == [], "invariants violated:\n" + "\n".join(s["violations"])
    assert proc.returncode == 0, stdout[-4000:]
    assert s["passed"] is True

    # the run did what it claims: real load, both faults, and the checks' inputs
    assert s["operations"]["client_calls"] > 0
    events = [e["event"] for e in s["faults"]]
    assert "driver SIGKILL" in events and "driver restarted" in events, events
    assert "PostgreSQL fast restart" in events, events
    assert s["driver"]["alive_at_end"] and s["driver"]["rounds_after_pg_restart"] > 0, s["driver"]

    # the invariants, restated from the summary
    assert s["audit_rows"] == []
    books = s["books"]
    assert books["actual_total"] == books["expected_total"], books
    errors = s["errors_by_sqlstate"]
    assert errors["40P01 deadlock"] == 0 and s["server_deadlocks_in_database"] == 0, errors
    assert errors["connection (outside)"] == 0, errors
    # the documented SQLSTATEs of this workload: one list, stress.py's own
    documented = set(STRESS.EXPECTED_SQLSTATES)
    assert {k for k in errors if k[:1].isalnum() and len(k) == 5} <= documented, errors
    # clearing made progress under load: the run went on until it had its rounds (no rate asserted)
    assert s["clearing"]["rounds"] >= s["clearing"]["min_rounds"] > 0, s["clearing"]
    assert s["clears"].get("settled", 0) > 0, s["clears"]
    # winners held their wallets open (issue 14), and every entry left pending was applied at the end
    holds = s["wallet_holds"]
    assert holds.get("held_winner", 0) > 0, holds
    assert s["pending_entries_at_end"]["left"] == 0, s["pending_entries_at_end"]
