"""Issue 17, hardening: no planted code runs inside the extension's SECURITY DEFINER functions,
and a bid's time priority is the moment place_bid ran. (The time-argument checks are cases of
tests/test_hostile_inputs.py.)"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql

from conftest import assert_audit_clean, drop_database, new_database, sqlstate_of


@pytest.fixture
def empty_db(cluster):
    """A database without the extension, dropped afterwards, with a login role that owns it."""
    name = new_database(cluster, with_extension=False)
    owner = f"dbowner_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.url(), autocommit=True) as su:
        su.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
        su.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(owner)))
    yield name, owner
    drop_database(cluster, name)
    with psycopg.connect(cluster.url(), autocommit=True) as su:
        su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(owner)))


def test_create_extension_refuses_a_schema_someone_else_created(cluster, empty_db):
    name, owner = empty_db
    with psycopg.connect(cluster.url(name, user=owner), autocommit=True) as o:
        o.execute("CREATE SCHEMA compute_auction")
    with psycopg.connect(cluster.url(name), autocommit=True) as su:
        assert sqlstate_of(su, "CREATE EXTENSION compute_auction") == "42501"
        assert su.execute("SELECT count(*) FROM pg_extension WHERE extname = 'compute_auction'").fetchone() == (0,)
        assert su.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'compute_auction'::regnamespace"
        ).fetchone() == (0,)
        # the schema's owner drops it; then the extension installs into a schema of its own
        with psycopg.connect(cluster.url(name, user=owner), autocommit=True) as o:
            o.execute("DROP SCHEMA compute_auction")
        su.execute("CREATE EXTENSION compute_auction")
        assert su.execute(
            "SELECT nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) FROM pg_namespace "
            "WHERE nspname = 'compute_auction'"
        ).fetchone() == (True,)


def test_create_extension_refuses_a_schema_that_already_holds_objects(cluster, empty_db):
    name, _ = empty_db
    with psycopg.connect(cluster.url(name), autocommit=True) as su:
        su.execute("CREATE SCHEMA compute_auction")
        su.execute("CREATE FUNCTION compute_auction.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT now()'")
        assert sqlstate_of(su, "CREATE EXTENSION compute_auction") == "42501"
        assert su.execute("SELECT count(*) FROM pg_extension WHERE extname = 'compute_auction'").fetchone() == (0,)


# Objects a role that gained CREATE on the extension's schema plants there, each logging
# current_user when it runs: they would shadow built-ins a SECURITY DEFINER function uses if its
# search_path put the extension's schema before pg_catalog.
PLANTS = [
    """CREATE FUNCTION compute_auction.planted_eq_text(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $$
       BEGIN INSERT INTO public.planted_log VALUES ('=(text,text)', current_user); RETURN a OPERATOR(pg_catalog.=) b;
       END $$""",
    "CREATE OPERATOR compute_auction.= (LEFTARG = text, RIGHTARG = text, FUNCTION = compute_auction.planted_eq_text)",
    """CREATE FUNCTION compute_auction.planted_eq_int8(a bigint, b bigint) RETURNS boolean LANGUAGE plpgsql AS $$
       BEGIN INSERT INTO public.planted_log VALUES ('=(bigint,bigint)', current_user);
       RETURN a OPERATOR(pg_catalog.=) b; END $$""",
    "CREATE OPERATOR compute_auction.= (LEFTARG = bigint, RIGHTARG = bigint, "
    "FUNCTION = compute_auction.planted_eq_int8)",
    """CREATE FUNCTION compute_auction.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
       BEGIN INSERT INTO public.planted_log VALUES ('now()', current_user); RETURN pg_catalog.now(); END $$""",
    """CREATE FUNCTION compute_auction.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS $$
       BEGIN INSERT INTO public.planted_log VALUES ('clock_timestamp()', current_user);
       RETURN pg_catalog.clock_timestamp(); END $$""",
    """CREATE FUNCTION compute_auction.length(t text) RETURNS integer LANGUAGE plpgsql AS $$
       BEGIN INSERT INTO public.planted_log VALUES ('length(text)', current_user); RETURN pg_catalog.length(t);
       END $$""",
]


def test_planted_operators_and_functions_never_run_during_a_market_cycle(cluster, conn):
    mallory = f"mallory_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(mallory)
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
    try:
        conn.execute("CREATE TABLE public.planted_log (what text, ran_as text)")
        conn.execute("GRANT INSERT ON public.planted_log TO PUBLIC")
        # someone later gains CREATE on the extension's schema and plants code there
        conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA compute_auction TO {}").format(ident))
        with psycopg.connect(cluster.url(conn.info.dbname, user=mallory), autocommit=True) as m:
            for stmt in PLANTS:
                m.execute(stmt)
            # the plants work: called directly, they log
            m.execute("SELECT 'a'::text OPERATOR(compute_auction.=) 'a'::text")
        assert conn.execute("SELECT count(*) FROM public.planted_log").fetchone() == (1,)
        conn.execute("TRUNCATE public.planted_log")

        # a full market cycle, as the superuser that owns every SECURITY DEFINER function
        q = conn.execute
        q("SELECT compute_auction.open_account('alice', 'agent', 10000)")
        q("SELECT compute_auction.open_account('quest-1', 'quest', 10000)")
        q("SELECT compute_auction.deposit('alice', 100, 'good work', 'k-1')")
        q("SELECT compute_auction.withdraw('alice', 10, 'cash out')")
        q("SELECT compute_auction.offer_slot('s1', now() - interval '1 minute')")
        q("SELECT compute_auction.offer_slot('s2', now() - interval '1 minute', 5)")
        a = q("SELECT compute_auction.place_bid('alice', 'a-1', 300, 1.5)").fetchone()[0]
        q("SELECT compute_auction.place_bid('alice', 'a-1', 350, 1.5)")  # replace
        q(
            "SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', "
            """'[{"task_id": "q-1", "expected_value_usd": 2}, {"task_id": "q-2", "expected_value_usd": 1}]', 100)"""
        )
        q("SELECT compute_auction.place_bid('alice', 'a-2', 50, NULL, now() + interval '1 second')")
        q("SELECT compute_auction.cancel_bid(compute_auction.place_bid('alice', 'a-3', 20))")
        won = q("SELECT slot_id FROM compute_auction.clear_round()").fetchall()
        assert len(won) == 2
        for (slot,) in won:
            assert q("SELECT * FROM compute_auction.claim_slot(%s)", (slot,)).fetchall()
        q("SELECT compute_auction.settle(%s, 10, 0.5)", (won[0][0],))
        q("SELECT compute_auction.abort_slot(%s, 'x')", (won[1][0],))
        q("SELECT * FROM compute_auction.refund_unfilled(now() + interval '1 hour')")
        q("SELECT compute_auction.abort_stale('1 hour')")
        q("SELECT compute_auction.apply_pending()")
        q("SELECT compute_auction.run_cycle()")
        q("SELECT compute_auction.bid_status(%s)", (a,))
        q("SELECT compute_auction.order_book(10)")
        q("SELECT compute_auction.stats()")
        q("SELECT * FROM compute_auction.price_history()")
        q("SELECT compute_auction.price_to_win(), compute_auction.last_round(), compute_auction.market_summary()")
        q("SELECT * FROM compute_auction.balance('alice'), compute_auction.pending_balance('alice')")
        q("SELECT * FROM compute_auction.allocate_proportional(current_date, 1000, '[]')")
        q("SELECT * FROM compute_auction.unresolved_roles()")
        assert_audit_clean(conn)
        assert conn.execute("SELECT what, ran_as FROM public.planted_log").fetchall() == []
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        conn.execute(sql.SQL("DROP ROLE {}").format(ident))


def test_time_priority_is_when_place_bid_ran_not_when_its_transaction_began(cluster, conn):
    conn.execute("SELECT compute_auction.open_account('early', 'agent', 1000)")
    conn.execute("SELECT compute_auction.open_account('late', 'agent', 1000)")
    conn.execute("SELECT compute_auction.offer_slot('s1', now() - interval '1 minute')")
    with psycopg.connect(cluster.url(conn.info.dbname)) as waiting:  # not autocommit
        waiting.execute("SELECT now()")  # its transaction has begun
        # meanwhile another bid of the same price is placed and committed
        conn.execute("SELECT compute_auction.place_bid('early', 'e-1', 100)")
        waiting.execute("SELECT compute_auction.place_bid('late', 'l-1', 100)")
        waiting.commit()
    placed = dict(conn.execute("SELECT bidder_id, placed_at FROM compute_auction.compute_auction_bids").fetchall())
    assert placed["early"] < placed["late"]
    assert conn.execute("SELECT bidder_id FROM compute_auction.clear_round()").fetchall() == [("early",)]
    assert_audit_clean(conn)
