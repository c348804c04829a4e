"""Fuzz the driver's HTTP API with schemathesis against its own OpenAPI document: generated
valid and invalid requests (positive and negative modes) must never get a 5xx, and responses
must match the document."""

import subprocess
import sys
from pathlib import Path

from test_driver import seed_market


def test_schemathesis_finds_no_server_errors(drivers, fresh_db_url, conn, free_port, tmp_path: Path):
    seed_market(conn, bids=(900, 700, 500, 300), slots=2)
    d = drivers(fresh_db_url, free_port)
    base = f"http://127.0.0.1:{free_port}"
    st = Path(sys.executable).with_name("schemathesis")
    cmd = [
        str(st),
        "run",
        f"{base}/openapi.yaml",
        "--url",
        base,
        "--checks",
        "all",
        "--mode",
        "all",
        "--max-examples",
        "40",
        "--seed",
        "20261123",
        "--workers",
        "2",
        "--request-timeout",
        "10",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    # run in tmp_path: schemathesis keeps its example database in the working directory
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    assert "Server error" not in log, log[-6000:]
    assert d.proc.poll() is None, "driver died under fuzzing"
