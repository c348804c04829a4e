"""Issue 16: authority fails closed. Real login roles over real connections (the `roles`
fixture of conftest.py: agents alice and bob own acct-alice and acct-bob, quest-42 has no owner;
runners run1 and run2 run slots s1 and s2, s0 has no runner; op is an operator).

Every refusal is checked for its SQLSTATE and for leaving every table of the extension as it was.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from conftest import ROLES_SQL, ROOT, assert_audit_clean, free_tcp_port, snapshot, sqlstate_of

SUBMIT = "SELECT * FROM compute_auction.submit_bids_for_tasks(%s, %s, 100.0)"


def refused(who: psycopg.Connection, conn: psycopg.Connection, query: str, params=None, state: str = "42501"):
    """Asserts `query` as `who` fails with `state` and changes no row of the market."""
    before = snapshot(conn)
    assert sqlstate_of(who, query, params) == state, query
    assert snapshot(conn) == before, f"{query} changed the market although it failed"


def won(op: psycopg.Connection, bidder: str, task: str, slot: str) -> None:
    """Makes `slot` the only offered slot and has `bidder`'s bid on `task` win it."""
    op.execute("SELECT compute_auction.place_bid(%s, %s, 300)", (bidder, task))
    for s in ("s0", "s1", "s2"):
        if s != slot:
            op.execute("SELECT compute_auction.retire_slot(%s)", (s,))
    rows = op.execute("SELECT slot_id, task_id FROM compute_auction.clear_round()").fetchall()
    assert rows == [(slot, task)]


# -- 1. owned wallets only --------------------------------------------------------------------


def test_an_agent_cannot_act_for_an_unowned_wallet(roles, conn):
    alice, op = roles["alice"], roles["op"]
    quest_bid = op.execute("SELECT compute_auction.place_bid('quest-42', 'q-task', 400)").fetchone()[0]
    refused(alice, conn, "SELECT compute_auction.place_bid('quest-42', 'alice-job', 15000)")
    refused(alice, conn, "SELECT compute_auction.place_bid('quest-42', 'q-task', 4000)")  # re-price it
    refused(alice, conn, "SELECT compute_auction.cancel_bid(%s)", (quest_bid,))
    refused(alice, conn, SUBMIT, ("quest-42", Jsonb([{"task_id": "q-task", "expected_value_usd": 30.0}])))
    # withdraw is an operator function; granted to an agent, it still refuses wallets not its own
    conn.execute(
        sql.SQL("GRANT EXECUTE ON FUNCTION compute_auction.withdraw(text, bigint, text, text) TO {}").format(
            sql.Identifier(roles["names"]["alice"])
        )
    )
    refused(alice, conn, "SELECT compute_auction.withdraw('quest-42', 10, 'mine now')")
    refused(alice, conn, "SELECT compute_auction.withdraw('acct-bob', 10, 'mine now')")
    assert alice.execute("SELECT compute_auction.withdraw('acct-alice', 10, 'cash out')").fetchone() == (990,)
    # an operator acts for it
    assert op.execute("SELECT compute_auction.cancel_bid(%s)", (quest_bid,)).fetchone() == (400,)
    rows = op.execute(SUBMIT, ("quest-42", Jsonb([{"task_id": "q-2", "expected_value_usd": 1.0}]))).fetchall()
    assert [r[3] for r in rows] == ["placed"]
    assert op.execute("SELECT compute_auction.withdraw('quest-42', 100, 'budget back')").fetchone()[0] > 0
    assert_audit_clean(conn)


def test_an_agent_cannot_act_for_another_agents_wallet_but_its_owner_can(roles, conn):
    alice, bob = roles["alice"], roles["bob"]
    bob_bid = bob.execute("SELECT compute_auction.place_bid('acct-bob', 'b-task', 100)").fetchone()[0]
    refused(alice, conn, "SELECT compute_auction.place_bid('acct-bob', 'a-task', 100)")
    refused(alice, conn, "SELECT compute_auction.cancel_bid(%s)", (bob_bid,))
    refused(alice, conn, SUBMIT, ("acct-bob", Jsonb([{"task_id": "b-task", "expected_value_usd": 0.0}])))
    rows = bob.execute(SUBMIT, ("acct-bob", Jsonb([{"task_id": "b-task", "expected_value_usd": 0.0}]))).fetchall()
    assert [(r[0], r[3]) for r in rows] == [("b-task", "skipped: zero price")]
    assert conn.execute(
        "SELECT status FROM compute_auction.compute_auction_bids WHERE id = %s", (bob_bid,)
    ).fetchone() == ("cancelled",)
    assert_audit_clean(conn)


# -- 2. owners are roles, not names -----------------------------------------------------------


def test_owner_and_runner_roles_must_exist(roles, conn):
    op = roles["op"]
    ghost = f"no_such_role_{uuid.uuid4().hex[:8]}"
    refused(op, conn, "SELECT compute_auction.open_account('typo', 'agent', 100, %s)", (ghost,), "22023")
    refused(op, conn, "SELECT compute_auction.set_account_owner('acct-alice', %s)", (ghost,), "22023")
    refused(op, conn, "SELECT compute_auction.offer_slot('s9', now(), 0, %s)", (ghost,), "22023")
    refused(op, conn, "SELECT compute_auction.offer_slot('s1', now(), 0, %s)", (ghost,), "22023")
    refused(op, conn, "SELECT compute_auction.set_slot_runner('s1', %s)", (ghost,), "22023")
    refused(op, conn, "SELECT compute_auction.set_slot_runner('nope', %s)", (roles["names"]["run1"],), "P0002")
    # the column holds the name; the OID beside it is what authority checks
    row = conn.execute(
        "SELECT owner_role, owner_oid::oid = (SELECT oid FROM pg_roles WHERE rolname = owner_role) "
        "FROM compute_auction.token_accounts WHERE account_id = 'acct-alice'"
    ).fetchone()
    assert row == (roles["names"]["alice"], True)


def test_a_dropped_and_recreated_role_of_the_same_name_gets_nothing(cluster, roles, conn):
    name = f"dave_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(name)
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE compute_auction_agent").format(ident))
    try:
        conn.execute("SELECT compute_auction.open_account('acct-dave', 'agent', 1000, %s)", (name,))
        with psycopg.connect(cluster.url(conn.info.dbname, user=name), autocommit=True) as dave:
            dave.execute("SELECT compute_auction.place_bid('acct-dave', 'd-1', 10)")
        assert conn.execute("SELECT * FROM compute_auction.unresolved_roles()").fetchall() == []
        conn.execute(sql.SQL("DROP ROLE {}").format(ident))
        listed = conn.execute("SELECT object_kind, object_id, role_name FROM compute_auction.unresolved_roles()")
        assert listed.fetchall() == [("account", "acct-dave", name)]
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE compute_auction_agent").format(ident))
        with psycopg.connect(cluster.url(conn.info.dbname, user=name), autocommit=True) as impostor:
            refused(impostor, conn, "SELECT compute_auction.place_bid('acct-dave', 'd-2', 10)")
            # an operator names the owner again: the new role now owns it
            conn.execute("SELECT compute_auction.set_account_owner('acct-dave', %s)", (name,))
            impostor.execute("SELECT compute_auction.place_bid('acct-dave', 'd-2', 10)")
        assert conn.execute("SELECT * FROM compute_auction.unresolved_roles()").fetchall() == []
        # a renamed role loses the wallet too (the stored name no longer matches)
        conn.execute(sql.SQL("ALTER ROLE {} RENAME TO {}").format(ident, sql.Identifier(name + "_x")))
        listed = conn.execute("SELECT object_id FROM compute_auction.unresolved_roles()").fetchall()
        assert listed == [("acct-dave",)]
        conn.execute(sql.SQL("ALTER ROLE {} RENAME TO {}").format(sql.Identifier(name + "_x"), ident))
        assert_audit_clean(conn)
    finally:
        conn.execute("SELECT compute_auction.set_account_owner('acct-dave', NULL)")
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name + "_x")))


# -- 3. runners -------------------------------------------------------------------------------


def test_a_runner_claims_settles_and_aborts_its_own_slot_only(roles, conn):
    op, run1, run2 = roles["op"], roles["run1"], roles["run2"]
    won(op, "acct-alice", "a-1", "s1")
    refused(run2, conn, "SELECT * FROM compute_auction.claim_slot('s1')")
    refused(run2, conn, "SELECT compute_auction.settle('s1', 5, 1.0)")
    refused(run2, conn, "SELECT compute_auction.abort_slot('s1', 'not mine')")
    refused(run1, conn, "SELECT compute_auction.deposit('acct-alice', 10, 'self-service')")
    refused(run1, conn, "SELECT compute_auction.place_bid('acct-alice', 'r-1', 10)")
    assert run1.execute("SELECT task_id FROM compute_auction.claim_slot('s1')").fetchone() == ("a-1",)
    assert run1.execute("SELECT compute_auction.settle('s1', 5, 1.0)").fetchone() == (0,)  # the reserve: 0
    # the next run on s1 aborts, by its runner
    op.execute("SELECT compute_auction.place_bid('acct-bob', 'b-1', 200)")
    assert op.execute("SELECT slot_id FROM compute_auction.clear_round()").fetchall() == [("s1",)]
    assert run1.execute("SELECT compute_auction.abort_slot('s1', 'gpu lost')").fetchone() == (200,)
    assert_audit_clean(conn)


def test_a_slot_without_a_runner_is_operators_only(roles, conn):
    op, run1 = roles["op"], roles["run1"]
    won(op, "acct-alice", "a-1", "s0")
    refused(run1, conn, "SELECT * FROM compute_auction.claim_slot('s0')")
    refused(run1, conn, "SELECT compute_auction.settle('s0', 5, 1.0)")
    refused(run1, conn, "SELECT compute_auction.abort_slot('s0', 'x')")
    assert op.execute("SELECT task_id FROM compute_auction.claim_slot('s0')").fetchone() == ("a-1",)
    # an operator assigns a runner, which then settles the run in progress
    op.execute("SELECT compute_auction.set_slot_runner('s0', %s)", (roles["names"]["run1"],))
    assert run1.execute("SELECT compute_auction.settle('s0', 5, 1.0)").fetchone() == (0,)
    # offer_slot with no runner_role keeps the runner; set_slot_runner(NULL) clears it
    op.execute("SELECT compute_auction.offer_slot('s0', now() - interval '1 minute', 0)")
    assert conn.execute("SELECT runner_role FROM compute_auction.compute_slots WHERE slot_id = 's0'").fetchone() == (
        roles["names"]["run1"],
    )
    op.execute("SELECT compute_auction.set_slot_runner('s0', NULL)")
    assert conn.execute(
        "SELECT runner_role, runner_oid FROM compute_auction.compute_slots WHERE slot_id = 's0'"
    ).fetchone() == (None, None)
    # runners and agents cannot give themselves a slot
    refused(run1, conn, "SELECT compute_auction.set_slot_runner('s0', current_user)")
    refused(roles["alice"], conn, "SELECT compute_auction.offer_slot('s7', now(), 0, current_user)")
    assert_audit_clean(conn)


def test_a_member_of_the_runner_role_without_the_runner_rights_cannot_run_it(cluster, roles, conn):
    # mallory is a member of run1's role but holds no runner grant: only EXECUTE on claim_slot
    mallory = f"mallory_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(mallory)
    conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN NOINHERIT IN ROLE {}").format(ident, sql.Identifier(roles["names"]["run1"]))
    )
    try:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA compute_auction TO {}").format(ident))
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION compute_auction.claim_slot(text) TO {}").format(ident))
        won(roles["op"], "acct-alice", "a-1", "s1")
        with psycopg.connect(cluster.url(conn.info.dbname, user=mallory), autocommit=True) as m:
            refused(m, conn, "SELECT * FROM compute_auction.claim_slot('s1')")
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        conn.execute(sql.SQL("DROP ROLE {}").format(ident))


# -- 4. rights come from this database's grants -----------------------------------------------


def test_a_role_named_operator_gains_nothing_in_a_database_where_it_holds_no_grants(cluster, roles, conn):
    """compute_auction_operator is an operator in the fixture's database (docs/roles.sql ran
    there). In a second market database on the same cluster it holds no grant: its member is
    an agent there (through that database's own agent group) and nothing more."""
    suffix = uuid.uuid4().hex[:8]
    db2, agents2, mallory = f"market2_{suffix}", f"agents2_{suffix}", f"mallory_{suffix}"
    with psycopg.connect(cluster.url(), autocommit=True) as su:
        su.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db2)))
        su.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(agents2)))
        su.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE compute_auction_operator, {}").format(
                sql.Identifier(mallory), sql.Identifier(agents2)
            )
        )
    try:
        with psycopg.connect(cluster.url(db2), autocommit=True) as su2:
            su2.execute("CREATE EXTENSION compute_auction")
            su2.execute(sql.SQL("GRANT USAGE ON SCHEMA compute_auction TO {}").format(sql.Identifier(agents2)))
            su2.execute(
                sql.SQL(
                    "GRANT EXECUTE ON FUNCTION compute_auction.place_bid(text, text, bigint, double precision, "
                    "timestamptz), compute_auction.cancel_bid(bigint) TO {}"
                ).format(sql.Identifier(agents2))
            )
            su2.execute("SELECT compute_auction.open_account('quest-42', 'quest', 5000)")
            su2.execute("SELECT compute_auction.open_account('acct-other', 'agent', 5000, 'postgres')")
            with psycopg.connect(cluster.url(db2, user=mallory), autocommit=True) as m2:
                refused(m2, su2, "SELECT compute_auction.place_bid('quest-42', 'm-1', 100)")
                refused(m2, su2, "SELECT compute_auction.place_bid('acct-other', 'm-1', 100)")
                refused(m2, su2, "SELECT compute_auction.deposit('quest-42', 100, 'mint')")
                assert_audit_clean(su2)
        # in the fixture's database the same role is an operator
        with psycopg.connect(cluster.url(conn.info.dbname, user=mallory), autocommit=True) as m1:
            assert m1.execute("SELECT compute_auction.place_bid('quest-42', 'm-1', 100)").fetchone()[0] > 0
    finally:
        with psycopg.connect(cluster.url(), autocommit=True) as su:
            su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db2)))
            su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(mallory)))
            su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(agents2)))


# -- 2. (cont.) a dump restored into another cluster keeps its owners -------------------------


@pytest.fixture
def other_cluster(cluster):
    """A second, empty cluster (own data directory and port), stopped and removed afterwards."""
    data = Path(tempfile.mkdtemp(prefix="pgdata-other-", dir=ROOT / "target"))
    shutil.chown(data, cluster.runas)
    data.chmod(0o700)
    port = free_tcp_port()

    def as_pg(*cmd: str) -> None:
        subprocess.run(["sudo", "-u", cluster.runas, "--", *cmd], check=True, stdout=subprocess.DEVNULL)

    as_pg(f"{cluster.bindir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    with open(data / "postgresql.conf", "a") as f:
        f.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{data}'\nfsync = off\n")
    as_pg(f"{cluster.bindir}/pg_ctl", "-D", str(data), "-l", str(data / "server.log"), "-w", "-t", "60", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        as_pg(f"{cluster.bindir}/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


def test_a_dump_restored_into_another_cluster_with_the_same_role_names_keeps_its_owners(
    cluster, roles, conn, other_cluster, tmp_path
):
    names = roles["names"]
    roles["op"].execute("SELECT compute_auction.place_bid('acct-alice', 'a-1', 100)")
    dump = tmp_path / "market.sql"
    subprocess.run(
        [f"{cluster.bindir}/pg_dump", "--no-owner", "-f", str(dump), cluster.url(conn.info.dbname)], check=True
    )
    with psycopg.connect(f"{other_cluster}/postgres", autocommit=True) as su:
        # the other cluster's roles: the same names, other OIDs (a filler role shifts them)
        su.execute("CREATE ROLE filler_role NOLOGIN")
        su.execute(ROLES_SQL.split("GRANT USAGE", 1)[0])  # the group roles only: no extension yet
        su.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE compute_auction_agent").format(sql.Identifier(names["alice"])))
        su.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE compute_auction_agent").format(sql.Identifier(names["bob"])))
        su.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE compute_auction_runner").format(sql.Identifier(names["run1"])))
        su.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(names["run2"])))
        su.execute("CREATE DATABASE market")
        old_oid = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (names["alice"],)).fetchone()[0]
        new_oid = su.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (names["alice"],)).fetchone()[0]
        assert old_oid != new_oid
    subprocess.run(
        [f"{cluster.bindir}/psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump), f"{other_cluster}/market"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with psycopg.connect(f"{other_cluster}/market", autocommit=True) as su:
        assert su.execute("SELECT * FROM compute_auction.unresolved_roles()").fetchall() == []
        with psycopg.connect(
            f"{other_cluster.replace('postgres@', names['alice'] + '@')}/market", autocommit=True
        ) as a:
            assert a.execute("SELECT compute_auction.place_bid('acct-alice', 'a-2', 100)").fetchone()[0] > 0
            refused(a, su, "SELECT compute_auction.place_bid('acct-bob', 'a-3', 100)")
        with psycopg.connect(f"{other_cluster.replace('postgres@', names['run1'] + '@')}/market", autocommit=True) as r:
            assert r.execute("SELECT * FROM compute_auction.claim_slot('s1')").fetchall() == []
            refused(r, su, "SELECT * FROM compute_auction.claim_slot('s2')")
        assert_audit_clean(su)
