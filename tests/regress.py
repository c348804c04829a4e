"""The pg_regress suite (extension/tests/pg_regress/), run the way PGXS runs `make installcheck`:
Debian's pg_regress (postgresql-server-dev-<major>, under the PGXS directory) against a running
cluster, in a database it creates afresh, one psql per file in the order of `schedule`.

Used by tests/test_regress.py, and by hand:

    target/venv/bin/python tests/regress.py --port 28826 [TEST ...]     # run (all by default)
    target/venv/bin/python tests/regress.py --port 28826 --refresh      # rewrite expected/*.out

The suite is one story told file by file, so a TEST list must start at `ledger` (the file that
creates the extension). cycle.out prints the database's name (schedule_clearing's hint), so the
whole schedule passes only under the default --dbname. --refresh copies the results over
expected/ and prints the diff first: read it before committing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "extension" / "tests" / "pg_regress"
DBNAME = "compute_auction_regress"


def pg_config(bindir: str, flag: str) -> str:
    return subprocess.run([f"{bindir}/pg_config", flag], check=True, capture_output=True, text=True).stdout.strip()


def pg_regress_bin(bindir: str) -> Path:
    return Path(pg_config(bindir, "--pkglibdir")) / "pgxs" / "src" / "test" / "regress" / "pg_regress"


def schedule_tests(suite: Path = SUITE) -> list[str]:
    out = []
    for line in (suite / "schedule").read_text().splitlines():
        if line.startswith("test:"):
            out.extend(line.split(":", 1)[1].split())
    return out


@dataclass
class Result:
    returncode: int
    output: str
    diffs: str
    outdir: Path


def run(
    port: int,
    outdir: Path,
    tests: list[str] | None = None,
    suite: Path = SUITE,
    bindir: str = "/usr/lib/postgresql/15/bin",
    host: str = "127.0.0.1",
    user: str = "postgres",
    dbname: str = DBNAME,
) -> Result:
    """Runs pg_regress; the results land in outdir/results, the differences in
    outdir/regression.diffs (absent when every file matched)."""
    outdir = outdir.resolve()
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    cmd = [
        str(pg_regress_bin(bindir)),
        f"--inputdir={suite}",
        f"--outputdir={outdir}",
        f"--bindir={bindir}",
        f"--host={host}",
        f"--port={port}",
        f"--user={user}",
        f"--dbname={dbname}",
        # masks the PID of a NOTIFY's sender, the one thing in psql's output a test cannot pin
        f"--launcher={suite / 'mask_pids'}",
    ]
    cmd += tests if tests else [f"--schedule={suite / 'schedule'}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    p = subprocess.run(cmd, cwd=outdir, capture_output=True, text=True, env=env, timeout=600)
    diffs = outdir / "regression.diffs"
    return Result(p.returncode, p.stdout + p.stderr, diffs.read_text() if diffs.exists() else "", outdir)


def refresh(result: Result, suite: Path = SUITE) -> list[str]:
    """Copies every result file over its expected file; returns the names that changed."""
    changed = []
    for res in sorted((result.outdir / "results").glob("*.out")):
        exp = suite / "expected" / res.name
        if not exp.exists() or exp.read_text() != res.read_text():
            shutil.copyfile(res, exp)
            changed.append(res.stem)
    return changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("CA_TEST_PORT", "28826")))
    ap.add_argument("--bindir", default=os.environ.get("CA_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
    ap.add_argument("--outdir", type=Path, default=ROOT / "target" / "regress")
    ap.add_argument("--dbname", default=DBNAME, help="the database pg_regress drops and creates")
    ap.add_argument("--refresh", action="store_true", help="copy the results over expected/*.out")
    ap.add_argument("tests", nargs="*")
    a = ap.parse_args()
    r = run(a.port, a.outdir, a.tests or None, bindir=a.bindir, dbname=a.dbname)
    sys.stdout.write(r.output)
    if a.refresh:
        sys.stdout.write(r.diffs)
        print("refreshed:", ", ".join(refresh(r)) or "nothing changed")
        return
    if r.returncode != 0:
        sys.stdout.write(r.diffs)
    sys.exit(r.returncode)


if __name__ == "__main__":
    main()
