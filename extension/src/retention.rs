//! Retention (issue 24): prune_history removes the finished history older than a horizon and
//! compacts the ledger, keeping the books provable; schedule_pruning / unschedule_pruning register
//! it with pg_cron as schedule_clearing does run_cycle.
//!
//! What is never removed: anything of a live (open or won) bid or an assigned clear, the round a
//! kept clear references, the newest round, pending wallet entries and everything they name (bid,
//! round, the bid's ledger entries). The oldest ledger entries of each account (before the
//! horizon, up to its first entry of a live bid or of a bid with pending entries) are compacted
//! into one `checkpoint` entry (their summed deltas, with the id, at, balance_after and
//! held_after of the newest of them), so `balance_tokens = sum(delta_balance)`, the id order and
//! every `balance_after` (the running sum up to its entry) hold as before; the idempotency keys
//! of compacted deposits and withdrawals move to `idempotency_keys` and are kept for the key
//! window.
//!
//! Locks and waiting: one prune at a time (a try-lock: a second call returns at once); every
//! statement is one chunk of at most `CHUNK_ROWS` rows and locks the rows it removes with
//! SKIP LOCKED, so it never waits for a participant: a row someone holds is left for a later
//! call. The compaction rewrites only ledger rows, which nobody else locks, and changes no
//! account row (an UPDATE that keeps `account_id` runs no foreign-key check, so not even the
//! account's key-share lock is taken). One call removes at most `MAX_ROWS_PER_CALL` rows per
//! table and says, per table, whether it stopped there (`more`).

use compute_auction_core::limits::{locks, retention as lim, stopped_at_budget};
use compute_auction_core::{bid_status_sql, validate};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::authority;
use crate::cycle;
use crate::errors::Code;
use crate::spi;
use crate::summaries;
use crate::times;

/// Prefix of the pg_cron job name used by schedule_pruning / unschedule_pruning (one job per
/// database, as for clearing).
pub const CRON_JOB_PREFIX: &str = "compute_auction_pruning";

const TRY_LOCK: &str = "SELECT pg_catalog.pg_try_advisory_xact_lock($1, $2)";

/// The horizon (now() - older_than) and the idempotency keys' horizon: now() less the longer of
/// older_than and the key window.
const HORIZONS: &str = "
SELECT now() - $1::interval,
       now() - greatest($1::interval, pg_catalog.make_interval(days => $2))";

/// One chunk of finished bids older than the horizon (by updated_at, after the cursor), each
/// removed with its clear. A bid is kept while a pending entry names it or while it has ledger
/// entries at or after the horizon (it stays whole while any of its history is kept). Bids and
/// clears another transaction holds are skipped, never waited for.
const PRUNE_BIDS: &str = concat!(
    "
WITH c AS MATERIALIZED (
    SELECT b.id, b.updated_at FROM compute_auction.compute_auction_bids AS b
     WHERE b.status IN ",
    bid_status_sql!(finished),
    " AND b.updated_at < $1
       AND (b.updated_at, b.id) > (coalesce($2, '-infinity'::timestamptz), $3)
     ORDER BY b.updated_at, b.id
     LIMIT $4
), ok AS MATERIALIZED (
    SELECT b.id FROM compute_auction.compute_auction_bids AS b
     WHERE b.id IN (SELECT id FROM c)
       AND b.status IN ",
    bid_status_sql!(finished),
    "
       AND NOT EXISTS (SELECT 1 FROM compute_auction.pending_entries AS p WHERE p.bid_id = b.id)
       AND NOT EXISTS (SELECT 1 FROM compute_auction.token_ledger AS l WHERE l.bid_id = b.id AND l.at >= $1)
       AND NOT EXISTS (SELECT 1 FROM compute_auction.compute_auction_clears AS x
                        WHERE x.bid_id = b.id AND x.status = 'assigned')
       FOR UPDATE OF b SKIP LOCKED
), lc AS MATERIALIZED (
    SELECT x.bid_id FROM compute_auction.compute_auction_clears AS x
     WHERE x.bid_id IN (SELECT id FROM ok) AND x.status <> 'assigned'
       FOR UPDATE OF x SKIP LOCKED
), gone AS MATERIALIZED (
    SELECT ok.id FROM ok
     WHERE ok.id IN (SELECT bid_id FROM lc)
        OR NOT EXISTS (SELECT 1 FROM compute_auction.compute_auction_clears AS x WHERE x.bid_id = ok.id)
), dc AS (
    DELETE FROM compute_auction.compute_auction_clears AS x USING gone WHERE x.bid_id = gone.id RETURNING 1
), db AS (
    DELETE FROM compute_auction.compute_auction_bids AS b USING gone WHERE b.id = gone.id RETURNING 1
)
SELECT (SELECT count(*) FROM db), (SELECT count(*) FROM dc), (SELECT count(*) FROM c),
       l.updated_at, l.id
  FROM (SELECT NULL) AS one
  LEFT JOIN (SELECT updated_at, id FROM c ORDER BY updated_at DESC, id DESC LIMIT 1) AS l ON true"
);

/// One chunk of rounds older than the horizon (by cleared_at, after the cursor), with their
/// round_skips rows. A round is kept while a clear (live or kept) or a pending entry names it,
/// and the newest round is always kept (last_round, market_summary). This is the one statement
/// that deletes rounds; prune_rounds then brings the rounds' summaries (summaries.rs) up to
/// date for the span of cleared_at it went through (the last column: its start).
const PRUNE_ROUNDS: &str = "
WITH c AS MATERIALIZED (
    SELECT r.round_id, r.cleared_at FROM compute_auction.compute_auction_rounds AS r
     WHERE r.cleared_at < $1
       AND (r.cleared_at, r.round_id) > (coalesce($2, '-infinity'::timestamptz), $3)
     ORDER BY r.cleared_at, r.round_id
     LIMIT $4
), ok AS MATERIALIZED (
    -- (the newest round is excluded here, on c, not as a range on the table: a range would let
    -- the planner read every older round through the primary key instead of the chunk's)
    SELECT r.round_id FROM compute_auction.compute_auction_rounds AS r
     WHERE r.round_id IN (SELECT round_id FROM c
                           WHERE round_id < (SELECT max(round_id) FROM compute_auction.compute_auction_rounds))
       AND NOT EXISTS (SELECT 1 FROM compute_auction.compute_auction_clears AS x WHERE x.round_id = r.round_id)
       AND NOT EXISTS (SELECT 1 FROM compute_auction.pending_entries AS p WHERE p.round_id = r.round_id)
       FOR UPDATE OF r SKIP LOCKED
), ds AS (
    DELETE FROM compute_auction.round_skips AS k USING ok WHERE k.round_id = ok.round_id RETURNING 1
), dr AS (
    DELETE FROM compute_auction.compute_auction_rounds AS r USING ok WHERE r.round_id = ok.round_id RETURNING 1
)
SELECT (SELECT count(*) FROM dr), (SELECT count(*) FROM ds), (SELECT count(*) FROM c),
       l.cleared_at, l.round_id, (SELECT min(cleared_at) FROM c)
  FROM (SELECT NULL) AS one
  LEFT JOIN (SELECT cleared_at, round_id FROM c ORDER BY cleared_at DESC, round_id DESC LIMIT 1) AS l ON true";

/// One chunk of the ledger in id order (after the cursor $2, at most $3 rows), compacted: per
/// account, the entries before the horizon $1 (and before the first entry at or after it) up to
/// its first entry that must stay (of a live bid, or of a bid with pending entries), when there
/// are at least two, are replaced by one checkpoint. Only a prefix of each account's ledger is
/// compacted, so the checkpoint comes before every entry left, and every entry's balance_after
/// is still the running sum of the deltas up to it. The newest of them becomes the checkpoint
/// (so it keeps its id, at, balance_after and held_after) and the others are deleted; when their
/// deltas sum to zero in both columns (the CHECK forbids an all-zero row) all of them are
/// deleted. Their idempotency keys at or after $4 move to idempotency_keys, their refunds to
/// compacted_totals. An account whose sums would not fit in a bigint is left as it is. Nobody
/// else locks ledger rows, and the UPDATE keeps account_id (no foreign-key check, no account
/// lock).
///
/// What the chunks before it in this call left is passed in, so nothing before the cursor is
/// read again: $5, the accounts that met an entry that must stay (nothing after it is
/// compacted), and $6, the ids of the entries left that may still be compacted (each account's
/// checkpoint so far, or its single entry), which are compacted again with this chunk's. The
/// statement returns both for the next chunk.
const COMPACT: &str = concat!(
    "
WITH scan AS MATERIALIZED (
    SELECT id, account_id, at, bid_id, entry_kind, delta_balance, delta_held, idempotency_key, balance_after
      FROM compute_auction.token_ledger WHERE id > $2 ORDER BY id LIMIT $3
), stop AS MATERIALIZED (
    SELECT min(id) AS id FROM scan WHERE at >= $1
), pre AS MATERIALIZED (
    SELECT a.account_id, a.account_id = ANY ($5::text[]) AS blocked
      FROM (SELECT DISTINCT account_id FROM scan) AS a
), prev AS MATERIALIZED (
    SELECT l.id, l.account_id, l.at, l.bid_id, l.entry_kind, l.delta_balance, l.delta_held, l.idempotency_key,
           l.balance_after
      FROM compute_auction.token_ledger AS l JOIN pre USING (account_id)
     WHERE l.id = ANY ($6::bigint[]) AND NOT pre.blocked
), kept AS MATERIALIZED (
    -- per account, its first entry in the chunk that must stay
    SELECT s.account_id, min(s.id) AS id FROM scan AS s
     WHERE s.bid_id IS NOT NULL
       AND (EXISTS (SELECT 1 FROM compute_auction.compute_auction_bids AS b
                     WHERE b.id = s.bid_id AND b.status IN ",
    bid_status_sql!(live),
    ")
            OR EXISTS (SELECT 1 FROM compute_auction.pending_entries AS p WHERE p.bid_id = s.bid_id))
     GROUP BY s.account_id
), e AS MATERIALIZED (
    -- each account's entries before the horizon (and before the first entry at or after it in
    -- id order) and before its first entry that must stay: a prefix of what is left of it
    SELECT r.* FROM (SELECT * FROM prev UNION ALL SELECT * FROM scan) AS r
      JOIN pre USING (account_id) LEFT JOIN kept AS k USING (account_id)
     WHERE NOT pre.blocked
       AND r.id < coalesce((SELECT id FROM stop), 9223372036854775807) AND r.at < $1
       AND r.id < coalesce(k.id, 9223372036854775807)
), g AS MATERIALIZED (
    SELECT account_id, max(id) AS newest, count(*) AS n,
           sum(delta_balance) AS db, sum(delta_held) AS dh,
           coalesce(sum(delta_balance) FILTER (WHERE entry_kind = 'refund'), 0) AS refunded
      FROM e GROUP BY account_id
    HAVING count(*) >= 2
       AND sum(delta_balance) BETWEEN -9223372036854775808 AND 9223372036854775807
       AND sum(delta_held) BETWEEN -9223372036854775808 AND 9223372036854775807
), k AS (
    INSERT INTO compute_auction.idempotency_keys
           (account_id, entry_kind, idempotency_key, delta_balance, balance_after, at)
    SELECT e.account_id, e.entry_kind, e.idempotency_key, e.delta_balance, e.balance_after, e.at
      FROM e JOIN g USING (account_id)
     WHERE e.idempotency_key IS NOT NULL AND e.at >= $4
    ON CONFLICT DO NOTHING
    RETURNING 1
), d AS (
    DELETE FROM compute_auction.token_ledger AS l
     USING e JOIN g USING (account_id)
     WHERE l.id = e.id AND (e.id <> g.newest OR (g.db = 0 AND g.dh = 0))
    RETURNING 1
), u AS (
    UPDATE compute_auction.token_ledger AS l
       SET entry_kind = 'checkpoint', delta_balance = g.db::bigint, delta_held = g.dh::bigint,
           bid_id = NULL, slot_id = NULL, round_id = NULL, idempotency_key = NULL,
           reason = pg_catalog.format('checkpoint of %s entries', g.n)
      FROM g
     WHERE l.id = g.newest AND NOT (g.db = 0 AND g.dh = 0)
    RETURNING 1
), t AS (
    INSERT INTO compute_auction.compacted_totals (id, tokens_refunded, entries)
    SELECT 1, least(sum(refunded), ",
    refunded_cap_sql!(),
    ")::bigint, sum(n)::bigint FROM g HAVING count(*) > 0
    ON CONFLICT (id) DO UPDATE
       SET tokens_refunded = least(compute_auction.compacted_totals.tokens_refunded::numeric + EXCLUDED.tokens_refunded, ",
    refunded_cap_sql!(),
    ")::bigint,
           entries = compute_auction.compacted_totals.entries + EXCLUDED.entries
)
SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM u), (SELECT count(*) FROM scan),
       (SELECT max(id) FROM scan), (SELECT id IS NOT NULL FROM stop), (SELECT count(*) FROM k),
       ARRAY(SELECT account_id FROM kept UNION SELECT unnest($5::text[])),
       ARRAY(SELECT id FROM e WHERE account_id NOT IN (SELECT account_id FROM g)
             UNION ALL SELECT newest FROM g WHERE NOT (db = 0 AND dh = 0)
             UNION ALL SELECT x FROM unnest($6::bigint[]) AS x WHERE x NOT IN (SELECT id FROM e))"
);

/// One chunk of the kept idempotency keys older than their horizon. Only prune_history writes
/// these rows and nobody locks them.
const EXPIRE_KEYS: &str = "
WITH d AS (
    DELETE FROM compute_auction.idempotency_keys AS k
     WHERE (k.account_id, k.entry_kind, k.idempotency_key) IN
           (SELECT account_id, entry_kind, idempotency_key FROM compute_auction.idempotency_keys
             WHERE at < $1 ORDER BY at LIMIT $2)
    RETURNING 1
)
SELECT count(*) FROM d";

// The tables each statement reads: its plan is made again when one that was small has grown
// (spi::run_sized), so a plan made on a young market's tiny tables does not stay.
const PRUNE_BIDS_TABLES: [&std::ffi::CStr; 4] =
    [c"compute_auction_bids", c"compute_auction_clears", c"token_ledger", c"pending_entries"];
const PRUNE_ROUNDS_TABLES: [&std::ffi::CStr; 4] =
    [c"compute_auction_rounds", c"compute_auction_clears", c"round_skips", c"pending_entries"];
const COMPACT_TABLES: [&std::ffi::CStr; 3] = [c"token_ledger", c"compute_auction_bids", c"pending_entries"];

/// What one call removed from one table, and whether it stopped at its budget.
struct Removed {
    table: &'static str,
    rows: i64,
    more: bool,
}

/// The tables prune_history reports on, in the order it reports them.
const TABLES: [&str; 6] = [
    "compute_auction_bids",
    "compute_auction_clears",
    "compute_auction_rounds",
    "round_skips",
    "token_ledger",
    "idempotency_keys",
];

/// Removes, in chunks, the finished bids and their clears older than `horizon`.
fn prune_bids(c: &mut SpiClient<'_>, horizon: TimestampWithTimeZone) -> (Removed, Removed) {
    let (mut bids, mut clears) = (0_i64, 0_i64);
    let mut cursor: (Option<TimestampWithTimeZone>, i64) = (None, 0);
    let mut full = false;
    while bids < lim::MAX_ROWS_PER_CALL {
        let args: [DatumWithOid<'_>; 4] = [horizon.into(), cursor.0.into(), cursor.1.into(), lim::CHUNK_ROWS.into()];
        let t = spi::run_sized(c, PRUNE_BIDS, &args, &PRUNE_BIDS_TABLES).first();
        bids += spi::get_req::<i64>(&t, 1);
        clears += spi::get_req::<i64>(&t, 2);
        full = spi::get_req::<i64>(&t, 3) >= lim::CHUNK_ROWS;
        if !full {
            break;
        }
        cursor = (spi::get(&t, 4), spi::get_req(&t, 5));
    }
    let more = stopped_at_budget(bids, lim::MAX_ROWS_PER_CALL, full);
    (Removed { table: TABLES[0], rows: bids, more }, Removed { table: TABLES[1], rows: clears, more })
}

/// The first and the last cleared_at of a set of rounds.
type Span = (TimestampWithTimeZone, TimestampWithTimeZone);

/// Removes, in chunks, the rounds older than `horizon` that nothing kept references, with their
/// skipped-bid rows: the one place rounds are deleted (see [`PRUNE_ROUNDS`]).
/// Also returns the span of cleared_at of the deleted rounds, for summaries::forget_rounds.
fn prune_rounds(c: &mut SpiClient<'_>, horizon: TimestampWithTimeZone) -> (Removed, Removed, Option<Span>) {
    let (mut rounds, mut skips) = (0_i64, 0_i64);
    let mut cursor: (Option<TimestampWithTimeZone>, i64) = (None, 0);
    let mut full = false;
    // the span of cleared_at the chunks went through: the deleted rounds are all in it
    let mut span: Option<Span> = None;
    while rounds < lim::MAX_ROWS_PER_CALL {
        let args: [DatumWithOid<'_>; 4] = [horizon.into(), cursor.0.into(), cursor.1.into(), lim::CHUNK_ROWS.into()];
        let t = spi::run_sized(c, PRUNE_ROUNDS, &args, &PRUNE_ROUNDS_TABLES).first();
        rounds += spi::get_req::<i64>(&t, 1);
        skips += spi::get_req::<i64>(&t, 2);
        full = spi::get_req::<i64>(&t, 3) >= lim::CHUNK_ROWS;
        if let (Some(first), Some(last)) = (spi::get::<TimestampWithTimeZone>(&t, 6), spi::get(&t, 4)) {
            span = Some((span.map_or(first, |s| s.0), last));
        }
        if !full {
            break;
        }
        cursor = (spi::get(&t, 4), spi::get_req(&t, 5));
    }
    let forgot = if rounds > 0 { span } else { None };
    let more = stopped_at_budget(rounds, lim::MAX_ROWS_PER_CALL, full);
    (Removed { table: TABLES[2], rows: rounds, more }, Removed { table: TABLES[3], rows: skips, more }, forgot)
}

/// Compacts, in chunks of the ledger in id order, every account's entries older than `horizon`.
fn compact_ledger(
    c: &mut SpiClient<'_>,
    horizon: TimestampWithTimeZone,
    key_horizon: TimestampWithTimeZone,
) -> Removed {
    let mut removed = 0_i64;
    let mut cursor = 0_i64;
    let mut full = false;
    // what the chunks so far left: the accounts blocked by an entry that must stay, and the
    // entries left that may be compacted again (see COMPACT)
    let mut blocked: Vec<String> = Vec::new();
    let mut left: Vec<i64> = Vec::new();
    while removed < lim::MAX_ROWS_PER_CALL {
        let args: [DatumWithOid<'_>; 6] = [
            horizon.into(),
            cursor.into(),
            lim::CHUNK_ROWS.into(),
            key_horizon.into(),
            std::mem::take(&mut blocked).into(),
            std::mem::take(&mut left).into(),
        ];
        let t = spi::run_sized(c, COMPACT, &args, &COMPACT_TABLES).first();
        removed += spi::get_req::<i64>(&t, 1);
        let stopped: bool = spi::get(&t, 5).unwrap_or(false);
        full = spi::get_req::<i64>(&t, 3) >= lim::CHUNK_ROWS && !stopped;
        if !full {
            break;
        }
        cursor = spi::get_req(&t, 4);
        blocked = spi::get(&t, 7).unwrap_or_default();
        left = spi::get(&t, 8).unwrap_or_default();
    }
    Removed { table: TABLES[4], rows: removed, more: stopped_at_budget(removed, lim::MAX_ROWS_PER_CALL, full) }
}

/// Removes, in chunks, the kept idempotency keys older than `key_horizon`.
fn expire_keys(c: &mut SpiClient<'_>, key_horizon: TimestampWithTimeZone) -> Removed {
    let mut removed = 0_i64;
    let mut full = false;
    while removed < lim::MAX_ROWS_PER_CALL {
        let n: i64 = spi::first(
            spi::run_sized(c, EXPIRE_KEYS, &[key_horizon.into(), lim::CHUNK_ROWS.into()], &[c"idempotency_keys"]),
            1,
        )
        .unwrap_or(0);
        removed += n;
        full = n >= lim::CHUNK_ROWS;
        if !full {
            break;
        }
    }
    Removed { table: TABLES[5], rows: removed, more: stopped_at_budget(removed, lim::MAX_ROWS_PER_CALL, full) }
}

/// Removes the finished history older than now() - older_than and compacts the ledger before it
/// (see the module documentation and docs/SQL_API.md#prune_history). Operators only. Returns one
/// row per table: the rows removed, and whether the call stopped at its budget (`more`: call
/// again). A call while another prune runs removes nothing and says `more`.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn prune_history(
    older_than: Option<Interval>,
) -> TableIterator<'static, (name!(table_name, String), name!(rows_removed, i64), name!(more, bool))> {
    let older_than = times::interval("older_than", or_raise!(validate::required("older_than", older_than)));
    let out = spi::with(|c| {
        authority::check_operator(c, "prune_history");
        let got: bool =
            spi::first(spi::run(c, TRY_LOCK, &[locks::CLASS.into(), locks::PRUNING.into()]), 1).unwrap_or(false);
        if !got {
            return TABLES.iter().map(|t| Removed { table: t, rows: 0, more: true }).collect::<Vec<_>>();
        }
        let t = spi::run(c, HORIZONS, &[older_than.into(), lim::KEY_WINDOW_DAYS.into()]).first();
        let horizon: TimestampWithTimeZone = spi::get_req(&t, 1);
        let key_horizon: TimestampWithTimeZone = spi::get_req(&t, 2);
        // bids (with their clears) first: a round is removable once its clears are gone
        let (bids, clears) = prune_bids(c, horizon);
        let (rounds, skips, forgot) = prune_rounds(c, horizon);
        let ledger = compact_ledger(c, horizon, key_horizon);
        let keys = expire_keys(c, key_horizon);
        // last: the rounds' summaries take the clearing lock, held until the caller commits
        if let Some((from, to)) = forgot {
            summaries::forget_rounds(c, from, to);
        }
        vec![bids, clears, rounds, skips, ledger, keys]
    });
    TableIterator::new(out.into_iter().map(|r| (r.table.to_string(), r.rows, r.more)))
}

fn job_name(db: &str) -> String {
    format!("{CRON_JOB_PREFIX}:{db}")
}

/// The pg_cron command for `older_than`: the interval is quoted by PostgreSQL (format's %L),
/// never spliced in by Rust.
const COMMAND: &str = "SELECT pg_catalog.format('SELECT compute_auction.prune_history(%L)', $1::interval::text)";

/// Registers `SELECT compute_auction.prune_history('<older_than>')` with pg_cron under the job
/// name `compute_auction_pruning:<this database>` (re-scheduling replaces it) and returns the job
/// id; like schedule_clearing, when pg_cron is not installed here the error's hint is the exact
/// statement to run in the pg_cron database.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn schedule_pruning(older_than: Option<Interval>, schedule: default!(Option<&str>, "'0 * * * *'")) -> i64 {
    let older_than = times::interval("older_than", or_raise!(validate::required("older_than", older_than)));
    let schedule = or_raise!(validate::required("schedule", schedule));
    if schedule.trim().is_empty() {
        raise!(Code::ERRCODE_INVALID_PARAMETER_VALUE, "schedule must not be empty", None);
    }
    spi::with(|c| {
        authority::check_operator(c, "schedule_pruning");
        let db = cycle::current_db(c);
        let job = job_name(&db);
        let command: String = spi::first(spi::run(c, COMMAND, &[older_than.into()]), 1)
            .unwrap_or_else(|| internal!("format returned nothing"));
        if !cycle::cron_here(c) {
            let hint = format!(
                "SELECT cron.schedule_in_database({}, {}, {}, {});",
                cycle::literal(&job),
                cycle::literal(schedule),
                cycle::literal(&command),
                cycle::literal(&db)
            );
            raise_with_detail!(
                Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "pg_cron is not installed in this database",
                "Run the statement in the hint in the database where pg_cron is installed (cron.database_name).",
                &hint,
            );
        }
        let args: [DatumWithOid<'_>; 3] = [job.as_str().into(), schedule.into(), command.as_str().into()];
        spi::first::<i64>(spi::run(c, "SELECT cron.schedule($1, $2, $3)", &args), 1)
            .unwrap_or_else(|| internal!("cron.schedule returned nothing"))
    })
}

/// Removes this database's compute_auction_pruning pg_cron job. Returns whether a job was removed.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn unschedule_pruning() -> bool {
    spi::with(|c| {
        authority::check_operator(c, "unschedule_pruning");
        let job = job_name(&cycle::current_db(c));
        cycle::unschedule(c, &job)
    })
}
