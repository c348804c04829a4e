//! Quests bid on behalf of their backlog (submit_bids_for_tasks), and the old proportional
//! split kept as the fallback (allocate_proportional).
//!
//! The public functions are PL/pgSQL wrappers in sql/quests.sql: they take the `jsonb`
//! arguments apart with PostgreSQL's own JSON functions (any shape, any depth, with the
//! documented SQLSTATEs) and call the array-taking functions below, which are revoked from
//! PUBLIC.

use compute_auction_core::bid_status_sql;
use compute_auction_core::limits::{self, locks};
use compute_auction_core::planner::{self, Decision};
use compute_auction_core::{tokens, validate};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::bids::{self, Placed};
use crate::book;
use crate::errors::Code;
use crate::ledger::{self, check_id};
use crate::spi;
use crate::times;

fn arrays<T: Clone>(arg: &'static str, v: Option<Vec<Option<T>>>) -> Vec<T> {
    or_raise!(validate::required(arg, v)).into_iter().map(|x| or_raise!(validate::required(arg, x))).collect()
}

/// The task locks, taken in one statement in key order, each key once. Locks are ordered by
/// the key they are taken on, never by the text it was hashed from: two calls with disjoint
/// task ids whose hashes collide would otherwise take the same keys in opposite orders and
/// deadlock. (The sorted subquery's order is the order the function scan takes them in.)
const LOCK_TASK_KEYS: &str = "
SELECT count(pg_catalog.pg_advisory_xact_lock($1, k))
  FROM (SELECT DISTINCT pg_catalog.hashtext(t) AS k FROM pg_catalog.unnest($2::text[]) AS t ORDER BY 1 OFFSET 0) AS s";

/// The live bids on the tasks: other bidders' are read without a lock, the quest's own are
/// locked (in id order) and read after the lock.
const OTHERS_LIVE_BIDS: &str = concat!(
    "
SELECT id, task_id, bidder_id, status, max_price_tokens
  FROM compute_auction.compute_auction_bids
 WHERE task_id = ANY($1) AND status IN ",
    bid_status_sql!(live),
    " AND bidder_id <> $2"
);

const OWN_LIVE_BIDS: &str = concat!(
    "
SELECT id, task_id, bidder_id, status, max_price_tokens
  FROM compute_auction.compute_auction_bids
 WHERE task_id = ANY($1) AND status IN ",
    bid_status_sql!(live),
    " AND bidder_id = $2
 ORDER BY id
   FOR UPDATE"
);

/// Array form of submit_bids_for_tasks (see sql/quests.sql for the public function). The
/// decisions are compute_auction_core::planner's, property-tested there; this function
/// validates, takes the locks, reads the rows, and executes the plan in the planner's order.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
// a pgrx table function's type is its result columns, spelled out for the SQL signature
#[allow(clippy::type_complexity)]
fn submit_bids_for_task_arrays(
    quest_id: Option<&str>,
    task_ids: Option<Vec<Option<String>>>,
    expected_values_usd: Option<Vec<Option<f64>>>,
    blocked: Option<Vec<Option<bool>>>,
    tokens_per_usd: Option<f64>,
    bid_fraction: Option<f64>,
    ttl_at: Option<TimestampWithTimeZone>,
) -> TableIterator<
    'static,
    (name!(task_id, String), name!(bid_id, Option<i64>), name!(max_price_tokens, Option<i64>), name!(outcome, String)),
> {
    let quest = check_id("quest_id", quest_id);
    let tasks: Vec<String> = arrays("tasks", task_ids);
    if tasks.len() > limits::MAX_TASKS_PER_CALL {
        raise!(
            Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("{} tasks in one call; at most {}", tasks.len(), limits::MAX_TASKS_PER_CALL),
            Some("Split the backlog into several calls."),
        );
    }
    let evs: Vec<f64> = arrays("expected_value_usd", expected_values_usd);
    let blocked: Vec<bool> = arrays("blocked", blocked);
    if evs.len() != tasks.len() || blocked.len() != tasks.len() {
        raise!(Code::ERRCODE_INVALID_PARAMETER_VALUE, "task arrays differ in length", None);
    }
    let tpu = or_raise!(validate::required("tokens_per_usd", tokens_per_usd));
    or_raise!(validate::finite("tokens_per_usd", tpu));
    if tpu <= 0.0 {
        raise!(Code::ERRCODE_INVALID_PARAMETER_VALUE, "tokens_per_usd must be positive", None);
    }
    let frac = or_raise!(validate::required("bid_fraction", bid_fraction));
    if !(frac > 0.0 && frac <= 1.0) {
        raise!(Code::ERRCODE_INVALID_PARAMETER_VALUE, "bid_fraction must be in (0, 1]", None);
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(ttl) = ttl_at {
        let ok = spi::with(|c| {
            let args: [DatumWithOid<'_>; 2] = [ttl.into(), times::days(limits::BID_TTL_MAX_DAYS).into()];
            spi::first::<bool>(spi::run(c, "SELECT $1 > now() AND $1 <= now() + $2", &args), 1)
        });
        if ok != Some(true) {
            bids::ttl_refused();
        }
    }
    for (t, ev) in tasks.iter().zip(&evs) {
        or_raise!(validate::id("task_id", t));
        or_raise!(validate::finite("expected_value_usd", *ev));
        if *ev < 0.0 {
            raise!(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("expected_value_usd of task {t} is negative"), None,);
        }
        if !seen.insert(t.as_str()) {
            raise!(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("task {t} is listed twice"), None);
        }
    }

    let rows = spi::with(|c| {
        // authority before any lock; then task locks (in key order) -> the quest's own live bids
        // (id order) -> the quest's account. Other bidders' bids are only read, and the task of
        // one is not locked at all: it is skipped whatever happens, and a task lock held on it
        // until this transaction ends would make its owner's replace wait (55P03).
        ledger::check_may_act(c, quest);
        type LiveRow = (i64, String, String, String, i64);
        let read = |c: &mut SpiClient<'_>, sql: &'static str, tasks: &[String]| -> Vec<LiveRow> {
            let args: [DatumWithOid<'_>; 2] = [tasks.to_vec().into(), quest.into()];
            spi::run(c, sql, &args)
                .map(|r| (spi::req(&r, 1), spi::req(&r, 2), spi::req(&r, 3), spi::req(&r, 4), spi::req(&r, 5)))
                .collect()
        };
        let mut live = read(c, OTHERS_LIVE_BIDS, &tasks);
        let theirs: std::collections::HashSet<&str> = live.iter().map(|(_, t, _, _, _)| t.as_str()).collect();
        let free: Vec<String> = tasks.iter().filter(|t| !theirs.contains(t.as_str())).cloned().collect();
        let args: [DatumWithOid<'_>; 2] = [locks::CLASS_TASK.into(), free.clone().into()];
        spi::run(c, LOCK_TASK_KEYS, &args);
        // a bid by another bidder placed on a free task before its lock was taken; then the
        // quest's own bids, on the locked tasks only: a task skipped above stays skipped (were
        // the other bid to end meanwhile and the quest to bid on the task from another session,
        // that bid is neither counted nor locked here: the next call sees it)
        let late = read(c, OTHERS_LIVE_BIDS, &free);
        live.extend(late);
        live.extend(read(c, OWN_LIVE_BIDS, &free));
        let acct = ledger::lock_owned(c, quest);

        let backlog: Vec<planner::Task<'_>> = tasks
            .iter()
            .zip(&evs)
            .zip(&blocked)
            .map(|((t, ev), blk)| planner::Task { id: t, expected_value_usd: *ev, blocked: *blk })
            .collect();
        let live_bids: Vec<planner::LiveBid<'_>> = live
            .iter()
            .map(|(id, task_id, bidder, status, price)| planner::LiveBid {
                id: *id,
                task_id,
                own: bidder == quest,
                status: match book::status(status) {
                    s if s.is_live() => s,
                    other => internal!(format!("live bid {id} is {other}")),
                },
                max_price_tokens: *price,
            })
            .collect();
        let plan = or_raise!(planner::plan(&backlog, &live_bids, acct.balance, tpu, frac));

        // the planner's order: every cancel first, then lowered bids, then raises and new bids
        let mut out: Vec<Option<(String, Option<i64>, Option<i64>, String)>> = vec![None; tasks.len()];
        for (i, d) in plan.decisions.iter().enumerate() {
            match *d {
                Decision::Skip { outcome, bid_id } => {
                    out[i] = Some((tasks[i].clone(), bid_id, None, outcome.as_str().to_owned()));
                }
                Decision::Cancel { bid_id, outcome } => {
                    bids::cancel(c, bid_id, outcome.as_str(), false);
                    out[i] = Some((tasks[i].clone(), Some(bid_id), None, outcome.as_str().to_owned()));
                }
                Decision::Place { .. } => {}
            }
        }
        // the quest's own open bids are replaced one by one in the planner's order; then every
        // new bid at once (new bids only take from the balance, so placing them last never
        // needs more than the budget at any step)
        let own: std::collections::HashSet<&str> =
            live.iter().filter(|(_, _, bidder, _, _)| bidder == quest).map(|(_, t, _, _, _)| t.as_str()).collect();
        let mut new: Vec<(usize, i64)> = Vec::new();
        for &i in &plan.place_order {
            if let Decision::Place { price, .. } = plan.decisions[i] {
                if !own.contains(tasks[i].as_str()) {
                    new.push((i, price));
                    continue;
                }
                let (id, what) = bids::place(c, quest, &tasks[i], price, Some(evs[i]), ttl_at);
                let outcome = match what {
                    Placed::New => "placed",
                    Placed::Replaced => "replaced",
                };
                out[i] = Some((tasks[i].clone(), Some(id), Some(price), outcome.to_string()));
            }
        }
        let new_tasks: Vec<&str> = new.iter().map(|&(i, _)| tasks[i].as_str()).collect();
        let new_prices: Vec<i64> = new.iter().map(|&(_, p)| p).collect();
        let new_evs: Vec<Option<f64>> = new.iter().map(|&(i, _)| Some(evs[i])).collect();
        let ids = book::open_many(c, quest, &new_tasks, &new_prices, &new_evs, ttl_at);
        for (&(i, price), id) in new.iter().zip(ids) {
            out[i] = Some((tasks[i].clone(), Some(id), Some(price), "placed".to_string()));
        }
        out.into_iter().flatten().collect::<Vec<_>>()
    });
    TableIterator::new(rows)
}

/// Array form of allocate_proportional (see sql/quests.sql for the public function).
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn allocate_proportional_arrays(
    day: Option<Date>,
    daily_budget_tokens: Option<i64>,
    quest_ids: Option<Vec<Option<String>>>,
    expected_values: Option<Vec<Option<f64>>>,
    source: Option<&str>,
) -> TableIterator<'static, (name!(quest_id, String), name!(allocated_tokens, i64))> {
    let day = times::date("day", or_raise!(validate::required("day", day)));
    let budget = or_raise!(validate::required("daily_budget_tokens", daily_budget_tokens));
    or_raise!(validate::non_negative("daily_budget_tokens", budget));
    let ids: Vec<String> = arrays("quests", quest_ids);
    let evs: Vec<f64> = arrays("expected_value", expected_values);
    let source = or_raise!(validate::required("source", source));
    if ids.len() != evs.len() {
        raise!(Code::ERRCODE_INVALID_PARAMETER_VALUE, "quest arrays differ in length", None);
    }
    let mut seen = std::collections::HashSet::new();
    for id in &ids {
        or_raise!(validate::id("quest_id", id));
        if !seen.insert(id.as_str()) {
            raise!(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("quest {id} is listed twice"), None);
        }
    }
    let shares = or_raise!(tokens::largest_remainder(budget, &evs));
    let fractions = tokens::shares(&evs);
    spi::with(|c| {
        let args: [DatumWithOid<'_>; 2] = [locks::CLASS_DAY.into(), day.into()];
        spi::run(c, "SELECT pg_catalog.pg_advisory_xact_lock($1, ($2::date - date '2000-01-01'))", &args);
        spi::run(c, "DELETE FROM compute_auction.quest_budget_allocations WHERE day = $1", &[day.into()]);
        let args: [DatumWithOid<'_>; 5] =
            [day.into(), ids.clone().into(), shares.clone().into(), fractions.into(), source.into()];
        spi::run(
            c,
            "INSERT INTO compute_auction.quest_budget_allocations (day, quest_id, allocated_tokens, share, source)
             SELECT $1, q, a, s, $5 FROM unnest($2::text[], $3::bigint[], $4::float8[]) AS u(q, a, s)",
            &args,
        );
    });
    TableIterator::new(ids.into_iter().zip(shares))
}
