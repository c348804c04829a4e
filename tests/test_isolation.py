"""Races: PostgreSQL's isolation tester (pg_isolation_regress) runs every spec in
tests/isolation/specs/ against the test cluster and compares its output with
tests/isolation/expected/. One test per spec; a failure shows the regression diffs.

What each spec proves, and the lock order they check, is in docs/CONCURRENCY.md. The runner,
tests/isolation/run.sh, also works on its own against any server (see its header).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ISOLATION = ROOT / "tests" / "isolation"
RUNNER = ISOLATION / "run.sh"
SPECS = sorted(p.stem for p in (ISOLATION / "specs").glob("*.spec"))


def test_every_spec_has_an_expected_output():
    assert SPECS, "no isolation specs found"
    missing = [s for s in SPECS if not (ISOLATION / "expected" / f"{s}.out").is_file()]
    assert not missing, f"specs without tests/isolation/expected/<name>.out: {missing}"


@pytest.mark.parametrize("spec", SPECS)
def test_isolation_spec(cluster, spec, tmp_path):
    # per-process database and output directory: concurrent pytest runs must not collide
    outdir = tmp_path / "isolation"
    env = dict(os.environ)
    env.update(
        CA_TEST_HOST="127.0.0.1",
        CA_TEST_PORT=str(cluster.port),
        CA_TEST_USER="postgres",
        CA_ISOLATION_DB=f"isolation_{spec.replace('-', '_')}_{os.getpid()}",
        CA_ISOLATION_OUTDIR=str(outdir),
    )
    bindir = getattr(cluster, "bindir", "/usr/lib/postgresql/15/bin")
    env.setdefault("CA_PG_CONFIG", os.path.join(bindir, "pg_config"))
    env.setdefault("PGISOLATIONTIMEOUT", "60")
    proc = subprocess.run(
        ["bash", str(RUNNER), spec],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        diffs = outdir / "regression.diffs"
        detail = diffs.read_text() if diffs.is_file() and diffs.stat().st_size else proc.stdout[-8000:]
        pytest.fail(
            f"isolation spec {spec} failed (exit {proc.returncode}); output in {outdir}/results/{spec}.out\n{detail}",
            pytrace=False,
        )
