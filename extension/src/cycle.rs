//! One full market cycle for schedulers (pg_cron or anything that can run SQL), its pg_cron
//! registration, and bid advice (price_to_win).

use compute_auction_core::limits::{MAX_ORDER_BOOK_DEPTH, PRICE_WINDOW_MAX_DAYS};
use compute_auction_core::recent_runs_sql;
use compute_auction_core::validate::Invalid;
use compute_auction_core::{bid_status_sql, book_order_sql, clearing as rule, percentiles, validate};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crate::errors::Code;
use crate::spi;
use crate::times;

/// Prefix of the pg_cron job name used by schedule_clearing / unschedule_clearing; the full
/// name is `compute_auction_clearing:<database>`, one job per database (pg_cron keys jobs by
/// name and user, so a shared name would make databases overwrite each other's job).
pub const CRON_JOB_PREFIX: &str = "compute_auction_clearing";
const CRON_COMMAND: &str = "SELECT compute_auction.run_cycle()";

/// Runs one cycle at now() in the caller's transaction: clear_round, abort_stale
/// (assignment_timeout), refund_unfilled, apply_pending. Returns what each step did.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn run_cycle(assignment_timeout: default!(Option<Interval>, "'1 hour'")) -> pgrx::JsonB {
    let timeout =
        times::interval("assignment_timeout", or_raise!(validate::required("assignment_timeout", assignment_timeout)));
    spi::with(|c| {
        let now: TimestampWithTimeZone =
            spi::first(spi::run(c, "SELECT now()", &[]), 1).unwrap_or_else(|| internal!("now() returned nothing"));
        // One transaction holding every lock to the end, so pg_cron's one statement is one
        // cycle. Why its step order differs from the driver's (three transactions) is
        // docs/CONCURRENCY.md, "Two ways to run a cycle".
        let cleared = crate::clearing::clear(c, now);
        let aborted = crate::settlement::stale(c, timeout, now);
        let (expired, refunded) = crate::settlement::refund(c, now);
        let applied = crate::ledger::apply_pending(c, None);
        let mut out = cleared.to_json(c);
        out["bids_expired"] = expired.into();
        out["tokens_refunded"] = refunded.into();
        out["assignments_aborted"] = aborted.into();
        out["pending_entries_applied"] = applied.into();
        pgrx::JsonB(out)
    })
}

pub(crate) fn cron_here(c: &mut pgrx::spi::SpiClient<'_>) -> bool {
    spi::first::<bool>(
        spi::run(c, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron')", &[]),
        1,
    )
    .unwrap_or(false)
}

pub(crate) fn current_db(c: &mut pgrx::spi::SpiClient<'_>) -> String {
    spi::first(spi::run(c, "SELECT pg_catalog.current_database()::text", &[]), 1).unwrap_or_default()
}

fn job_name(db: &str) -> String {
    format!("{CRON_JOB_PREFIX}:{db}")
}

/// Quotes a SQL literal for the hint text shown to an administrator (never executed here).
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Registers `SELECT compute_auction.run_cycle()` with pg_cron under the job name
/// `compute_auction_clearing:<this database>` (re-scheduling replaces it) and returns the job
/// id. pg_cron must be installed in this database; otherwise the error's hint is the exact
/// statement to run in the pg_cron database (cron.database_name).
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn schedule_clearing(schedule: default!(Option<&str>, "'* * * * *'")) -> i64 {
    let schedule = or_raise!(validate::required("schedule", schedule));
    if schedule.trim().is_empty() {
        raise!(Code::ERRCODE_INVALID_PARAMETER_VALUE, "schedule must not be empty", None);
    }
    spi::with(|c| {
        let db = current_db(c);
        let job = job_name(&db);
        if !cron_here(c) {
            let hint = format!(
                "SELECT cron.schedule_in_database({}, {}, {}, {});",
                literal(&job),
                literal(schedule),
                literal(CRON_COMMAND),
                literal(&db)
            );
            raise_with_detail!(
                Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "pg_cron is not installed in this database",
                "Run the statement in the hint in the database where pg_cron is installed (cron.database_name).",
                &hint,
            );
        }
        let args: [DatumWithOid<'_>; 3] = [job.as_str().into(), schedule.into(), CRON_COMMAND.into()];
        spi::first::<i64>(spi::run(c, "SELECT cron.schedule($1, $2, $3)", &args), 1)
            .unwrap_or_else(|| internal!("cron.schedule returned nothing"))
    })
}

/// Removes this database's compute_auction_clearing pg_cron job. Returns whether a job was
/// removed.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn unschedule_clearing() -> bool {
    spi::with(|c| {
        let job = job_name(&current_db(c));
        unschedule(c, &job)
    })
}

/// Removes the pg_cron job named `job` (of this database): unschedule_clearing and
/// unschedule_pruning. Returns whether a job was removed; 55000 with the statement to run when
/// pg_cron is not installed in this database.
pub(crate) fn unschedule(c: &mut pgrx::spi::SpiClient<'_>, job: &str) -> bool {
    if !cron_here(c) {
        let hint = format!("SELECT cron.unschedule({});", literal(job));
        raise_with_detail!(
            Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_cron is not installed in this database",
            "Run the statement in the hint in the database where pg_cron is installed (cron.database_name).",
            &hint,
        );
    }
    let exists =
        spi::first::<bool>(spi::run(c, "SELECT EXISTS (SELECT 1 FROM cron.job WHERE jobname = $1)", &[job.into()]), 1)
            .unwrap_or(false);
    if !exists {
        return false;
    }
    spi::first::<bool>(spi::run(c, "SELECT cron.unschedule($1::text)", &[job.into()]), 1).unwrap_or(false)
}

/// The last 24 h's clearing prices as a histogram (summaries.rs), whose exact p50 and p90
/// compute_auction_core::percentiles computes: the cost follows the window's distinct prices,
/// not its rounds. The default window's histogram is kept up to date by every round.
const RECENT_PRICES: &str =
    concat!("SELECT q.prices, q.counts, q.adj_prices, q.adj_counts FROM ", recent_histogram_sql!(), " AS q");

/// The same for any other window, from its start $1 (summaries.rs, window_histogram_sql!).
const WINDOW_PRICES: &str =
    concat!("SELECT q.prices, q.counts, q.adj_prices, q.adj_counts FROM ", window_histogram_sql!(), " AS q");

/// The price window checked ($1; $2: the longest, in days): whether it is in range, whether it
/// is the default (the kept histogram), and its start.
const PRICE_WINDOW: &str = "
SELECT $1 > interval '0' AND $1 <= pg_catalog.make_interval(days => $2), $1 = interval '24 hours', now() - $1";

/// The slots in the order they would be free (the first n are the slots price_to_win advises
/// for): the slots free now, in the clearing order; then the idle slots not yet available and
/// the assigned ones (a slot asked to retire excluded), soonest first: an idle slot at its
/// available_at, an assigned one at its run's start plus the median duration of the latest
/// settled runs (an estimate; now() once past, unknown without settled runs: a run settled
/// before its round's `now` counts as none), by slot_id on a
/// tie. Columns: reserve, when (NULL: unknown), whether that is an estimate, slot_id, free now,
/// the median run duration in seconds, when as JSON; $1 rows at most, from the latest
/// limits::RECENT_RUNS clears' runs.
const FREEING_ORDER: &str = concat!(
    "
WITH d AS (
    SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY slot_finished_at - slot_started_at) AS typical
      FROM (SELECT status, slot_started_at, slot_finished_at
              FROM compute_auction.compute_auction_clears
             ORDER BY round_id DESC
             LIMIT ",
    recent_runs_sql!(),
    ") AS c
     WHERE c.status = 'settled' AND c.slot_finished_at > c.slot_started_at
), f AS (
    SELECT s.reserve_price_tokens AS reserve, s.available_at AS at, false AS est, s.slot_id,
           s.available_at <= now() AS free_now
      FROM compute_auction.compute_slots AS s
     WHERE s.status = 'idle'
    UNION ALL
    SELECT s.reserve_price_tokens, CASE WHEN d.typical IS NOT NULL THEN greatest(now(), c.slot_started_at + d.typical) END,
           true, s.slot_id, false
      FROM compute_auction.compute_slots AS s
      JOIN compute_auction.compute_auction_clears AS c ON c.slot_id = s.slot_id AND c.status = 'assigned'
      CROSS JOIN d
     WHERE s.status = 'assigned' AND NOT s.retire_requested
)
SELECT f.reserve, f.at, f.est, f.slot_id, f.free_now, extract(epoch FROM (SELECT typical FROM d))::float8,
       to_jsonb(f.at)
  FROM f
 ORDER BY f.free_now DESC,
          CASE WHEN f.free_now THEN f.reserve END, CASE WHEN f.free_now THEN f.at END,
          f.at NULLS LAST, f.slot_id
 LIMIT $1"
);

const TOP_BIDS: &str = concat!(
    "
SELECT array(SELECT max_price_tokens FROM compute_auction.compute_auction_bids
              WHERE status = ",
    bid_status_sql!(open),
    " AND ttl_at > now()
              ORDER BY ",
    book_order_sql!(),
    "
              LIMIT $1)"
);

/// One slot of the freeing order.
struct Freeing {
    reserve: i64,
    at: Option<TimestampWithTimeZone>,
    estimated: bool,
    slot_id: String,
    free_now: bool,
    at_json: Option<serde_json::Value>,
}

/// Bid advice: how many slots are free now and the smallest bid that would win one if the
/// round cleared now (null when none is free); the smallest bid that would be among the top
/// `slots_free` bids and meet those slots' reserves (for the slots free now, then the next to
/// free up); when the next slot is expected to be free; and the clearing-price p50 and p90 over
/// `price_window` (at most 7 days).
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn price_to_win(
    slots_free: default!(Option<i32>, "NULL"),
    price_window: default!(Option<Interval>, "'24 hours'"),
) -> pgrx::JsonB {
    let window = times::interval("price_window", or_raise!(validate::required("price_window", price_window)));
    if let Some(n) = slots_free {
        if !(1..=MAX_ORDER_BOOK_DEPTH).contains(&n) {
            invalid!(Invalid::OutOfRange {
                arg: "slots_free",
                detail: format!("{n} is not in 1..={MAX_ORDER_BOOK_DEPTH} (NULL: the slots free now)"),
            });
        }
    }
    spi::with_read(|c| {
        let args: [DatumWithOid<'_>; 2] = [window.into(), PRICE_WINDOW_MAX_DAYS.into()];
        let t = spi::read(c, PRICE_WINDOW, &args).first();
        if !spi::get::<bool>(&t, 1).unwrap_or(false) {
            invalid!(Invalid::OutOfRange {
                arg: "price_window",
                detail: format!("must be longer than 0 and at most {PRICE_WINDOW_MAX_DAYS} days"),
            });
        }
        let default_window = spi::get::<bool>(&t, 2).unwrap_or(false);
        let since: TimestampWithTimeZone = spi::get_req(&t, 3);
        let t = if default_window {
            spi::read(c, RECENT_PRICES, &[]).first()
        } else {
            spi::read(c, WINDOW_PRICES, &[since.into()]).first()
        };
        let col = |i: usize| -> Vec<i64> { spi::get(&t, i).unwrap_or_default() };
        let adjust: Vec<(i64, i64)> = col(3).into_iter().zip(col(4)).collect();
        let recent = percentiles::merge(&col(1), &col(2), &adjust);
        let p50 = percentiles::percentile_disc(&recent, 0.5);
        let p90 = percentiles::percentile_disc(&recent, 0.9);

        // the slots free now and, after them, up to the n the advice is for
        // (the whole fleet, up to the depth limit: the slots free now count whatever n is)
        let want = MAX_ORDER_BOOK_DEPTH;
        let mut typical_run_s: Option<f64> = None;
        let args: [DatumWithOid<'_>; 1] = [want.into()];
        let order: Vec<Freeing> = spi::read(c, FREEING_ORDER, &args)
            .map(|r| {
                typical_run_s = spi::col(&r, 6);
                Freeing {
                    reserve: spi::req(&r, 1),
                    at: spi::col(&r, 2),
                    estimated: spi::req(&r, 3),
                    slot_id: spi::req(&r, 4),
                    free_now: spi::req(&r, 5),
                    at_json: spi::col::<pgrx::JsonB>(&r, 7).map(|j| j.0),
                }
            })
            .collect();
        let free_now: Vec<i64> = order.iter().filter(|f| f.free_now).map(|f| f.reserve).collect();
        // NULL: the slots free now, or the next one to free up when none is
        let n = slots_free.map_or(free_now.len().max(1), |n| usize::try_from(n).unwrap_or(1));
        let fleet = order.len();
        let used = &order[..n.min(fleet)];
        let reserves: Vec<i64> = used.iter().map(|f| f.reserve).collect();
        let depth = compute_auction_core::tokens::count(free_now.len().max(used.len()));
        let top: Vec<i64> = spi::first(spi::read(c, TOP_BIDS, &[depth.into()]), 1).unwrap_or_default();
        let now_top = &top[..top.len().min(free_now.len())];
        // the next slot to be free: one free now, or the first of the rest
        let next = order.iter().find(|f| f.free_now).or_else(|| order.iter().find(|f| f.at.is_some()));
        pgrx::JsonB(serde_json::json!({
            "slots_available": free_now.len(),
            "price_to_win_now": rule::price_to_win(now_top, &free_now),
            "slots_free": n,
            "slots_counted": used.len(),
            "slots_capped": n > fleet,
            "price_to_win": (!used.is_empty()).then(|| rule::price_for_slots(&top, used.len(), &reserves)),
            "next_slot_id": next.map(|f| f.slot_id.clone()),
            "next_slot_at": next.and_then(|f| f.at_json.clone()),
            "next_slot_estimated": next.map(|f| f.estimated && !f.free_now),
            "run_duration_estimate_s": typical_run_s,
            "price_window_s": window_seconds(window),
            "recent_clearing_p50": p50,
            "recent_clearing_p90": p90,
        }))
    })
}

/// The window in seconds (months and days at their interval-comparison lengths, 30 and 1 days:
/// the window is at most 7 days, so this is exact for every accepted window but a months one).
fn window_seconds(w: Interval) -> i64 {
    let days = i64::from(w.months()) * 30 + i64::from(w.days());
    days * 86_400 + w.micros() / 1_000_000
}
