"""Reads from a streaming standby (`serve --read-database-url`): a private primary, and a plain
standby of it made with `pg_basebackup -R`, both with pg_stat_statements preloaded so each
server's statement statistics show which one ran what.

- Reads (order book, bid status, stats, price advice, the dashboard) report `served_by:
  standby` and run on the standby: its pg_stat_statements has the order-book calls, the
  primary's has none.
- A bid placed on the primary appears in the API once the standby has replayed it.
- Clearing and every write go to the primary: the standby never runs clear_round.
- With the standby stopped, reads fall back to the primary (`served_by: primary`), keep
  answering, and /healthz says so with a 200; once it is back, reads return to it.
- Without a read URL, everything reads from the primary, as before.

Deadlines only detect a hang; nothing asserts how fast replication or the fallback is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse

import psycopg
import pytest

from conftest import ROOT, Driver, free_tcp_port, http_json, metrics, wait_until

BINDIR = os.environ.get("CA_PG_BINDIR", "/usr/lib/postgresql/15/bin")
RUNAS = os.environ.get("CA_PG_RUNAS", "postgres")
DRIVER_BIN = os.environ.get("CA_DRIVER_BIN", str(ROOT / "target" / "release" / "compute-auction-driver"))
BASE = ROOT / "target" / f"replica-{os.getpid()}"
DB = "market"
HANG = 60.0


def as_pg(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["sudo", "-u", RUNAS, "--", *cmd], check=check, capture_output=True, text=True)


class Server:
    def __init__(self, name: str) -> None:
        self.data = BASE / name
        self.port = free_tcp_port()

    def url(self, db: str = DB) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{urllib.parse.quote(db)}"

    def sql(self, query: str, params=None, db: str = DB):
        with psycopg.connect(self.url(db), autocommit=True, connect_timeout=5) as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else None

    def settings(self) -> list[str]:
        return [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.data}'",
            "shared_preload_libraries = 'pg_stat_statements'",
            "pg_stat_statements.track = all",
            "fsync = off",
            "log_min_messages = warning",
        ]

    def start(self) -> None:
        as_pg(f"{BINDIR}/pg_ctl", "-D", str(self.data), "-l", str(self.data / "server.log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        if as_pg(f"{BINDIR}/pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0:
            as_pg(f"{BINDIR}/pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop", check=False)


def order_book_calls(server: Server) -> int:
    rows = server.sql(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements"
        " WHERE query LIKE '%compute_auction.order_book(%'"
    )
    return rows[0][0]


@pytest.fixture(scope="module")
def replica():
    shutil.rmtree(BASE, ignore_errors=True)
    BASE.mkdir(parents=True)
    shutil.chown(BASE, user=RUNAS)
    primary, standby = Server("primary"), Server("standby")
    try:
        primary.data.mkdir()
        shutil.chown(primary.data, user=RUNAS)
        primary.data.chmod(0o700)
        as_pg(f"{BINDIR}/initdb", "-D", str(primary.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with open(primary.data / "postgresql.conf", "a") as f:
            f.write("\n".join(primary.settings()) + "\n")
        primary.start()
        primary.sql(f"CREATE DATABASE {DB}", db="postgres")
        primary.sql("CREATE EXTENSION compute_auction")
        primary.sql("CREATE EXTENSION pg_stat_statements")
        # a plain streaming standby; its own port and socket directory on the command line of
        # pg_ctl would be lost on a restart, so they go into its postgresql.conf
        as_pg(f"{BINDIR}/pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
              "-D", str(standby.data), "-R", "-X", "stream", "-c", "fast")  # fmt: skip
        with open(standby.data / "postgresql.conf", "a") as f:
            f.write("\n".join(standby.settings()) + "\nhot_standby = on\n")
        standby.start()
        wait_until(lambda: standby.sql("SELECT pg_is_in_recovery()")[0][0], HANG, what="the standby to run")
        yield primary, standby
    finally:
        standby.stop()
        primary.stop()
        shutil.rmtree(BASE, ignore_errors=True)


def replayed(primary: Server, standby: Server) -> None:
    """Waits until the standby has replayed everything the primary has written so far."""
    lsn = primary.sql("SELECT pg_current_wal_lsn()::text")[0][0]
    wait_until(
        lambda: standby.sql("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))[0][0],
        HANG,
        what="the standby to replay the primary's writes",
    )


def test_reads_come_from_the_standby_and_clearing_from_the_primary(replica, tmp_path):
    primary, standby = replica
    primary.sql("SELECT compute_auction.open_account('alice', 'agent', 10000)")
    first = primary.sql("SELECT compute_auction.place_bid('alice', 'r-1', 500, NULL, now() + interval '1 hour')")[0][0]
    replayed(primary, standby)
    for s in (primary, standby):
        s.sql("SELECT pg_stat_statements_reset()")
    port = free_tcp_port()
    drv = Driver(DRIVER_BIN, primary.url(), port, tmp_path / "driver.log", "--read-database-url", standby.url())
    try:
        # every read endpoint says where it was read
        reads = [
            "/api/compute-auction/order-book?depth=10",
            f"/api/compute-auction/bids/{first}",
            "/api/compute-auction/stats?hours=1",
            "/api/compute-auction/price-to-win",
            "/api/compute-auction/dashboard",
        ]
        for path in reads:
            status, body = http_json(port, path)
            assert status == 200, (path, body)
            assert body["served_by"] == "standby", (path, body)
            assert isinstance(body["data_age_ms"], int) and body["data_age_ms"] >= 0, (path, body)
            if path.endswith("/dashboard"):
                assert body["errors"] == {}, body  # every part of the bundle ran on the standby
        status, book = http_json(port, "/api/compute-auction/order-book?depth=10")
        assert [b["bid_id"] for b in book["bids"]] == [first]

        # the order book ran on the standby only
        assert order_book_calls(standby) >= 2
        assert order_book_calls(primary) == 0

        # a bid placed on the primary appears in the API once replayed
        second = primary.sql("SELECT compute_auction.place_bid('alice', 'r-2', 700, NULL, now() + interval '1 hour')")
        second = second[0][0]

        def book_has_second():
            _, b = http_json(port, "/api/compute-auction/order-book?depth=10")
            return b["served_by"] == "standby" and second in [x["bid_id"] for x in b["bids"]]

        wait_until(book_has_second, HANG, what="the new bid to appear in the standby's order book")

        # clearing goes to the primary, which the driver leads; the standby never clears
        primary.sql("SELECT compute_auction.offer_slot('slot-1')")
        wait_until(
            lambda: primary.sql("SELECT count(*) FROM compute_auction.compute_auction_clears")[0][0] == 1,
            HANG,
            what="a round on the primary to fill the slot",
        )
        won = primary.sql("SELECT bid_id FROM compute_auction.compute_auction_clears")[0][0]
        assert won == second  # 700 beats 500
        clear_calls = "SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%compute_auction.clear_round%'"
        assert primary.sql(clear_calls)[0][0] >= 1
        assert standby.sql(clear_calls)[0][0] == 0

        status, health = http_json(port, "/healthz")
        assert health["reads"] == {"read_database": True, "reading_from": "read_database"}, health
        m = metrics(port)
        assert m["compute_auction_reads_on_primary"] == 0.0
        assert m["compute_auction_read_database_data_age_seconds"] >= 0.0

        # the standby goes away: reads fall back to the primary and keep answering; /healthz
        # stays 200 (the market works) and says why
        standby.stop()
        for path in reads:
            status, body = http_json(port, path, timeout=30)
            assert status == 200, (path, body)
            assert body["served_by"] == "primary", (path, body)
            assert body["data_age_ms"] == 0, (path, body)
        status, book = http_json(port, "/api/compute-auction/order-book?depth=10")
        assert [b["bid_id"] for b in book["bids"]] == [first]  # the won bid left the book
        status, health = http_json(port, "/healthz")
        assert status == 200, health
        assert health["reads"]["reading_from"] == "primary", health
        assert health["reads"]["reason"], health
        assert metrics(port)["compute_auction_reads_on_primary"] == 1.0
        assert order_book_calls(primary) >= 1

        # back: reads return to it (after the driver's short back-off)
        standby.start()

        def served_by_standby():
            _, b = http_json(port, "/api/compute-auction/price-to-win")
            return b["served_by"] == "standby"

        wait_until(served_by_standby, HANG, what="reads to return to the standby")
        status, health = http_json(port, "/healthz")
        assert health["reads"]["reading_from"] == "read_database", health
    finally:
        drv.stop()


def test_without_a_read_url_everything_reads_from_the_primary(replica, tmp_path):
    primary, _ = replica
    port = free_tcp_port()
    drv = Driver(DRIVER_BIN, primary.url(), port, tmp_path / "driver.log")
    try:
        for path in ["/api/compute-auction/order-book", "/api/compute-auction/stats", "/api/compute-auction/dashboard"]:
            status, body = http_json(port, path)
            assert status == 200, (path, body)
            assert (body["served_by"], body["data_age_ms"]) == ("primary", 0), (path, body)
        status, health = http_json(port, "/healthz")
        assert health["reads"] == {"read_database": False, "reading_from": "primary"}, health
        assert "compute_auction_reads_on_primary" not in metrics(port)
    finally:
        drv.stop()


def test_a_multi_host_read_url_prefers_the_standby(replica, tmp_path):
    """libpq's target_session_attrs=prefer-standby, primary listed first: the standby answers."""
    primary, standby = replica
    url = (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/{DB}"
        "?target_session_attrs=prefer-standby"
    )
    port = free_tcp_port()
    drv = Driver(DRIVER_BIN, primary.url(), port, tmp_path / "driver.log", "--read-database-url", url)
    try:
        wait_until(
            lambda: http_json(port, "/api/compute-auction/price-to-win")[1]["served_by"] == "standby",
            HANG,
            what="reads from the standby",
        )
    finally:
        drv.stop()


READ_FUNCTIONS = [
    "compute_auction.order_book(10)",
    "compute_auction.bid_status(%(bid)s)",
    "compute_auction.stats()",
    "compute_auction.price_history()",
    "compute_auction.price_to_win()",
    "compute_auction.market_summary()",
    "compute_auction.last_round()",
    "compute_auction.balance('reader')",
    "compute_auction.pending_balance('reader')",
    "compute_auction.audit()",
]


def test_read_functions_assign_no_transaction_id(conn):
    """The functions that only read leave their caller's transaction read-only: no transaction
    id (a hot standby refuses to assign one, and a read commits without WAL). Before 0.2.0's
    read path every call through the extension's SPI layer assigned one."""
    conn.execute("SELECT compute_auction.open_account('reader', 'agent', 100)")
    bid = conn.execute("SELECT compute_auction.place_bid('reader', 'rt', 10)").fetchone()[0]
    conn.execute("SELECT compute_auction.offer_slot('rs')")
    conn.execute("SELECT * FROM compute_auction.clear_round()")
    for call in READ_FUNCTIONS:
        with conn.transaction():
            conn.execute(f"SELECT * FROM {call}", {"bid": bid}).fetchall()
            xid = conn.execute("SELECT pg_current_xact_id_if_assigned()").fetchone()[0]
            assert xid is None, f"{call} assigned transaction id {xid}"
        # and they write nothing: a READ ONLY transaction accepts them
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(f"SELECT * FROM {call}", {"bid": bid}).fetchall()
