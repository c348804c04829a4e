"""Issue 17: a driver knows its rights. A driver whose role lacks the grants a leader needs says
what it lacks and never leads, so a correctly configured driver leads; a leader that meets a
privilege error steps down; /healthz is per process (200 only for a leader that clears or a
follower that sees a live leader, 503 with the reason otherwise)."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql

from conftest import ROLES_SQL, http_json, metrics, wait_until


def round_count(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute("SELECT count(*) FROM compute_auction.compute_auction_rounds").fetchone()[0]


@pytest.fixture
def logins(cluster, conn):
    """Login roles in the test database: an agent (no operator grants) and an operator."""
    conn.execute(ROLES_SQL)
    tag = uuid.uuid4().hex[:8]
    names = {"agent": f"drv_agent_{tag}", "operator": f"drv_operator_{tag}"}
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE compute_auction_agent").format(sql.Identifier(names["agent"])))
    conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN IN ROLE compute_auction_operator").format(sql.Identifier(names["operator"]))
    )
    yield {k: cluster.url(conn.info.dbname, user=v) for k, v in names.items()} | {"names": names}
    with psycopg.connect(cluster.url(), autocommit=True) as su:
        for v in names.values():
            su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(v)))


def test_a_driver_without_the_grants_says_what_it_lacks_and_never_leads(drivers, logins, fresh_db_url):
    weak = drivers(logins["agent"])
    wait_until(lambda: "missing grants" in weak.log(), 60, interval=0.2, what="the weak driver's complaint")
    status, body = http_json(weak.port, "/healthz")
    assert status == 503 and body["status"] == "not_leading", body
    assert "GRANT EXECUTE ON FUNCTION compute_auction.clear_round" in body["reason"]
    assert logins["names"]["agent"] in body["reason"] and "compute_auction_operator" in body["reason"]
    assert round_count(fresh_db_url) == 0
    # a correctly configured driver leads and clears
    good = drivers(logins["operator"])
    wait_until(lambda: round_count(fresh_db_url) >= 3, 60, interval=0.2, what="rounds by the good driver")
    assert good.is_leader() and not weak.is_leader()
    wait_until(lambda: http_json(good.port, "/healthz")[0] == 200, 60, interval=0.2, what="leader's healthz 200")
    status, body = http_json(weak.port, "/healthz")
    assert status == 503 and body["status"] == "not_leading", body
    assert metrics(weak.port)["compute_auction_leadership_acquired_total"] == 0


def test_a_leader_that_loses_its_grants_steps_down_and_another_leads(drivers, logins, conn, fresh_db_url):
    first = drivers(logins["operator"])
    wait_until(lambda: round_count(fresh_db_url) >= 1 and first.is_leader(), 60, interval=0.2, what="first leads")
    conn.execute(sql.SQL("REVOKE compute_auction_operator FROM {}").format(sql.Identifier(logins["names"]["operator"])))
    wait_until(lambda: not first.is_leader(), 60, interval=0.2, what="the first driver to step down")
    assert "releasing leadership after a privilege error" in first.log()
    second = drivers(fresh_db_url)  # the superuser: an operator
    n = round_count(fresh_db_url)
    wait_until(lambda: round_count(fresh_db_url) >= n + 3, 60, interval=0.2, what="rounds by the second driver")
    assert second.is_leader() and not first.is_leader()
    status, body = http_json(first.port, "/healthz")
    assert status == 503 and body["status"] == "not_leading" and body["reason"], body
    wait_until(lambda: http_json(second.port, "/healthz")[0] == 200, 60, interval=0.2, what="leader's healthz 200")


def test_a_follower_that_sees_a_live_leader_is_healthy(drivers, fresh_db_url):
    leader = drivers(fresh_db_url)
    wait_until(lambda: round_count(fresh_db_url) >= 1 and leader.is_leader(), 60, interval=0.2, what="a leader")
    follower = drivers(fresh_db_url)
    wait_until(lambda: http_json(follower.port, "/healthz")[0] == 200, 60, interval=0.2, what="follower healthy")
    status, body = http_json(follower.port, "/healthz")
    assert body["role"] == "follower" and body["leader"] is False and not follower.is_leader()
    # the leader goes away: the follower takes over (and is healthy as the leader)
    leader.stop()
    wait_until(follower.is_leader, 60, interval=0.2, what="the follower to lead")
    n = round_count(fresh_db_url)
    wait_until(lambda: round_count(fresh_db_url) >= n + 2, 60, interval=0.2, what="rounds by the new leader")
    wait_until(lambda: http_json(follower.port, "/healthz")[0] == 200, 60, interval=0.2, what="new leader healthy")
