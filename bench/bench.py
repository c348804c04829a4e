#!/usr/bin/env python3
"""The benchmarks of issue 7, run by bench/run against its private cluster.

Every measurement runs in this one process, on one cluster, one after the other, so the
figures are ratios taken side by side. Results go to target/bench/results.json, and
docs/BENCHMARKS.md + docs/bench_clearing_depth.png are written from them (bench/report.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

import batch
import history
import stress_cell

HERE = Path(__file__).resolve().parent
T0 = time.monotonic()

INTAKE_ACCOUNTS = 10_000
INTAKE_TOKENS = 1_000_000_000_000
BOOK_ACCOUNTS = 100_000
BOOK_TOKENS = 1_000_000_000_000
SLOTS = 74
BATCH = 1_000  # place_bid calls per statement (one transaction) when building a book
INTAKE_DURING_ROUNDS = 4  # pgbench clients placing bids while the clearing rounds run
# ... at this many bids per second in all (pgbench -R): the same intake at every depth, and a book
# that stays near its depth while it is measured (unthrottled, 4 clients placed ~2,500 bids/s
# on this machine, and the "1,000-bid" rounds ran on a book growing to 27,000)
INTAKE_RATE = 100


def stop_driver(drv: subprocess.Popen, logf) -> None:
    """Stops a driver the benchmark started (SIGTERM, then SIGKILL after 30 s) and closes its log."""
    drv.send_signal(signal.SIGTERM)
    try:
        drv.wait(timeout=30)
    except subprocess.TimeoutExpired:
        drv.kill()
    logf.close()


def core_lock_key(name: str) -> int:
    """An advisory-lock key of compute_auction_core::limits::locks, where the extension and the
    driver take them from."""
    text = (HERE.parent / "extension" / "core" / "src" / "limits.rs").read_text()
    m = re.search(rf"pub const {name}: i32 = (0x[0-9a-fA-F_]+|[0-9_]+);", text)
    if not m:
        raise SystemExit(f"locks::{name} not in extension/core/src/limits.rs")
    return int(m.group(1).replace("_", ""), 0)


LEADER_LOCK = (core_lock_key("CLASS"), core_lock_key("DRIVER_LEADER"))  # the driver's leader lock
DASH_ROUNDS = 86_400  # the dashboard's day: one round a second for 24 h (the same with --quick)
DASH_ACCOUNTS = 1_000
DASH_REQUESTS = 10
DASH_SQL_REPS = 5  # the dashboard's SQL alone, for scale (stats with every round takes seconds)

# in running order
SECTIONS = ["intake", "clearing", "depth", "read", "day", "dashboard", "history", "batch", "diag", "stress"]

ALTERNATIVES = [
    # key, label, pgbench script
    ("extension", "`compute_auction.place_bid` (extension)", "place_bid_extension.sql"),
    ("insert", "bare `INSERT` of the bid row (floor)", "bare_insert.sql"),
    ("client", "client-side statements in one transaction", "client_side.sql"),
    ("plpgsql", "PL/pgSQL function (`bench/plpgsql_place_bid.sql`)", "place_bid_plpgsql.sql"),
    # issue 21: the released 0.1.0 (built from commit 0a1e601; bench/run installs it beside this
    # build), its own schema and library, the same pgbench script
    ("v010", "0.1.0's `place_bid` (commit `0a1e601`)", "place_bid_extension.sql"),
]


def log(msg: str) -> None:
    t = time.monotonic() - T0
    print(f"\033[1;34m==>\033[0m [{int(t) // 60:02d}:{int(t) % 60:02d}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else None


class Bench:
    def __init__(self, a: argparse.Namespace):
        self.port = a.port
        self.bindir = Path(a.bindir)
        self.driver = a.driver
        self.baseline_driver = a.baseline_driver
        self.root = Path(a.root)
        self.data_dir = Path(a.data) if a.data else self.root / "target" / "pgdata-bench"
        self.quick = a.quick
        self.out = self.root / "target" / "bench"
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs = self.out / "logs"
        self.logs.mkdir(exist_ok=True)
        if a.quick:
            self.intake_clients = [1, 4]
            self.intake_seconds = 2  # per cell, in two interleaved chunks
            self.intake_seconds_on = 0  # synchronous_commit = on: not in --quick
            self.depths = [1_000, 10_000, 20_000]
            self.rounds = 4
            self.refund_reps = 2
            self.depth_chunks, self.depth_chunk_s = 2, 2
            self.read_seconds = 3
            self.day_seconds = 8
        else:
            self.intake_clients = [1, 4, 8]
            self.intake_seconds = 10
            self.intake_seconds_on = 4  # reported, no target: shorter
            self.depths = [1_000, 10_000, 100_000, 1_000_000]
            self.rounds = 10
            self.refund_reps = 5
            self.depth_chunks, self.depth_chunk_s = 4, 3
            self.read_seconds = 10
            self.day_seconds = 30
        if a.only:
            self.only = set(a.only.split(","))
        elif a.quick:
            # under 3 minutes: the dashboard section and the diagnostics only when --only names them
            self.only = set(SECTIONS) - {"dashboard", "diag"}
        else:
            # under 20 minutes: the dashboard after a day of rounds (the history section measures
            # the dashboard after an hour and after 30 days) only beside --baseline-driver, or
            # when --only names it
            self.only = set(SECTIONS) - ({"dashboard"} if not a.baseline_driver else set())
        self.r: dict = {
            "quick": self.quick,
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "sizes": {
                "intake_clients": self.intake_clients,
                "intake_seconds": self.intake_seconds,
                "intake_seconds_on": self.intake_seconds_on,
                "intake_accounts": INTAKE_ACCOUNTS,
                "depths": self.depths,
                "rounds": self.rounds,
                "slots": SLOTS,
                "book_accounts": BOOK_ACCOUNTS,
                "batch": BATCH,
                "intake_during_rounds": INTAKE_DURING_ROUNDS,
                "intake_rate": INTAKE_RATE,
                "depth_chunks": self.depth_chunks,
                "depth_chunk_s": self.depth_chunk_s,
                "refund_reps": self.refund_reps,
                "read_seconds": self.read_seconds,
                "day_seconds": self.day_seconds,
                "dashboard_rounds": DASH_ROUNDS,
                "dashboard_requests": DASH_REQUESTS,
                "dashboard_sql_reps": DASH_SQL_REPS,
            },
            "audits": [],
        }

    # the plumbing the section modules (history, batch, stress_cell) use
    log = staticmethod(log)
    stop_driver = staticmethod(stop_driver)
    leader_lock = LEADER_LOCK

    def audit(self, db: str, cell: str) -> int:
        """compute_auction.audit() on db after a cell: its row count, recorded for the report
        (0 = the books are consistent); the first rows are logged when there are any."""
        t = time.monotonic()
        rows = self.sql(db, "SELECT check_name, detail FROM compute_auction.audit()")
        self.r["audits"].append(
            {"cell": cell, "db": db, "rows": len(rows), "first": [list(x) for x in rows[:3]], "s": time.monotonic() - t}
        )
        if rows:
            log(f"audit() after {cell}: {len(rows)} rows, e.g. {rows[:3]}")
        return len(rows)

    # ------------------------------------------------------------------ plumbing ---
    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def conn(self, db: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=db, autocommit=autocommit)

    def sql(self, db: str, q: str, params=None):
        with self.conn(db) as c:
            cur = c.execute(q, params)
            return cur.fetchall() if cur.description else None

    def one(self, db: str, q: str, params=None):
        rows = self.sql(db, q, params)
        return rows[0][0] if rows else None

    def set_sync(self, on: bool) -> None:
        v = "on" if on else "off"
        self.sql("postgres", f"ALTER SYSTEM SET synchronous_commit = '{v}'")
        self.sql("postgres", "SELECT pg_reload_conf()")
        for _ in range(50):
            if self.one("postgres", "SHOW synchronous_commit") == v:
                return
            time.sleep(0.1)
        raise RuntimeError(f"synchronous_commit did not become {v}")

    def snapshot_library(self) -> None:
        """Copies the installed compute_auction-<version>.so to target/bench/lib and points the benchmark's
        functions at the copy: other engineers re-install the extension on this machine while the
        benchmark runs, and a shared library overwritten in place under a running backend kills it
        (SIGBUS). The copy also keeps one build for the whole run."""
        pkglib = subprocess.run(
            [str(self.bindir / "pg_config"), "--pkglibdir"], capture_output=True, text=True
        ).stdout.strip()

        def is_release(path: Path) -> bool:
            # `cargo pgrx test` (part of scripts/test.sh) installs a debug build into the same
            # directory; a debug build carries DWARF sections, the release profile does not
            sections = subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True, text=True).stdout
            return path.exists() and ".debug_info" not in sections

        # the library the current release installs: compute_auction-<default_version>.so (the
        # control file has no module_pathname; an older release's library may sit beside it)
        sharedir = subprocess.run(
            [str(self.bindir / "pg_config"), "--sharedir"], capture_output=True, text=True
        ).stdout.strip()
        control = (Path(sharedir) / "extension" / "compute_auction.control").read_text()
        version = re.search(r"^default_version\s*=\s*'([^']+)'", control, re.M)
        if version is None:
            raise SystemExit("compute_auction.control has no default_version: is the extension installed?")
        installed = Path(pkglib) / f"compute_auction-{version.group(1)}.so"
        candidates = [installed, self.root / "target" / "release" / "libcompute_auction.so"]
        src = next((c for c in candidates if c.exists() and is_release(c)), None)
        if src is None:
            raise SystemExit(
                "no release build of compute_auction found (the installed library is a debug build, "
                "e.g. from `cargo pgrx test`): run `cargo pgrx install --release` in extension/"
            )
        if src != candidates[0]:
            log(f"the installed {installed.name} is a debug build; using the release build {src}")
        data = src.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        libdir = self.out / "lib"
        libdir.mkdir(exist_ok=True)
        dst = libdir / f"compute_auction-{digest[:12]}.so"
        if not dst.exists():
            tmp = dst.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.chmod(0o755)
            os.replace(tmp, dst)
        for old in libdir.glob("compute_auction-*.so"):
            if old != dst:
                old.unlink()
        self.lib = str(dst)
        self.r["library"] = {
            "installed": str(src),
            "sha256": digest,
            "snapshot": str(dst),
            "installed_at": dt.datetime.fromtimestamp(src.stat().st_mtime, dt.UTC).isoformat(timespec="seconds"),
        }

    def create_db(self, name: str, template: str | None = None) -> None:
        self.sql("postgres", f'DROP DATABASE IF EXISTS "{name}"')
        if template:
            self.sql("postgres", f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            self.sql("postgres", f'CREATE DATABASE "{name}"')
            self.sql(name, "CREATE EXTENSION compute_auction")
            # every C function of the extension loads the run's private copy of the library
            self.sql(
                name,
                "UPDATE pg_catalog.pg_proc SET probin = %s"
                " WHERE probin IS NOT NULL AND oid IN ("
                "   SELECT objid FROM pg_catalog.pg_depend"
                "    WHERE classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND deptype = 'e'"
                "      AND refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'compute_auction'))",
                (self.lib,),
            )

    def pgbench(self, db: str, script: Path, clients: int, seconds: int, tag: str) -> dict:
        cmd = [
            str(self.bindir / "pgbench"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(min(clients, 2)),
            "-T",
            str(seconds),
            "-f",
            str(script),
            db,
        ]
        p = subprocess.run(cmd, capture_output=True, text=True)
        (self.logs / f"pgbench-{tag}.log").write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
        out = p.stdout

        def grab(pat, conv=float):
            m = re.search(pat, out)
            return conv(m.group(1)) if m else None

        res = {
            "tps": grab(r"tps = ([\d.]+) \(without initial connection time\)"),
            "latency_ms": grab(r"latency average = ([\d.]+) ms"),
            "transactions": grab(r"number of transactions actually processed: (\d+)", int),
            "failed": grab(r"number of failed transactions: (\d+)", int),
            "rc": p.returncode,
        }
        if p.returncode != 0 or res["tps"] is None:
            res["error"] = (p.stderr.strip().splitlines() or ["?"])[-1][:300]
            log(f"pgbench {tag} failed (rc {p.returncode}): {res.get('error')}")
        return res

    # ----------------------------------------------------------- 1. bid intake ---
    def intake_templates(self) -> None:
        """intake_tmpl (this build, 10,000 funded accounts) and intake_v010_tmpl (0.1.0's install
        script and library, which bench/run installs, the same accounts through its own
        open_account). No VACUUM/ANALYZE: the bids table must look like a fresh install's (never
        analyzed). Analyzed while empty, the planner believes it is empty, and the generic plan
        that place_bid caches for its live-bid lookup becomes a sequential scan that is kept
        while the book grows (see the diagnostics' stale-plan experiment)."""
        for db, version in (("intake_tmpl", None), ("intake_v010_tmpl", "0.1.0")):
            if version:
                self.sql("postgres", f'DROP DATABASE IF EXISTS "{db}"')
                self.sql("postgres", f'CREATE DATABASE "{db}"')
                self.sql(db, f"CREATE EXTENSION compute_auction VERSION '{version}'")
            else:
                self.create_db(db)
            self.sql(
                db,
                "SELECT count(compute_auction.open_account('acct-' || i, 'agent', %s)) "
                "FROM generate_series(1, %s) AS i",
                (INTAKE_TOKENS, INTAKE_ACCOUNTS),
            )

    def ensure_intake_template(self) -> None:
        if self.one("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'intake_tmpl'") == 0:
            self.intake_templates()

    def intake(self) -> None:
        log("bid intake: preparing the template databases (extension + 10,000 funded accounts; 0.1.0's too)")
        self.intake_templates()
        cells = []
        for sync in (False, True):
            seconds = self.intake_seconds_on if sync else self.intake_seconds
            if not seconds:
                continue
            self.set_sync(sync)
            for ci, clients in enumerate(self.intake_clients):
                rot = ci % len(ALTERNATIVES)
                order = ALTERNATIVES[rot:] + ALTERNATIVES[:rot]  # rotate the running order
                cells.extend(self.intake_block(order, sync, clients, seconds))
        self.set_sync(False)
        self.r["intake"] = cells

    def intake_block(self, order: list, sync: bool, clients: int, seconds: int) -> list[dict]:
        """One client count and setting: every alternative in a fresh database, taking turns in
        chunks (A B C D A B C D), so that a burst of other work on this shared machine hits all
        of them rather than one; audit() on each database afterwards."""
        chunks = 2
        plpgsql = (HERE / "plpgsql_place_bid.sql").read_text()
        for key, _label, _script in order:
            db = f"intake_{key}"
            self.create_db(db, "intake_v010_tmpl" if key == "v010" else "intake_tmpl")
            if key == "plpgsql":
                self.sql(db, plpgsql)
        runs: dict = {key: [] for key, _, _ in order}
        for chunk in range(chunks):
            for key, _label, script in order:
                db = f"intake_{key}"
                self.sql(db, "CHECKPOINT")
                tag = f"{key}-{'on' if sync else 'off'}-c{clients}-{chunk}"
                runs[key].append(self.pgbench(db, HERE / "pgbench" / script, clients, seconds // chunks, tag))
        cells = []
        for key, _label, _script in order:
            db = f"intake_{key}"
            res = self.intake_cell(key, runs[key], sync, clients)
            if key != "insert":
                res["audit_rows"] = self.audit(db, f"intake {key} sync {res['sync']} {clients} client(s)")
            res["bids"] = self.one(db, "SELECT count(*) FROM compute_auction.compute_auction_bids")
            log(
                f"  {key}-{res['sync']}-c{clients:<12} {res['tps'] or 0:10.1f} tps "
                f"{res.get('latency_ms') or 0:7.3f} ms  chunks {[round(x or 0) for x in res['chunks']]}"
                f"  audit rows {res.get('audit_rows', '-')}"
            )
            cells.append(res)
            self.sql("postgres", f'DROP DATABASE "{db}"')
        return cells

    @staticmethod
    def intake_cell(key: str, rs: list[dict], sync: bool, clients: int) -> dict:
        ok = [x for x in rs if x.get("tps") is not None]
        res = {
            "alternative": key,
            "sync": "on" if sync else "off",
            "clients": clients,
            "chunks": [x.get("tps") for x in rs],
            "transactions": sum(x.get("transactions") or 0 for x in rs),
            "failed": sum(x.get("failed") or 0 for x in rs),
        }
        if len(ok) == len(rs):
            # the chunks are equally long: their mean is total transactions over total time
            res["tps"] = sum(x["tps"] for x in ok) / len(ok)
            res["latency_ms"] = sum(x["latency_ms"] for x in ok) / len(ok)
        else:
            res["tps"] = None
            res["error"] = next(x.get("error") for x in rs if x.get("tps") is None)
        return res

    # --------------------------------------------------------- 2. clearing cost ---
    def add_bids(self, db: str, start: int, n: int, ttl: str, prefix: str = "book") -> int:
        """n open bids over BOOK_ACCOUNTS accounts, placed by place_bid itself (issue 21's rules of
        measurement: books are built the way production builds them), BATCH calls per statement,
        so every side-table row (escrow, ledger row, open-bid count delta) is place_bid's own."""
        q = """
SELECT count(compute_auction.place_bid(
           'ca-' || (g %% %(accts)s + 1), %(prefix)s || '-' || g,
           (1 + floor(random() * 1000000))::bigint, NULL, now() + %(ttl)s::interval))
  FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g"""
        end = start + n
        ranges = [(lo, min(lo + BATCH, end) - 1) for lo in range(start, end, BATCH)]

        def worker(mine):
            with self.conn(db) as c:
                c.execute("SET synchronous_commit = off")
                for lo, hi in mine:
                    c.execute(q, {"accts": BOOK_ACCOUNTS, "lo": lo, "hi": hi, "ttl": ttl, "prefix": prefix})

        # two loaders (two cores); concurrent batches are consecutive ranges, so they touch
        # disjoint accounts (2 x BATCH <= BOOK_ACCOUNTS)
        nworkers = 2 if len(ranges) > 1 else 1
        with ThreadPoolExecutor(nworkers) as ex:
            list(ex.map(worker, [ranges[i::nworkers] for i in range(nworkers)]))
        return end

    def prepare_book_db(self, db: str) -> None:
        """The clearing database before any bid: BOOK_ACCOUNTS funded accounts (with their
        opening ledger rows, as open_account writes them) and SLOTS idle slots with reserve 0."""
        self.create_db(db)
        with self.conn(db) as c:
            c.execute(
                """INSERT INTO compute_auction.token_accounts (account_id, kind, balance_tokens, total_deposited)
                         SELECT 'ca-' || i, 'agent', %(t)s, %(t)s FROM generate_series(1, %(n)s) AS i""",
                {"t": BOOK_TOKENS, "n": BOOK_ACCOUNTS},
            )
            c.execute(
                """INSERT INTO compute_auction.token_ledger
                                (account_id, delta_balance, delta_held, entry_kind, reason, balance_after, held_after)
                         SELECT 'ca-' || i, %(t)s, 0, 'open', 'initial tokens', %(t)s, 0
                           FROM generate_series(1, %(n)s) AS i""",
                {"t": BOOK_TOKENS, "n": BOOK_ACCOUNTS},
            )
            c.execute(
                "SELECT count(compute_auction.offer_slot('slot-' || lpad(i::text, 2, '0'), "
                "now() - interval '1 minute', 0)) FROM generate_series(1, %s) AS i",
                (SLOTS,),
            )

    def open_bids(self, db: str) -> int:
        return self.one(db, "SELECT count(*) FROM compute_auction.compute_auction_bids WHERE status = 'open'")

    def clearing(self) -> None:
        db = "clearing"
        log(f"clearing: database with {BOOK_ACCOUNTS:,} accounts and {SLOTS} idle slots")
        t = time.monotonic()
        self.prepare_book_db(db)
        # the depth section's empty book: the same database before any bid
        self.create_db("depth_empty", template=db)
        self.r.setdefault("timings", {})["accounts_s"] = time.monotonic() - t
        self.clear_db = db
        self.next_g = 1
        stages = []
        build_total = 0.0
        for depth in self.depths:
            st = self.build_to(db, depth)
            build_total += st["build_s"]
            st.update(self.rounds_under_intake(db, depth))
            st["audit_rows"] = self.audit(db, f"clearing at {depth:,}")
            log(
                f"clearing: depth {depth:>9,} ({st['open_bids']:,} -> {st['open_bids_after']:,} open): clear_round "
                f"median {median(st['clear_ms']):.2f} ms (server {median(st['clear_server_ms']):.2f} ms), "
                f"74 place_bid {median(st['place74_ms']):.2f} ms, filled {min(st['filled'])}..{max(st['filled'])}, "
                f"intake {st['intake_bids_per_s']:.0f} bids/s, audit rows {st['audit_rows']}"
            )
            if depth in (self.depths[1], self.depths[-1]):
                st["refund"] = self.refund_reps_at(db, self.next_g, depth)
                self.next_g = st["refund"].pop("next_g")
            stages.append(st)
        self.r["clearing"] = {"stages": stages, "build_total_s": build_total}

    def build_to(self, db: str, depth: int) -> dict:
        """Tops the book up to `depth` open bids with place_bid (add_bids), then ANALYZE: statistics
        only, as autovacuum's analyze would give them; no VACUUM, so the rounds see whatever the
        build and the intake left dead (issue 21)."""
        t = time.monotonic()
        self.next_g = self.add_bids(db, self.next_g, max(0, depth - self.open_bids(db)), "1 day")
        build_s = time.monotonic() - t
        t = time.monotonic()
        for table in ("compute_auction_bids", "token_accounts", "token_ledger"):
            self.sql(db, f"ANALYZE compute_auction.{table}")
        vac_s = time.monotonic() - t
        open_now = self.open_bids(db)
        log(f"clearing: book of {open_now:,} open bids built by place_bid in {build_s:.1f} s (+{vac_s:.1f} s ANALYZE)")
        return {"depth": depth, "open_bids": open_now, "build_s": build_s, "vacuum_s": vac_s}

    def start_intake(self, db: str, seconds: int) -> subprocess.Popen:
        """INTAKE_DURING_ROUNDS pgbench clients placing bids (place_bid) at INTAKE_RATE bids/s in
        all, for `seconds`."""
        cmd = [str(self.bindir / "pgbench"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-n"]
        cmd += ["-M", "prepared", "-c", str(INTAKE_DURING_ROUNDS), "-j", "2", "-T", str(seconds)]
        cmd += ["-R", str(INTAKE_RATE), "-f", str(HERE / "pgbench" / "place_bid_clearing.sql"), db]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def rounds_under_intake(self, db: str, depth: int) -> dict:
        """One warm-up round and self.rounds timed ones, one a second, while start_intake's clients
        place bids (issue 21's rules of measurement). Between rounds (untimed) the slots are
        re-opened with abort_slot; then 74 single-client place_bid calls top the book up (timed:
        the earlier issues' comparison)."""
        st: dict = {"clear_ms": [], "clear_server_ms": [], "place74_ms": [], "filled": []}
        rnd = random.Random(7 + depth)
        ttl = self.one(db, "SELECT now() + interval '1 day'")
        intake = self.start_intake(db, self.rounds + 30)
        seq = "SELECT last_value FROM compute_auction.compute_auction_bids_id_seq"
        with self.conn(db) as clr, self.conn(db) as bid:
            time.sleep(1)
            placed0, t_intake = self.one(db, seq), time.monotonic()
            for i in range(self.rounds + 1):  # round 0 is the warm-up
                round_started = time.perf_counter()
                ms, server, filled = self.one_round(clr)
                t = time.perf_counter()
                for j in range(SLOTS):
                    bid.execute(
                        "SELECT compute_auction.place_bid(%s, %s, %s::bigint, NULL, %s)",
                        (
                            f"ca-{rnd.randint(1, BOOK_ACCOUNTS)}",
                            f"topup-{depth}-{i}-{j}",
                            rnd.randint(1, 1_000_000),
                            ttl,
                        ),
                        prepare=True,
                    )
                p74 = (time.perf_counter() - t) * 1000
                time.sleep(max(0.0, 1.0 - (time.perf_counter() - round_started)))  # one round a second
                if i == 0:
                    continue
                st["clear_ms"].append(ms)
                st["clear_server_ms"].append(server)
                st["place74_ms"].append(p74)
                st["filled"].append(filled)
            # the sequence counts the top-ups too: only pgbench's bids are the intake
            placed = self.one(db, seq) - placed0 - (self.rounds + 1) * SLOTS
            st["intake_bids_per_s"] = placed / (time.monotonic() - t_intake)
        intake.terminate()
        intake.communicate()
        st["open_bids_after"] = self.open_bids(db)
        return st

    @staticmethod
    def one_round(c) -> tuple[float, float, int]:
        """clear_round() timed at the client (its own transaction, the commit included), the
        duration_ms it recorded, the slots it filled; then the slots re-opened (untimed: the
        winners' bids become aborted, refunded in full)."""
        t = time.perf_counter()
        rows = c.execute("SELECT * FROM compute_auction.clear_round()").fetchall()
        ms = (time.perf_counter() - t) * 1000
        server = c.execute(
            "SELECT duration_ms FROM compute_auction.compute_auction_rounds ORDER BY round_id DESC LIMIT 1"
        ).fetchone()[0]
        c.execute(
            "SELECT count(compute_auction.abort_slot(slot_id, 'bench: re-open')) "
            "FROM compute_auction.compute_slots WHERE status = 'assigned'"
        )
        return ms, server, len(rows)

    # ------------------------------------------------- 2b. place_bid vs book depth ---
    def depth(self) -> None:
        """place_bid (pgbench, 1 client, sync off) on the clearing section's deepest book vs the
        same database before any bid (depth_empty, cloned from it then), in interleaved chunks."""
        if "clearing" not in self.only:
            raise RuntimeError("the depth section measures the clearing section's book: run it with clearing")
        dbs = {"empty": "depth_empty", "deep": self.clear_db}
        self.set_sync(False)
        res: dict = {"open_bids": {k: self.open_bids(db) for k, db in dbs.items()}, "tps": {k: [] for k in dbs}}
        log(
            f"depth: place_bid at {res['open_bids']['deep']:,} open bids vs an empty book, "
            f"{self.depth_chunks} x {self.depth_chunk_s} s each, interleaved"
        )
        for chunk in range(self.depth_chunks):
            keys = list(dbs) if chunk % 2 == 0 else list(reversed(dbs))
            for key in keys:
                self.sql(dbs[key], "CHECKPOINT")
                pg = self.pgbench(
                    dbs[key], HERE / "pgbench" / "place_bid_clearing.sql", 1, self.depth_chunk_s, f"depth-{key}-{chunk}"
                )
                res["tps"][key].append(pg["tps"])
        for key in dbs:
            ok = [x for x in res["tps"][key] if x is not None]
            res.setdefault("mean_tps", {})[key] = sum(ok) / len(ok) if len(ok) == len(res["tps"][key]) else None
        e, d = res["mean_tps"]["empty"], res["mean_tps"]["deep"]
        res["ratio"] = d / e if d and e else None
        res["audit_rows"] = {k: self.audit(db, f"depth {k}") for k, db in dbs.items()}
        log(f"depth: {d or 0:.0f} tps deep vs {e or 0:.0f} tps empty = {res['ratio'] or 0:.2f}x")
        self.sql("postgres", 'DROP DATABASE "depth_empty"')
        self.r["depth"] = res

    def refund_reps_at(self, db: str, g: int, depth: int) -> dict:
        out = {"ms": [], "expired": [], "next_g": g}
        with self.conn(db) as c:
            for i in range(self.refund_reps):
                g = self.add_bids(db, g, 1_000, "1 hour", prefix=f"expiring-{depth}-{i}")
                t = time.perf_counter()
                n, _tok = c.execute(
                    "SELECT * FROM compute_auction.refund_unfilled(now() + interval '2 hours')"
                ).fetchone()
                out["ms"].append((time.perf_counter() - t) * 1000)
                out["expired"].append(n)
        out["next_g"] = g
        log(
            f"clearing: refund_unfilled of 1,000 at depth {depth:,}: median {median(out['ms']):.1f} ms "
            f"(expired {out['expired']})"
        )
        return out

    # ------------------------------------------------------------ 3. read path ---
    def read_path(self) -> None:
        db = getattr(self, "clear_db", "clearing")
        depth = self.one(db, "SELECT count(*) FROM compute_auction.compute_auction_bids WHERE status = 'open'")
        http_port = self.port + 1
        url = f"http://127.0.0.1:{http_port}/api/compute-auction/order-book?depth=100"
        log(
            f"read path: {depth:,} open bids; wrk against the driver vs pgbench order_book(100), "
            f"{self.read_seconds} s each, 8 connections"
        )
        # Hold the driver's leader lock so its clearing loop stands by: the book must not change.
        holder = self.conn(db)
        holder.execute("SELECT pg_advisory_lock(%s, %s)", LEADER_LOCK)
        logf = open(self.logs / "driver-read.log", "w")  # noqa: SIM115 - outlives the driver; closed in finally
        drv = subprocess.Popen(
            [
                self.driver,
                "serve",
                "--database-url",
                self.url(db),
                "--interval",
                "1s",
                "--listen",
                f"127.0.0.1:{http_port}",
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        res: dict = {"open_bids": depth}
        try:
            self.wait_http(url)
            body = urllib.request.urlopen(url, timeout=10).read()
            res["response_bytes"] = len(body)
            res["response_bids"] = len(json.loads(body)["bids"])
            p = subprocess.run(
                ["wrk", "-t2", "-c8", f"-d{self.read_seconds}s", "--latency", url], capture_output=True, text=True
            )
            (self.logs / "wrk.log").write_text(p.stdout + p.stderr)
            m = re.search(r"Requests/sec:\s+([\d.]+)", p.stdout)
            res["http_rps"] = float(m.group(1)) if m else None
            m = re.search(r"Non-2xx or 3xx responses: (\d+)", p.stdout)
            res["http_non2xx"] = int(m.group(1)) if m else 0
            m = re.search(r"50%\s+([\d.]+)(us|ms|s)", p.stdout)
            if m:
                res["http_p50_ms"] = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
        finally:
            stop_driver(drv, logf)
        pg = self.pgbench(db, HERE / "pgbench" / "order_book.sql", 8, self.read_seconds, "order-book")
        res["sql_tps"] = pg["tps"]
        res["sql_latency_ms"] = pg["latency_ms"]
        holder.close()
        if res.get("http_rps") and res.get("sql_tps"):
            res["ratio"] = res["http_rps"] / res["sql_tps"]
        log(f"read path: HTTP {res.get('http_rps')} req/s, SQL {res.get('sql_tps')} tps, ratio {res.get('ratio')}")
        self.r["read"] = res

    def wait_http(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the driver did not answer {url}")
            time.sleep(0.2)

    # ------------------------------------------------------------------ 4. a day ---
    def day(self) -> None:
        db = "day"
        self.create_db(db)
        want = {"agents": 1000, "quests": 100, "slots": SLOTS}
        http_port = self.port + 2
        log(f"a day: serve --interval 1s + simulate {want} for {self.day_seconds} s")
        slog = open(self.logs / "driver-day.log", "w")  # noqa: SIM115 - outlives the driver; closed in finally
        serve = subprocess.Popen(
            [
                self.driver,
                "serve",
                "--database-url",
                self.url(db),
                "--interval",
                "1s",
                "--listen",
                f"127.0.0.1:{http_port}",
            ],
            stdout=slog,
            stderr=subprocess.STDOUT,
        )
        used = dict(want)
        notes = []
        try:
            self.wait_http(f"http://127.0.0.1:{http_port}/healthz")
            t_start = self.one(db, "SELECT clock_timestamp()")
            wall = time.monotonic()
            while True:
                cmd = [
                    self.driver,
                    "simulate",
                    "--database-url",
                    self.url(db),
                    "--agents",
                    str(used["agents"]),
                    "--quests",
                    str(used["quests"]),
                    "--slots",
                    str(used["slots"]),
                    "--duration",
                    f"{self.day_seconds}s",
                    "--seed",
                    "7",
                ]
                p = subprocess.run(cmd, capture_output=True, text=True)
                (self.logs / "simulate.log").write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
                m = re.search(r"invalid value '(\d+)' for '--(\w+)[^']*': \d+ is not in (\d+)\.\.=(\d+)", p.stderr)
                if p.returncode != 0 and m and m.group(2) in used:
                    flag, hi = m.group(2), int(m.group(4))
                    notes.append(
                        f"the driver's simulate accepts at most --{flag} {hi}; ran with {hi} instead of {used[flag]}"
                    )
                    log(f"a day: {notes[-1]}")
                    used[flag] = hi
                    t_start = self.one(db, "SELECT clock_timestamp()")
                    wall = time.monotonic()
                    continue
                break
            t_end = self.one(db, "SELECT clock_timestamp()")
            wall = time.monotonic() - wall
            summary = None
            for line in reversed(p.stdout.strip().splitlines()):
                try:
                    summary = json.loads(line)
                    break
                except json.JSONDecodeError:
                    continue
            if summary is None:
                try:
                    summary = json.loads(p.stdout)
                except json.JSONDecodeError:
                    summary = {}
        finally:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=40)
            except subprocess.TimeoutExpired:
                serve.kill()
            slog.close()
        rows = self.sql(
            db,
            """
            SELECT count(*), coalesce(sum(slots_filled), 0), coalesce(sum(slots_offered), 0),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms),
                   max(duration_ms), min(cleared_at), max(cleared_at),
                   coalesce(max(bids_eligible), 0)
              FROM compute_auction.compute_auction_rounds
             WHERE cleared_at BETWEEN %s AND %s""",
            (t_start, t_end),
        )[0]
        secs = (t_end - t_start).total_seconds()
        bids_db, first_bid = self.sql(
            db,
            "SELECT count(*), min(placed_at) FROM compute_auction.compute_auction_bids "
            "WHERE placed_at BETWEEN %s AND %s",
            (t_start, t_end),
        )[0]
        active = (t_end - first_bid).total_seconds() if first_bid else None
        audit = self.sql(db, "SELECT check_name, detail FROM compute_auction.audit()")
        res = {
            "wanted": want,
            "used": used,
            "notes": notes,
            "simulate_rc": p.returncode,
            "seconds": secs,
            "wall_s": wall,
            "rounds": rows[0],
            "rounds_per_s": rows[0] / secs if secs else None,
            "slots_filled": rows[1],
            "slots_offered": rows[2],
            "p50_ms": rows[3],
            "p99_ms": rows[4],
            "max_ms": rows[5],
            "max_bids_eligible": rows[8],
            "bids_in_db": bids_db,
            "bids_per_s_db": bids_db / secs if secs else None,
            "active_s": active,
            "bids_per_s_active": bids_db / active if active else None,
            "summary": summary,
            "bids_per_s": (summary.get("bids_placed", 0) / summary["elapsed_seconds"])
            if summary.get("elapsed_seconds")
            else None,
            "audit_rows": len(audit),
            "audit": [list(a) for a in audit[:10]],
        }
        log(
            f"a day: {res['rounds']} rounds in {secs:.1f} s ({res['rounds_per_s'] or 0:.2f}/s), "
            f"{res['bids_per_s'] or 0:.2f} bids/s, p50 {res['p50_ms']} ms p99 {res['p99_ms']} ms, "
            f"audit rows {len(audit)}"
        )
        self.r["day"] = res

    # ------------------------------------------------------- 5. the dashboard ---
    def measure_dashboard(self, db: str, driver: str, tag: str, http_port: int) -> dict:
        """The driver `driver` serving `db` (its clearing loop kept standing by: the benchmark holds
        the leader lock, so the rounds do not change): the first GET of the dashboard bundle after
        start, then DASH_REQUESTS more, one at a time."""
        url = f"http://127.0.0.1:{http_port}/api/compute-auction/dashboard"
        logf = open(self.logs / f"driver-dashboard-{tag}.log", "w")  # noqa: SIM115 - closed in finally
        drv = subprocess.Popen(
            [driver, "serve", "--database-url", self.url(db), "--interval", "1s", "--listen", f"127.0.0.1:{http_port}"],
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
        res: dict = {"driver": driver}
        try:
            self.wait_http(f"http://127.0.0.1:{http_port}/openapi.yaml")

            def get() -> tuple[float, dict]:
                t = time.perf_counter()
                with urllib.request.urlopen(url, timeout=60) as r:
                    body = r.read()
                return (time.perf_counter() - t) * 1000, json.loads(body)

            res["first_ms"], body = get()
            ms = [get()[0] for _ in range(DASH_REQUESTS)]
            _, body = get()
            res.update(
                ms=ms,
                median_ms=median(ms),
                max_ms=max(ms),
                bytes=len(json.dumps(body)),
                rounds=body["totals"]["rounds"],
                fill_rate=body["fill_rate"],
                top_winners=len(body["top_winners"]),
                errors=body["errors"],
            )
        finally:
            stop_driver(drv, logf)
        log(
            f"dashboard [{tag}]: first {res['first_ms']:.1f} ms, median of {DASH_REQUESTS} "
            f"{res['median_ms']:.1f} ms (max {res['max_ms']:.1f}), {res['rounds']:,} rounds, errors {res['errors']}"
        )
        return res

    def dashboard(self) -> None:
        db = "dashboard"
        log(f"dashboard: {DASH_ROUNDS:,} one-second rounds with clears over the last 24 h, written directly")
        t = time.monotonic()
        built = history.write_rounds(self, db, DASH_ROUNDS)
        res: dict = {"rounds": DASH_ROUNDS, "build_s": time.monotonic() - t, "built": built, "requests": DASH_REQUESTS}
        holder = self.conn(db)
        holder.execute("SELECT pg_advisory_lock(%s, %s)", LEADER_LOCK)
        try:
            # the SQL the bundle runs, alone, for scale (median of DASH_REQUESTS, one connection)
            sqls = {
                "stats_false": "SELECT compute_auction.stats(now() - interval '24 hours', false)",
                "stats_rounds": "SELECT compute_auction.stats(now() - interval '24 hours', true, 100000)",
                "price_history": "SELECT count(*) FROM compute_auction.price_history(now() - interval '24 hours', 96)",
            }
            res["sql_ms"] = {}
            with self.conn(db) as c:
                for key, q in sqls.items():
                    c.execute(q).fetchall()
                    ms = []
                    for _ in range(DASH_SQL_REPS):
                        t = time.perf_counter()
                        c.execute(q).fetchall()
                        ms.append((time.perf_counter() - t) * 1000)
                    res["sql_ms"][key] = median(ms)
            log("dashboard: SQL alone (median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in res["sql_ms"].items()))
            port = self.port + 3
            res["driver"] = self.measure_dashboard(db, self.driver, "this build", port)
            if self.baseline_driver:
                res["baseline"] = self.measure_dashboard(db, self.baseline_driver, "baseline", port)
                a, b = res["driver"]["median_ms"], res["baseline"]["median_ms"]
                res["ratio_median"] = a / b if b else None
                a, b = res["driver"]["first_ms"], res["baseline"]["first_ms"]
                res["ratio_first"] = a / b if b else None
        finally:
            holder.close()
        res["audit_rows"] = self.audit(db, "dashboard")
        self.sql("postgres", f'DROP DATABASE "{db}"')
        self.r["dashboard"] = res

    # ----------------------------------------- 6-8. history, batch bids, stress ---
    def history(self) -> None:
        self.r["history"] = history.run(self)

    def batch(self) -> None:
        self.ensure_intake_template()
        self.r["batch"] = batch.run(self, "intake_tmpl", INTAKE_ACCOUNTS)

    def stress(self) -> None:
        self.r["stress"] = stress_cell.run(self)

    # --------------------------------------------------------- diagnostics ---
    def stmt_breakdown(self, db: str, calls, label: str, n: int) -> dict:
        """pg_stat_statements with track = all while `calls(conn, i)` runs n times: where the
        time of one call goes, statement by statement (nested statements included)."""
        with self.conn(db) as c:
            c.execute("SET pg_stat_statements.track = 'all'")
            c.execute("SET pg_stat_statements.track_utility = off")
            c.execute("SELECT pg_stat_statements_reset()")
            t = time.perf_counter()
            for i in range(n):
                calls(c, i)
            wall = (time.perf_counter() - t) * 1000
            c.execute("SET pg_stat_statements.track = 'none'")
            rows = c.execute("""
                SELECT toplevel, calls, total_exec_time, mean_exec_time, rows,
                       shared_blks_hit + shared_blks_read, regexp_replace(query, '\\s+', ' ', 'g')
                  FROM pg_stat_statements
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND query NOT ILIKE '%%pg_stat_statements%%'
                 ORDER BY total_exec_time DESC LIMIT 14""").fetchall()
        return {
            "label": label,
            "n": n,
            "wall_ms": wall,
            "statements": [
                {
                    "toplevel": r[0],
                    "calls": r[1],
                    "total_ms": r[2],
                    "mean_ms": r[3],
                    "rows": r[4],
                    "blocks": r[5],
                    "query": r[6][:220],
                }
                for r in rows
            ],
        }

    def diagnostics(self) -> None:
        diag: dict = {}
        n = 300 if self.quick else 2000
        log("diagnostics: statement-level breakdown of one bid (pg_stat_statements, track = all)")
        rnd = random.Random(11)
        self.ensure_intake_template()
        self.create_db("diag_bids", "intake_tmpl")
        self.sql("diag_bids", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.sql("diag_bids", (HERE / "plpgsql_place_bid.sql").read_text())
        # A book of 5,000 bids, analyzed, before any measured connection prepares its plans: on a
        # tiny table that autovacuum has already analyzed, a fresh connection's generic plan for
        # the live-bid lookup is a sequential scan (see stale_plan), which would distort the
        # breakdown (the run of 2026-11-23 15:38 caught exactly that).
        self.sql(
            "diag_bids",
            "SELECT count(compute_auction.place_bid('acct-' || (i %% %s + 1), 'seed-' || i, 5)) "
            "FROM generate_series(1, 5000) AS i",
            (INTAKE_ACCOUNTS,),
        )
        self.sql("diag_bids", "ANALYZE compute_auction.compute_auction_bids")

        def ext(c, i):
            c.execute(
                "SELECT compute_auction.place_bid(%s, %s, %s::bigint)",
                (f"acct-{rnd.randint(1, INTAKE_ACCOUNTS)}", f"diag-e-{i}", rnd.randint(1, 100000)),
                prepare=True,
            )

        def plp(c, i):
            c.execute(
                "SELECT bench_plpgsql.place_bid(%s, %s, %s::bigint)",
                (f"acct-{rnd.randint(1, INTAKE_ACCOUNTS)}", f"diag-p-{i}", rnd.randint(1, 100000)),
                prepare=True,
            )

        for f in (ext, plp):  # warm both (plans, caches) before measuring
            for i in range(50):
                f(self._warm_conn("diag_bids"), 10_000_000 + i + (0 if f is ext else 1_000_000))
        diag["fusion"] = self.fusion_experiment()
        diag["place_bid"] = self.stmt_breakdown("diag_bids", ext, "compute_auction.place_bid", n)
        diag["plpgsql"] = self.stmt_breakdown("diag_bids", plp, "bench_plpgsql.place_bid", n)
        # the cost of calling an empty function of each kind (the per-call floor)
        with self.conn("diag_bids") as c:
            c.execute(
                "CREATE OR REPLACE FUNCTION bench_plpgsql.noop(text, text, bigint) RETURNS bigint "
                "LANGUAGE plpgsql SECURITY DEFINER SET search_path = compute_auction, pg_catalog, pg_temp "
                "AS $$BEGIN RETURN 1; END$$"
            )
            for q, key in (
                ("SELECT bench_plpgsql.noop(%s, %s, %s::bigint)", "plpgsql_noop_us"),
                (
                    "SELECT 1::bigint WHERE %s::text IS NOT NULL AND %s::text IS NOT NULL AND %s::bigint > 0",
                    "select_noop_us",
                ),
            ):
                for _ in range(100):
                    c.execute(q, ("a", "b", 1), prepare=True)
                t = time.perf_counter()
                for _ in range(n):
                    c.execute(q, ("a", "b", 1), prepare=True)
                diag[key] = (time.perf_counter() - t) * 1e6 / n
        self._close_warm()

        db = getattr(self, "clear_db", None)
        if db:
            self.sql(db, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            depth = self.one(db, "SELECT count(*) FROM compute_auction.compute_auction_bids WHERE status = 'open'")
            log(f"diagnostics: clear_round and refund_unfilled at {depth:,} open bids")

            def clear(c, i):
                c.execute("SELECT * FROM compute_auction.clear_round()").fetchall()
                c.execute("SET pg_stat_statements.track = 'none'")
                c.execute(
                    "SELECT count(compute_auction.abort_slot(slot_id, 'bench: re-open')) "
                    "FROM compute_auction.compute_slots WHERE status = 'assigned'"
                )
                c.execute("SET pg_stat_statements.track = 'all'")

            diag["clear_round"] = self.stmt_breakdown(db, clear, "compute_auction.clear_round", 5)
            diag["clear_round"]["depth"] = depth
            g = getattr(self, "next_g", 50_000_000)
            self.add_bids(db, g, 1_000, "1 hour", prefix="diag-expiring")

            def refund(c, i):
                c.execute("SELECT * FROM compute_auction.refund_unfilled(now() + interval '2 hours')").fetchall()

            diag["refund_unfilled"] = self.stmt_breakdown(
                db, refund, "compute_auction.refund_unfilled (1,000 expiring)", 1
            )
            diag["plans"] = self.plans(db)
            diag["clear_generic"] = self.clear_generic(db)
            t = time.perf_counter()
            audit = self.sql(db, "SELECT check_name, detail FROM compute_auction.audit()")
            diag["clearing_audit"] = {
                "rows": len(audit),
                "first": [list(a) for a in audit[:5]],
                "ms": (time.perf_counter() - t) * 1000,
            }
            log(
                f"diagnostics: audit() on the clearing database: {len(audit)} rows "
                f"({diag['clearing_audit']['ms'] / 1000:.1f} s)"
            )
        self.r["diag"] = diag

    # The statements as extension/src/clearing.rs and reporting.rs prepare them (SPI plans are
    # cached plans: custom for the first five executions, then generic if the generic plan's
    # estimate is no worse), EXPLAINed with the plan cache forced each way.
    LOCK_BIDS = """SELECT id FROM compute_auction.compute_auction_bids
 WHERE id IN (SELECT id FROM compute_auction.compute_auction_bids
               WHERE status = 'open' AND ttl_at > $1
               ORDER BY max_price_tokens DESC, placed_at, id
               LIMIT $2)
 ORDER BY id FOR UPDATE"""
    LOCK_BIDS_ARRAY = """SELECT id FROM compute_auction.compute_auction_bids
 WHERE id = ANY (ARRAY(SELECT id FROM compute_auction.compute_auction_bids
                        WHERE status = 'open' AND ttl_at > $1
                        ORDER BY max_price_tokens DESC, placed_at, id
                        LIMIT $2))
 ORDER BY id FOR UPDATE"""
    READ_BIDS = """SELECT id, max_price_tokens, task_id, bidder_id FROM compute_auction.compute_auction_bids
 WHERE status = 'open' AND ttl_at > $1 ORDER BY max_price_tokens DESC, placed_at, id LIMIT $2"""
    ELIGIBLE = """SELECT count(*) FROM compute_auction.compute_auction_bids WHERE status = 'open' AND ttl_at <= $1"""
    # AHEAD of extension/src/clearing.rs (issue 21's LOCK_TOP follow-up read), with the book's
    # 75th price as the bound, as a round passes it
    AHEAD = """SELECT id, max_price_tokens, task_id, bidder_id FROM compute_auction.compute_auction_bids
 WHERE status = 'open' AND ttl_at > $1 AND id <> ALL ($2)
   AND ($3::bigint IS NULL
        OR (max_price_tokens >= $3
            AND (max_price_tokens > $3 OR (placed_at, id) < ($4::timestamptz, $5::bigint))))"""
    AHEAD_TYPES = "(timestamptz, bigint[], bigint, timestamptz, bigint)"
    AHEAD_BOUND = """SELECT coalesce(max_price_tokens, 0) FROM compute_auction.compute_auction_bids
 WHERE status = 'open' ORDER BY max_price_tokens DESC, placed_at, id OFFSET 74 LIMIT 1"""

    def plans(self, db: str) -> dict:
        out = {}
        cases = [
            (
                "LOCK_BIDS in its former `id IN (subquery)` form (before commit fd0479d), generic plan",
                self.LOCK_BIDS,
                "force_generic_plan",
            ),
            (
                "LOCK_BIDS as clearing.rs has it now (`id = ANY (ARRAY(subquery))`), generic plan",
                self.LOCK_BIDS_ARRAY,
                "force_generic_plan",
            ),
            ("LOCK_BIDS as clearing.rs has it now, custom plan", self.LOCK_BIDS_ARRAY, "force_custom_plan"),
            ("READ_BIDS (clearing.rs), generic plan", self.READ_BIDS, "force_generic_plan"),
            ("ELIGIBLE's expired count (clearing.rs), generic plan", self.ELIGIBLE, "force_generic_plan"),
            ("AHEAD (clearing.rs), generic plan", self.AHEAD, "force_generic_plan"),
            ("AHEAD (clearing.rs), custom plan", self.AHEAD, "force_custom_plan"),
        ]
        with self.conn(db, autocommit=False) as c:
            for i, (key, q, mode) in enumerate(cases):
                c.execute(f"SET LOCAL plan_cache_mode = {mode}")
                if q is self.AHEAD:
                    bound = (c.execute(self.AHEAD_BOUND).fetchone() or [0])[0]
                    types, args = self.AHEAD_TYPES, f"(now(), '{{}}', {int(bound)}, now(), 0)"
                else:
                    types = "(timestamptz, bigint)" if "$2" in q else "(timestamptz)"
                    args = "(now(), 75)" if "$2" in q else "(now())"
                c.execute(f"PREPARE p{i}{types} AS {q}")
                rows = c.execute(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE p{i}{args}").fetchall()
                out[key] = "\n".join(r[0] for r in rows)
            c.rollback()
        return out

    def clear_generic(self, db: str) -> dict:
        """clear_round with the session's plan cache forced to generic plans (as some deployments
        configure it, e.g. behind a transaction-pooling proxy): does the round still read only
        the top of the book?"""
        res = {"ms": []}
        with self.conn(db) as c:
            c.execute("SET plan_cache_mode = force_generic_plan")
            for i in range(4):
                t = time.perf_counter()
                c.execute("SELECT * FROM compute_auction.clear_round()").fetchall()
                ms = (time.perf_counter() - t) * 1000
                c.execute(
                    "SELECT count(compute_auction.abort_slot(slot_id, 'bench: re-open')) "
                    "FROM compute_auction.compute_slots WHERE status = 'assigned'"
                )
                if i:
                    res["ms"].append(ms)
            c.execute("RESET plan_cache_mode")
            for i in range(4):
                t = time.perf_counter()
                c.execute("SELECT * FROM compute_auction.clear_round()").fetchall()
                ms = (time.perf_counter() - t) * 1000
                c.execute(
                    "SELECT count(compute_auction.abort_slot(slot_id, 'bench: re-open')) "
                    "FROM compute_auction.compute_slots WHERE status = 'assigned'"
                )
                if i:
                    res.setdefault("ms_default", []).append(ms)
        log(f"diagnostics: clear_round with force_generic_plan: {res['ms']} ms; default: {res.get('ms_default')} ms")
        return res

    def fusion_experiment(self) -> dict:
        """What fewer statements per bid buy: place_bid (5 SPI statements), the PL/pgSQL copy (the
        same 5), and a PL/pgSQL variant with the same work fused into 2 statements
        (bench/plpgsql_place_bid_fused.sql), 1 client, sync off, interleaved repetitions."""
        reps, secs = (2, 2) if self.quick else (3, 3)
        log(f"diagnostics: statement fusion experiment ({reps} x {secs} s per variant, 1 client)")
        out = {"reps": reps, "seconds": secs, "tps": {}}
        variants = [
            ("extension", "place_bid_extension.sql"),
            ("plpgsql", "place_bid_plpgsql.sql"),
            ("plpgsql_fused", "place_bid_plpgsql_fused.sql"),
        ]
        dbs = [k for k, _ in variants] + ["client", "insert"]
        for key in dbs:
            self.create_db(f"fuse_{key}", "intake_tmpl")
            self.sql(f"fuse_{key}", (HERE / "plpgsql_place_bid.sql").read_text())
            self.sql(f"fuse_{key}", (HERE / "plpgsql_place_bid_fused.sql").read_text())
        for r in range(reps):
            for key, script in variants:
                res = self.pgbench(f"fuse_{key}", HERE / "pgbench" / script, 1, secs, f"fuse-{key}-{r}")
                out["tps"].setdefault(key, []).append(res["tps"])
        out["cpu_us"] = self.server_cpu_per_bid()
        out["perf"] = self.perf_profile()
        out["stale_plan"] = self.stale_plan()
        for key in dbs:
            if key != "insert":
                out.setdefault("audit_rows", {})[key] = self.one(
                    f"fuse_{key}", "SELECT count(*) FROM compute_auction.audit()"
                )
            self.sql("postgres", f'DROP DATABASE "fuse_{key}"')
        log(f"diagnostics: fusion: { {k: round(median(v) or 0) for k, v in out['tps'].items()} } tps")
        return out

    def server_cpu_per_bid(self) -> dict:
        """CPU time the server process spends per bid (utime + stime of the backend from
        /proc/PID/stat over N bids on one connection, prepared statements): unlike wall-clock
        throughput, this hardly moves with the other load on the machine."""
        n = 400 if self.quick else 1500
        tck = os.sysconf("SC_CLK_TCK")
        rnd = random.Random(5)

        def cpu(pid):
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / tck

        def args(i):
            return (f"acct-{rnd.randint(1, INTAKE_ACCOUNTS)}", f"cpu-{i}", rnd.randint(1, 100000))

        def fn(name):
            def call(c, i):
                c.execute(f"SELECT {name}(%s, %s, %s::bigint)", args(i), prepare=True)

            return call

        def insert(c, i):
            c.execute(
                "INSERT INTO compute_auction.compute_auction_bids (bidder_id, task_id, max_price_tokens, "
                "expected_value_usd, ttl_at) VALUES (%s, %s, %s::bigint, NULL, now() + interval '15 minutes')",
                args(i),
                prepare=True,
            )

        def client(c, i):
            a, t, p = args(i)
            c.execute("BEGIN")
            bal = c.execute(
                "SELECT balance_tokens FROM compute_auction.token_accounts WHERE account_id = %s FOR UPDATE",
                (a,),
                prepare=True,
            ).fetchone()[0]
            if bal < p:
                c.execute("ROLLBACK")
                return
            nb, nh = c.execute(
                "UPDATE compute_auction.token_accounts SET balance_tokens = balance_tokens - %s, "
                "held_tokens = held_tokens + %s, updated_at = now() WHERE account_id = %s "
                "RETURNING balance_tokens, held_tokens",
                (p, p, a),
                prepare=True,
            ).fetchone()
            bid = c.execute(
                "WITH b AS (INSERT INTO compute_auction.compute_auction_bids (bidder_id, task_id, "
                "max_price_tokens, expected_value_usd, ttl_at) VALUES (%s, %s, %s::bigint, NULL, "
                "now() + interval '15 minutes') RETURNING id), c AS (INSERT INTO "
                "compute_auction.open_bid_count_deltas (delta) SELECT 1 FROM b) SELECT id FROM b",
                (a, t, p),
                prepare=True,
            ).fetchone()[0]
            c.execute(
                "INSERT INTO compute_auction.token_ledger (account_id, delta_balance, delta_held, entry_kind, "
                "bid_id, reason, balance_after, held_after) VALUES (%s, %s, %s, 'escrow', %s, 'bid placed', "
                "%s, %s)",
                (a, -p, p, bid, nb, nh),
                prepare=True,
            )
            c.execute("COMMIT")

        variants = [
            ("extension", fn("compute_auction.place_bid")),
            ("plpgsql", fn("bench_plpgsql.place_bid")),
            ("plpgsql_fused", fn("bench_plpgsql.place_bid_fused")),
            ("client", client),
            ("insert", insert),
        ]
        out: dict = {}
        for rep in range(2):
            for key, call in variants:
                with self.conn(f"fuse_{key}") as c:
                    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
                    for i in range(100):
                        call(c, 10_000_000 + rep * 1000 + i)
                    c0 = cpu(pid)
                    for i in range(n):
                        call(c, 1_000_000 * (rep + 1) + i)
                    out.setdefault(key, []).append((cpu(pid) - c0) / n * 1e6)
        log("diagnostics: server CPU per bid (us): " + ", ".join(f"{k} {median(v):.0f}" for k, v in out.items()))
        return out

    PERF_GROUPS = [
        # (label, inclusive symbol) -- where a bid's server CPU goes
        ("executor start-up (plan tree initialisation, relation and index opening, locks)", "standard_ExecutorStart"),
        ("CHECK constraints (expressions re-read from their stored text: stringToNode)", "ExecConstraints"),
        ("index insertions", "ExecInsertIndexTuples"),
        ("foreign-key checks (AFTER triggers at statement end)", "AfterTriggerEndQuery"),
        ("heap tuple insert", "heap_insert"),
        ("heap tuple update", "heap_update"),
        ("row locks (FOR UPDATE)", "ExecLockRows"),
        ("plan cache look-up and revalidation", "GetCachedPlan"),
        ("commit", "CommitTransactionCommand"),
        ("writing to the client socket", "secure_write"),
        (
            "the function call as a whole (SECURITY DEFINER + SET search_path wrapper, inclusive)",
            "fmgr_security_definer",
        ),
        ("… of which the extension's place_bid (Rust, inclusive)", "compute_auction::bids::place_bid"),
        ("… of which the PL/pgSQL interpreter (inclusive)", "plpgsql_exec_function"),
        ("statements run through SPI (inclusive)", "SPI_execute_plan"),
        ("statements run by PL/pgSQL (inclusive)", "exec_stmt_execsql"),
    ]

    def perf_profile(self) -> dict:
        """`perf record` of the server process while pgbench places bids (1 client): inclusive CPU
        per bid in the main parts of the executor. Skipped when perf is not installed."""
        if not shutil.which("perf"):
            return {"skipped": "perf is not installed"}
        secs = 3 if self.quick else 4
        out: dict = {}
        for key, script in (
            ("extension", "place_bid_extension.sql"),
            ("plpgsql", "place_bid_plpgsql.sql"),
            ("client", "client_side.sql"),
        ):
            db = f"fuse_{key}"
            data = self.out / f"perf-{key}.data"
            cmd = [
                str(self.bindir / "pgbench"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-n",
                "-M",
                "prepared",
                "-c",
                "1",
                "-j",
                "1",
                "-T",
                str(secs + 3),
                "-f",
                str(HERE / "pgbench" / script),
                db,
            ]
            pgb = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                pid = None
                for _ in range(50):
                    time.sleep(0.1)
                    pid = self.one(
                        "postgres",
                        "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                        "AND backend_type = 'client backend' AND pid <> pg_backend_pid() LIMIT 1",
                        (db,),
                    )
                    if pid:
                        break
                if not pid:
                    raise RuntimeError("no backend")
                time.sleep(0.5)
                count = "SELECT count(*) FROM compute_auction.compute_auction_bids"
                x0 = self.one(db, count)
                # DWARF unwinding: neither the Debian server build nor the Rust release build keeps frame
                # pointers, so frame-pointer call chains would be cut short
                rec = subprocess.run(
                    [
                        "perf",
                        "record",
                        "-F",
                        "999",
                        "--call-graph",
                        "dwarf,8192",
                        "-p",
                        str(pid),
                        "-o",
                        str(data),
                        "--",
                        "sleep",
                        str(secs),
                    ],
                    capture_output=True,
                    text=True,
                )
                x1 = self.one(db, count)
            finally:
                pgb.wait()
            if rec.returncode != 0 or not data.exists():
                return {"skipped": f"perf record failed: {rec.stderr.strip()[-200:]}"}
            rep = subprocess.run(
                ["perf", "report", "-i", str(data), "--children", "--sort", "symbol", "--stdio", "-g", "none"],
                capture_output=True,
                text=True,
            ).stdout
            m = re.search(r"Event count \(approx.\): (\d+)", rep)
            total_ns = int(m.group(1)) if m else 0
            pct = {}
            for line in rep.splitlines():
                mm = re.match(r"\s+([\d.]+)%\s+([\d.]+)%\s+\[.\]\s+(\S+)", line)
                if mm:
                    pct.setdefault(mm.group(3), float(mm.group(1)))
            txns = max(1, x1 - x0)  # bids committed while perf recorded (one per transaction)
            out[key] = {
                "txns": txns,
                "total_us": total_ns / 1e3 / txns,
                "groups": {lab: pct.get(sym, 0.0) / 100 * total_ns / 1e3 / txns for lab, sym in self.PERF_GROUPS},
            }
            data.unlink(missing_ok=True)
        log(
            "diagnostics: perf, server CPU us per bid: " + ", ".join(f"{k} {v['total_us']:.0f}" for k, v in out.items())
        )
        return out

    def stale_plan(self) -> dict:
        """place_bid on one connection while the book grows from empty, in a database whose bids
        table was never analyzed (a fresh install) and in one where it was ANALYZEd while empty."""
        n, seg = (1200, 300) if self.quick else (6000, 1500)
        out = {}
        for key, analyze in (("never_analyzed", False), ("analyzed_empty", True)):
            db = f"stale_{key}"
            self.create_db(db, "intake_tmpl")
            if analyze:
                self.sql(db, "ANALYZE compute_auction.compute_auction_bids")
            ms = []
            with self.conn(db) as c:
                t = time.perf_counter()
                for i in range(1, n + 1):
                    c.execute(
                        "SELECT compute_auction.place_bid(%s, %s, 5::bigint)",
                        (f"acct-{i % INTAKE_ACCOUNTS + 1}", f"stale-{i}"),
                        prepare=True,
                    )
                    if i % seg == 0:
                        ms.append((time.perf_counter() - t) / seg * 1000)
                        t = time.perf_counter()
            out[key] = {"ms_per_call": ms, "segment": seg}
            self.sql("postgres", f'DROP DATABASE "{db}"')
        log(
            "diagnostics: place_bid ms/call as the book grows: "
            + "; ".join(f"{k} {[round(x, 2) for x in v['ms_per_call']]}" for k, v in out.items())
        )
        return out

    _warm = None

    def _warm_conn(self, db):
        if self._warm is None:
            self._warm = self.conn(db)
        return self._warm

    def _close_warm(self):
        if self._warm is not None:
            self._warm.close()
            self._warm = None

    # ------------------------------------------------------------------ machine ---
    def machine(self) -> None:
        def sh(cmd):
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

        cpu = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        settings = self.sql(
            "postgres",
            """
            SELECT name, setting, unit FROM pg_settings
             WHERE name IN ('shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'fsync', 'wal_level',
                            'full_page_writes', 'jit', 'max_connections', 'work_mem', 'autovacuum',
                            'shared_preload_libraries', 'wal_sync_method', 'effective_cache_size')
             ORDER BY name""",
        )
        self.r["machine"] = {
            "nproc": sh("nproc"),
            "free": sh("free -h"),
            "cpu": cpu,
            "loadavg_start": Path("/proc/loadavg").read_text().strip(),
            "pg_version": self.one("postgres", "SELECT version()"),
            "settings": [[n, s + (f" ({u})" if u else "")] for n, s, u in settings],
            "git": sh(f"git -C {self.root} rev-parse --short HEAD"),
            "git_dirty": bool(sh(f"git -C {self.root} status --porcelain -- extension sql")),
            "driver_version": sh(f"{self.driver} --version"),
            "wrk": sh("wrk --version 2>&1 | head -1"),
        }

    def run(self) -> None:
        self.snapshot_library()
        self.machine()
        steps = {
            "intake": self.intake,
            "clearing": self.clearing,
            "depth": self.depth,
            "read": self.read_path,
            "day": self.day,
            "dashboard": self.dashboard,
            "history": self.history,
            "batch": self.batch,
            "diag": self.diagnostics,
            "stress": self.stress,  # last: it restarts the cluster
        }
        for name in SECTIONS:
            f = steps[name]
            if name not in self.only:
                continue
            t = time.monotonic()
            try:
                f()
            except Exception as e:  # record and go on: one broken section must not lose the others
                log(f"{name} failed: {e!r}")
                self.r.setdefault("errors", {})[name] = repr(e)
            self.r.setdefault("timings", {})[name + "_s"] = time.monotonic() - t
            (self.out / "results.json").write_text(json.dumps(self.r, indent=1, default=str))
        self.r["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
        self.r["total_s"] = time.monotonic() - T0
        if os.environ.get("CA_BENCH_STARTED"):
            # the whole command, from bench/run's start (cluster set-up included); the report adds
            # the few seconds of writing it
            self.r["command_s"] = time.time() - int(os.environ["CA_BENCH_STARTED"])
        self.r["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        (self.out / "results.json").write_text(json.dumps(self.r, indent=1, default=str))
        log(f"measurements done in {self.r['total_s'] / 60:.1f} min; results in {self.out / 'results.json'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bindir", required=True)
    ap.add_argument("--driver", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--data", help="the cluster's data directory (the stress section restarts it)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help="comma-separated sections: " + ",".join(SECTIONS))
    ap.add_argument(
        "--baseline-driver",
        help="another driver build (e.g. an earlier commit's) whose dashboard is measured beside this one's",
    )
    ap.add_argument("--write-docs", action="store_true", help="with --quick: write docs/ anyway")
    ap.add_argument(
        "--report-only", action="store_true", help="measure nothing: rewrite the report from target/bench/results.json"
    )
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import report  # noqa: E402

    if a.report_only:
        r = json.loads((Path(a.root) / "target" / "bench" / "results.json").read_text())
        docs = Path(a.root) / "docs" if not r.get("quick") or a.write_docs else Path(a.root) / "target" / "bench"
        report.write(r, docs)
        log(f"wrote {docs / 'BENCHMARKS.md'} and {docs / 'bench_clearing_depth.png'} from the saved results")
        return
    b = Bench(a)
    b.run()
    docs = Path(a.root) / "docs"
    if a.quick and not a.write_docs:
        docs = b.out
    report.write(b.r, docs)
    log(f"wrote {docs / 'BENCHMARKS.md'} and {docs / 'bench_clearing_depth.png'}")


if __name__ == "__main__":
    main()
