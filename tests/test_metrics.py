"""/metrics of a running driver: the full list of metric families, each with its `# TYPE`, its
labels and its samples, as dashboards and alerts rely on them. The list is written out here on
purpose (not read from the driver): renaming, retyping or dropping a metric must fail a test.
"""

from __future__ import annotations

import re

from conftest import LEADER_LOCK, http, metrics, wait_until

COUNTERS = [
    "compute_auction_rounds_cleared_total",
    "compute_auction_slots_filled_total",
    "compute_auction_bids_refunded_total",
    "compute_auction_tokens_refunded_total",
    "compute_auction_assignments_aborted_total",
    "compute_auction_pending_entries_applied_total",
    "compute_auction_clearing_errors_total",
    "compute_auction_cycle_step_errors_total",
    "compute_auction_cycle_step_timeouts_total",
    "compute_auction_database_unavailable_total",
    "compute_auction_commits_in_doubt_total",
    "compute_auction_leadership_acquired_total",
    "compute_auction_fallback_allocations_total",
    "compute_auction_fallback_errors_total",
    "compute_auction_pruned_rows_total",  # --retain
    "compute_auction_prune_errors_total",
]
GAUGES = [
    "compute_auction_last_clearing_price_tokens",  # once a round filled a slot
    "compute_auction_last_round_id",
    "compute_auction_consecutive_failures",
    "compute_auction_leader",
    "compute_auction_degraded",
    "compute_auction_database_up",
    # market_summary(), while the database answers
    "compute_auction_open_bids",
    "compute_auction_idle_slots",
    "compute_auction_assigned_slots",
    "compute_auction_bids_placed",
    "compute_auction_market_tokens_refunded",
    "compute_auction_market_last_clearing_price_tokens",
    "compute_auction_tokens_held",
    # price_to_win(NULL, '1 hour'), while the database answers
    "compute_auction_clearing_price_p50_1h_tokens",
    "compute_auction_clearing_price_p90_1h_tokens",
]
HISTOGRAMS = ["compute_auction_round_duration_seconds"]
EXPECTED = {
    **dict.fromkeys(COUNTERS, "counter"),
    **dict.fromkeys(GAUGES, "gauge"),
    **dict.fromkeys(HISTOGRAMS, "histogram"),
}
STEPS = {"refund_unfilled", "abort_stale", "apply_pending", "clear_round"}
BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "+Inf"]
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(port: int) -> str:
    status, headers, body = http(port, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return body.decode()


def parse(text: str):
    """({family: type}, {family: help}, [(name, labels, value)])"""
    types, helps, samples = {}, {}, []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            name, kind = line[len("# TYPE ") :].split(" ")
            assert name not in types, f"two TYPE lines for {name}"
            types[name] = kind
        elif line.startswith("# HELP "):
            name, text_ = line[len("# HELP ") :].split(" ", 1)
            helps[name] = text_
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            samples.append((m.group(1), m.group(2) or "", float(m.group(3))))
    return types, helps, samples


def family(name: str, types: dict) -> str:
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and types.get(base) == "histogram":
            return base
    raise AssertionError(f"sample {name} has no # TYPE line")


def test_metrics_lists_every_family_with_its_type(drivers, fresh_db_url, conn, free_port):
    # a round that fills a slot, so that the last clearing price is known
    conn.execute("SELECT compute_auction.open_account('m-agent', 'agent', 100000)")
    conn.execute("SELECT compute_auction.place_bid('m-agent', 'm-task', 700)")
    conn.execute("SELECT compute_auction.offer_slot('m-slot', now() - interval '1 second', 0)")
    d = drivers(fresh_db_url, free_port)
    wait_until(lambda: metrics(d.port).get("compute_auction_slots_filled_total") == 1.0, 60, what="a filled slot")

    types, helps, samples = parse(scrape(d.port))
    assert types == EXPECTED
    assert set(helps) == set(EXPECTED), "every family has a HELP line"
    assert all(helps.values())

    by_family: dict[str, list] = {}
    for name, labels, value in samples:
        by_family.setdefault(family(name, types), []).append((name, labels, value))
    assert set(by_family) == set(EXPECTED), "every family has samples"
    # labels: only the step errors (one series per step) and the histogram's buckets have any
    steps = {labels for _, labels, _ in by_family["compute_auction_cycle_step_errors_total"]}
    assert steps == {f'{{step="{s}"}}' for s in STEPS}
    hist = by_family["compute_auction_round_duration_seconds"]
    assert [labels for name, labels, _ in hist if name.endswith("_bucket")] == [f'{{le="{b}"}}' for b in BUCKETS]
    assert {name for name, _, _ in hist} == {
        "compute_auction_round_duration_seconds_bucket",
        "compute_auction_round_duration_seconds_sum",
        "compute_auction_round_duration_seconds_count",
    }
    for fam, rows in by_family.items():
        if fam not in ("compute_auction_cycle_step_errors_total", "compute_auction_round_duration_seconds"):
            assert rows == [(fam, "", rows[0][2])], f"{fam}: one unlabelled sample, got {rows}"

    values = {name + labels: value for name, labels, value in samples}
    assert values["compute_auction_last_clearing_price_tokens"] == 0  # one bid, one slot: the reserve
    assert values["compute_auction_leader"] == 1
    assert values["compute_auction_database_up"] == 1
    assert values["compute_auction_bids_placed"] == 1
    assert values["compute_auction_leadership_acquired_total"] == 1
    counts = [v for n, labels, v in hist if n.endswith("_bucket")]
    assert counts == sorted(counts) and counts[-1] == values["compute_auction_round_duration_seconds_count"] >= 1


def test_metrics_without_the_database(drivers, cluster, free_port):
    """A driver whose database does not exist: its own metrics, database_up 0, no market gauges."""
    d = drivers(cluster.url("no_such_db_for_metrics"), free_port)
    wait_until(lambda: metrics(d.port).get("compute_auction_database_unavailable_total", 0) >= 1, 60, what="a retry")
    types, _, samples = parse(scrape(d.port))
    market = {
        "compute_auction_open_bids",
        "compute_auction_idle_slots",
        "compute_auction_assigned_slots",
        "compute_auction_bids_placed",
        "compute_auction_market_tokens_refunded",
        "compute_auction_market_last_clearing_price_tokens",
        "compute_auction_tokens_held",
        "compute_auction_clearing_price_p50_1h_tokens",
        "compute_auction_clearing_price_p90_1h_tokens",
    }
    assert types == {
        k: v for k, v in EXPECTED.items() if k not in market | {"compute_auction_last_clearing_price_tokens"}
    }
    values = {name + labels: value for name, labels, value in samples}
    assert values["compute_auction_database_up"] == 0
    assert values["compute_auction_leader"] == 0
    assert values["compute_auction_rounds_cleared_total"] == 0


def test_price_and_balance_gauges_are_the_databases(drivers, fresh_db_url, conn, free_port):
    """Issue 26: the last clearing price, the last hour's p50/p90 and the tokens held, as
    market_summary() and price_to_win(NULL, '1 hour') give them, whoever cleared the rounds."""
    for i, price in enumerate([900, 800, 700, 600, 500]):
        conn.execute("SELECT compute_auction.open_account(%s, 'agent', 100000)", (f"g-{i}",))
        conn.execute("SELECT compute_auction.place_bid(%s, %s, %s)", (f"g-{i}", f"g-task-{i}", price))
    conn.execute("SELECT compute_auction.offer_slot('g-slot-1', now() - interval '1 second', 0)")
    conn.execute("SELECT * FROM compute_auction.clear_round()")  # 900 wins at 800
    conn.execute("SELECT compute_auction.settle('g-slot-1', 1, 0.5)")
    conn.execute("SELECT compute_auction.offer_slot('g-slot-2', now() - interval '1 second', 0)")
    conn.execute("SELECT * FROM compute_auction.clear_round()")  # 800 and 700 win at 600
    conn.execute("SELECT pg_advisory_lock(%s, %s)", LEADER_LOCK)  # this driver only serves
    d = drivers(fresh_db_url, free_port)
    market = conn.execute("SELECT compute_auction.market_summary()").fetchone()[0]
    prices = conn.execute("SELECT compute_auction.price_to_win(NULL, '1 hour')").fetchone()[0]
    assert (market["last_clearing_price_tokens"], market["tokens_held"]) == (600, 600 + 500 + 800 + 700)
    assert (prices["recent_clearing_p50"], prices["recent_clearing_p90"]) == (600, 800)
    m = metrics(d.port)
    assert m["compute_auction_market_last_clearing_price_tokens"] == 600
    assert m["compute_auction_tokens_held"] == market["tokens_held"]
    assert m["compute_auction_clearing_price_p50_1h_tokens"] == 600
    assert m["compute_auction_clearing_price_p90_1h_tokens"] == 800
