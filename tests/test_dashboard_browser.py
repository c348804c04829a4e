"""The /resources page in a real headless Chromium (Debian's package), driven
over the DevTools protocol by a tiny client on websocket-client: the Auction
tab shows the seeded rounds' numbers, tabs switch, the page refreshes itself,
and nothing is logged as an error. A screenshot is saved to
target/screenshots/resources.png.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import LEADER_LOCK, ROOT, http_json

websocket = pytest.importorskip("websocket")  # the websocket-client package

SCREENSHOTS = ROOT / "target" / "screenshots"
CHROMIUM = os.environ.get("CA_CHROMIUM", "/usr/bin/chromium")


class Chromium:
    """Headless Chromium plus a minimal synchronous CDP session on its first page."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="ca-chromium-")
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--remote-allow-origins=*",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-port=0",
                "--window-size=1280,1800",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 90  # detects a hang only
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = []
        while not targets:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = [t for t in json.load(r) if t.get("type") == "page"]
            if not targets:
                if time.monotonic() > deadline:
                    raise RuntimeError("chromium has no page target")
                time.sleep(0.1)
        self.ws = websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def call(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def pump(self, seconds: float) -> None:
        """Collects events for a while."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ws.settimeout(max(0.05, end - time.monotonic()))
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            if "method" in msg:
                self.events.append(msg)
        self.ws.settimeout(30)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in self.events:
                if e["method"] == method:
                    self.events.remove(e)
                    return e
            self.pump(0.2)
        raise AssertionError(f"no {method} within {timeout}s")

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"JS error evaluating {expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_js(self, expression: str, timeout: float = 60):
        end = time.monotonic() + timeout
        while True:
            v = self.js(expression)
            if v:
                return v
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {expression}")
            self.pump(0.2)

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                args = [a.get("value", a.get("description")) for a in p.get("args", [])]
                out.append(f"console.{p['type']}: {args}")
            elif e["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                out.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def chromium():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    c = Chromium()
    yield c
    c.close()


def seed_rounds(conn) -> None:
    """Three rounds with known numbers: 2 + 1 slots filled at 300, then one
    slot left unfilled by its reserve (fill rate 3/4)."""
    for i in range(4):
        conn.execute("SELECT compute_auction.open_account(%s, 'agent', 100000)", (f"b-agent-{i}",))

    def bid(i, task, price):
        conn.execute(
            "SELECT compute_auction.place_bid(%s, %s, %s, 4.5, now() + interval '10 minutes')",
            (f"b-agent-{i}", task, price),
        )

    for i, price in enumerate([500, 400, 300]):
        bid(i, f"b-task-{i}", price)
    conn.execute("SELECT compute_auction.offer_slot('b-slot-1', now() - interval '1 second', 0)")
    conn.execute("SELECT compute_auction.offer_slot('b-slot-2', now() - interval '1 second', 0)")
    conn.execute("SELECT * FROM compute_auction.clear_round()")  # 500 and 400 win at 300
    conn.execute("SELECT compute_auction.settle('b-slot-1', 250, 12.5)")
    bid(3, "b-task-3", 350)
    conn.execute("SELECT * FROM compute_auction.clear_round()")  # 350 wins b-slot-1 at 300
    conn.execute("SELECT compute_auction.offer_slot('b-slot-3', now() - interval '1 second', 10000)")
    conn.execute("SELECT * FROM compute_auction.clear_round()")  # 300 is below the reserve: unfilled
    bid(0, "b-task-9", 777)
    conn.execute("SELECT compute_auction.offer_slot('b-slot-4', now() + interval '1 hour', 25)")


def test_resources_page_in_headless_chromium(chromium, drivers, fresh_db_url, conn, free_port):
    seed_rounds(conn)
    # Hold the leader lock so the driver only serves: the page must show exactly the seeded rounds.
    conn.execute("SELECT pg_advisory_lock(%s, %s)", LEADER_LOCK)
    expect_rounds = conn.execute("SELECT count(*) FROM compute_auction.compute_auction_rounds").fetchone()[0]
    expect_price = conn.execute(
        "SELECT clearing_price_tokens FROM compute_auction.compute_auction_rounds "
        "WHERE clearing_price_tokens IS NOT NULL ORDER BY round_id DESC LIMIT 1"
    ).fetchone()[0]
    stats = conn.execute("SELECT compute_auction.stats()").fetchone()[0]
    expect_fill = f"{stats['fill_rate'] * 100:.1f}%"
    expect_winners = [w["bid_id"] for w in stats["top_winners"]]
    expect_filled = sum(r["slots_filled"] for r in stats["rounds"])
    open_bids = conn.execute("SELECT compute_auction.order_book(20)").fetchone()[0]["bids"]
    assert expect_rounds == 3 and expect_price == 300 and expect_fill == "75.0%" and len(expect_winners) == 3

    drivers(fresh_db_url, free_port)  # stopped by the fixture

    c = chromium
    c.call("Runtime.enable")
    c.call("Log.enable")
    c.call("Page.enable")
    c.call("Emulation.setDeviceMetricsOverride", width=1280, height=1800, deviceScaleFactor=1, mobile=False)
    c.call("Page.navigate", url=f"http://127.0.0.1:{free_port}/resources")
    c.wait_event("Page.loadEventFired")
    c.wait_js("document.body.getAttribute('data-rendered')")

    def text(el_id):
        return c.js(f"document.getElementById({json.dumps(el_id)}).textContent.trim()")

    def value(el_id):
        return c.js(f"document.getElementById({json.dumps(el_id)}).getAttribute('data-value')")

    assert c.js("document.title").startswith("Resources")
    assert c.js("document.getElementById('tab-auction').getAttribute('aria-selected')") == "true"
    assert value("rounds-count") == str(expect_rounds)
    assert text("rounds-count") == str(expect_rounds)
    assert value("last-price") == str(expect_price)
    assert text("fill-rate") == expect_fill
    assert value("slots-filled") == str(expect_filled)
    assert value("open-bids") == str(len(open_bids))
    # the price chart is an SVG drawn from the buckets, with labelled axes
    assert int(c.js("document.getElementById('price-chart').getAttribute('data-buckets')")) >= 1
    assert c.js("document.querySelectorAll('#price-chart svg').length") == 1
    labels = c.js("Array.from(document.querySelectorAll('#price-chart svg text')).map(t => t.textContent)")
    assert "Clearing price (tokens)" in labels and "Time (local)" in labels
    # top winners table: one row per winning bid, best first
    rows = c.js("Array.from(document.querySelectorAll('#top-winners tbody tr')).map(r => Number(r.dataset.bidId))")
    assert rows == expect_winners
    assert c.js("document.querySelectorAll('#winners-chart svg circle').length") == len(expect_winners)
    # order book: best bids and the upcoming slot
    book = c.js("Array.from(document.querySelectorAll('#order-book-bids tbody tr')).map(r => Number(r.dataset.bidId))")
    assert book == [b["bid_id"] for b in open_bids]
    asks = c.js("Array.from(document.querySelectorAll('#order-book-asks tbody tr')).map(r => r.dataset.slotId)")
    assert asks[:2] == ["b-slot-3", "b-slot-4"]
    # price to win: a number, or an explicit "not available" state (never a blank box); the same
    # advice as GET /api/compute-auction/price-to-win (issue 25): the exact price while a slot is
    # free, otherwise the advice for the next slot to free up, named in the line below it
    assert text("price-to-win") and text("price-to-win-sub")
    _, ptw = http_json(free_port, "/api/compute-auction/price-to-win")
    shown = ptw["price_to_win_now"] if ptw["price_to_win_now"] is not None else ptw["price_to_win"]
    assert value("price-to-win") == ("" if shown is None else str(shown))
    sub = text("price-to-win-sub")
    assert f"p50 {ptw['recent_clearing_p50']:,}" in sub or ptw["recent_clearing_p50"] is None
    if ptw["price_to_win_now"] is None:
        assert sub.startswith("for the next slot"), sub
        if ptw["next_slot_id"]:
            assert ptw["next_slot_id"] in sub
    else:
        assert sub.startswith(f"{ptw['slots_available']} slots free now"), sub

    # the page refreshes itself
    first = c.js("document.body.getAttribute('data-rendered')")
    c.wait_js(f"document.body.getAttribute('data-rendered') !== {json.dumps(first)}", timeout=60)
    assert value("rounds-count") == str(expect_rounds)

    # tabs switch and back
    c.js("document.getElementById('tab-driver').click()")
    assert c.js("document.getElementById('panel-driver').hidden") is False
    assert c.js("document.getElementById('panel-auction').hidden") is True
    assert "standby" in text("driver-leader")
    # where the data was read, and how old it is (no read database here: the primary, current)
    assert text("driver-served-by") == "the primary"
    assert text("driver-data-age") == "current (0 ms)"
    c.js("document.getElementById('tab-auction').click()")
    assert c.js("document.getElementById('panel-auction').hidden") is False

    c.pump(0.5)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = c.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    (SCREENSHOTS / "resources.png").write_bytes(base64.b64decode(shot["data"]))
    assert (SCREENSHOTS / "resources.png").stat().st_size > 10_000

    assert c.errors() == [], c.errors()


def test_resources_page_empty_states(chromium, drivers, fresh_db_url, conn, free_port):
    """A brand-new market: explanatory empty states, not blank boxes, and no errors."""
    conn.execute("SELECT pg_advisory_lock(%s, %s)", LEADER_LOCK)
    drivers(fresh_db_url, free_port, interval=None)  # stopped by the fixture
    c = chromium
    c.call("Runtime.enable")
    c.call("Log.enable")
    c.call("Page.enable")
    c.call("Page.navigate", url=f"http://127.0.0.1:{free_port}/resources")
    c.wait_event("Page.loadEventFired")
    c.wait_js("document.body.getAttribute('data-rendered')")
    chart = c.js("document.getElementById('price-chart').textContent")
    assert "No rounds in the last 24 h" in chart
    assert c.js("document.getElementById('top-winners-empty').hidden") is False
    assert c.js("document.getElementById('order-book-bids-empty').hidden") is False
    assert c.js("document.getElementById('rounds-count').textContent.trim()") == "0"
    assert c.js("document.getElementById('fill-rate').textContent.trim()") == "—"
    c.pump(0.5)
    assert c.errors() == [], c.errors()


def test_page_survives_the_database_going_away(chromium, drivers, fresh_db_url, conn, free_port, cluster):
    """While the database is down the page says so (no exceptions), and recovers."""
    seed_rounds(conn)
    drivers(fresh_db_url, free_port)  # stopped by the fixture
    c = chromium
    c.call("Runtime.enable")
    c.call("Page.enable")
    c.call("Page.navigate", url=f"http://127.0.0.1:{free_port}/resources")
    c.wait_event("Page.loadEventFired")
    c.wait_js("document.body.getAttribute('data-rendered')")
    cluster.stop()
    try:
        c.wait_js("document.getElementById('status-pill').dataset.status === 'offline'", timeout=60)
        assert "Could not refresh" in c.js("document.getElementById('error-banner').textContent")
        # the last good numbers stay on screen
        assert c.js("document.getElementById('rounds-count').textContent.trim()") != "—"
    finally:
        cluster.start()
    c.wait_js("document.getElementById('status-pill').dataset.status === 'live'", timeout=90)
    # only Runtime errors count here: failed fetches are expected network log entries
    assert [e for e in c.errors() if not e.startswith("log:")] == []


def test_bid_lookup_and_wallet_view(chromium, drivers, fresh_db_url, conn, free_port):
    """The Bids & wallets tab (issue 26): a bid id and a task id show the bid's story as
    bid_status and task_status give it; an account shows wallet(); unknown ones say so."""
    seed_rounds(conn)
    conn.execute("SELECT pg_advisory_lock(%s, %s)", LEADER_LOCK)
    won = conn.execute("SELECT id FROM compute_auction.compute_auction_bids WHERE task_id = 'b-task-0'").fetchone()[0]
    story = conn.execute("SELECT compute_auction.bid_status(%s)", (won,)).fetchone()[0]
    task = conn.execute("SELECT compute_auction.task_status('b-task-9')").fetchone()[0]
    wallet = conn.execute("SELECT compute_auction.wallet('b-agent-0')").fetchone()[0]
    assert story["rounds"] and task["bid"]["status"] == "open" and wallet["recent_entries"]
    drivers(fresh_db_url, free_port)  # stopped by the fixture

    c = chromium
    c.call("Runtime.enable")
    c.call("Log.enable")
    c.call("Page.enable")
    c.call("Page.navigate", url=f"http://127.0.0.1:{free_port}/resources#lookup")
    c.wait_event("Page.loadEventFired")
    c.wait_js("document.body.getAttribute('data-rendered')")
    assert c.js("document.getElementById('panel-lookup').hidden") is False

    def text(el_id):
        return c.js(f"document.getElementById({json.dumps(el_id)}).textContent.trim()")

    def submit(form, field, value):
        c.js(
            f"document.getElementById({json.dumps(field)}).value = {json.dumps(value)};"
            f"document.getElementById({json.dumps(form)}).requestSubmit()"
        )

    # a bid id: its story, one row per round it took part in
    submit("bid-form", "bid-query", str(won))
    c.wait_js(f"document.getElementById('bid-result').getAttribute('data-bid-id') === '{won}'")
    assert text("bid-status") == story["status"] and text("bid-reason") == story["reason"]
    assert text("bid-task") == "b-task-0"
    rounds = c.js(
        "Array.from(document.querySelectorAll('#bid-rounds tbody tr'))"
        ".map(r => [Number(r.dataset.roundId), r.dataset.reason])"
    )
    assert rounds == [[r["round_id"], r["reason"]] for r in reversed(story["rounds"])]
    # a task id: the story of its newest bid, and the task's bids
    submit("bid-form", "bid-query", "b-task-9")
    newest = task["bid"]["bid_id"]
    c.wait_js(f"document.getElementById('bid-result').getAttribute('data-bid-id') === '{newest}'")
    assert text("bid-status") == "open"
    assert text("bid-rank") == f"{task['bid']['rank']} ({task['bid']['ahead']} ahead)"
    assert text("bid-task-bids") == f"{newest} open"
    # an unknown task: an error, and no stale story
    submit("bid-form", "bid-query", "no-such-task")
    c.wait_js("document.getElementById('bid-error').className.includes('show')")
    assert "no-such-task" in text("bid-error") and c.js("document.getElementById('bid-result').hidden") is True

    # a wallet: balance, escrow, its live bids and newest entries as wallet() gives them
    submit("wallet-form", "wallet-query", "b-agent-0")
    c.wait_js("document.getElementById('wallet-result').getAttribute('data-account-id') === 'b-agent-0'")
    assert text("wallet-balance") == f"{wallet['balance_tokens']:,} tokens"
    assert text("wallet-held") == f"{wallet['held_tokens']:,} tokens"
    assert text("wallet-bids-count") == f"{wallet['open_bids']} open · {wallet['won_bids']} won"
    bids = c.js("Array.from(document.querySelectorAll('#wallet-bids tbody tr')).map(r => Number(r.dataset.bidId))")
    assert bids == [b["bid_id"] for b in wallet["bids"]]
    entries = c.js(
        "Array.from(document.querySelectorAll('#wallet-entries tbody tr'))"
        ".map(r => [Number(r.dataset.entryId), r.dataset.kind])"
    )
    assert entries == [[e["id"], e["entry_kind"]] for e in wallet["recent_entries"]]
    assert "charge" in [k for _, k in entries]  # b-agent-0 won and settled: its charge is listed
    submit("wallet-form", "wallet-query", "nobody")
    c.wait_js("document.getElementById('wallet-error').className.includes('show')")
    assert c.js("document.getElementById('wallet-result').hidden") is True

    c.pump(0.5)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = c.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    (SCREENSHOTS / "lookup.png").write_bytes(base64.b64decode(shot["data"]))
    # the two lookups that were meant to miss are the browser's only logged 404s
    unexpected = [e for e in c.errors() if "/tasks/no-such-task" not in e and "/accounts/nobody" not in e]
    assert unexpected == [], c.errors()
