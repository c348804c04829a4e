"""Upgrading in place: a populated 0.1.0 market, ALTER EXTENSION compute_auction UPDATE, and
the market afterwards; the upgraded schema equals a fresh install's; and the schema gate (a
fresh install equals the snapshot committed in tests/schema/).

scripts/test.sh installs 0.1.0 (built from its commit, cached under target/releases/) next to
the current release: scripts/lib.sh install_old_release.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime
from types import SimpleNamespace

import psycopg
import pytest
from psycopg import sql

from upgrade_helpers import (
    REFRESH_ENV,
    ROOT,
    describe_schema,
    diff,
    git_show,
    privileges_of,
    read_snapshot,
    rows_of,
    sequence_positions,
    snapshot_path,
    table_names,
    write_snapshot,
)

OLD_VERSION = "0.1.0"
OLD_COMMIT = "0a1e601"
NEW_VERSION = "0.2.0"
NEW_LIBRARY = f"compute_auction-{NEW_VERSION}"

# Columns that the upgrade adds to existing rows, with the value each existing row gets (the
# documented default): {"table": {"column": value}}. Every later issue that adds a column to a
# table adds it here, and the test checks the upgraded rows have exactly that.
# A value may be a function of the upgraded row, for a column derived from the row's data.
NEW_COLUMNS: dict[str, dict[str, object]] = {
    # issue 16: an existing owner is resolved by its name (regrole reads back as the name)
    # issue 26: no wallet has a low-balance threshold until an operator sets one
    "token_accounts": {"owner_oid": lambda row, after: row["owner_role"], "low_balance_threshold": None},
    "compute_slots": {"runner_role": None, "runner_oid": None},
    # issue 18: the tokens-refunded counter starts at the refunds already in the ledger
    # issue 21: nothing folded yet; the deltas carry the upgrading transaction's ID
    "open_bid_count": {
        "tokens_refunded": lambda row, after: sum(
            e["delta_balance"] for e in after["token_ledger"] if e["entry_kind"] == "refund"
        ),
        "folded_below": "0",
    },
    "open_bid_count_deltas": {"tokens_refunded": 0, "xid": lambda row, after: row["xid"]},
    # issue 25: a round's last winner from its clears (the lowest unfilled reserve is unknown)
    "compute_auction_rounds": {
        "unfilled_reserve_min": None,
        "last_winner_bid_id": lambda row, after: last_winner(row, after, "bid_id"),
        "last_winner_price_tokens": lambda row, after: last_winner(row, after, "max_price_tokens"),
        "last_winner_placed_at": lambda row, after: last_winner(row, after, "placed_at"),
    },
}


def last_winner(row: dict, after: dict, key: str):
    """The round's winner last in the book order (price, then placed_at, then id), from the
    upgraded clears and bids: bid_id, max_price_tokens (its clear's) or placed_at (its bid's)."""
    bids = {b["id"]: b for b in after["compute_auction_bids"]}
    winners = [
        {**c, "placed_at": datetime.fromisoformat(bids[c["bid_id"]]["placed_at"])}
        for c in after["compute_auction_clears"]
        if c["round_id"] == row["round_id"]
    ]
    if not winners:
        return None
    last = max(winners, key=lambda c: (-c["max_price_tokens"], c["placed_at"], c["bid_id"]))
    if key == "placed_at":
        return bids[last["bid_id"]]["placed_at"]
    return last[key]


# Privileges on 0.1.0's objects that the upgrade changes on purpose: {documented group role:
# {privilege key of privileges_of(): value after the upgrade}}, checked on a login member.
CHANGED_PRIVILEGES: dict[str, dict[str, bool]] = {
    # issue 16: claiming a slot is the runners' (compute_auction_runner), no longer agents'
    "compute_auction_agent": {"function compute_auction.claim_slot(text)": False},
}

# What README "Upgrading" tells an operator to run by hand after the upgrade, as files of the
# repo run by a superuser in the upgraded database (e.g. "docs/roles.sql"); the test does the same.
POST_UPGRADE_FILES: list[str] = ["docs/roles.sql"]  # issue 16: creates compute_auction_runner


def _admin(cluster, dbname="postgres"):
    return psycopg.connect(cluster.url(dbname), autocommit=True)


def _create_database(cluster, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin(cluster) as a:
        a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def _drop_database(cluster, name: str) -> None:
    with _admin(cluster) as a:
        a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _c_functions(conn) -> dict[str, str]:
    rows = conn.execute(
        """SELECT p.oid::regprocedure::text, p.probin FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'compute_auction' AND p.probin IS NOT NULL"""
    ).fetchall()
    return dict(rows)


def _mapped_files(conn) -> str:
    """The shared objects mapped into the connection's backend (the tests run as root, on the
    database's host)."""
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def _sql_api(conn) -> dict[str, str]:
    """Every function's signature (with its argument names and defaults) and result."""
    rows = conn.execute(
        """SELECT p.oid::regprocedure::text,
                  pg_get_function_arguments(p.oid) || ' -> ' || pg_get_function_result(p.oid)
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'compute_auction'"""
    ).fetchall()
    return dict(rows)


def _version(conn) -> str:
    return conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'compute_auction'").fetchone()[0]


def _populate(su, agent, operator, agent_role: str, operator_role: str) -> dict:
    """A market with some history, at 0.1.0. su is a superuser connection; agent and operator are
    connections of the login roles. Returns the ids the checks need."""
    q = su.execute

    def one(c, query, params=None):
        return c.execute(query, params).fetchone()[0]

    q("SELECT compute_auction.open_account('system-ops', 'system', 0)")
    q("SELECT compute_auction.open_account('agent-owned', 'agent', 50000, %s)", (agent_role,))
    q("SELECT compute_auction.open_account('agent-free', 'agent', 40000)")
    q("SELECT compute_auction.open_account('agent-late', 'agent', 10000)")
    q("SELECT compute_auction.open_account('agent-later', 'agent')")
    q("SELECT compute_auction.set_account_owner('agent-later', %s)", (agent_role,))
    q("SELECT compute_auction.open_account('quest-search', 'quest', 200000)")
    q("SELECT compute_auction.set_account_owner('quest-search', %s)", (operator_role,))
    # deposits with idempotency keys, one of them retried
    operator.execute("SELECT compute_auction.deposit('agent-free', 1000, 'good work', 'dep-1')")
    operator.execute("SELECT compute_auction.deposit('agent-free', 1000, 'good work', 'dep-1')")
    q("SELECT compute_auction.deposit('agent-owned', 500, 'bonus', 'dep-2')")
    q("SELECT compute_auction.deposit('agent-later', 3000, 'first pay')")
    q("SELECT compute_auction.withdraw('agent-free', 200, 'cash out', 'wd-1')")

    # round 1: two slots, three bids; gpu-01's run settles, gpu-02's aborts
    operator.execute("SELECT compute_auction.offer_slot('gpu-01')")
    operator.execute("SELECT compute_auction.offer_slot('gpu-02', now(), 100)")
    q("SELECT compute_auction.place_bid('agent-free', 't-1', 3000, 12.5)")
    one(agent, "SELECT compute_auction.place_bid('agent-owned', 't-2', 2500)")
    q("SELECT compute_auction.place_bid('agent-late', 't-3', 900)")
    q("SELECT compute_auction.place_bid('agent-late', 't-3', 1000)")  # replaced in place
    cancelled = one(su, "SELECT compute_auction.place_bid('agent-free', 't-9', 400)")
    q("SELECT compute_auction.cancel_bid(%s)", (cancelled,))
    won = operator.execute("SELECT slot_id, task_id FROM compute_auction.clear_round()").fetchall()
    assert sorted(won) == [("gpu-01", "t-1"), ("gpu-02", "t-2")], won
    operator.execute("SELECT * FROM compute_auction.claim_slot('gpu-01')")
    operator.execute("SELECT compute_auction.settle('gpu-01', 1800, 0.8)")
    operator.execute("SELECT compute_auction.abort_slot('gpu-02', 'runner crashed')")

    # round 2: the quest bids for its backlog; both slots are won, gpu-01's is claimed
    rows = q(
        """SELECT task_id, outcome FROM compute_auction.submit_bids_for_tasks('quest-search',
             '[{"task_id": "q-1", "expected_value_usd": 40},
               {"task_id": "q-2", "expected_value_usd": 30},
               {"task_id": "q-3", "expected_value_usd": 5, "blocked": true}]', 100)"""
    ).fetchall()
    assert [o for _, o in rows].count("placed") == 2, rows
    won = operator.execute("SELECT slot_id, task_id FROM compute_auction.clear_round()").fetchall()
    assert sorted(t for _, t in won) == ["q-1", "q-2"], won
    operator.execute("SELECT * FROM compute_auction.claim_slot('gpu-01')")

    # round 3: nothing free; run_cycle clears an empty round
    operator.execute("SELECT compute_auction.run_cycle('1 hour')")

    # expired bids: one already refunded at 0.1.0, two left for after the upgrade
    q("SELECT compute_auction.place_bid('agent-later', 'x-1', 300, ttl_at => now() + interval '1 minute')")
    q("SELECT * FROM compute_auction.refund_unfilled(now() + interval '2 minutes')")
    left = [
        one(su, "SELECT compute_auction.place_bid(%s, %s, %s, ttl_at => now() + interval '1 second')", (b, t, p))
        for b, t, p in [("agent-later", "x-2", 200), ("agent-free", "x-3", 150)]
    ]
    # the fallback: quest allocations on two days
    for day in ("2026-11-01", "2026-11-02"):
        q(
            """SELECT * FROM compute_auction.allocate_proportional(%s::date, 1000000,
                 '[{"quest_id": "quest-search", "expected_value": 3.5},
                   {"quest_id": "quest-eval", "expected_value": 1}]')""",
            (day,),
        )
    past_ttl = "SELECT bool_and(ttl_at < now()) FROM compute_auction.compute_auction_bids WHERE id = ANY(%s)"
    deadline = time.monotonic() + 60  # one-second TTLs: the deadline only detects a hang
    while not su.execute(past_ttl, (left,)).fetchone()[0]:
        assert time.monotonic() < deadline, "the one-second bids never passed their TTL"
        time.sleep(0.2)  # until the one-second bids are past their TTL
    return {"expired_unrefunded": left}


@pytest.fixture(scope="module")
def upgraded(cluster):
    """A populated 0.1.0 market with docs/roles.sql as of 0.1.0 and two login roles, before and
    after ALTER EXTENSION compute_auction UPDATE TO '0.2.0'."""
    with _admin(cluster) as a:
        available = a.execute(
            "SELECT version FROM pg_available_extension_versions WHERE name = 'compute_auction'"
        ).fetchall()
    assert (OLD_VERSION,) in available, (
        f"compute_auction {OLD_VERSION} is not installed next to the current release ({available}); "
        "scripts/test.sh installs it (install_old_releases in scripts/lib.sh)"
    )
    tag = uuid.uuid4().hex[:8]
    agent_role, operator_role = f"up_agent_{tag}", f"up_operator_{tag}"
    db = _create_database(cluster, "upgrade")
    try:
        with _admin(cluster, db) as su:
            su.execute(sql.SQL("CREATE EXTENSION compute_auction VERSION {}").format(sql.Literal(OLD_VERSION)))
            su.execute(git_show(OLD_COMMIT, "docs/roles.sql"))
            su.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE compute_auction_agent").format(sql.Identifier(agent_role)))
            su.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE compute_auction_operator").format(sql.Identifier(operator_role))
            )
            with (
                psycopg.connect(cluster.url(db, agent_role), autocommit=True) as agent,
                psycopg.connect(cluster.url(db, operator_role), autocommit=True) as operator,
            ):
                ids = _populate(su, agent, operator, agent_role, operator_role)
            before = SimpleNamespace(
                version=_version(su),
                libraries=_c_functions(su),
                api=_sql_api(su),
                tables={t: rows_of(su, t) for t in table_names(su)},
                sequences=sequence_positions(su),
                privileges={r: privileges_of(su, r) for r in (agent_role, operator_role)},
                audit=su.execute("SELECT * FROM compute_auction.audit()").fetchall(),
            )
            # a session of the agent that has run 0.1.0's code, kept open across the upgrade
            old_session = psycopg.connect(cluster.url(db, agent_role), autocommit=True)
            old_session.execute("SELECT compute_auction.balance('agent-owned')")
            old_session_maps_before = _mapped_files(old_session)

            # ALTER EXTENSION UPDATE is transactional: rolled back, nothing changed
            with psycopg.connect(cluster.url(db)) as tx:
                tx.execute(sql.SQL("ALTER EXTENSION compute_auction UPDATE TO {}").format(sql.Literal(NEW_VERSION)))
                inside = _version(tx), _c_functions(tx)
                tx.rollback()
            rolled_back = _version(su), _c_functions(su)

            su.execute(sql.SQL("ALTER EXTENSION compute_auction UPDATE TO {}").format(sql.Literal(NEW_VERSION)))
            for path in POST_UPGRADE_FILES:
                su.execute((ROOT / path).read_text())
            after = SimpleNamespace(
                version=_version(su),
                libraries=_c_functions(su),
                api=_sql_api(su),
                tables={t: rows_of(su, t) for t in table_names(su)},
                sequences=sequence_positions(su),
                privileges={r: privileges_of(su, r) for r in (agent_role, operator_role)},
            )
        yield SimpleNamespace(
            db=db,
            url=cluster.url(db),
            agent_role=agent_role,
            operator_role=operator_role,
            ids=ids,
            before=before,
            after=after,
            inside=inside,
            rolled_back=rolled_back,
            old_session=old_session,
            old_session_maps_before=old_session_maps_before,
        )
        old_session.close()
    finally:
        _drop_database(cluster, db)
        with _admin(cluster) as a:
            for role in (agent_role, operator_role):
                a.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_0_1_0_runs_its_own_library_until_upgraded(upgraded):
    b = upgraded.before
    assert b.version == OLD_VERSION
    assert b.audit == []
    assert len(b.libraries) >= 20
    assert set(b.libraries.values()) == {"$libdir/compute_auction"}, b.libraries
    assert upgraded.after.version == NEW_VERSION
    # later issues may add functions, or add trailing defaulted arguments (a new identity)
    extended = _extended_functions(upgraded.before.api, upgraded.after.api)
    assert {extended.get(f, f) for f in b.libraries} <= set(upgraded.after.libraries)
    assert set(upgraded.after.libraries.values()) == {NEW_LIBRARY}, upgraded.after.libraries


def test_alter_extension_update_is_transactional(upgraded):
    version, libraries = upgraded.inside
    assert version == NEW_VERSION and set(libraries.values()) == {NEW_LIBRARY}
    version, libraries = upgraded.rolled_back
    assert version == OLD_VERSION and libraries == upgraded.before.libraries


def test_every_row_survives_the_upgrade(upgraded):
    before, after = upgraded.before.tables, upgraded.after.tables
    assert set(before) <= set(after), f"tables lost: {set(before) - set(after)}"
    for table, old_rows in before.items():
        added = NEW_COLUMNS.get(table, {})
        new_rows = after[table]
        for row in new_rows:
            for column, value in added.items():
                want = value(row, after) if callable(value) else value
                assert row.get(column) == want, (table, column, row)
        stripped = [{k: v for k, v in row.items() if k not in added} for row in new_rows]
        assert stripped == old_rows, table
        if not added:
            assert {k for r in new_rows for k in r} == {k for r in old_rows for k in r}, table
    assert sum(len(rows) for rows in before.values()) > 40  # the market has history to lose
    seq_before, seq_after = upgraded.before.sequences, upgraded.after.sequences
    assert {name: seq_after.get(name) for name in seq_before} == seq_before
    # a sequence the upgrade adds (with its table) starts unused
    assert {name: pos for name, pos in seq_after.items() if name not in seq_before} == {
        name: (1, False) for name in seq_after if name not in seq_before
    }


def _extended_by_trailing_defaults(sig: str, new_sig: str) -> bool:
    """Whether `new_sig` ("args -> result", as _sql_api renders it) is `sig` with only trailing
    arguments that all have defaults added: every 0.1.0 call still resolves to it."""
    args, result = sig.rsplit(" -> ", 1)
    new_args, new_result = new_sig.rsplit(" -> ", 1)
    if result != new_result or not new_args.startswith(args):
        return False
    added = new_args[len(args) :]
    if args:
        if not added.startswith(", "):
            return False
        added = added[2:]
    # pg_get_function_arguments separates arguments with ", "; a default's text could contain
    # one too, but then the piece after it has no DEFAULT and fails here (stricter, not looser)
    return bool(added) and all(" DEFAULT " in a for a in added.split(", "))


def _extended_functions(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """0.1.0 functions (identity -> identity) that the upgrade replaced by the same function
    with trailing defaulted arguments added (a new identity, e.g. issue 15's stats)."""
    added = {f: sig for f, sig in after.items() if f not in before}
    out = {}
    for f, sig in before.items():
        if f in after:
            continue
        name = f.split("(", 1)[0]
        new = [g for g, s in added.items() if g.split("(", 1)[0] == name and _extended_by_trailing_defaults(sig, s)]
        if len(new) == 1:
            out[f] = new[0]
    return out


def test_the_0_1_0_sql_api_is_kept(upgraded):
    # what lets a 0.1.0 driver run against a 0.2.0 database during a rolling upgrade (README).
    # The one change allowed: trailing arguments with defaults added (issue 15's
    # stats(..., max_rounds integer DEFAULT 1000)): every 0.1.0 call still resolves. The
    # function's identity (its key here) changes, so it is found by name among the added ones.
    before, after = upgraded.before.api, upgraded.after.api
    extended = _extended_functions(before, after)
    changed = {f: (sig, after.get(f)) for f, sig in before.items() if after.get(f) != sig and f not in extended}
    assert changed == {}, f"0.1.0 functions changed or gone: {changed}"


def test_only_trailing_defaulted_arguments_count_as_kept():
    kept = _extended_by_trailing_defaults
    old = "since timestamp with time zone DEFAULT now(), include_rounds boolean DEFAULT true -> jsonb"
    assert kept(old, old.replace(" -> ", ", max_rounds integer DEFAULT 1000 -> "))
    assert kept(" -> jsonb", "x integer DEFAULT 1 -> jsonb")
    assert not kept(old, old.replace(" -> ", ", max_rounds integer -> "))  # no default
    assert not kept(old, old.replace(" -> jsonb", ", max_rounds integer DEFAULT 1 -> json"))  # result
    assert not kept(old, "max_rounds integer DEFAULT 1, " + old)  # not trailing
    assert not kept(old, old.replace("boolean", "integer") + "")  # an argument's type changed
    assert not kept(old, old)  # nothing added is no change, handled by the equality check


def test_login_roles_keep_exactly_their_privileges(upgraded):
    # a function extended with trailing defaulted arguments is compared under its new identity
    extended = {
        f"function {f}": f"function {g}"
        for f, g in _extended_functions(upgraded.before.api, upgraded.after.api).items()
    }
    groups = {upgraded.agent_role: "compute_auction_agent", upgraded.operator_role: "compute_auction_operator"}
    for role, group in groups.items():
        before, after = upgraded.before.privileges[role], upgraded.after.privileges[role]
        expected = {k: v for k, v in CHANGED_PRIVILEGES.get(group, {}).items() if k in before}
        changed = {
            k: (v, after.get(extended.get(k, k))) for k, v in before.items() if after.get(extended.get(k, k)) != v
        }
        assert changed == {k: (before[k], v) for k, v in expected.items() if before[k] != v}, (
            f"{role}: privileges on 0.1.0's objects changed by the upgrade: {changed}"
        )
        assert {k: after.get(extended.get(k, k)) for k in expected} == expected
    agent = upgraded.before.privileges[upgraded.agent_role]
    assert agent["function compute_auction.place_bid(text,text,bigint,double precision,timestamp with time zone)"]
    assert not agent["function compute_auction.clear_round(timestamp with time zone)"]
    assert not agent["table compute_auction.token_accounts UPDATE"]


def test_login_roles_have_what_a_fresh_install_with_todays_roles_sql_gives(upgraded, cluster):
    # the grants of objects the upgrade adds: the upgrade script (or POST_UPGRADE_FILES) must
    # give the documented roles what docs/roles.sql gives them on a fresh install
    fresh = _create_database(cluster, "fresh_roles")
    try:
        with _admin(cluster, fresh) as c:
            c.execute("CREATE EXTENSION compute_auction")
            c.execute((ROOT / "docs" / "roles.sql").read_text())
            want = {r: privileges_of(c, r) for r in (upgraded.agent_role, upgraded.operator_role)}
    finally:
        _drop_database(cluster, fresh)
    for role, privileges in want.items():
        got = upgraded.after.privileges[role]
        differ = {k: (v, got.get(k)) for k, v in privileges.items() if got.get(k) != v}
        assert differ == {}, f"{role}: (fresh install + docs/roles.sql, upgraded): {differ}"


def test_the_market_works_after_the_upgrade(upgraded, cluster):
    db = upgraded.db
    with (
        _admin(cluster, db) as su,
        psycopg.connect(cluster.url(db, upgraded.agent_role), autocommit=True) as agent,
        psycopg.connect(cluster.url(db, upgraded.operator_role), autocommit=True) as operator,
    ):
        assert su.execute("SELECT * FROM compute_auction.audit()").fetchall() == []
        # the expired bids are refunded
        expired, refunded = operator.execute("SELECT * FROM compute_auction.refund_unfilled()").fetchone()
        assert (expired, refunded) == (2, 350)
        statuses = su.execute(
            "SELECT status FROM compute_auction.compute_auction_bids WHERE id = ANY(%s)",
            (upgraded.ids["expired_unrefunded"],),
        ).fetchall()
        assert statuses == [("expired",), ("expired",)]
        # the won slots are settled: gpu-01 was claimed at 0.1.0, gpu-02 is claimed now
        assert operator.execute("SELECT compute_auction.settle('gpu-01', 900, 0.5)").fetchone()[0] > 0
        assert len(operator.execute("SELECT * FROM compute_auction.claim_slot('gpu-02')").fetchall()) == 1
        assert operator.execute("SELECT compute_auction.settle('gpu-02', 900, 0.5)").fetchone()[0] > 0
        # new bids, by the agent's login role for its own account, and a round clears
        new_bid = agent.execute("SELECT compute_auction.place_bid('agent-owned', 'post-1', 9000)").fetchone()[0]
        agent.execute("SELECT compute_auction.place_bid('agent-later', 'post-2', 500)")
        operator.execute("SELECT compute_auction.offer_slot('gpu-03')")
        won = operator.execute("SELECT bid_id FROM compute_auction.clear_round()").fetchall()
        assert len(won) == 3 and (new_bid,) in won, won
        # what the agent could not do before, it still cannot
        with pytest.raises(psycopg.Error) as e:
            agent.execute("SELECT * FROM compute_auction.clear_round()")
        assert e.value.sqlstate == "42501"
        with pytest.raises(psycopg.Error) as e:
            agent.execute("SELECT compute_auction.place_bid('quest-search', 'post-3', 10)")
        assert e.value.sqlstate == "42501"
        assert su.execute("SELECT * FROM compute_auction.audit()").fetchall() == []


def test_a_session_open_across_the_upgrade_runs_the_new_library(upgraded):
    s = upgraded.old_session
    assert "/compute_auction.so" in upgraded.old_session_maps_before
    assert f"/{NEW_LIBRARY}.so" not in upgraded.old_session_maps_before
    bid = s.execute("SELECT compute_auction.place_bid('agent-owned', 'post-4', 20)").fetchone()[0]
    assert s.execute("SELECT compute_auction.bid_status(%s) ->> 'status'", (bid,)).fetchone()[0] == "open"
    assert f"/{NEW_LIBRARY}.so" in _mapped_files(s)


def test_upgraded_schema_equals_a_fresh_install(upgraded, cluster):
    fresh = _create_database(cluster, "fresh")
    try:
        with _admin(cluster, fresh) as c:
            c.execute("CREATE EXTENSION compute_auction")
        want = describe_schema(cluster.url(fresh))
    finally:
        _drop_database(cluster, fresh)
    got = describe_schema(upgraded.url)
    assert got == want, (
        f"the upgraded schema differs from a fresh {NEW_VERSION} install; make "
        f"sql/compute_auction--{OLD_VERSION}--{NEW_VERSION}.sql do what the install scripts do:\n"
        + diff(want, got, f"fresh install of {NEW_VERSION}", f"{OLD_VERSION} upgraded to {NEW_VERSION}")
    )


def test_schema_gate_fresh_install_matches_the_committed_snapshot(cluster):
    db = _create_database(cluster, "gate")
    try:
        with _admin(cluster, db) as c:
            c.execute("CREATE EXTENSION compute_auction")
            version = _version(c)
        got = describe_schema(cluster.url(db))
    finally:
        _drop_database(cluster, db)
    path = snapshot_path(version)
    if os.environ.get(REFRESH_ENV) == "1":
        write_snapshot(path, got)
        return
    assert path.exists(), f"no schema snapshot for {version}: create it with {REFRESH_ENV}=1 (see {path.parent})"
    want = read_snapshot(path)
    assert got == want, (
        f"The extension's schema changed (a fresh install differs from {path.relative_to(path.parents[2])}).\n"
        f"Every schema change needs its upgrade script: add the same change to "
        f"sql/compute_auction--{OLD_VERSION}--{version}.sql (tests/test_upgrade.py checks an upgraded "
        f"database equals a fresh install), add it to CHANGELOG.md, then refresh the snapshot with\n"
        f"  {REFRESH_ENV}=1 pytest tests/test_upgrade.py -k schema_gate\n"
        + diff(want, got, "snapshot", "fresh install")
    )


def _readme_owner_assignment() -> str:
    """The SQL block README "Upgrading" gives operators for assigning owners (issue 16)."""
    text = (ROOT / "README.md").read_text()
    marker = "<!-- upgrade-0.2.0-owners"
    assert marker in text, "README.md lost its owner-assignment block"
    block = text.split(marker, 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
    assert "INSERT INTO owner_map" in block
    return block


def test_readmes_owner_assignment_gives_unowned_wallets_back_to_their_agents(upgraded, cluster):
    """0.1.0's unowned wallets are operators-only after the upgrade; the README's SQL, run with
    a mapping, gives them to their agents' role."""
    db = upgraded.db
    with (
        _admin(cluster, db) as su,
        psycopg.connect(cluster.url(db, upgraded.agent_role), autocommit=True) as agent,
    ):
        with pytest.raises(psycopg.Error) as e:
            agent.execute("SELECT compute_auction.place_bid('agent-free', 'owned-1', 10)")
        assert e.value.sqlstate == "42501"
        lines = []
        for line in _readme_owner_assignment().splitlines():
            if line.startswith("INSERT INTO owner_map"):
                line = "INSERT INTO owner_map (account_id, owner_role) VALUES ('agent-free', {0}), ('agent-late', {0});"
                line = line.format(sql.Literal(upgraded.agent_role).as_string(su))
            lines.append(line)
        with su.cursor() as cur:
            cur.execute("\n".join(lines))  # one simple-query batch, as psql -f would send it
        owners = su.execute(
            "SELECT account_id, owner_role FROM compute_auction.token_accounts "
            "WHERE account_id IN ('agent-free', 'agent-late') ORDER BY 1"
        ).fetchall()
        assert owners == [("agent-free", upgraded.agent_role), ("agent-late", upgraded.agent_role)]
        assert agent.execute("SELECT compute_auction.place_bid('agent-free', 'owned-1', 10)").fetchone()[0] > 0
        assert agent.execute("SELECT compute_auction.place_bid('agent-late', 'owned-2', 10)").fetchone()[0] > 0
        assert su.execute("SELECT * FROM compute_auction.unresolved_roles()").fetchall() == []
        assert su.execute("SELECT * FROM compute_auction.audit()").fetchall() == []


def test_refunds_before_the_first_round_are_counted_after_the_upgrade(cluster):
    """A 0.1.0 market that refunded bids but never cleared a round has no counter row yet: the
    upgrade's seed goes into a delta, which the first round folds (issue 18's counter)."""
    db = _create_database(cluster, "upgrade_norounds")
    try:
        with _admin(cluster, db) as su:
            su.execute(sql.SQL("CREATE EXTENSION compute_auction VERSION {}").format(sql.Literal(OLD_VERSION)))
            su.execute("SELECT compute_auction.open_account('a', 'agent', 1000)")
            su.execute("SELECT compute_auction.place_bid('a', 't1', 70, NULL, now() + interval '1 minute')")
            su.execute("SELECT compute_auction.place_bid('a', 't2', 30, NULL, now() + interval '1 minute')")
            su.execute("SELECT * FROM compute_auction.refund_unfilled(now() + interval '2 minutes')")
            assert su.execute("SELECT count(*) FROM compute_auction.open_bid_count").fetchone()[0] == 0
            su.execute(sql.SQL("ALTER EXTENSION compute_auction UPDATE TO {}").format(sql.Literal(NEW_VERSION)))
            total = "SELECT (compute_auction.market_summary() ->> 'tokens_refunded_total')::bigint"
            assert su.execute(total).fetchone()[0] == 100
            assert su.execute("SELECT * FROM compute_auction.audit()").fetchall() == []
            su.execute("SELECT * FROM compute_auction.clear_round()")
            assert su.execute("SELECT open_bids, tokens_refunded FROM compute_auction.open_bid_count").fetchall() == [
                (0, 100)
            ]
            assert su.execute(total).fetchone()[0] == 100
            assert su.execute("SELECT * FROM compute_auction.audit()").fetchall() == []
    finally:
        _drop_database(cluster, db)
