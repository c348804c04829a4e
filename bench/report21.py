"""The parts of docs/BENCHMARKS.md that issue 21 added: the Targets table, how the books and
histories were built, the audit() record, the depth / history / batch / stress sections, and
the intake throughput plot. Each function returns lines of Markdown."""

from __future__ import annotations

from pathlib import Path

import targets

INTAKE_LABELS = {
    "extension": "place_bid (this build)",
    "plpgsql": "PL/pgSQL function",
    "v010": "0.1.0's place_bid",
    "client": "client-side statements",
    "insert": "bare INSERT (floor)",
}


def verdict(ok, goal=False):
    if ok is None:
        return "n/a (not measured)"
    word = "met" if ok else "missed"
    return f"**{'goal ' if goal else ''}{word}**"


def targets_table(r: dict) -> list[str]:
    rows21, rows_old = targets.issue21(r), targets.earlier(r)
    out = [
        "## Targets",
        "",
        "Issue 21's table, row for row, with this run's figures (place_bid's ratios at `synchronous_commit = "
        "off`, alternatives interleaved; `audit()` checked after every cell, see [audit()](#audit-after-every-cell)):",
        "",
        "| measure | target | measured | verdict |",
        "|---|---|---|---|",
    ]
    for measure, target, measured, ok in rows21:
        out.append(f"| {measure} | {target} | {measured} | {verdict(ok, goal=target.startswith('reported'))} |")
    out += ["", "The earlier issues' targets that issue 21 did not restate:", ""]
    out += ["| measure | target | measured | verdict |", "|---|---|---|---|"]
    for measure, target, measured, ok in rows_old:
        out.append(f"| {measure} | {target} | {measured} | {verdict(ok)} |")
    out.append("")
    missed = [t for t in rows21 + rows_old if t[3] is False]
    if missed:
        out.append(
            f"{len(missed)} row(s) missed; for each, [Findings](#findings-per-issue-21-target) at the end says "
            "what was measured to dominate and what was tried, with the measurements in "
            "[What dominates](#what-dominates)."
        )
    else:
        out.append("Every target was met in this run.")
    out += ["", *audit_summary(r), ""]
    return out


def audit_summary(r: dict) -> list[str]:
    audits = r.get("audits") or []
    if not audits:
        return ["`audit()` was not run (no cell measured)."]
    bad = [a for a in audits if a["rows"]]
    text = (
        f"`compute_auction.audit()` ran after every cell ({len(audits)} times, on every database a cell wrote, "
        "except the bare INSERT's, whose bids have no escrow by design; the stress test also runs it itself): "
    )
    if not bad:
        return [text + "**0 rows every time** (the books are consistent)."]
    return [
        text
        + f"**{len(bad)} time(s) with rows**: "
        + "; ".join(f"{a['cell']}: {a['rows']} rows, e.g. {a['first'][:1]}" for a in bad)
    ]


def audit_section(r: dict) -> list[str]:
    audits = r.get("audits") or []
    out = ["## audit() after every cell", ""]
    if not audits:
        return [*out, "_not run_", ""]
    out += ["| after | database | rows | seconds |", "|---|---|---:|---:|"]
    out += [f"| {a['cell']} | `{a['db']}` | {a['rows']} | {a['s']:.1f} |" for a in audits]
    return [*out, ""]


def rules_section(r: dict) -> list[str]:
    """How each book and history was built (issue 21's rules of measurement)."""
    sz = r.get("sizes", {})
    h = r.get("history") or {}
    summaries = {v.get("summaries") for v in (h.get("build") or {}).values()}
    return [
        "## How the books and histories were built",
        "",
        "- **Bid intake** (section 1): every alternative in a fresh database cloned from one template with "
        f"{sz.get('intake_accounts', 0):,} accounts opened by `open_account` (0.1.0's by its own "
        "`open_account`, from `CREATE EXTENSION compute_auction VERSION '0.1.0'`); the book grows only by "
        "the measured calls. The bids table is never analyzed before the runs (a fresh install's state).",
        f"- **Clearing books** (section 2): {sz.get('book_accounts', 0):,} accounts written with their "
        "opening ledger rows, then every open bid placed by `place_bid` itself, "
        f"{sz.get('batch', 0):,} calls per statement in two parallel loaders, so every side-table row "
        "(escrow, ledger row, open-bid counter delta) is place_bid's own; `ANALYZE` (no `VACUUM`) before "
        f"the rounds. During the rounds {sz.get('intake_during_rounds')} pgbench clients keep placing bids "
        f"with `place_bid` at {sz.get('intake_rate')} bids/s in all (`pgbench -R`), the same at every depth, "
        "so the book stays near its nominal depth while it is measured (unthrottled, 4 clients placed "
        "~2,200–2,500 bids/s on this machine and grew the 1,000-bid book to ~27,000 within its rounds). The "
        "74 single-client top-up calls between rounds replace the 74 bids each round takes out.",
        "- **Depth** (section 3): the clearing section's deepest book, as the rounds left it, against "
        "`depth_empty`, a clone of the same database taken before its first bid.",
        "- **Histories** (sections 6 and 7): one round a second ending now, written by bulk SQL, one "
        "`INSERT … SELECT generate_series` per table with every index in place (rounds; a `settled` bid per "
        "round from 1,000 accounts; a `settled` clear per round, 74 slots in turn), with the foreign-key "
        "triggers off for those three statements (`session_replication_role = replica`: every reference "
        "is to a row that exists by construction; they were most of the build's cost); then 100 open bids "
        "placed by `place_bid` and `VACUUM ANALYZE`. The historic charges have no ledger rows (the wallets "
        "never held those tokens), which `audit()` accepts: it checks live escrow and wallet sums. "
        "`compute_auction.rebuild_round_summaries()`: " + (", ".join(sorted(s for s in summaries if s)) or "n/a") + ".",
        "- **Batch** (section 8): a clone of the intake template plus a `quest` account opened by "
        "`open_account`; every call bids on new tasks.",
        "- **Stress** (section 9): a fresh database; `tests/stress/stress.py` opens its own accounts and slots.",
        "",
    ]


def depth_section(r: dict) -> list[str]:
    d = r.get("depth") or {}
    out = ["## 3. place_bid versus book depth", ""]
    if not d:
        return [*out, "_not measured_", ""]
    sz = r.get("sizes", {})
    out += [
        "pgbench, 1 client, `synchronous_commit = off`, `bench/pgbench/place_bid_clearing.sql` (a random one of "
        "the 100,000 accounts, a new task, a one-day TTL) against the clearing section's deepest book and "
        f"against the same database before its first bid, in {sz.get('depth_chunks')} interleaved chunks of "
        f"{sz.get('depth_chunk_s')} s each (the order alternating), a `CHECKPOINT` before each.",
        "",
        "| book | open bids at the start | tps per chunk | mean tps |",
        "|---|---:|---|---:|",
    ]
    for key, label in (("empty", "empty"), ("deep", "deepest clearing book")):
        tps = ", ".join(f"{x:,.0f}" if x else "failed" for x in d["tps"][key])
        mean = d["mean_tps"][key]
        out.append(f"| {label} | {d['open_bids'][key]:,} | {tps} | {mean or 0:,.0f} |")
    return [*out, "", f"Ratio deep ÷ empty: **{d['ratio'] or 0:.2f}×**.", ""]


def history_section(r: dict) -> list[str]:
    h = r.get("history") or {}
    out = ["## 7. Advice and the dashboard versus history", ""]
    if not h.get("price_to_win"):
        return [*out, "_not measured_", ""]
    n = h["rounds"]
    out += [
        f"Two databases: {n['hour']:,} one-second rounds (1 hour) and {n['long']:,} ({n['long'] / 86_400:g} days), "
        "built as [above](#how-the-books-and-histories-were-built). Then, the two databases taking turns call "
        f"by call: {h['reps']} `SELECT compute_auction.price_to_win()` on one connection per database (after 3 "
        "warm-up calls), and GET `/api/compute-auction/dashboard` from one driver per database (its clearing "
        "loop standing by: the benchmark holds its leader lock), the first request after start apart.",
        "",
        "| measure | after 1 hour | after the long history | ratio |",
        "|---|---:|---:|---:|",
    ]
    p, d = h["price_to_win"], h["dashboard"]
    out.append(
        f"| price_to_win() median | {p['hour']['median_ms']:.2f} ms | {p['long']['median_ms']:.2f} ms | "
        f"**{p['ratio']:.2f}×** |"
    )
    out.append(
        f"| dashboard median ({len(d['hour']['ms'])} requests each) | {d['hour']['median_ms']:.1f} ms | "
        f"{d['long']['median_ms']:.1f} ms | **{d['ratio']:.2f}×** |"
    )
    out.append(f"| dashboard, first request | {d['hour']['first_ms']:.1f} ms | {d['long']['first_ms']:.1f} ms | |")
    b = h.get("build") or {}
    if b.get("long"):
        out.append(
            "| build (rounds / bids / clears / VACUUM ANALYZE / summaries, s) | "
            + " | ".join(
                " / ".join(
                    f"{b[k].get(x, 0):.1f}" for x in ("rounds_s", "bids_s", "clears_s", "vacuum_s", "summaries_s")
                )
                for k in ("hour", "long")
            )
            + " | |"
        )
    if h.get("parts"):
        out += ["", "The bundle's statements, each alone (median ms, the databases taking turns):", ""]
        out += ["| statement | after 1 hour | after the long history | ratio |", "|---|---:|---:|---:|"]
        for part, v in h["parts"].items():
            ratio = v["long"] / v["hour"] if v["hour"] and v["long"] else None
            out.append(f"| `{part}` | {v['hour']:.1f} | {v['long']:.1f} | {f'{ratio:.2f}×' if ratio else 'n/a'} |")
    out += ["", "**Still exact?** In one `REPEATABLE READ` transaction per database (one snapshot, one `now()`):", ""]
    out += [
        "| database | price_to_win p50, p90 | direct `percentile_disc(ARRAY[0.5, 0.9])` | rounds in window | exact |"
    ]
    out.append("|---|---|---|---:|---|")
    for key, e in h["exact"].items():
        out.append(
            f"| {key} | {e['price_to_win']} | {e['direct']} | {e['window_rounds']:,} | "
            f"{'yes' if e['exact'] else '**no**'} |"
        )
    errs = {k: v.get("errors") for k, v in d.items() if isinstance(v, dict) and v.get("errors")}
    if errs:
        out += ["", f"Dashboard errors: {errs}"]
    return [*out, ""]


def batch_section(r: dict) -> list[str]:
    bt = r.get("batch") or {}
    out = ["## 8. Batch bids: submit_bids_for_tasks", ""]
    if not bt:
        return [*out, "_not measured_", ""]
    out += [
        f"{bt['reps']} timed repetitions (after one warm-up) alternating one "
        f"`submit_bids_for_tasks(quest, <{bt['tasks']:,} new tasks>, 100)` call and {bt['tasks']:,} single "
        "`place_bid` calls (prepared, autocommit, one connection, each a new task); both timed at the client.",
        "",
        "| measure | median |",
        "|---|---:|",
        f"| submit_bids_for_tasks, whole call | {bt['submit_per_bid_ms'] * bt['tasks']:.1f} ms |",
        f"| … per bid | {bt['submit_per_bid_ms']:.3f} ms |",
        f"| place_bid round trip | {bt['place_bid_round_trip_ms']:.3f} ms |",
        f"| **ratio** | **{bt['ratio']:.2f}×** |",
        "",
        f"Outcomes of the timed calls: {bt['outcomes']}.",
        "",
    ]
    return out


def stress_section(r: dict) -> list[str]:
    s = r.get("stress") or {}
    out = ["## 9. The stress test", ""]
    if not s:
        return [*out, "_not measured_", ""]
    out.append(
        f"`tests/stress/stress.py --clients {s['clients']} --seconds {s['seconds']} --min-rounds 1` against the "
        "benchmark's cluster (run last: it SIGKILLs its driver and restarts PostgreSQL once with a fast "
        "shutdown), in a database created by the benchmark. Rounds per second are the driver's and its "
        "clearing thread's, from the rounds table over the load phase."
    )
    out.append("")
    if s.get("error"):
        return [*out, f"Failed: `{s['error']}` (exit {s.get('rc')}).", ""]
    out += [
        "| measure | value |",
        "|---|---:|",
        f"| rounds | {s['rounds']:,} in {s['load_seconds']:.1f} s |",
        f"| rounds per second | {s['rounds_per_s']:.2f} (lowest 5 s window {s.get('min_5s_rounds_per_s')}) |",
        f"| client operations per second | {s.get('ops_per_s')} |",
        f"| deadlocks (40P01) seen by clients, clearing thread, driver | {s.get('deadlocks_seen')} |",
        f"| pg_stat_database.deadlocks growth | {s.get('server_deadlocks')} |",
        f"| faults | {', '.join(s.get('faults') or [])} |",
        f"| stress checks (audit, books to the token, no double assignment, only documented errors) | "
        f"{'passed' if s.get('passed') else 'failed: ' + '; '.join(s.get('violations') or [])} |",
        f"| audit() rows afterwards | {s.get('audit_rows_after')} |",
        "",
    ]
    return out


def plot_intake(r: dict, path: Path) -> bool:
    """place_bid throughput per alternative: bars per client count, sync off and on side by side."""
    cells = r.get("intake") or []
    if not cells:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    syncs = [s for s in ("off", "on") if any(c["sync"] == s for c in cells)]
    fig, axes = plt.subplots(1, len(syncs), figsize=(6.2 * len(syncs), 4.4), dpi=120, squeeze=False)
    keys = [k for k in INTAKE_LABELS if any(c["alternative"] == k for c in cells)]
    for ax, sync in zip(axes[0], syncs, strict=True):
        clients = sorted({c["clients"] for c in cells if c["sync"] == sync})
        get = {(c["alternative"], c["clients"]): c for c in cells if c["sync"] == sync}
        width = 0.8 / len(keys)
        for i, key in enumerate(keys):
            xs = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(clients))]
            ys = [(get.get((key, n)) or {}).get("tps") or 0 for n in clients]
            ax.bar(xs, ys, width, label=INTAKE_LABELS[key], color=f"C{i}")
        ax.set_xticks(range(len(clients)), [f"{n} client{'s' * (n > 1)}" for n in clients])
        ax.set_ylabel("transactions per second (one bid each)")
        ax.set_title(f"Bid intake, synchronous_commit = {sync}")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
