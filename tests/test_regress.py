"""The pg_regress suite (extension/tests/pg_regress/) is the SQL surface's spec: it runs here
against the test cluster, docs/SQL_API.md's examples are cut from its expected output, and every
function describes itself with a COMMENT taken from the same doc (tests/doc_sync.py).

CA_REFRESH_REGRESS=1 makes test_regress_suite copy the results over expected/*.out (then read
`git diff` before committing), like CA_REFRESH_SCHEMA_SNAPSHOT for the schema gate.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import defaultdict

import psycopg
import psycopg.sql
import pytest

import doc_sync
import regress

REFRESH_ENV = "CA_REFRESH_REGRESS"

# Documented SQLSTATEs that one psql session cannot produce, and where they are tested instead.
NEEDS_A_SECOND_SESSION = {
    "55P03": "a lock held by another transaction: tests/isolation/*.spec, test_liveness.py, test_task_locks.py",
    "40001": "concurrent commits changing the top of the book 20 times: test_clearing.py",
    "XX000": "only when SPI itself fails, never from input",
}
# (function, SQLSTATE) pairs documented as unreachable without a concurrent change.
UNREACHABLE_ALONE = {
    ("place_bid", "22003"): "held_tokens cannot overflow: balance + held never exceeds total_deposited (documented "
    "as a defensive check)",
    ("submit_bids_for_tasks", "23514"): "insufficient funds cannot happen through the cap unless the wallet changes "
    "concurrently (docs/SQL_API.md); test_quests.py races it",
}


@pytest.fixture(scope="module")
def suite_run(cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("regress")
    return regress.run(cluster.port, out, bindir=cluster.bindir)


def test_regress_suite(suite_run):
    """Every file of the schedule matches its expected output."""
    if os.environ.get(REFRESH_ENV) == "1":
        changed = regress.refresh(suite_run)
        print("refreshed:", changed)
        return
    assert suite_run.returncode == 0, (
        f"pg_regress failed ({REFRESH_ENV}=1 rewrites expected/ after a deliberate change):\n"
        f"{suite_run.output}\n{suite_run.diffs[:20000]}"
    )
    for name in regress.schedule_tests():
        ok = re.search(rf"^test {name} +\.\.\. ok", suite_run.output, re.M)
        assert ok, f"{name} did not run:\n{suite_run.output}"


def test_regress_schedule_lists_every_file():
    files = {p.stem for p in (regress.SUITE / "sql").glob("*.sql")}
    expected = {p.stem for p in (regress.SUITE / "expected").glob("*.out")}
    assert files == set(regress.schedule_tests()) == expected


def test_regress_fails_on_an_edited_expected_file(cluster, tmp_path):
    """The suite is not a rubber stamp: change one figure of an expected result (alice's opening
    balance) and pg_regress fails, naming the line."""
    suite = tmp_path / "suite"
    shutil.copytree(regress.SUITE, suite)
    exp = suite / "expected" / "ledger.out"
    text = exp.read_text()
    line = (
        "SELECT compute_auction.open_account('alice', 'agent', 10000);\n open_account \n--------------\n        10000\n"
    )
    assert line in text
    exp.write_text(text.replace(line, line.replace("        10000\n", "        10001\n"), 1))
    try:
        r = regress.run(
            cluster.port, tmp_path / "out", ["ledger"], suite=suite, bindir=cluster.bindir, dbname="regress_mutant"
        )
    finally:
        # what ledger.sql leaves for the files after it: its database and its roles
        with psycopg.connect(cluster.url(), autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS regress_mutant")
            for (role,) in c.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'regress\\_ca\\_%'").fetchall():
                c.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(role)))
    assert r.returncode != 0, r.output
    assert "-        10001" in r.diffs and "+        10000" in r.diffs, r.diffs[:4000]


def test_doc_examples_are_the_regress_output():
    """docs/SQL_API.md's example blocks equal their regions of expected/*.out, and every region is
    quoted somewhere (tests/doc_sync.py --write rewrites them)."""
    doc = doc_sync.DOC.read_text()
    found = doc_sync.regions()
    synced, problems = doc_sync.sync_examples(doc, found)
    assert problems == []
    assert synced == doc, "docs/SQL_API.md's examples differ from the regress output: run tests/doc_sync.py --write"
    quoted = set(re.findall(r"^<!-- regress: (\w+) (.+?) -->$", doc, re.M))
    assert quoted == set(found), f"never quoted: {set(found) - quoted}; quoted but missing: {quoted - set(found)}"


def test_comment_blocks_are_generated_from_the_doc():
    doc = doc_sync.DOC.read_text()
    block = doc_sync.comment_block(doc, doc_sync.INTERNAL_IDENTITIES)
    for path in doc_sync.COMMENT_FILES:
        assert block in path.read_text(), f"{path.name}: run tests/doc_sync.py --write"


def test_every_function_has_its_documented_comment(conn):
    """What \\df+ shows: every function of the schema has a comment, the lead paragraph of its
    section in docs/SQL_API.md (on a fresh install here; the upgrade's schema gate compares
    comments too)."""
    rows = conn.execute(
        "SELECT p.proname, pg_catalog.obj_description(p.oid, 'pg_proc') FROM pg_catalog.pg_proc p"
        " JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'compute_auction'"
    ).fetchall()
    assert rows
    missing = sorted(name for name, c in rows if not c)
    assert missing == [], f"functions without a COMMENT: {missing}"
    want = doc_sync.comments(doc_sync.DOC.read_text())
    assert {name: c for name, c in rows} == {name: want[name] for name, _ in rows}


def statements_with_errors() -> dict[str, set[str]]:
    """function -> the SQLSTATEs the suite's expected output shows it raising (the function is
    the first compute_auction.<fn>( of the statement that failed)."""
    out: dict[str, set[str]] = defaultdict(set)
    call = re.compile(r"compute_auction\.(\w+)\(")
    for path in (regress.SUITE / "expected").glob("*.out"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^SQLSTATE (\w{5})$", line)
            if not m:
                continue
            j = i - 1
            while j >= 0 and not lines[j].startswith("ERROR:"):
                j -= 1
            stmt = []
            k = j - 1
            while k >= 0 and not re.match(r"^(SQLSTATE |\(\d+ rows?\)|-- |$)", lines[k]):
                stmt.insert(0, lines[k])
                k -= 1
            fns = call.findall("\n".join(stmt))
            if fns:
                out[fns[0]].add(m.group(1))
    return out


def documented_errors() -> dict[str, set[str]]:
    doc = doc_sync.DOC.read_text()
    out = {}
    parts = re.split(r"^### (\w+)\n", doc, flags=re.M)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        body = re.split(r"^## ", body, flags=re.M)[0]
        out[name] = set(re.findall(r"`([0-9][0-9A-Z]{4}|P0002)`", body))
    return out


def test_suite_covers_every_function_and_its_documented_errors():
    """Every public function is called by the suite, and every SQLSTATE its section of
    docs/SQL_API.md documents is raised by one of its calls there, except the few that need a
    second session (tested elsewhere, listed above)."""
    sql = "\n".join(p.read_text() for p in (regress.SUITE / "sql").glob("*.sql"))
    functions = set(doc_sync.comments(doc_sync.DOC.read_text()))
    uncalled = sorted(f for f in functions if f"compute_auction.{f}(" not in sql)
    assert uncalled == []
    raised = statements_with_errors()
    gaps = {}
    for fn, codes in documented_errors().items():
        want = {c for c in codes if c not in NEEDS_A_SECOND_SESSION and (fn, c) not in UNREACHABLE_ALONE}
        if want - raised.get(fn, set()):
            gaps[fn] = sorted(want - raised.get(fn, set()))
    assert gaps == {}, f"documented SQLSTATEs the suite never shows: {gaps}"


def test_regress_helpers_are_defined_once():
    """The clock and the masking helpers are created by the first file of the schedule only."""
    first = regress.schedule_tests()[0]
    for p in (regress.SUITE / "sql").glob("*.sql"):
        has = "CREATE FUNCTION regress_pin" in p.read_text()
        assert has == (p.stem == first), p.name
