//! Process-wide counters and a small Prometheus text-format renderer.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde_json::Value;

/// Upper bounds (seconds) of the round duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Sentinel for "no clearing price seen yet".
const NO_PRICE: i64 = i64::MIN;

#[derive(Debug)]
pub struct Metrics {
    pub rounds_cleared: AtomicU64,
    pub slots_filled: AtomicU64,
    pub last_clearing_price: AtomicI64,
    pub last_round_id: AtomicI64,
    pub bids_refunded: AtomicU64,
    pub tokens_refunded: AtomicU64,
    pub assignments_aborted: AtomicU64,
    pub pending_entries_applied: AtomicU64,
    pub clearing_errors: AtomicU64,
    pub refund_errors: AtomicU64,
    pub abort_stale_errors: AtomicU64,
    pub apply_pending_errors: AtomicU64,
    /// Cycle steps that hit their lock_timeout or statement_timeout.
    pub step_timeouts: AtomicU64,
    pub db_unavailable: AtomicU64,
    pub consecutive_failures: AtomicU64,
    pub leader: AtomicBool,
    pub degraded: AtomicBool,
    pub fallback_allocations: AtomicU64,
    pub fallback_errors: AtomicU64,
    pub leadership_acquired: AtomicU64,
    /// A follower's last tick found the leader lock held by another session: a live leader.
    pub leader_seen: AtomicBool,
    /// Why this driver does not lead although it could try: the grants it lacks, or a privilege
    /// error that made it step down (/healthz reports it).
    pub not_leading: std::sync::Mutex<Option<String>>,
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_micros: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            rounds_cleared: AtomicU64::new(0),
            slots_filled: AtomicU64::new(0),
            last_clearing_price: AtomicI64::new(NO_PRICE),
            last_round_id: AtomicI64::new(0),
            bids_refunded: AtomicU64::new(0),
            tokens_refunded: AtomicU64::new(0),
            assignments_aborted: AtomicU64::new(0),
            pending_entries_applied: AtomicU64::new(0),
            clearing_errors: AtomicU64::new(0),
            refund_errors: AtomicU64::new(0),
            abort_stale_errors: AtomicU64::new(0),
            apply_pending_errors: AtomicU64::new(0),
            step_timeouts: AtomicU64::new(0),
            db_unavailable: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            leader: AtomicBool::new(false),
            degraded: AtomicBool::new(false),
            fallback_allocations: AtomicU64::new(0),
            fallback_errors: AtomicU64::new(0),
            leadership_acquired: AtomicU64::new(0),
            leader_seen: AtomicBool::new(false),
            not_leading: std::sync::Mutex::new(None),
            duration_buckets: Default::default(),
            duration_count: AtomicU64::new(0),
            duration_sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe_round_duration(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|&ub| secs <= ub) {
            self.duration_buckets[i].fetch_add(1, Relaxed);
        }
        self.duration_count.fetch_add(1, Relaxed);
        self.duration_sum_micros.fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    pub fn set_last_price(&self, price: i64) {
        self.last_clearing_price.store(price, Relaxed);
    }

    pub fn last_price(&self) -> Option<i64> {
        match self.last_clearing_price.load(Relaxed) {
            NO_PRICE => None,
            p => Some(p),
        }
    }

    /// Sets (or clears) why this driver does not lead; returns whether that changed.
    pub fn set_not_leading(&self, why: Option<String>) -> bool {
        let mut g = self.not_leading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = *g != why;
        *g = why;
        changed
    }

    pub fn not_leading(&self) -> Option<String> {
        self.not_leading.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Relaxed)
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Relaxed)
    }

    /// Renders everything in the Prometheus text exposition format 0.0.4.
    /// `market` is `market_summary()` when the database answered, for the
    /// gauges that live in the database (open bids, slots, bids placed).
    pub fn render(&self, market: Option<&Value>) -> String {
        let mut out = String::with_capacity(4096);
        let c = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let g = |out: &mut String, name: &str, help: &str, v: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        c(
            &mut out,
            "compute_auction_rounds_cleared_total",
            "Clearing rounds run by this driver.",
            self.rounds_cleared.load(Relaxed),
        );
        c(
            &mut out,
            "compute_auction_slots_filled_total",
            "Slots filled by rounds this driver ran.",
            self.slots_filled.load(Relaxed),
        );
        if let Some(p) = self.last_price() {
            g(
                &mut out,
                "compute_auction_last_clearing_price_tokens",
                "Clearing price of the newest round (run by this driver) that filled a slot.",
                p.to_string(),
            );
        }
        g(
            &mut out,
            "compute_auction_last_round_id",
            "round_id of the newest round this driver ran (0 before the first).",
            self.last_round_id.load(Relaxed).to_string(),
        );
        c(
            &mut out,
            "compute_auction_bids_refunded_total",
            "Expired open bids refunded by refund_unfilled.",
            self.bids_refunded.load(Relaxed),
        );
        c(
            &mut out,
            "compute_auction_tokens_refunded_total",
            "Tokens returned to bidders by refund_unfilled.",
            self.tokens_refunded.load(Relaxed),
        );
        c(
            &mut out,
            "compute_auction_assignments_aborted_total",
            "Stale assignments aborted with a full refund by abort_stale.",
            self.assignments_aborted.load(Relaxed),
        );
        c(
            &mut out,
            "compute_auction_pending_entries_applied_total",
            "Wallet entries of settlements and aborts applied by apply_pending.",
            self.pending_entries_applied.load(Relaxed),
        );
        c(
            &mut out,
            "compute_auction_clearing_errors_total",
            "Failed clear_round calls.",
            self.clearing_errors.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP compute_auction_cycle_step_errors_total Failed cycle steps, by step.\n# TYPE compute_auction_cycle_step_errors_total counter"
        );
        for (step, v) in [
            ("refund_unfilled", &self.refund_errors),
            ("abort_stale", &self.abort_stale_errors),
            ("apply_pending", &self.apply_pending_errors),
            ("clear_round", &self.clearing_errors),
        ] {
            let _ = writeln!(out, "compute_auction_cycle_step_errors_total{{step=\"{step}\"}} {}", v.load(Relaxed));
        }
        c(
            &mut out,
            "compute_auction_cycle_step_timeouts_total",
            "Cycle steps abandoned at their lock_timeout or statement_timeout (retried next interval).",
            self.step_timeouts.load(Relaxed),
        );
        c(
            &mut out,
            "compute_auction_database_unavailable_total",
            "Cycles skipped because the database was unreachable.",
            self.db_unavailable.load(Relaxed),
        );
        g(
            &mut out,
            "compute_auction_consecutive_failures",
            "Consecutive failed clearing rounds (0 after a success).",
            self.consecutive_failures.load(Relaxed).to_string(),
        );
        g(
            &mut out,
            "compute_auction_leader",
            "1 while this driver holds the leader lock and clears rounds.",
            u8::from(self.is_leader()).to_string(),
        );
        g(
            &mut out,
            "compute_auction_degraded",
            "1 while clearing has failed --fallback-after times in a row.",
            u8::from(self.is_degraded()).to_string(),
        );
        c(
            &mut out,
            "compute_auction_leadership_acquired_total",
            "Times this driver became leader.",
            self.leadership_acquired.load(Relaxed),
        );
        c(
            &mut out,
            "compute_auction_fallback_allocations_total",
            "Proportional fallback allocations written.",
            self.fallback_allocations.load(Relaxed),
        );
        c(
            &mut out,
            "compute_auction_fallback_errors_total",
            "Failed attempts to write the proportional fallback allocation.",
            self.fallback_errors.load(Relaxed),
        );

        let name = "compute_auction_round_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Wall time of clear_round transactions.\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, ub) in DURATION_BUCKETS.iter().enumerate() {
            cumulative += self.duration_buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", fmt_f64(*ub));
        }
        let count = self.duration_count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", fmt_f64(self.duration_sum_micros.load(Relaxed) as f64 / 1e6));
        let _ = writeln!(out, "{name}_count {count}");

        g(
            &mut out,
            "compute_auction_database_up",
            "1 if the database answered market_summary() for this scrape.",
            u8::from(market.is_some()).to_string(),
        );
        if let Some(m) = market {
            let num = |k: &str| m.get(k).and_then(Value::as_i64);
            if let Some(v) = num("open_bids") {
                g(&mut out, "compute_auction_open_bids", "Open bids in the book (market_summary).", v.to_string());
            }
            if let Some(v) = num("idle_slots") {
                g(&mut out, "compute_auction_idle_slots", "Idle slots (market_summary).", v.to_string());
            }
            if let Some(v) = num("assigned_slots") {
                g(&mut out, "compute_auction_assigned_slots", "Assigned slots (market_summary).", v.to_string());
            }
            if let Some(v) = num("bids_placed_total") {
                // A gauge: the database, not this process, owns the count.
                g(
                    &mut out,
                    "compute_auction_bids_placed",
                    "Bids ever placed (market_summary.bids_placed_total).",
                    v.to_string(),
                );
            }
            if let Some(v) = num("tokens_refunded_total") {
                g(
                    &mut out,
                    "compute_auction_market_tokens_refunded",
                    "Tokens ever refunded (market_summary.tokens_refunded_total).",
                    v.to_string(),
                );
            }
        }
        out
    }
}

/// Prometheus float formatting: integers without a trailing ".0" are fine,
/// but keep the shortest round-trip representation.
fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
            .map(|l| &l[prefix.len() + 1..])
    }

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::new();
        m.rounds_cleared.fetch_add(3, Relaxed);
        m.slots_filled.fetch_add(7, Relaxed);
        m.leader.store(true, Relaxed);
        let text = m.render(None);
        assert_eq!(line(&text, "compute_auction_rounds_cleared_total"), Some("3"));
        assert_eq!(line(&text, "compute_auction_slots_filled_total"), Some("7"));
        assert_eq!(line(&text, "compute_auction_leader"), Some("1"));
        assert_eq!(line(&text, "compute_auction_degraded"), Some("0"));
        assert_eq!(line(&text, "compute_auction_database_up"), Some("0"));
        // no price seen yet: the gauge is absent rather than a fake 0
        assert!(line(&text, "compute_auction_last_clearing_price_tokens").is_none());
        m.set_last_price(1234);
        let text = m.render(None);
        assert_eq!(line(&text, "compute_auction_last_clearing_price_tokens"), Some("1234"));
        assert!(text.contains("# TYPE compute_auction_rounds_cleared_total counter\n"));
        assert!(text.contains("compute_auction_cycle_step_errors_total{step=\"clear_round\"} 0\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn every_sample_has_type_and_help() {
        let m = Metrics::new();
        let text = m.render(Some(&json!({"open_bids": 5, "idle_slots": 2, "assigned_slots": 1, "bids_placed_total": 9, "tokens_refunded_total": 0})));
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {name} ")) || text.contains(&format!("# TYPE {base} ")),
                "no TYPE for {name}"
            );
            let value = l.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "bad value in {l}");
        }
        assert_eq!(line(&text, "compute_auction_open_bids"), Some("5"));
        assert_eq!(line(&text, "compute_auction_database_up"), Some("1"));
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::new();
        m.observe_round_duration(Duration::from_millis(3)); // <= 0.005
        m.observe_round_duration(Duration::from_millis(30)); // <= 0.05
        m.observe_round_duration(Duration::from_millis(30));
        m.observe_round_duration(Duration::from_secs(60)); // only +Inf
        let text = m.render(None);
        let b = |le: &str| {
            line(&text, &format!("compute_auction_round_duration_seconds_bucket{{le=\"{le}\"}}")).unwrap().to_string()
        };
        assert_eq!(b("0.005"), "1");
        assert_eq!(b("0.025"), "1");
        assert_eq!(b("0.05"), "3");
        assert_eq!(b("30"), "3");
        assert_eq!(b("+Inf"), "4");
        assert_eq!(line(&text, "compute_auction_round_duration_seconds_count"), Some("4"));
        assert_eq!(line(&text, "compute_auction_round_duration_seconds_sum"), Some("60.063"));
    }
}
