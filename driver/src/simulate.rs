//! `simulate`: a small workload generator that keeps a demo market lively.
//!
//! Opens agent and quest wallets, offers slots, then loops: places bids at
//! prices drifting around a moving mean, claims the slots that won a task,
//! "runs" each task for a few seconds and settles it with made-up cost and
//! impact, and tops up wallets that ran low. It only calls the extension's
//! public SQL functions; rejected bids (insufficient funds, a task with a
//! live bid, a task already won) are counted, not fatal.
//!
//! It plays every participant at once on one connection, so it needs an operator login (one
//! that may EXECUTE `deposit` in the database): its wallets have no owner and its slots no
//! runner, which leaves them to operators (docs/SECURITY.md). A non-operator fails at its
//! first `open_account` with 42501.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use tokio::sync::watch;

use crate::config::SimulateArgs;
use crate::db::DbError;
use crate::scheduler::Backoff;

/// SQLSTATEs the workload expects now and then and simply counts.
pub const EXPECTED_CODES: [&str; 4] = [
    "23514", // insufficient funds
    "23505", // task has a live bid by someone else / wallet exists
    "55000", // task already won, or an object not in the right state
    "P0002", // cancelling a bid that is no longer there
];

/// A tiny deterministic PRNG (SplitMix64): same seed, same decisions.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform integer in [0, n).
    /// Uniform in 0..n for a positive i64 `n` (0 when n <= 0).
    pub fn below_i64(&mut self, n: i64) -> i64 {
        let v = self.below(u64::try_from(n).unwrap_or(0));
        i64::try_from(v).unwrap_or(0) // v < n <= i64::MAX
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(f64::MIN_POSITIVE);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
}

pub fn agent_id(i: u32) -> String {
    format!("sim-agent-{i:03}")
}

pub fn quest_id(i: u32) -> String {
    format!("sim-quest-{i:02}")
}

pub fn slot_id(i: u32) -> String {
    format!("sim-slot-{i:02}")
}

/// The drifting centre of bid prices after `t` seconds: slow and fast waves
/// plus a mean-reverting random walk, so clearing prices visibly move within
/// a minute.
#[derive(Debug, Clone)]
pub struct PriceDrift {
    base: f64,
    walk: f64,
}

impl PriceDrift {
    pub fn new(base: f64) -> Self {
        PriceDrift { base, walk: 0.0 }
    }

    pub fn step(&mut self, rng: &mut Rng, t: f64) -> f64 {
        self.walk += 0.03 * rng.normal() - 0.02 * self.walk;
        self.walk = self.walk.clamp(-0.8, 0.8);
        let waves = 0.35 * (std::f64::consts::TAU * t / 120.0).sin() + 0.12 * (std::f64::consts::TAU * t / 37.0).sin();
        self.base * (waves + self.walk).exp()
    }
}

/// A bid price around `mean` (log-normal spread), at least 1 token.
pub fn bid_price(rng: &mut Rng, mean: f64) -> i64 {
    let p = mean * (0.35 * rng.normal()).exp();
    (p.round() as i64).max(1)
}

#[derive(Debug)]
enum SlotState {
    Idle,
    Running { bidder: String, price: i64, until: Instant },
}

#[derive(Debug, Default)]
struct Counters {
    bids_placed: u64,
    bids_cancelled: u64,
    claims: u64,
    settled: u64,
    aborted: u64,
    deposits: u64,
    tokens_deposited: i64,
    tokens_charged: i64,
    rejected: BTreeMap<String, u64>,
    unexpected: BTreeMap<String, u64>,
}

impl Counters {
    fn reject(&mut self, what: &str, e: &DbError) {
        let code = e.code().unwrap_or("none").to_string();
        if EXPECTED_CODES.contains(&code.as_str()) {
            *self.rejected.entry(code).or_default() += 1;
            tracing::debug!(what, error = %e, "rejected (expected)");
        } else {
            let n = self.unexpected.entry(code).or_default();
            *n += 1;
            if *n <= 3 {
                tracing::warn!(what, error = %e, "unexpected error");
            }
        }
    }
}

struct Sim {
    pool: Pool,
    args: SimulateArgs,
    rng: Rng,
    drift: PriceDrift,
    slots: Vec<(String, SlotState)>,
    recent_bids: VecDeque<i64>,
    c: Counters,
    started: Instant,
}

pub async fn run(
    pool: Pool,
    args: SimulateArgs,
    mut shutdown: watch::Receiver<bool>,
) -> Result<serde_json::Value, DbError> {
    let seed = args
        .seed
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(42));
    tracing::info!(
        seed,
        agents = args.agents,
        quests = args.quests,
        slots = args.slots,
        duration_s = args.duration.as_secs_f64(),
        "simulation starting"
    );
    let slots = (1..=args.slots).map(|i| (slot_id(i), SlotState::Idle)).collect();
    let mut sim = Sim {
        pool,
        drift: PriceDrift::new(args.mean_price as f64),
        args,
        rng: Rng::new(seed),
        slots,
        recent_bids: VecDeque::new(),
        c: Counters::default(),
        started: Instant::now(),
    };
    let deadline = (!sim.args.duration.is_zero()).then(|| Instant::now() + sim.args.duration);
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));

    // Setup: retried until it works (the database may still be starting).
    loop {
        match sim.setup().await {
            Ok(()) => break,
            Err(e) if e.is_unavailable() => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "database unavailable during setup; retrying");
                if wait(&mut shutdown, d, deadline).await {
                    return Ok(sim.summary());
                }
            }
            Err(e) => return Err(e),
        }
    }
    backoff.reset();

    let mut last_report = Instant::now();
    let mut last_refill = Instant::now();
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) || *shutdown.borrow() {
            break;
        }
        let step = async {
            sim.bids().await?;
            sim.slots().await?;
            if last_refill.elapsed() >= Duration::from_secs(5) {
                sim.refill().await?;
                last_refill = Instant::now();
            }
            Ok::<(), DbError>(())
        };
        let delay = match step.await {
            Ok(()) => {
                backoff.reset();
                sim.args.tick
            }
            Err(e) => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "database unavailable; simulation pauses");
                d
            }
        };
        if last_report.elapsed() >= Duration::from_secs(10) {
            sim.report();
            last_report = Instant::now();
        }
        if wait(&mut shutdown, delay, deadline).await {
            break;
        }
    }
    sim.report();
    Ok(sim.summary())
}

/// Sleeps `d` (cut short by the deadline); true when shutdown was requested.
async fn wait(shutdown: &mut watch::Receiver<bool>, d: Duration, deadline: Option<Instant>) -> bool {
    let d = match deadline {
        Some(dl) => d.min(dl.saturating_duration_since(Instant::now())),
        None => d,
    };
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
    }
}

impl Sim {
    async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        Ok(self.pool.get().await?)
    }

    async fn setup(&mut self) -> Result<(), DbError> {
        let c = self.client().await?;
        let mut wallets: Vec<(String, &str)> = (1..=self.args.agents).map(|i| (agent_id(i), "agent")).collect();
        wallets.extend((1..=self.args.quests).map(|i| (quest_id(i), "quest")));
        let mut opened = 0;
        for (id, kind) in &wallets {
            match c
                .query_one(
                    "SELECT compute_auction.open_account($1, $2, $3::bigint)",
                    &[id, kind, &self.args.initial_tokens],
                )
                .await
            {
                Ok(_) => opened += 1,
                Err(e) => {
                    let e = DbError::from(e);
                    if e.code() != Some("23505") {
                        return Err(e);
                    }
                }
            }
        }
        let mut offered = 0;
        for i in 1..=self.args.slots {
            let reserve = 5 + self.rng.below_i64(46);
            match c.execute("SELECT compute_auction.offer_slot($1, now(), $2::bigint)", &[&slot_id(i), &reserve]).await
            {
                Ok(_) => offered += 1,
                Err(e) => {
                    let e = DbError::from(e);
                    if e.is_unavailable() {
                        return Err(e);
                    }
                    // e.g. the slot is assigned from an earlier run: it rejoins when settled
                    tracing::debug!(slot = %slot_id(i), error = %e, "offer_slot skipped");
                }
            }
        }
        tracing::info!(
            wallets_opened = opened,
            wallets_existing = wallets.len() - opened,
            slots_offered = offered,
            "simulation set up"
        );
        Ok(())
    }

    async fn bids(&mut self) -> Result<(), DbError> {
        let t = self.started.elapsed().as_secs_f64();
        let mean = self.drift.step(&mut self.rng, t);
        let expected = self.args.bids_per_second.max(0.0) * self.args.tick.as_secs_f64();
        // expected >= 0 (clamped above); a float-to-int `as` saturates, so this is exact floor
        #[allow(clippy::cast_sign_loss)]
        let mut n = expected.floor() as u64;
        if self.rng.chance(expected.fract()) {
            n += 1;
        }
        let c = self.client().await?;
        for _ in 0..n {
            let quest = self.args.quests > 0 && self.rng.chance(0.25);
            let bidder = if quest {
                quest_id(1 + self.rng.below(u64::from(self.args.quests)) as u32)
            } else {
                agent_id(1 + self.rng.below(u64::from(self.args.agents)) as u32)
            };
            let price = bid_price(&mut self.rng, mean);
            let task = format!("sim-task-{:016x}", self.rng.next_u64());
            let ev: Option<f64> = if quest || self.rng.chance(0.5) {
                Some(((price as f64 / 100.0) * self.rng.range(0.8, 2.5) * 100.0).round() / 100.0)
            } else {
                None
            };
            let ttl_secs = self.rng.range(120.0, 300.0);
            match c
                .query_one(
                    "SELECT compute_auction.place_bid($1, $2, $3::bigint, $4::float8, now() + make_interval(secs => $5::float8))",
                    &[&bidder, &task, &price, &ev, &ttl_secs],
                )
                .await
            {
                Ok(row) => {
                    self.c.bids_placed += 1;
                    if let Ok(id) = row.try_get::<_, i64>(0) {
                        self.recent_bids.push_back(id);
                        if self.recent_bids.len() > 200 {
                            self.recent_bids.pop_front();
                        }
                    }
                }
                Err(e) => {
                    let e = DbError::from(e);
                    if e.is_unavailable() {
                        return Err(e);
                    }
                    self.c.reject("place_bid", &e);
                }
            }
        }
        // Now and then a bidder changes its mind.
        if !self.recent_bids.is_empty() && self.rng.chance(0.03) {
            let i = self.rng.below(self.recent_bids.len() as u64) as usize;
            if let Some(id) = self.recent_bids.remove(i) {
                match c.query_one("SELECT compute_auction.cancel_bid($1::bigint)", &[&id]).await {
                    Ok(_) => self.c.bids_cancelled += 1,
                    Err(e) => {
                        let e = DbError::from(e);
                        if e.is_unavailable() {
                            return Err(e);
                        }
                        self.c.reject("cancel_bid", &e);
                    }
                }
            }
        }
        Ok(())
    }

    async fn slots(&mut self) -> Result<(), DbError> {
        let c = self.client().await?;
        let now = Instant::now();
        for idx in 0..self.slots.len() {
            let slot = self.slots[idx].0.clone();
            match &self.slots[idx].1 {
                SlotState::Idle => {
                    let rows = match c
                        .query(
                            "SELECT bid_id::bigint, task_id::text, bidder_id::text, clearing_price_tokens::bigint \
                             FROM compute_auction.claim_slot($1)",
                            &[&slot],
                        )
                        .await
                    {
                        Ok(r) => r,
                        Err(e) => {
                            let e = DbError::from(e);
                            if e.is_unavailable() {
                                return Err(e);
                            }
                            self.c.reject("claim_slot", &e);
                            continue;
                        }
                    };
                    if let Some(row) = rows.first() {
                        let bidder: String = row.try_get(2)?;
                        let price: i64 = row.try_get(3)?;
                        let run = Duration::from_secs_f64(self.rng.range(1.0, 6.0));
                        tracing::debug!(slot = %slot, bidder = %bidder, price, run_s = run.as_secs_f64(), "slot claimed");
                        self.c.claims += 1;
                        self.slots[idx].1 = SlotState::Running { bidder, price, until: now + run };
                    }
                }
                SlotState::Running { until, price, bidder } if *until <= now => {
                    let (price, bidder) = (*price, bidder.clone());
                    if self.rng.chance(0.04) {
                        match c
                            .query_one("SELECT compute_auction.abort_slot($1, $2)", &[&slot, &"sim: runner crashed"])
                            .await
                        {
                            Ok(_) => self.c.aborted += 1,
                            Err(e) => {
                                let e = DbError::from(e);
                                if e.is_unavailable() {
                                    return Err(e);
                                }
                                self.c.reject("abort_slot", &e);
                            }
                        }
                    } else {
                        let cost = ((price.max(1) as f64) * self.rng.range(0.5, 1.2)).round() as i64;
                        let impact =
                            ((price.max(1) as f64 / 100.0) * (0.6 * self.rng.normal()).exp() * 1000.0).round() / 1000.0;
                        match c
                            .query_one(
                                "SELECT compute_auction.settle($1, $2::bigint, $3::float8)",
                                &[&slot, &cost, &impact],
                            )
                            .await
                        {
                            Ok(row) => {
                                self.c.settled += 1;
                                self.c.tokens_charged += row.try_get::<_, Option<i64>>(0)?.unwrap_or(0);
                                tracing::debug!(slot = %slot, bidder = %bidder, impact, "task settled");
                            }
                            Err(e) => {
                                let e = DbError::from(e);
                                if e.is_unavailable() {
                                    return Err(e);
                                }
                                // e.g. abort_stale got there first
                                self.c.reject("settle", &e);
                            }
                        }
                    }
                    self.slots[idx].1 = SlotState::Idle;
                }
                SlotState::Running { .. } => {}
            }
        }
        Ok(())
    }

    /// Wallets that ran low get tokens back "for good work".
    async fn refill(&mut self) -> Result<(), DbError> {
        let c = self.client().await?;
        let low = (self.args.mean_price * 20).min(self.args.initial_tokens / 2).max(1);
        let ids: Vec<String> =
            (1..=self.args.agents).map(agent_id).chain((1..=self.args.quests).map(quest_id)).collect();
        for id in ids {
            let bal: Option<i64> =
                match c.query_opt("SELECT balance_tokens::bigint FROM compute_auction.balance($1)", &[&id]).await {
                    Ok(Some(r)) => r.try_get(0)?,
                    Ok(None) => None,
                    Err(e) => {
                        let e = DbError::from(e);
                        if e.is_unavailable() {
                            return Err(e);
                        }
                        self.c.reject("balance", &e);
                        continue;
                    }
                };
            if bal.is_some_and(|b| b < low) {
                let amount = self.args.initial_tokens / 2 + self.rng.below_i64((self.args.initial_tokens / 2).max(1));
                match c
                    .query_one(
                        "SELECT compute_auction.deposit($1, $2::bigint, $3)",
                        &[&id, &amount, &"sim: refill for good work"],
                    )
                    .await
                {
                    Ok(_) => {
                        self.c.deposits += 1;
                        self.c.tokens_deposited += amount;
                    }
                    Err(e) => {
                        let e = DbError::from(e);
                        if e.is_unavailable() {
                            return Err(e);
                        }
                        self.c.reject("deposit", &e);
                    }
                }
            }
        }
        Ok(())
    }

    fn report(&self) {
        let c = &self.c;
        tracing::info!(
            elapsed_s = self.started.elapsed().as_secs(),
            bids_placed = c.bids_placed,
            bids_cancelled = c.bids_cancelled,
            claims = c.claims,
            settled = c.settled,
            aborted = c.aborted,
            deposits = c.deposits,
            rejected = ?c.rejected,
            unexpected = ?c.unexpected,
            "simulation progress"
        );
    }

    fn summary(&self) -> serde_json::Value {
        let c = &self.c;
        serde_json::json!({
            "elapsed_seconds": self.started.elapsed().as_secs_f64(),
            "bids_placed": c.bids_placed,
            "bids_cancelled": c.bids_cancelled,
            "claims": c.claims,
            "settled": c.settled,
            "aborted": c.aborted,
            "deposits": c.deposits,
            "tokens_deposited": c.tokens_deposited,
            "tokens_charged": c.tokens_charged,
            "rejected": c.rejected,
            "unexpected_errors": c.unexpected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_uniform() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..10).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..10).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(8).next_u64(), xs[0]);
        let mut r = Rng::new(1);
        let n = 20_000;
        let mean = (0..n).map(|_| r.f64()).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        for _ in 0..1000 {
            let v = r.f64();
            assert!((0.0..1.0).contains(&v));
            assert!(r.below(6) < 6);
        }
        let nm = (0..n).map(|_| r.normal()).sum::<f64>() / n as f64;
        assert!(nm.abs() < 0.05, "{nm}");
    }

    #[test]
    fn prices_are_positive_and_move() {
        let mut r = Rng::new(3);
        let mut d = PriceDrift::new(1000.0);
        let mut means = vec![];
        for i in 0..240 {
            let m = d.step(&mut r, i as f64 * 0.25);
            assert!(m > 100.0 && m < 10_000.0, "{m}");
            means.push(m);
            assert!(bid_price(&mut r, m) >= 1);
        }
        // within the first minute the mean moves by more than 10%
        let (lo, hi) = means.iter().fold((f64::MAX, f64::MIN), |(l, h), &m| (l.min(m), h.max(m)));
        assert!(hi / lo > 1.1, "{lo}..{hi}");
        assert_eq!(bid_price(&mut r, 0.0), 1);
    }

    #[test]
    fn ids() {
        assert_eq!(agent_id(7), "sim-agent-007");
        assert_eq!(quest_id(3), "sim-quest-03");
        assert_eq!(slot_id(12), "sim-slot-12");
    }
}
