"""Roles and privileges over real connections, and pg_dump/restore of the market's data."""

import subprocess
from pathlib import Path

import psycopg

from conftest import assert_audit_clean, drop_database, new_database, sqlstate_of


def test_agent_bids_from_own_account_only(roles, conn):
    alice, bob = roles["alice"], roles["bob"]
    bid = alice.execute("SELECT compute_auction.place_bid('acct-alice', 'task-a', 100)").fetchone()[0]
    assert bid > 0
    assert sqlstate_of(alice, "SELECT compute_auction.place_bid('acct-bob', 'task-b', 100)") == "42501"
    assert sqlstate_of(bob, "SELECT compute_auction.cancel_bid(%s)", (bid,)) == "42501"
    assert conn.execute("SELECT status FROM compute_auction.compute_auction_bids WHERE id = %s", (bid,)).fetchone() == (
        "open",
    )
    assert conn.execute(
        "SELECT count(*) FROM compute_auction.compute_auction_bids WHERE task_id = 'task-b'"
    ).fetchone() == (0,)
    assert alice.execute("SELECT compute_auction.cancel_bid(%s)", (bid,)).fetchone() == (100,)
    assert_audit_clean(conn)


def test_agent_cannot_write_tables_directly(roles, conn):
    alice = roles["alice"]
    for sql in [
        "UPDATE compute_auction.token_accounts SET balance_tokens = 1000000000",
        "INSERT INTO compute_auction.token_ledger (account_id, delta_balance, delta_held, entry_kind, balance_after, "
        "held_after) VALUES ('acct-alice', 5, 0, 'deposit', 5, 0)",
        "DELETE FROM compute_auction.compute_auction_bids",
        "UPDATE compute_auction.compute_slots SET status = 'retired'",
        "SELECT nextval('compute_auction.compute_auction_bids_id_seq')",
    ]:
        assert sqlstate_of(alice, sql) == "42501", sql
    # but may read the tables applications read
    assert alice.execute(
        "SELECT balance_tokens FROM compute_auction.token_accounts WHERE account_id = 'acct-alice'"
    ).fetchone() == (1000,)
    assert_audit_clean(conn)


def test_agent_cannot_call_operator_functions(roles, conn):
    alice = roles["alice"]
    for sql in [
        "SELECT * FROM compute_auction.clear_round()",
        "SELECT compute_auction.deposit('acct-alice', 10, 'self-service')",
        "SELECT compute_auction.withdraw('acct-alice', 10, 'cash out')",
        "SELECT compute_auction.offer_slot('s2')",
        "SELECT compute_auction.settle('s1', 1, 1.0)",
        "SELECT compute_auction.abort_slot('s1', 'x')",
        "SELECT compute_auction.open_account('mine', 'agent', 1000000000)",
        "SELECT compute_auction.set_account_owner('acct-bob', current_user)",
        "SELECT * FROM compute_auction.refund_unfilled()",
        "SELECT compute_auction.submit_bids_for_task_arrays('acct-alice', ARRAY['t'], ARRAY[1.0::float8], "
        "ARRAY[false], 1, 1, NULL)",
    ]:
        assert sqlstate_of(alice, sql) == "42501", sql
    assert conn.execute("SELECT balance_tokens FROM compute_auction.balance('acct-alice')").fetchone() == (1000,)
    assert_audit_clean(conn)


def test_operator_runs_the_market_and_may_act_for_any_account(roles, conn):
    op, alice = roles["op"], roles["alice"]
    alice.execute("SELECT compute_auction.place_bid('acct-alice', 'task-a', 300)")
    op.execute("SELECT compute_auction.place_bid('acct-bob', 'task-b', 200)")  # operator acts for bob
    op.execute("SELECT compute_auction.retire_slot('s0')")
    op.execute("SELECT compute_auction.retire_slot('s2')")
    winners = op.execute("SELECT bidder_id, clearing_price_tokens FROM compute_auction.clear_round()").fetchall()
    assert winners == [("acct-alice", 200)]
    assert op.execute("SELECT task_id FROM compute_auction.claim_slot('s1')").fetchone() == ("task-a",)
    assert op.execute("SELECT compute_auction.settle('s1', 5, 1.5)").fetchone() == (200,)
    assert op.execute("SELECT compute_auction.withdraw('acct-bob', 10, 'payout')").fetchone() == (790,)
    assert op.execute("SELECT count(*) FROM compute_auction.audit()").fetchone() == (0,)
    assert_audit_clean(conn)


def test_pg_dump_keeps_the_market_and_restores_clean(cluster, conn, fresh_db, tmp_path: Path):
    conn.execute("SELECT compute_auction.open_account('a1', 'agent', 10000)")
    conn.execute("SELECT compute_auction.open_account('a2', 'quest', 10000)")
    conn.execute("SELECT compute_auction.offer_slot('s1', now() - interval '1 minute')")
    conn.execute("SELECT compute_auction.place_bid('a1', 't1', 500)")
    conn.execute("SELECT compute_auction.place_bid('a2', 't2', 300)")
    conn.execute("SELECT * FROM compute_auction.clear_round()")
    conn.execute("SELECT compute_auction.settle('s1', 3, 2.0)")
    conn.execute("SELECT compute_auction.place_bid('a2', 't3', 100)")
    before = {
        t: conn.execute(f"SELECT count(*) FROM compute_auction.{t}").fetchone()[0]
        for t in (
            "token_accounts",
            "token_ledger",
            "compute_auction_bids",
            "compute_auction_rounds",
            "compute_auction_clears",
        )
    }
    max_bid = conn.execute("SELECT max(id) FROM compute_auction.compute_auction_bids").fetchone()[0]

    dump = tmp_path / "market.sql"
    pg_dump = f"{cluster.bindir}/pg_dump"
    subprocess.run([pg_dump, "--no-owner", "-f", str(dump), cluster.url(fresh_db)], check=True)
    restored = new_database(cluster, with_extension=False)
    try:
        subprocess.run(
            [f"{cluster.bindir}/psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump), cluster.url(restored)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with psycopg.connect(cluster.url(restored), autocommit=True) as r:
            after = {t: r.execute(f"SELECT count(*) FROM compute_auction.{t}").fetchone()[0] for t in before}
            assert after == before
            assert_audit_clean(r)
            new_id = r.execute("SELECT compute_auction.place_bid('a1', 't4', 50)").fetchone()[0]
            assert new_id > max_bid
            r.execute("SELECT compute_auction.offer_slot('s1', now() - interval '1 minute')")
            assert r.execute(
                "SELECT bids_eligible FROM compute_auction.clear_round() CROSS JOIN LATERAL (SELECT bids_eligible "
                "FROM compute_auction.compute_auction_rounds ORDER BY round_id DESC LIMIT 1) x"
            ).fetchone() == (2,)
            assert_audit_clean(r)
    finally:
        drop_database(cluster, restored)
