//! One full market cycle for schedulers (pg_cron or anything that can run SQL), its pg_cron
//! registration, and bid advice (price_to_win).

use compute_auction_core::{bid_status_sql, book_order_sql, clearing as rule, percentiles, slot_order_sql, validate};
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

/// The free slots' reserves and the last 24 h's clearing prices as a histogram (summaries.rs),
/// whose exact p50 and p90 compute_auction_core::percentiles computes: the cost follows the
/// window's distinct prices, not its rounds.
const ADVICE: &str = concat!(
    "
SELECT array(SELECT reserve_price_tokens FROM compute_auction.compute_slots
              WHERE status = 'idle' AND available_at <= now()
              ORDER BY ",
    slot_order_sql!(),
    "),
       q.prices, q.counts, q.adj_prices, q.adj_counts
  FROM ",
    recent_histogram_sql!(),
    " AS q"
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

/// Bid advice: how many slots are free now, the smallest bid that would win one if the round
/// cleared now (null when none is free), and the last 24 h's clearing-price p50 and p90.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn price_to_win() -> pgrx::JsonB {
    spi::with_read(|c| {
        let t = spi::read(c, ADVICE, &[]).first();
        let reserves: Vec<i64> = spi::get(&t, 1).unwrap_or_default();
        let col = |i: usize| -> Vec<i64> { spi::get(&t, i).unwrap_or_default() };
        let adjust: Vec<(i64, i64)> = col(4).into_iter().zip(col(5)).collect();
        let recent = percentiles::merge(&col(2), &col(3), &adjust);
        let p50 = percentiles::percentile_disc(&recent, 0.5);
        let p90 = percentiles::percentile_disc(&recent, 0.9);
        let n = compute_auction_core::tokens::count(reserves.len());
        let top: Vec<i64> = spi::first(spi::read(c, TOP_BIDS, &[n.into()]), 1).unwrap_or_default();
        pgrx::JsonB(serde_json::json!({
            "slots_available": n,
            "price_to_win_now": rule::price_to_win(&top, &reserves),
            "recent_clearing_p50": p50,
            "recent_clearing_p90": p90,
        }))
    })
}
