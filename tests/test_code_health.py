"""Code health (issue 18): each market rule has one home, and what must repeat it elsewhere is
checked against it here.

- The numbers sql/schema.sql's CHECKs repeat (the id limit) match compute_auction_core::limits.
- An error report's location names the extension function, file and line that raised it,
  never the error helper (errors.rs).
- run_cycle and clear_round_summary show a round with the same keys as last_round().
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent
LIMITS = (ROOT / "extension" / "core" / "src" / "limits.rs").read_text()
SCHEMA = (ROOT / "sql" / "schema.sql").read_text()


def core_const(name: str) -> int:
    """A constant of limits.rs: a number or a product of numbers (`15 * 60`)."""
    m = re.search(rf"pub const {name}: \w+ = ([0-9_ *]+);", LIMITS)
    assert m, f"{name} not in limits.rs"
    value = 1
    for factor in m.group(1).split("*"):
        value *= int(factor.strip().replace("_", ""))
    return value


def test_schema_id_checks_use_the_core_limit():
    limit = core_const("MAX_ID_CHARS")
    checks = re.findall(r"CHECK \(length\((\w+)\) BETWEEN 1 AND (\d+)\)", SCHEMA)
    assert {c for c, _ in checks} >= {"account_id", "slot_id", "task_id", "quest_id"}
    assert all(int(n) == limit for _, n in checks), checks


def test_installed_id_checks_use_the_core_limit(conn):
    limit = core_const("MAX_ID_CHARS")
    defs = [
        r[0]
        for r in conn.execute(
            """SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
                 JOIN pg_namespace n ON n.oid = c.connamespace
                WHERE n.nspname = 'compute_auction' AND pg_get_constraintdef(c.oid) LIKE '%length(%'"""
        )
    ]
    assert len(defs) >= 4
    for d in defs:
        assert f"<= {limit}" in d, d


def test_the_id_limit_is_enforced_at_the_core_limit(conn):
    limit = core_const("MAX_ID_CHARS")
    conn.execute("SELECT compute_auction.open_account(%s)", ("a" * limit,))
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT compute_auction.open_account(%s)", ("b" * (limit + 1),))
    assert e.value.sqlstate == "22001"


def test_ttl_bounds_are_the_core_limits(conn):
    conn.execute("SELECT compute_auction.open_account('a', 'agent', 100)")
    bid = conn.execute("SELECT compute_auction.place_bid('a', 't', 10)").fetchone()[0]
    secs = conn.execute(
        "SELECT extract(epoch FROM ttl_at - placed_at)::bigint FROM compute_auction.compute_auction_bids WHERE id = %s",
        (bid,),
    ).fetchone()[0]
    assert secs == core_const("BID_TTL_DEFAULT_SECS")
    days = core_const("BID_TTL_MAX_DAYS")
    # calendar days in the session's time zone, as `interval '30 days'` is
    conn.execute("SET timezone = 'Europe/Berlin'")
    far = "now() + make_interval(days => %s) + make_interval(secs => %s)"
    with pytest.raises(psycopg.Error) as e:
        conn.execute(f"SELECT compute_auction.place_bid('a', 't2', 10, NULL, {far})", (days, 60))
    assert e.value.sqlstate == "22023"
    conn.execute(f"SELECT compute_auction.place_bid('a', 't3', 10, NULL, {far})", (days, -60))


# (call, SQLSTATE, the raising function's name ends with, its file)
RAISERS = [
    ("SELECT compute_auction.place_bid('a', 't', 0)", "22023", "bids::place_bid", "bids.rs"),
    ("SELECT compute_auction.place_bid('nobody', 't', 5)", "P0002", "bids::place", "bids.rs"),
    ("SELECT compute_auction.withdraw('nobody', 5, 'x')", "P0002", "ledger::check_may_act", "ledger.rs"),
    ("SELECT compute_auction.cancel_bid(123456)", "P0002", "bids::cancel", "bids.rs"),
    ("SELECT compute_auction.settle('no-slot', 1, 1.0)", "P0002", "authority::check_may_run", "authority.rs"),
    ("SELECT compute_auction.order_book(-1)", "22023", "reporting::order_book", "reporting.rs"),
    ("SELECT compute_auction.withdraw('a', 1000, 'x')", "23514", "ledger::withdraw", "ledger.rs"),
]


@pytest.mark.parametrize("sql,code,function,file", RAISERS, ids=[r[2] for r in RAISERS])
def test_error_location_names_the_raiser(conn, sql, code, function, file):
    conn.execute("SELECT compute_auction.open_account('a', 'agent', 100)")
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql)
    d = e.value.diag
    assert e.value.sqlstate == code
    func = re.sub(r"(::\{\{closure\}\})+$", "", d.source_function or "")
    assert func.endswith(function), d.source_function
    assert Path(d.source_file or "").name == file, d.source_file
    assert "errors" not in func and Path(d.source_file or "").name != "errors.rs"
    assert int(d.source_line or 0) > 0


def test_rounds_look_alike_everywhere(conn):
    conn.execute("SELECT compute_auction.open_account('a', 'agent', 1000)")
    conn.execute("SELECT compute_auction.place_bid('a', 't1', 50)")
    conn.execute("SELECT compute_auction.offer_slot('s1', now() - interval '1 minute', 0)")
    summary = conn.execute("SELECT compute_auction.clear_round_summary()").fetchone()[0]
    last = conn.execute("SELECT compute_auction.last_round()").fetchone()[0]
    assert summary["round"] == last
    cycle = conn.execute("SELECT compute_auction.run_cycle()").fetchone()[0]
    assert set(cycle["round"]) == set(last)
    assert cycle["round"]["round_id"] == last["round_id"] + 1
    assert set(summary) == {"round", "winners"}
    assert {"round", "winners"} <= set(cycle)
    assert summary["winners"] == [
        {
            "slot_id": "s1",
            "bid_id": summary["winners"][0]["bid_id"],
            "task_id": "t1",
            "bidder_id": "a",
            "clearing_price_tokens": 0,
        }
    ]
