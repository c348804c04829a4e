"""The report's Targets table: issue 21's rows, in its order and words, each with the figure
this run measured and its verdict; then the earlier issues' rows that still apply."""

from __future__ import annotations

import statistics


def med(xs):
    xs = [x for x in (xs or []) if x is not None]
    return statistics.median(xs) if xs else None


def intake_ratio(r: dict, other: str, clients: int):
    get = {(c["alternative"], c["clients"]): c for c in r.get("intake", []) if c["sync"] == "off"}
    a, b = get.get(("extension", clients)), get.get((other, clients))
    if not a or not b or not a.get("tps") or not b.get("tps"):
        return None
    return a["tps"] / b["tps"]


def ratio_row(measure: str, target: str, x, need: float, at_least: bool = True) -> tuple:
    if x is None:
        return measure, target, "n/a", None
    return measure, target, f"{x:.2f}×", (x >= need) if at_least else (x <= need)


def intake_rows(r: dict) -> list[tuple]:
    rows = [
        ratio_row(
            "place_bid ÷ the PL/pgSQL function `bench/plpgsql_place_bid.sql`, sync off, 1 client",
            "≥ 1.2×",
            intake_ratio(r, "plpgsql", 1),
            1.2,
        )
    ]
    for n in (4, 8):
        rows.append(
            ratio_row(f"the same at {n} clients", "≥ 1.0×", intake_ratio(r, "plpgsql", n), 1.0),
        )
    for n in (1, 4, 8):
        rows.append(
            ratio_row(
                f"place_bid ÷ 0.1.0's place_bid (built from commit 0a1e601), same run, {n} client{'s' * (n > 1)}",
                "≥ 1.25×",
                intake_ratio(r, "v010", n),
                1.25,
            )
        )
    for n in (1, 4, 8):
        rows.append(
            ratio_row(
                f"place_bid ÷ bare INSERT (the floor), {n} client{'s' * (n > 1)}",
                "reported; goal ≥ 0.6×",
                intake_ratio(r, "insert", n),
                0.6,
            )
        )
    return rows


def depth_row(r: dict) -> tuple:
    d = r.get("depth") or {}
    measure = "place_bid at 1,000,000 open bids ÷ at an empty book"
    if d.get("ratio") is None:
        return measure, "≥ 0.9×", "n/a", None
    e, x = d["mean_tps"]["empty"], d["mean_tps"]["deep"]
    text = f"{x:,.0f} tps at {d['open_bids']['deep']:,} open bids ÷ {e:,.0f} tps empty = {d['ratio']:.2f}×"
    return measure, "≥ 0.9×", text, d["ratio"] >= 0.9


def clearing_rows(r: dict) -> list[tuple]:
    st = r.get("clearing", {}).get("stages", [])
    measure = (
        "clear_round p50 at 1,000,000 open bids ÷ at 1,000, books built by place_bid, rounds clearing every "
        "second while 4 clients keep placing bids"
    )
    if len(st) < 2:
        return [(measure, "≤ 2×", "n/a", None)]
    lo, hi = st[0], st[-1]
    a, b = med(lo["clear_ms"]), med(hi["clear_ms"])
    sa, sb = med(lo["clear_server_ms"]), med(hi["clear_server_ms"])
    text = (
        f"{b:.1f} ms at {hi['open_bids']:,} ÷ {a:.1f} ms at {lo['open_bids']:,} = {b / a:.2f}× "
        f"(inside the function, duration_ms: {sb:.1f} ÷ {sa:.1f} = {sb / sa:.2f}×)"
    )
    return [(measure, "≤ 2×", text, b <= 2 * a)]


def history_rows(r: dict) -> list[tuple]:
    h = r.get("history") or {}
    measure = (
        "price_to_win (its default 24-hour window) and the dashboard endpoint after 30 days of 1-second rounds "
        "÷ after 1 hour"
    )
    target = "≤ 1.5×, with the percentiles still exact as documented"
    if not h.get("price_to_win"):
        return [(measure, target, "n/a", None)]
    days = h["rounds"]["long"] / 86_400
    p, d = h["price_to_win"], h["dashboard"]
    exact = all(v["exact"] for v in h["exact"].values())
    text = (
        f"after {days:g} days: price_to_win {p['long']['median_ms']:.1f} ÷ {p['hour']['median_ms']:.1f} ms = "
        f"{p['ratio']:.2f}×; dashboard {d['long']['median_ms']:.0f} ÷ {d['hour']['median_ms']:.0f} ms = "
        f"{d['ratio']:.2f}×; percentiles {'exact' if exact else '**not exact**'} in both"
    )
    ok = p["ratio"] <= 1.5 and d["ratio"] <= 1.5 and exact
    return [(measure, target, text, ok)]


def batch_row(r: dict) -> tuple:
    bt = r.get("batch") or {}
    measure = "submit_bids_for_tasks with 1,000 tasks in one call, per bid ÷ one single-client place_bid round trip"
    if bt.get("ratio") is None:
        return measure, "≤ 0.25×", "n/a", None
    text = f"{bt['submit_per_bid_ms']:.3f} ms per bid ÷ {bt['place_bid_round_trip_ms']:.3f} ms = {bt['ratio']:.2f}×"
    return measure, "≤ 0.25×", text, bt["ratio"] <= 0.25


def refund_row(r: dict) -> tuple:
    measure = "refund_unfilled of 1,000 expired bids in a 1M book ÷ in a 10k book"
    target = "≤ 2× (keep: must hold)"
    rf = [s for s in r.get("clearing", {}).get("stages", []) if s.get("refund")]
    if len(rf) < 2:
        return measure, target, "n/a", None
    a, b = med(rf[0]["refund"]["ms"]), med(rf[-1]["refund"]["ms"])
    text = f"{b:.1f} ms at {rf[-1]['open_bids']:,} ÷ {a:.1f} ms at {rf[0]['open_bids']:,} = {b / a:.2f}×"
    return measure, target, text, b <= 2 * a


def stress_row(r: dict) -> tuple:
    s = r.get("stress") or {}
    measure = "the stress test, 16 clients"
    target = "≥ 4 rounds/s, 0 deadlocks (keep: must hold)"
    if s.get("rounds_per_s") is None:
        return measure, target, "n/a" + (f" ({s['error']})" if s.get("error") else ""), None
    dl = (s.get("deadlocks_seen") or 0) + (s.get("server_deadlocks") or 0)
    text = (
        f"{s['rounds_per_s']:.1f} rounds/s over {s['load_seconds']:.0f} s, {s.get('deadlocks_seen')} deadlocks seen "
        f"by clients/driver, {s.get('server_deadlocks')} in pg_stat_database; stress checks "
        f"{'passed' if s.get('passed') else '**failed**'}"
    )
    return measure, target, text, s["rounds_per_s"] >= 4 and dl == 0


def issue21(r: dict) -> list[tuple]:
    """(measure, target, measured, ok) for each row of issue 21's table; ok None = not measured."""
    return [
        *intake_rows(r),
        depth_row(r),
        *clearing_rows(r),
        *history_rows(r),
        batch_row(r),
        refund_row(r),
        stress_row(r),
    ]


def earlier(r: dict) -> list[tuple]:
    """The earlier issues' rows that issue 21 did not restate."""
    rows = []
    for n in sorted({c["clients"] for c in r.get("intake", []) if c["sync"] == "off"}):
        need = 2.0 if n == 1 else 1.5
        rows.append(
            ratio_row(
                f"place_bid ÷ client-side statements, {n} client{'s' * (n > 1)}, sync off (issue 7)",
                f"≥ {need}×",
                intake_ratio(r, "client", n),
                need,
            )
        )
    st = r.get("clearing", {}).get("stages", [])
    if st:
        c, p = med(st[-1]["clear_ms"]), med(st[-1]["place74_ms"])
        rows.append(
            (
                f"clear_round at the deepest book ({st[-1]['open_bids']:,}) ≤ 74 single-client place_bid calls "
                "(issue 7)",
                "≤ 1×",
                f"{c:.1f} ms vs {p:.1f} ms",
                c <= p,
            )
        )
    rd = r.get("read") or {}
    if rd:
        rows.append(
            ratio_row("order-book over HTTP ÷ order_book(100) over SQL (issue 7)", "≥ 0.5×", rd.get("ratio"), 0.5)
        )
    dy = r.get("day") or {}
    if dy:
        rows.append(
            (
                "a day: a round every second held, audit() clean (issue 7)",
                "≥ 0.9 rounds/s, 0 audit rows",
                f"{dy.get('rounds_per_s') or 0:.2f} rounds/s, audit rows {dy.get('audit_rows')}",
                dy.get("audit_rows") == 0 and (dy.get("rounds_per_s") or 0) >= 0.9,
            )
        )
    return rows
