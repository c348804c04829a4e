"""The stress test's (keep) row of issue 21: tests/stress/stress.py with 16 clients against the
benchmark's cluster for a bounded time, faults included (it SIGKILLs its driver and restarts the
cluster once with a fast shutdown, so it runs last), in a database the benchmark created (its
functions on the run's copy of the library). Its summary gives rounds per second (driver +
clearing thread, from the rounds table) and deadlocks (40P01 seen by any client, the clearing
thread or the driver, and the growth of pg_stat_database.deadlocks); it checks audit() itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

CLIENTS = 16


def command(b, db: str, seconds: int, summary) -> list[str]:
    return [
        sys.executable,
        str(b.root / "tests" / "stress" / "stress.py"),
        "--clients",
        str(CLIENTS),
        "--seconds",
        str(seconds),
        # bounded: the load phase ends after --seconds (the rate is what is reported, not a
        # number of rounds to reach); clearing is reported hung only after 3 x --seconds
        "--min-rounds",
        "1",
        "--hang-seconds",
        str(3 * seconds + 30),
        "--database-url",
        b.url(db),
        "--admin-url",
        b.url("postgres"),
        "--pg-data-dir",
        str(b.data_dir),
        "--pg-bindir",
        str(b.bindir),
        "--driver-bin",
        b.driver,
        "--seed",
        "21",
        "--summary-json",
        str(summary),
        "--log-dir",
        str(b.logs / "stress"),
    ]


def run(b) -> dict:
    seconds = 12 if b.quick else 30
    db = "stress"
    b.create_db(db)
    summary = b.out / "stress-summary.json"
    summary.unlink(missing_ok=True)
    b.log(f"stress: tests/stress/stress.py, {CLIENTS} clients, {seconds} s, faults included")
    t = time.monotonic()
    p = subprocess.run(command(b, db, seconds, summary), capture_output=True, text=True, timeout=12 * seconds + 600)
    (b.logs / "stress.log").write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
    res: dict = {"clients": CLIENTS, "seconds": seconds, "rc": p.returncode, "wall_s": time.monotonic() - t}
    if not summary.exists():
        res["error"] = (p.stderr.strip().splitlines() or ["no summary"])[-1][:300]
        return res
    s = json.loads(summary.read_text())
    cl = s.get("clearing", {})
    errs = s.get("errors_by_sqlstate", {})
    res.update(
        rounds=cl.get("rounds"),
        load_seconds=cl.get("seconds"),
        rounds_per_s=cl.get("rounds_per_second"),
        min_5s_rounds_per_s=cl.get("min_5s_window_rounds_per_second"),
        deadlocks_seen=errs.get("40P01 deadlock", 0),
        server_deadlocks=s.get("server_deadlocks_in_database"),
        ops_per_s=s.get("operations", {}).get("client_calls_per_second"),
        audit_rows=len(s.get("audit_rows", [])),
        passed=s.get("passed"),
        violations=s.get("violations", [])[:10],
        faults=[e.get("event") for e in s.get("faults", [])],
    )
    res["audit_rows_after"] = b.audit(db, "stress")
    b.log(
        f"stress: {res['rounds_per_s']} rounds/s, deadlocks {res['deadlocks_seen']} seen / "
        f"{res['server_deadlocks']} in pg_stat_database, passed {res['passed']}, audit rows {res['audit_rows_after']}"
    )
    return res
