"""Installing the extension: repeatedly, in several databases, without pg_cron, and its
objects' privileges."""

import psycopg

from conftest import drop_database, new_database


def test_create_extension_in_several_databases_and_again(cluster):
    names = [new_database(cluster, with_extension=False) for _ in range(3)]
    try:
        for name in names:
            with psycopg.connect(cluster.url(name), autocommit=True) as c:
                c.execute("CREATE EXTENSION compute_auction")
                assert c.execute("SELECT compute_auction.open_account('x', 'agent', 5)").fetchone() == (5,)
                c.execute("DROP EXTENSION compute_auction")
                c.execute("CREATE EXTENSION compute_auction")
                assert c.execute("SELECT count(*) FROM compute_auction.token_accounts").fetchone() == (0,)
                assert c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone() == (0,)
    finally:
        for name in names:
            drop_database(cluster, name)


def test_extension_creates_no_roles(cluster):
    with psycopg.connect(cluster.url(), autocommit=True) as c:
        before = c.execute("SELECT count(*) FROM pg_roles").fetchone()
    name = new_database(cluster, with_extension=False)
    try:
        with psycopg.connect(cluster.url(name), autocommit=True) as c:
            c.execute("CREATE EXTENSION compute_auction")
            assert c.execute("SELECT count(*) FROM pg_roles").fetchone() == before
    finally:
        drop_database(cluster, name)


def test_tables_are_registered_for_pg_dump(conn):
    dumped = {
        r[0]
        for r in conn.execute(
            "SELECT unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'compute_auction'"
        )
    }
    for t in [
        "compute_auction.token_accounts",
        "compute_auction.token_ledger",
        "compute_auction.compute_slots",
        "compute_auction.compute_auction_bids",
        "compute_auction.compute_auction_rounds",
        "compute_auction.compute_auction_clears",
        "compute_auction.token_ledger_id_seq",
        "compute_auction.compute_auction_bids_id_seq",
    ]:
        assert t in dumped, t


def test_no_function_is_strict(conn):
    # a STRICT function silently returns NULL for NULL input; every public one must raise 22004
    strict = conn.execute(
        """SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'compute_auction' AND p.proisstrict AND p.pronargs > 0"""
    ).fetchall()
    assert strict == []


def test_functions_are_security_definer_with_pinned_search_path(conn):
    rows = conn.execute(
        """SELECT p.proname, p.prosecdef, p.proconfig FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'compute_auction'"""
    ).fetchall()
    assert len(rows) >= 20
    for name, secdef, config in rows:
        assert secdef, name
        paths = [c.removeprefix("search_path=") for c in config or [] if c.startswith("search_path=")]
        assert len(paths) == 1, name
        # pg_catalog first: nothing created in another schema can shadow a built-in (issue 17)
        assert paths[0].split(", ")[0] == "pg_catalog", (name, paths[0])
        assert "public" not in paths[0].split(", ") and "$user" not in paths[0], (name, paths[0])
