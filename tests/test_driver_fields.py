"""Every field the driver (and its dashboard page) reads from an extension result exists in
that result. The lists are the driver's own (driver/src/fields.rs, printed by the hidden
`compute-auction-driver fields`); this test calls the real functions on a populated market and
checks each listed field, so a field the extension does not return fails here instead of
leaving a metric or a dashboard box empty.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import LEADER_LOCK, http_json


@pytest.fixture
def populated(conn):
    """Two agents and a quest bid for two free slots (a third slot comes later); one round
    cleared with clear_round_summary, one winner settled with its impact, two bids left open."""
    for account, kind in (("f-agent-a", "agent"), ("f-agent-b", "agent"), ("f-quest", "quest")):
        conn.execute("SELECT compute_auction.open_account(%s, %s, 100000)", (account, kind))
    for slot in ("f-slot-1", "f-slot-2"):
        conn.execute("SELECT compute_auction.offer_slot(%s, now() - interval '1 second', 0)", (slot,))
    conn.execute("SELECT compute_auction.offer_slot('f-slot-later', now() + interval '1 hour', 10)")
    for bidder, task, price, ev in (
        ("f-agent-a", "f-task-a", 500, 2.0),
        ("f-agent-b", "f-task-b", 400, 1.0),
        ("f-quest", "f-task-q1", 300, 5.0),
        ("f-quest", "f-task-q2", 200, 3.0),
    ):
        conn.execute("SELECT compute_auction.place_bid(%s, %s, %s, %s)", (bidder, task, price, ev))
    summary = conn.execute("SELECT compute_auction.clear_round_summary()").fetchone()[0]
    assert len(summary["winners"]) == 2, summary
    settled = summary["winners"][0]["slot_id"]
    conn.execute("SELECT * FROM compute_auction.claim_slot(%s)", (settled,))
    conn.execute("SELECT compute_auction.settle(%s, 100, 0.75)", (settled,))
    return {"clear_round_summary": summary}


def results(conn, populated) -> dict:
    """Each list's name (as `fields` prints it) -> the extension results it describes: one
    object, or the elements of an array (which must not be empty, or nothing is checked)."""
    one = lambda q: conn.execute(q).fetchone()[0]  # noqa: E731
    market = one("SELECT compute_auction.market_summary()")
    stats = one("SELECT compute_auction.stats(now() - interval '24 hours', false)")
    book = one("SELECT compute_auction.order_book(20)")
    summary = populated["clear_round_summary"]
    cur = conn.execute("SELECT * FROM compute_auction.price_history(now() - interval '24 hours', 96)")
    history = [dict(zip([c.name for c in cur.description], row, strict=True)) for row in cur.fetchall()]
    won = summary["winners"][0]  # its rounds include the one it won, with the slot
    story = conn.execute("SELECT compute_auction.bid_status(%s)", (won["bid_id"],)).fetchone()[0]
    task = conn.execute("SELECT compute_auction.task_status(%s)", (won["task_id"],)).fetchone()[0]
    wallet = one("SELECT compute_auction.wallet('f-quest')")  # two open bids
    return {
        "market_summary": [market],
        "market_summary.last_round": [market.get("last_round")],
        "stats": [stats],
        "stats.top_winners[]": stats.get("top_winners") or [],
        "clear_round_summary.round": [summary.get("round")],
        "clear_round_summary.winners[]": summary.get("winners") or [],
        "order_book": [book],
        "order_book.bids[]": book.get("bids") or [],
        "order_book.asks[]": book.get("asks") or [],
        "price_to_win": [one("SELECT compute_auction.price_to_win()")],
        "price_history": history,
        "bid_status": [story],
        "bid_status.rounds[]": story.get("rounds") or [],
        "task_status": [task],
        "task_status.bids[]": task.get("bids") or [],
        "wallet": [wallet],
        "wallet.bids[]": wallet.get("bids") or [],
        "wallet.recent_entries[]": wallet.get("recent_entries") or [],
    }


def driver_fields(driver_bin: str) -> dict[str, list[str]]:
    p = subprocess.run([driver_bin, "fields"], capture_output=True, text=True, timeout=30, check=True)
    lists = json.loads(p.stdout)
    assert lists and all(isinstance(v, list) and v for v in lists.values()), lists
    return lists


def test_every_field_the_driver_reads_exists(conn, populated, driver_bin):
    lists = driver_fields(driver_bin)
    got = results(conn, populated)
    assert set(lists) <= set(got), f"no check for the driver's lists {set(lists) - set(got)}: add them to results()"
    missing = []
    for name, fields in lists.items():
        objects = got[name]
        assert objects, f"{name}: the populated market gave nothing to check"
        for obj in objects:
            assert isinstance(obj, dict), f"{name}: {obj!r} is not an object"
            missing += [f"{name}: {f}" for f in fields if f not in obj]
    assert missing == [], f"fields the driver reads but the extension does not return: {missing}"


def test_the_dashboard_bundle_has_every_part(conn, populated, drivers, fresh_db_url):
    """The driver's own reads of those results on the same market: no part of the bundle fails."""
    conn.execute("SELECT pg_advisory_lock(%s, %s)", LEADER_LOCK)  # no clearing: the market stays
    d = drivers(fresh_db_url)
    status, body = http_json(d.port, "/api/compute-auction/dashboard")
    assert status == 200
    assert body["errors"] == {}
    assert body["fill_rate"] == 1.0  # one round, two slots offered, two filled
    assert [w["task_id"] for w in body["top_winners"]] == ["f-task-a", "f-task-b"]
    assert body["market"]["tokens_refunded_total"] == 0 and body["market"]["open_bids"] == 2
    assert [b["task_id"] for b in body["order_book"]["bids"]] == ["f-task-q1", "f-task-q2"]
    assert set(body["price_to_win"]) >= {"price_to_win_now", "slots_available"}
    assert (
        body["last_priced_round"]["clearing_price_tokens"]
        == populated["clear_round_summary"]["round"]["clearing_price_tokens"]
    )
