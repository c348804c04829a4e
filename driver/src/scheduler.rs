//! The clearing loop: leader election on a dedicated connection, one cycle
//! (refund_unfilled, abort_stale, apply_pending, clear_round) per interval while leading,
//! capped exponential backoff while the database is unreachable, and the
//! degraded / proportional-fallback switch.
//!
//! The cycle runs on the same dedicated connection that holds the leader lock, never on the
//! HTTP pool, so no number of API requests can delay a round; each step is one transaction
//! with its own lock_timeout and statement_timeout (db::StepTimeouts), committed with none.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};

use crate::db::{self, ClearOutcome, DbError, Refunds, Session, StepTimeouts, LEADER_LOCK};
use crate::metrics::Metrics;

/// How long a statement on the dedicated leader connection may take before
/// the connection is considered dead.
const LEADER_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// While degraded, the fallback allocation is rewritten at most this often.
const FALLBACK_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub interval: Duration,
    pub assignment_timeout: Duration,
    pub fallback_after: u32,
    pub daily_budget_tokens: Option<i64>,
    pub max_backoff: Duration,
    pub step_timeouts: StepTimeouts,
    /// Whether the extension's version was found good at start-up; if not (the database was
    /// unreachable then), the loop checks it on its first connection and stops on a bad one.
    pub version_checked: bool,
}

/// Retention (`serve --retain`): what the pruner does and how often.
#[derive(Debug, Clone)]
pub struct PrunerConfig {
    /// Prune the history older than this.
    pub retain: Duration,
    /// Time between prune passes.
    pub every: Duration,
    pub step_timeouts: StepTimeouts,
}

/// One prune pass calls prune_history at most this many times (each call removes a bounded
/// number of rows per table and says whether there is more); the rest waits for the next pass.
const PRUNE_CALLS_PER_PASS: u32 = 20;
/// How often the pruner looks whether this driver leads (it prunes only while it does).
const PRUNER_POLL: Duration = Duration::from_secs(5);

/// The pruner (`serve --retain`): on its own connection, never the clearing loop's (a prune
/// pass must not delay a round) nor the HTTP pool's. While this driver leads, once at once and
/// then every `every`, it calls compute_auction.prune_history until it reports nothing more (at
/// most PRUNE_CALLS_PER_PASS calls), each call its own transaction. A failure is logged and
/// counted (compute_auction_prune_errors_total) and the pass retried at the next poll.
pub async fn run_pruner(
    pg_config: tokio_postgres::Config,
    cfg: PrunerConfig,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(retain_s = cfg.retain.as_secs(), every_s = cfg.every.as_secs(), "retention: pruner started");
    let mut conn: Option<Session> = None;
    let mut last_pass: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PRUNER_POLL.min(cfg.every)) => {}
            r = shutdown.changed() => { if r.is_err() { break; } }
        }
        if *shutdown.borrow() {
            break;
        }
        if !metrics.is_leader() || last_pass.is_some_and(|t| t.elapsed() < cfg.every) {
            continue;
        }
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            match db::connect(&pg_config).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    metrics.prune_errors.increment(1);
                    tracing::warn!(error = %e, "retention: cannot connect; retried at the next poll");
                    continue;
                }
            }
        }
        let Some(client) = conn.as_mut() else { continue };
        let mut removed = 0_i64;
        let mut failed = false;
        for _ in 0..PRUNE_CALLS_PER_PASS {
            if *shutdown.borrow() {
                break;
            }
            match db::prune_history(client, cfg.retain, cfg.step_timeouts).await {
                Ok(p) => {
                    removed = removed.saturating_add(p.rows_removed);
                    metrics.pruned_rows.increment(u64::try_from(p.rows_removed).unwrap_or(0));
                    if !p.more {
                        break;
                    }
                }
                Err(e) => {
                    metrics.prune_errors.increment(1);
                    tracing::error!(error = %e, "retention: prune_history failed; retried at the next poll");
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            last_pass = Some(Instant::now());
            tracing::info!(retain_s = cfg.retain.as_secs(), rows_removed = removed, "pruned history");
        }
    }
}

/// Capped exponential backoff: base, 2·base, 4·base, ... up to cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap: cap.max(base), attempt: 0 }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        self.attempt = self.attempt.saturating_add(1);
        self.base.saturating_mul(factor).min(self.cap)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// Everything one cycle did, step by step.
#[derive(Debug)]
pub struct Cycle {
    pub refunds: Result<Refunds, DbError>,
    pub aborted: Result<i64, DbError>,
    pub applied: Result<i64, DbError>,
    pub clear: Result<ClearOutcome, DbError>,
    pub clear_duration: Duration,
}

impl Cycle {
    /// Each step's name and its error, if it failed, in the order the steps run.
    pub fn step_errors(&self) -> [(&'static str, Option<&DbError>); 4] {
        [
            ("refund_unfilled", self.refunds.as_ref().err()),
            ("abort_stale", self.aborted.as_ref().err()),
            ("apply_pending", self.applied.as_ref().err()),
            ("clear_round", self.clear.as_ref().err()),
        ]
    }

    /// The first "database unreachable" error of the cycle, if any.
    pub fn unavailable(&self) -> Option<&DbError> {
        self.step_errors().into_iter().find_map(|(_, e)| e.filter(|e| e.is_unavailable()))
    }

    /// The first step that failed for lack of rights (42501, 42883), if any.
    pub fn rights_error(&self) -> Option<(&'static str, &DbError)> {
        self.step_errors().into_iter().find_map(|(step, e)| e.filter(|e| db::is_rights_error(e)).map(|e| (step, e)))
    }

    /// The JSON printed by the `clear` subcommand.
    pub fn to_json(&self) -> Value {
        fn err(e: &DbError) -> Value {
            json!({"error": e.message(), "sqlstate": e.code()})
        }
        let (round, assignments) = match &self.clear {
            Ok(o) => (json!(o.round), json!(o.assignments)),
            Err(_) => (Value::Null, json!([])),
        };
        json!({
            "ok": self.clear.is_ok(),
            "refund_unfilled": match &self.refunds { Ok(r) => json!(r), Err(e) => err(e) },
            "abort_stale": match &self.aborted { Ok(n) => json!({"aborted": n}), Err(e) => err(e) },
            "apply_pending": match &self.applied { Ok(n) => json!({"applied": n}), Err(e) => err(e) },
            "clear_round": match &self.clear { Ok(_) => json!({"ok": true}), Err(e) => err(e) },
            "round": round,
            "assignments": assignments,
            "clear_duration_ms": (self.clear_duration.as_secs_f64() * 1e6).round() / 1e3,
        })
    }
}

/// One full cycle on one connection, each step in its own transaction with the
/// `t` timeouts. A step that fails (a timeout included) does not stop the others; a
/// step that finds the database unreachable skips the remaining steps.
pub async fn run_cycle(client: &mut Session, assignment_timeout: Duration, t: StepTimeouts) -> Cycle {
    let skipped = |e: &DbError| DbError::Unavailable(format!("skipped: {}", e.message()));
    let refunds = db::refund_unfilled(client, t).await;
    let aborted = match &refunds {
        Err(e) if e.is_unavailable() => Err(skipped(e)),
        _ => db::abort_stale(client, assignment_timeout, t).await,
    };
    let applied = match (&refunds, &aborted) {
        (Err(e), _) | (_, Err(e)) if e.is_unavailable() => Err(skipped(e)),
        _ => db::apply_pending(client, t).await,
    };
    let t0 = std::time::Instant::now();
    let clear = match [&refunds.as_ref().err(), &aborted.as_ref().err(), &applied.as_ref().err()]
        .into_iter()
        .flatten()
        .find(|e| e.is_unavailable())
    {
        Some(e) => Err(skipped(e)),
        None => db::clear_round(client, t).await,
    };
    Cycle { refunds, aborted, applied, clear, clear_duration: t0.elapsed() }
}

enum Tick {
    /// The database answered (whether or not we lead, whether or not clearing
    /// succeeded): wait one interval.
    Done,
    /// The database is unreachable: back off.
    Unavailable(DbError),
    /// The database has no compatible extension (db::check_extension_version): stop.
    Incompatible(String),
}

pub struct Scheduler {
    pg_config: tokio_postgres::Config,
    cfg: SchedulerConfig,
    metrics: Arc<Metrics>,
    leader_conn: Option<Session>,
    leading: bool,
    last_fallback_attempt: Option<Instant>,
    /// After stepping down on a privilege error: no attempt to lead before this.
    hold_off_until: Option<Instant>,
}

/// How long a driver that stepped down on a privilege error waits before it checks its rights
/// and tries to lead again: long enough for another driver to take over, so that drivers whose
/// rights come and go cannot flap.
fn hold_off(interval: Duration) -> Duration {
    interval.saturating_mul(10).max(Duration::from_secs(10))
}

impl Scheduler {
    pub fn new(pg_config: tokio_postgres::Config, cfg: SchedulerConfig, metrics: Arc<Metrics>) -> Self {
        Scheduler {
            pg_config,
            cfg,
            metrics,
            leader_conn: None,
            leading: false,
            last_fallback_attempt: None,
            hold_off_until: None,
        }
    }

    /// Runs until `shutdown` turns true. A cycle in flight when the signal
    /// arrives is finished (its transactions commit or roll back) first. Ends early, with the
    /// message, only when the database it reaches lacks a compatible extension.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), String> {
        let mut backoff = Backoff::new(Duration::from_millis(200), self.cfg.max_backoff);
        let mut next = Instant::now();
        tracing::info!(
            interval_ms = self.cfg.interval.as_millis() as u64,
            assignment_timeout_s = self.cfg.assignment_timeout.as_secs_f64(),
            fallback_after = self.cfg.fallback_after,
            step_lock_timeout_ms = self.cfg.step_timeouts.lock.as_millis() as u64,
            step_statement_timeout_ms = self.cfg.step_timeouts.statement.as_millis() as u64,
            "clearing loop started"
        );
        loop {
            tokio::select! {
                _ = sleep_until(next) => {}
                r = shutdown.changed() => { if r.is_err() { break; } }
            }
            if *shutdown.borrow() {
                break;
            }
            let started = Instant::now();
            match self.tick().await {
                Tick::Done => {
                    if backoff.attempts() > 0 {
                        tracing::info!("database reachable again; clearing loop resumed");
                    }
                    backoff.reset();
                    next = started + self.cfg.interval;
                }
                Tick::Incompatible(why) => {
                    self.release_leadership().await;
                    return Err(why);
                }
                Tick::Unavailable(e) => {
                    self.metrics.db_unavailable.increment(1);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, attempt = backoff.attempts(), "database unavailable; backing off");
                    next = Instant::now() + delay;
                }
            }
        }
        self.release_leadership().await;
        tracing::info!("clearing loop stopped");
        Ok(())
    }

    fn drop_leader_conn(&mut self, why: &str) {
        if self.leading {
            tracing::warn!(reason = why, "lost leadership");
        }
        self.leading = false;
        self.metrics.set_leader(false);
        self.leader_conn = None;
    }

    async fn release_leadership(&mut self) {
        if let (true, Some(c)) = (self.leading, self.leader_conn.as_ref()) {
            let r = timeout(
                Duration::from_secs(2),
                c.query_one("SELECT pg_advisory_unlock($1, $2)", &[&LEADER_LOCK.0, &LEADER_LOCK.1]),
            )
            .await;
            match r {
                Ok(Ok(_)) => tracing::info!("released leadership"),
                _ => tracing::info!("leadership ends with the connection"),
            }
        }
        self.leading = false;
        self.metrics.set_leader(false);
        self.leader_conn = None;
    }

    /// Makes sure we have a live dedicated connection and know whether we
    /// lead. Returns Ok(true) when this process should clear.
    async fn ensure_leadership(&mut self) -> Result<bool, DbError> {
        if self.leader_conn.as_ref().is_some_and(|c| c.is_closed()) {
            self.drop_leader_conn("leader connection closed");
        }
        if self.leader_conn.is_none() {
            let c = db::connect(&self.pg_config).await?;
            self.leader_conn = Some(c);
        }
        let client = self.leader_conn.as_ref().expect("just connected");
        if self.leading {
            // The lock lives as long as the session: prove the session is alive.
            match timeout(LEADER_QUERY_TIMEOUT, client.simple_query("SELECT 1")).await {
                Ok(Ok(_)) => return Ok(true),
                Ok(Err(e)) => {
                    let e = DbError::from(e);
                    self.drop_leader_conn("leader connection failed");
                    return Err(DbError::Unavailable(e.message()));
                }
                Err(_) => {
                    self.drop_leader_conn("leader connection timed out");
                    return Err(DbError::Unavailable("leader connection timed out".into()));
                }
            }
        }
        if let Some(until) = self.hold_off_until {
            if Instant::now() < until {
                self.metrics.leader_seen.store(false, Relaxed);
                return Ok(false);
            }
            self.hold_off_until = None;
        }
        // a driver that lacks the grants a leader needs never takes the lock: it would hold it
        // and fail every round while a correctly configured driver stood by
        let missing = match timeout(LEADER_QUERY_TIMEOUT, db::missing_rights(client)).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) if e.is_unavailable() => {
                self.drop_leader_conn("rights check failed");
                return Err(e);
            }
            Ok(Err(e)) => vec![format!("(the rights check failed: {e})")],
            Err(_) => {
                self.drop_leader_conn("rights check timed out");
                return Err(DbError::Unavailable("rights check timed out".into()));
            }
        };
        if !missing.is_empty() {
            let role = self.pg_config.get_user().unwrap_or("(this role)");
            let why = format!(
                "role {role} lacks the grants a leading driver needs: {}; connect as an operator login, e.g. \
                 GRANT compute_auction_operator TO {role} after running docs/roles.sql.",
                missing.iter().map(|g| format!("{g} TO {role}")).collect::<Vec<_>>().join("; ")
            );
            if self.metrics.set_not_leading(Some(why.clone())) {
                tracing::error!(reason = %why, "not leading: missing grants");
            }
            self.metrics.leader_seen.store(false, Relaxed);
            return Ok(false);
        }
        if self.metrics.set_not_leading(None) {
            tracing::info!("the grants a leader needs are in place; this driver may lead");
        }
        let r = timeout(
            LEADER_QUERY_TIMEOUT,
            client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LEADER_LOCK.0, &LEADER_LOCK.1]),
        )
        .await;
        let got: bool = match r {
            Ok(Ok(row)) => row.try_get(0).map_err(DbError::from)?,
            Ok(Err(e)) => {
                let e = DbError::from(e);
                self.drop_leader_conn("lock query failed");
                return Err(DbError::Unavailable(e.message()));
            }
            Err(_) => {
                self.drop_leader_conn("lock query timed out");
                return Err(DbError::Unavailable("lock query timed out".into()));
            }
        };
        if got {
            self.leading = true;
            self.metrics.became_leader();
            tracing::info!(lock = ?LEADER_LOCK, "acquired leadership; this driver clears rounds");
        } else if self.metrics.is_leader() || self.metrics.times_led() == 0 {
            tracing::debug!("another driver holds the leader lock; standing by");
        }
        self.metrics.set_leader(got);
        self.metrics.leader_seen.store(!got, Relaxed);
        Ok(got)
    }

    /// Until the extension's version has been found good (at start-up, or here on the first
    /// connection of a driver that could not reach the database then): that check, before any
    /// attempt to lead.
    async fn check_version(&mut self) -> Result<(), Tick> {
        if self.cfg.version_checked {
            return Ok(());
        }
        let client = match self.leader_conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => db::connect(&self.pg_config).await.map_err(Tick::Unavailable)?,
        };
        let checked = timeout(LEADER_QUERY_TIMEOUT, db::check_extension_version(&client)).await;
        self.leader_conn = Some(client);
        match checked {
            Ok(Ok(Ok(v))) => {
                tracing::info!(extension_version = %v, minimum = db::MIN_EXTENSION_VERSION, "compute_auction extension version ok");
                self.cfg.version_checked = true;
                Ok(())
            }
            Ok(Ok(Err(incompatible))) => Err(Tick::Incompatible(incompatible)),
            Ok(Err(e)) => {
                self.drop_leader_conn("version check failed");
                Err(Tick::Unavailable(DbError::Unavailable(format!(
                    "checking the extension's version: {}",
                    e.message()
                ))))
            }
            Err(_) => {
                self.drop_leader_conn("version check timed out");
                Err(Tick::Unavailable(DbError::Unavailable("checking the extension's version timed out".into())))
            }
        }
    }

    async fn tick(&mut self) -> Tick {
        if let Err(t) = self.check_version().await {
            self.metrics.leader_seen.store(false, Relaxed);
            return t;
        }
        match self.ensure_leadership().await {
            Ok(true) => {}
            Ok(false) => return Tick::Done,
            Err(e) => {
                self.metrics.leader_seen.store(false, Relaxed);
                return Tick::Unavailable(e);
            }
        }
        // the leader's own dedicated connection: never waits for the HTTP pool
        let Some(client) = self.leader_conn.as_mut() else {
            return Tick::Unavailable(DbError::Unavailable("no leader connection".into()));
        };
        let cycle = run_cycle(client, self.cfg.assignment_timeout, self.cfg.step_timeouts).await;
        let tick = self.record(&cycle).await;
        if let Some((step, e)) = cycle.rights_error() {
            // this role may not run the market: let a driver that may lead (other failures,
            // which every driver would meet alike, never make a leader step down)
            let why = format!(
                "stepped down: {step} failed with SQLSTATE {} ({}); this role lacks the operator grants. \
                 It retries in {} s.",
                e.code().unwrap_or("?"),
                e.message(),
                hold_off(self.cfg.interval).as_secs()
            );
            tracing::error!(reason = %why, "releasing leadership after a privilege error");
            self.metrics.set_not_leading(Some(why));
            self.release_leadership().await;
            self.hold_off_until = Some(Instant::now() + hold_off(self.cfg.interval));
        }
        tick
    }

    async fn record(&mut self, cycle: &Cycle) -> Tick {
        let m = &self.metrics;
        for (step, r) in cycle.step_errors() {
            if let Some(e) = r.filter(|e| e.is_in_doubt()) {
                // not done, not retried as such: the next cycle works from the database's state
                // (whichever server is primary then), which has the step's effect or not
                m.commits_in_doubt.increment(1);
                tracing::warn!(step, error = %e, "cycle step's COMMIT is in doubt; not counted as done, the next cycle decides from the database's state");
            }
        }
        for (step, r) in cycle.step_errors() {
            if let Some(e) = r.filter(|e| is_timeout(e)) {
                m.step_timeouts.increment(1);
                tracing::warn!(step, error = %e, "cycle step timed out and was rolled back; retried next interval");
            }
        }
        match &cycle.refunds {
            Ok(r) => {
                m.bids_refunded.increment(u64::try_from(r.bids_expired).unwrap_or(0));
                m.tokens_refunded.increment(u64::try_from(r.tokens_refunded).unwrap_or(0));
            }
            Err(e) if !e.is_unavailable() => {
                m.step_failed("refund_unfilled");
                tracing::error!(error = %e, "refund_unfilled failed");
            }
            Err(_) => {}
        }
        match &cycle.aborted {
            Ok(n) => {
                m.assignments_aborted.increment(u64::try_from(*n).unwrap_or(0));
                if *n > 0 {
                    tracing::warn!(aborted = n, "abort_stale aborted stale assignments with full refunds");
                }
            }
            Err(e) if !e.is_unavailable() => {
                m.step_failed("abort_stale");
                tracing::error!(error = %e, "abort_stale failed");
            }
            Err(_) => {}
        }
        match &cycle.applied {
            Ok(n) => {
                m.pending_entries_applied.increment(u64::try_from(*n).unwrap_or(0));
            }
            Err(e) if !e.is_unavailable() => {
                m.step_failed("apply_pending");
                tracing::error!(error = %e, "apply_pending failed");
            }
            Err(_) => {}
        }
        if let Some(e) = cycle.unavailable() {
            return Tick::Unavailable(e.clone());
        }
        m.observe_round_duration(cycle.clear_duration);
        let duration_ms = (cycle.clear_duration.as_secs_f64() * 1e6).round() / 1e3;
        match &cycle.clear {
            Ok(outcome) => {
                m.rounds_cleared.increment(1);
                m.slots_filled.increment(outcome.assignments.len() as u64);
                let was_failing = m.clear_succeeded();
                if m.set_degraded(false) {
                    tracing::info!(after_failures = was_failing, "clearing succeeded again; market no longer degraded");
                }
                self.last_fallback_attempt = None;
                let (expired, refunded) =
                    cycle.refunds.as_ref().map(|r| (r.bids_expired, r.tokens_refunded)).unwrap_or((0, 0));
                let r = &outcome.round;
                m.record_round(r.round_id, r.clearing_price_tokens);
                tracing::info!(
                    round_id = r.round_id,
                    price = r.clearing_price_tokens,
                    slots_filled = outcome.assignments.len(),
                    slots_offered = r.slots_offered,
                    bids_eligible = r.bids_eligible,
                    bids_expired = expired,
                    tokens_refunded = refunded,
                    duration_ms,
                    server_duration_ms = r.duration_ms,
                    "round cleared"
                );
            }
            Err(e) => {
                let n = m.clear_failed();
                tracing::error!(error = %e, consecutive_failures = n, duration_ms, "clear_round failed");
                if n >= u64::from(self.cfg.fallback_after) {
                    if !m.set_degraded(true) {
                        tracing::warn!(consecutive_failures = n, "market degraded: clearing keeps failing");
                    }
                    self.fallback().await;
                }
            }
        }
        Tick::Done
    }

    /// Writes the proportional allocation for the day while degraded (at
    /// once, then at most every FALLBACK_EVERY).
    async fn fallback(&mut self) {
        let Some(budget) = self.cfg.daily_budget_tokens else {
            if self.last_fallback_attempt.is_none() {
                tracing::warn!("no --daily-budget-tokens: no proportional fallback allocation is written");
                self.last_fallback_attempt = Some(Instant::now());
            }
            return;
        };
        if self.last_fallback_attempt.is_some_and(|t| t.elapsed() < FALLBACK_EVERY) {
            return;
        }
        self.last_fallback_attempt = Some(Instant::now());
        let Some(client) = self.leader_conn.as_mut() else {
            self.metrics.fallback_errors.increment(1);
            tracing::error!("proportional fallback skipped: no database connection");
            return;
        };
        match db::allocate_fallback(client, budget, self.cfg.step_timeouts).await {
            Ok(a) => {
                self.metrics.fallback_allocations.increment(1);
                tracing::warn!(day = %a.day, quests = a.quests, allocated_tokens = a.allocated_tokens, daily_budget_tokens = budget,
                    "degraded: wrote the proportional fallback allocation");
            }
            Err(e) => {
                self.metrics.fallback_errors.increment(1);
                tracing::error!(error = %e, "degraded: proportional fallback allocation failed; staying degraded");
            }
        }
    }
}

/// A step that gave up on the server: lock_timeout (55P03) or statement_timeout (57014).
pub fn is_timeout(e: &DbError) -> bool {
    matches!(e.code(), Some("55P03" | "57014"))
}

/// The `status` reported by /healthz.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    Degraded,
}

/// Degraded when this driver's own clearing has failed `fallback_after`
/// times in a row, or when nobody has cleared for much longer than the
/// interval (the leader, wherever it runs, is failing).
pub fn health(
    consecutive_failures: u64,
    fallback_after: u32,
    last_round_age: Option<f64>,
    interval: Duration,
) -> Health {
    if consecutive_failures >= u64::from(fallback_after) {
        return Health::Degraded;
    }
    let stale_after = stale_after(fallback_after, interval);
    match last_round_age {
        Some(age) if age > stale_after.as_secs_f64() => Health::Degraded,
        _ => Health::Ok,
    }
}

/// No round for this long means the market is not being cleared.
pub fn stale_after(fallback_after: u32, interval: Duration) -> Duration {
    interval.saturating_mul(fallback_after.saturating_add(2)).max(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let got: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, vec![200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }

    #[test]
    fn backoff_never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(60));
        }
        // a cap below the base is raised to the base
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }

    #[test]
    fn health_rules() {
        let i = Duration::from_secs(1);
        assert_eq!(health(0, 3, None, i), Health::Ok);
        assert_eq!(health(2, 3, Some(1.0), i), Health::Ok);
        assert_eq!(health(3, 3, Some(1.0), i), Health::Degraded);
        assert_eq!(health(0, 3, Some(29.0), i), Health::Ok);
        assert_eq!(health(0, 3, Some(31.0), i), Health::Degraded);
        let ten = Duration::from_secs(10);
        assert_eq!(stale_after(3, ten), Duration::from_secs(50));
        assert_eq!(health(0, 3, Some(45.0), ten), Health::Ok);
        assert_eq!(health(0, 3, Some(55.0), ten), Health::Degraded);
    }

    #[test]
    fn cycle_json_reports_each_step() {
        let c = Cycle {
            refunds: Ok(Refunds { bids_expired: 2, tokens_refunded: 300 }),
            aborted: Err(DbError::Sql {
                code: "42883".into(),
                message: "no such function".into(),
                detail: None,
                hint: None,
            }),
            applied: Ok(3),
            clear: Ok(ClearOutcome {
                round: db::RoundInfo {
                    round_id: 4,
                    cleared_at: chrono::DateTime::UNIX_EPOCH,
                    slots_offered: 1,
                    bids_eligible: 2,
                    slots_filled: 1,
                    clearing_price_tokens: Some(70),
                    duration_ms: Some(0.5),
                },
                assignments: vec![],
            }),
            clear_duration: Duration::from_micros(1500),
        };
        let v = c.to_json();
        assert_eq!(v["ok"], true);
        assert_eq!(v["refund_unfilled"]["tokens_refunded"], 300);
        assert_eq!(v["abort_stale"]["sqlstate"], "42883");
        assert_eq!(v["apply_pending"]["applied"], 3);
        assert_eq!(v["round"]["round_id"], 4);
        assert_eq!(v["round"]["clearing_price_tokens"], 70);
        assert_eq!(v["clear_duration_ms"], 1.5);
        assert!(c.unavailable().is_none());
        let c2 = Cycle { clear: Err(DbError::Unavailable("down".into())), ..c };
        assert!(c2.unavailable().is_some());
        assert_eq!(c2.to_json()["ok"], false);
    }
}
