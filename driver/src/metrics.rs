//! The driver's Prometheus metrics, recorded with the `metrics` crate into a
//! `metrics-exporter-prometheus` recorder that /metrics renders.
//!
//! Each [`Metrics`] owns its recorder (none is installed globally), so a test can run several.
//! The gauges that describe the database (market_summary) live in a recorder built for each
//! scrape: a value the database did not give this time is absent, never a stale one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde_json::Value;

/// Upper bounds (seconds) of the round duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The cycle steps, in the order they run (the `step` label of the step-error counter).
pub const STEPS: [&str; 4] = ["refund_unfilled", "abort_stale", "apply_pending", "clear_round"];

const ROUND_DURATION: &str = "compute_auction_round_duration_seconds";
const LAST_PRICE: &str = "compute_auction_last_clearing_price_tokens";
const STEP_ERRORS: &str = "compute_auction_cycle_step_errors_total";

/// Every metric family /metrics can show: (name, Prometheus type, help). The last clearing
/// price appears once a round filled a slot; the market_summary gauges (MARKET_GAUGES) while
/// the database answers.
pub const FAMILIES: &[(&str, &str, &str)] = &[
    ("compute_auction_rounds_cleared_total", "counter", "Clearing rounds run by this driver."),
    ("compute_auction_slots_filled_total", "counter", "Slots filled by rounds this driver ran."),
    (LAST_PRICE, "gauge", "Clearing price of the newest round (run by this driver) that filled a slot."),
    ("compute_auction_last_round_id", "gauge", "round_id of the newest round this driver ran (0 before the first)."),
    ("compute_auction_bids_refunded_total", "counter", "Expired open bids refunded by refund_unfilled."),
    ("compute_auction_tokens_refunded_total", "counter", "Tokens returned to bidders by refund_unfilled."),
    (
        "compute_auction_assignments_aborted_total",
        "counter",
        "Stale assignments aborted with a full refund by abort_stale.",
    ),
    (
        "compute_auction_pending_entries_applied_total",
        "counter",
        "Wallet entries of settlements and aborts applied by apply_pending.",
    ),
    ("compute_auction_clearing_errors_total", "counter", "Failed clear_round calls."),
    (STEP_ERRORS, "counter", "Failed cycle steps, by step."),
    (
        "compute_auction_cycle_step_timeouts_total",
        "counter",
        "Cycle steps abandoned at their lock_timeout or statement_timeout (retried next interval).",
    ),
    ("compute_auction_database_unavailable_total", "counter", "Cycles skipped because the database was unreachable."),
    (
        "compute_auction_commits_in_doubt_total",
        "counter",
        "Cycle-step COMMITs in doubt: the connection broke during the COMMIT, or the server warned that the \
         commit might not have been replicated to the standby (never counted as done; the next cycle decides).",
    ),
    ("compute_auction_consecutive_failures", "gauge", "Consecutive failed clearing rounds (0 after a success)."),
    ("compute_auction_leader", "gauge", "1 while this driver holds the leader lock and clears rounds."),
    ("compute_auction_degraded", "gauge", "1 while clearing has failed --fallback-after times in a row."),
    ("compute_auction_leadership_acquired_total", "counter", "Times this driver became leader."),
    ("compute_auction_fallback_allocations_total", "counter", "Proportional fallback allocations written."),
    (
        "compute_auction_fallback_errors_total",
        "counter",
        "Failed attempts to write the proportional fallback allocation.",
    ),
    ("compute_auction_pruned_rows_total", "counter", "Rows removed by prune_history (--retain)."),
    ("compute_auction_prune_errors_total", "counter", "Failed prune_history calls (--retain)."),
    (ROUND_DURATION, "histogram", "Wall time of clear_round transactions."),
    ("compute_auction_database_up", "gauge", "1 if the database answered market_summary() for this scrape."),
    ("compute_auction_open_bids", "gauge", "Open bids in the book (market_summary)."),
    ("compute_auction_idle_slots", "gauge", "Idle slots (market_summary)."),
    ("compute_auction_assigned_slots", "gauge", "Assigned slots (market_summary)."),
    // gauges: the database, not this process, owns these counts
    ("compute_auction_bids_placed", "gauge", "Bids ever placed (market_summary.bids_placed_total)."),
    ("compute_auction_market_tokens_refunded", "gauge", "Tokens ever refunded (market_summary.tokens_refunded_total)."),
    (
        "compute_auction_market_last_clearing_price_tokens",
        "gauge",
        "Clearing price of the newest round that filled a slot, whoever ran it (market_summary).",
    ),
    ("compute_auction_tokens_held", "gauge", "Tokens escrowed in all wallets (market_summary.tokens_held)."),
    (
        "compute_auction_clearing_price_p50_1h_tokens",
        "gauge",
        "Median clearing price of the rounds of the last hour that filled a slot (price_to_win).",
    ),
    (
        "compute_auction_clearing_price_p90_1h_tokens",
        "gauge",
        "90th percentile clearing price of the rounds of the last hour that filled a slot (price_to_win).",
    ),
    (
        READ_DATA_AGE,
        "gauge",
        "Age of the data the read database (--read-database-url) serves, in seconds: 0 while it has replayed all it \
         received, else since the last replayed commit. Absent without a read database or when it did not answer.",
    ),
    (
        READS_ON_PRIMARY,
        "gauge",
        "1 while the read database is unavailable and the read endpoints read from the primary (shown with \
         --read-database-url only).",
    ),
];

const READ_DATA_AGE: &str = "compute_auction_read_database_data_age_seconds";
const READS_ON_PRIMARY: &str = "compute_auction_reads_on_primary";

/// The read database at a scrape (`serve --read-database-url`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads {
    /// Reads currently fall back to the primary.
    pub on_primary: bool,
    /// The read database's data_age_ms, when it answered this scrape.
    pub data_age_ms: Option<i64>,
}

/// The gauges read from `market_summary()` at each scrape: (metric, market_summary key).
pub const MARKET_GAUGES: [(&str, &str); 7] = [
    ("compute_auction_open_bids", "open_bids"),
    ("compute_auction_idle_slots", "idle_slots"),
    ("compute_auction_assigned_slots", "assigned_slots"),
    ("compute_auction_bids_placed", "bids_placed_total"),
    ("compute_auction_market_tokens_refunded", "tokens_refunded_total"),
    ("compute_auction_market_last_clearing_price_tokens", "last_clearing_price_tokens"),
    ("compute_auction_tokens_held", "tokens_held"),
];

/// The gauges read from `price_to_win(NULL, '1 hour')` at each scrape: (metric, key), the
/// clearing-price percentiles over the last hour.
pub const PRICE_GAUGES: [(&str, &str); 2] = [
    ("compute_auction_clearing_price_p50_1h_tokens", "recent_clearing_p50"),
    ("compute_auction_clearing_price_p90_1h_tokens", "recent_clearing_p90"),
];

const DATABASE_UP: &str = "compute_auction_database_up";

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()))
}

/// A recorder that renders histograms with DURATION_BUCKETS, and describes every family (a
/// description alone renders nothing: only registered metrics are shown).
fn recorder() -> PrometheusRecorder {
    let builder = PrometheusBuilder::new();
    // DURATION_BUCKETS is not empty, the only way this fails
    let builder = match builder.set_buckets_for_metric(Matcher::Full(ROUND_DURATION.into()), &DURATION_BUCKETS) {
        Ok(b) => b,
        Err(_) => PrometheusBuilder::new(),
    };
    let r = builder.build_recorder();
    for (name, kind, help) in FAMILIES {
        let (key, help) = ((*name).into(), (*help).into());
        match *kind {
            "counter" => r.describe_counter(key, None, help),
            "gauge" => r.describe_gauge(key, None, help),
            _ => r.describe_histogram(key, None, help),
        }
    }
    r
}

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub rounds_cleared: Counter,
    pub slots_filled: Counter,
    pub bids_refunded: Counter,
    pub tokens_refunded: Counter,
    pub assignments_aborted: Counter,
    pub pending_entries_applied: Counter,
    /// Cycle steps that hit their lock_timeout or statement_timeout.
    pub step_timeouts: Counter,
    pub db_unavailable: Counter,
    /// Cycle-step COMMITs in doubt (db::DbError::InDoubt).
    pub commits_in_doubt: Counter,
    pub fallback_allocations: Counter,
    pub fallback_errors: Counter,
    /// Rows prune_history removed, and its failed calls (--retain).
    pub pruned_rows: Counter,
    pub prune_errors: Counter,
    clearing_errors: Counter,
    step_errors: [Counter; STEPS.len()],
    leadership_acquired: Counter,
    last_round_id: Gauge,
    round_duration: Histogram,
    consecutive_failures_gauge: Gauge,
    leader_gauge: Gauge,
    degraded_gauge: Gauge,
    // the state the driver acts on (the gauges above mirror it)
    consecutive_failures: AtomicU64,
    leader: AtomicBool,
    degraded: AtomicBool,
    times_led: AtomicU64,
    /// A follower's last tick found the leader lock held by another session: a live leader.
    pub leader_seen: AtomicBool,
    /// Why this driver does not lead although it could try: the grants it lacks, or a privilege
    /// error that made it step down (/healthz reports it).
    not_leading: std::sync::Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = recorder();
        let meta = metadata();
        let counter = |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &meta);
        let gauge = |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), &meta);
        let step_errors = STEPS.map(|step| {
            recorder.register_counter(&Key::from_parts(STEP_ERRORS, vec![Label::new("step", step)]), &meta)
        });
        let m = Metrics {
            handle: recorder.handle(),
            rounds_cleared: counter("compute_auction_rounds_cleared_total"),
            slots_filled: counter("compute_auction_slots_filled_total"),
            bids_refunded: counter("compute_auction_bids_refunded_total"),
            tokens_refunded: counter("compute_auction_tokens_refunded_total"),
            assignments_aborted: counter("compute_auction_assignments_aborted_total"),
            pending_entries_applied: counter("compute_auction_pending_entries_applied_total"),
            step_timeouts: counter("compute_auction_cycle_step_timeouts_total"),
            db_unavailable: counter("compute_auction_database_unavailable_total"),
            commits_in_doubt: counter("compute_auction_commits_in_doubt_total"),
            fallback_allocations: counter("compute_auction_fallback_allocations_total"),
            fallback_errors: counter("compute_auction_fallback_errors_total"),
            pruned_rows: counter("compute_auction_pruned_rows_total"),
            prune_errors: counter("compute_auction_prune_errors_total"),
            clearing_errors: counter("compute_auction_clearing_errors_total"),
            step_errors,
            leadership_acquired: counter("compute_auction_leadership_acquired_total"),
            last_round_id: gauge("compute_auction_last_round_id"),
            round_duration: recorder.register_histogram(&Key::from_static_name(ROUND_DURATION), &meta),
            consecutive_failures_gauge: gauge("compute_auction_consecutive_failures"),
            leader_gauge: gauge("compute_auction_leader"),
            degraded_gauge: gauge("compute_auction_degraded"),
            consecutive_failures: AtomicU64::new(0),
            leader: AtomicBool::new(false),
            degraded: AtomicBool::new(false),
            times_led: AtomicU64::new(0),
            leader_seen: AtomicBool::new(false),
            not_leading: std::sync::Mutex::new(None),
            recorder,
        };
        // gauges show 0 from the start, as counters do
        for g in [&m.last_round_id, &m.consecutive_failures_gauge, &m.leader_gauge, &m.degraded_gauge] {
            g.set(0.0);
        }
        m
    }

    /// Records a clear_round's wall time, and folds it into the histogram at once (so samples
    /// never pile up between scrapes).
    pub fn observe_round_duration(&self, d: Duration) {
        self.round_duration.record(d.as_secs_f64());
        self.handle.run_upkeep();
    }

    /// The newest round this driver ran, and its clearing price when it filled a slot (the
    /// price gauge appears with the first such round).
    pub fn record_round(&self, round_id: i64, price: Option<i64>) {
        self.last_round_id.set(round_id as f64);
        if let Some(p) = price {
            self.recorder.register_gauge(&Key::from_static_name(LAST_PRICE), &metadata()).set(p as f64);
        }
    }

    /// A failed cycle step (one of STEPS); a failed clear_round also counts as a clearing error.
    pub fn step_failed(&self, step: &str) {
        if let Some(i) = STEPS.iter().position(|s| *s == step) {
            self.step_errors[i].increment(1);
        }
        if step == "clear_round" {
            self.clearing_errors.increment(1);
        }
    }

    /// A successful round: returns how many rounds had failed in a row before it.
    pub fn clear_succeeded(&self) -> u64 {
        self.consecutive_failures_gauge.set(0.0);
        self.consecutive_failures.swap(0, Relaxed)
    }

    /// A failed round (counted as a step error too): returns the failures in a row, this one
    /// included.
    pub fn clear_failed(&self) -> u64 {
        self.step_failed("clear_round");
        let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        self.consecutive_failures_gauge.set(n as f64);
        n
    }

    pub fn consecutive_failures(&self) -> u64 {
        self.consecutive_failures.load(Relaxed)
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.store(leading, Relaxed);
        self.leader_gauge.set(f64::from(u8::from(leading)));
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Relaxed)
    }

    /// This driver took the leader lock.
    pub fn became_leader(&self) {
        self.leadership_acquired.increment(1);
        self.times_led.fetch_add(1, Relaxed);
    }

    /// How often this driver took the leader lock.
    pub fn times_led(&self) -> u64 {
        self.times_led.load(Relaxed)
    }

    /// Sets the degraded flag; returns what it was.
    pub fn set_degraded(&self, degraded: bool) -> bool {
        self.degraded_gauge.set(f64::from(u8::from(degraded)));
        self.degraded.swap(degraded, Relaxed)
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Relaxed)
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

    /// Everything in the Prometheus text exposition format 0.0.4: this process's metrics, then
    /// the database's, from `market` (`market_summary()` when the database answered this scrape).
    /// With `prices` (`price_to_win(NULL, '1 hour')` when it answered), the last hour's price
    /// percentiles. With `reads` (there is a read database), its gauges too.
    pub fn render(&self, market: Option<&Value>, prices: Option<&Value>, reads: Option<Reads>) -> String {
        let mut out = self.handle.render();
        let scrape = recorder();
        let meta = metadata();
        let gauge = |name: &'static str| scrape.register_gauge(&Key::from_static_name(name), &meta);
        gauge(DATABASE_UP).set(f64::from(u8::from(market.is_some())));
        if let Some(m) = market {
            for (name, key) in MARKET_GAUGES {
                if let Some(v) = crate::fields::get(m, crate::fields::MARKET_SUMMARY, key).and_then(Value::as_i64) {
                    gauge(name).set(v as f64);
                }
            }
        }
        for (name, key) in PRICE_GAUGES {
            let v =
                prices.and_then(|p| crate::fields::get(p, crate::fields::PRICE_TO_WIN, key)).and_then(Value::as_f64);
            if let Some(v) = v {
                gauge(name).set(v);
            }
        }
        if let Some(r) = reads {
            gauge(READS_ON_PRIMARY).set(f64::from(u8::from(r.on_primary)));
            if let Some(ms) = r.data_age_ms {
                gauge(READ_DATA_AGE).set(ms as f64 / 1000.0);
            }
        }
        out.push_str(&scrape.handle().render());
        out
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

    /// (name, type) of every `# TYPE` line, sorted.
    fn types(text: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (n, t) = l.split_once(' ').unwrap();
                (n.to_string(), t.to_string())
            })
            .collect();
        v.sort();
        v
    }

    fn full_market() -> Value {
        json!({"open_bids": 5, "idle_slots": 2, "assigned_slots": 1, "bids_placed_total": 9, "tokens_refunded_total": 40,
               "last_clearing_price_tokens": 700, "tokens_held": 1200})
    }

    fn prices() -> Value {
        json!({"recent_clearing_p50": 650, "recent_clearing_p90": 900, "price_to_win": 10})
    }

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::new();
        m.rounds_cleared.increment(3);
        m.slots_filled.increment(7);
        m.set_leader(true);
        let text = m.render(None, None, None);
        assert_eq!(line(&text, "compute_auction_rounds_cleared_total"), Some("3"));
        assert_eq!(line(&text, "compute_auction_slots_filled_total"), Some("7"));
        assert_eq!(line(&text, "compute_auction_leader"), Some("1"));
        assert_eq!(line(&text, "compute_auction_degraded"), Some("0"));
        assert_eq!(line(&text, "compute_auction_database_up"), Some("0"));
        assert_eq!(line(&text, "compute_auction_last_round_id"), Some("0"));
        // no price seen yet: the gauge is absent rather than a fake 0
        assert!(line(&text, LAST_PRICE).is_none());
        m.record_round(12, None);
        assert!(line(&m.render(None, None, None), LAST_PRICE).is_none());
        m.record_round(13, Some(1234));
        let text = m.render(None, None, None);
        assert_eq!(line(&text, LAST_PRICE), Some("1234"));
        assert_eq!(line(&text, "compute_auction_last_round_id"), Some("13"));
        assert!(text.contains("# TYPE compute_auction_rounds_cleared_total counter\n"));
        assert!(text.contains("# HELP compute_auction_rounds_cleared_total Clearing rounds run by this driver.\n"));
        assert!(text.contains("compute_auction_cycle_step_errors_total{step=\"clear_round\"} 0\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn every_family_with_its_type_and_help() {
        let m = Metrics::new();
        m.record_round(1, Some(5));
        let text =
            m.render(Some(&full_market()), Some(&prices()), Some(Reads { on_primary: false, data_age_ms: Some(1500) }));
        let mut want: Vec<(String, String)> = FAMILIES.iter().map(|(n, t, _)| (n.to_string(), t.to_string())).collect();
        want.sort();
        assert_eq!(types(&text), want);
        for (name, _, help) in FAMILIES {
            assert!(text.contains(&format!("# HELP {name} {help}\n")), "no HELP for {name}");
        }
        for l in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "bad value in {l}");
        }
        assert_eq!(line(&text, "compute_auction_open_bids"), Some("5"));
        assert_eq!(line(&text, "compute_auction_market_tokens_refunded"), Some("40"));
        assert_eq!(line(&text, "compute_auction_market_last_clearing_price_tokens"), Some("700"));
        assert_eq!(line(&text, "compute_auction_tokens_held"), Some("1200"));
        assert_eq!(line(&text, "compute_auction_clearing_price_p50_1h_tokens"), Some("650"));
        assert_eq!(line(&text, "compute_auction_clearing_price_p90_1h_tokens"), Some("900"));
        assert_eq!(line(&text, "compute_auction_database_up"), Some("1"));
        for step in STEPS {
            assert_eq!(line(&text, &format!("{STEP_ERRORS}{{step=\"{step}\"}}")), Some("0"), "{step}");
        }
    }

    #[test]
    fn read_database_gauges_only_with_a_read_database() {
        let m = Metrics::new();
        let none = m.render(None, None, None);
        assert!(line(&none, READS_ON_PRIMARY).is_none() && line(&none, READ_DATA_AGE).is_none());
        let serving = m.render(None, None, Some(Reads { on_primary: false, data_age_ms: Some(1500) }));
        assert_eq!(line(&serving, READS_ON_PRIMARY), Some("0"));
        assert_eq!(line(&serving, READ_DATA_AGE), Some("1.5"));
        // down: reads on the primary, and no age (it did not answer)
        let down = m.render(None, None, Some(Reads { on_primary: true, data_age_ms: None }));
        assert_eq!(line(&down, READS_ON_PRIMARY), Some("1"));
        assert!(line(&down, READ_DATA_AGE).is_none());
    }

    #[test]
    fn market_gauges_only_while_the_database_answers() {
        let m = Metrics::new();
        let up = m.render(Some(&full_market()), None, None);
        assert_eq!(line(&up, "compute_auction_idle_slots"), Some("2"));
        // the next scrape finds the database down: no stale market values
        let down = m.render(None, None, None);
        assert_eq!(line(&down, "compute_auction_database_up"), Some("0"));
        for (name, _) in MARKET_GAUGES.iter().chain(&PRICE_GAUGES) {
            assert!(!down.contains(name), "{name} shown while the database is down");
        }
        // a key the database did not return is absent, the others are there
        let partial = m.render(Some(&json!({"open_bids": 3})), None, None);
        assert_eq!(line(&partial, "compute_auction_open_bids"), Some("3"));
        assert!(!partial.contains("compute_auction_market_tokens_refunded"));
    }

    #[test]
    fn step_errors_by_step() {
        let m = Metrics::new();
        m.step_failed("abort_stale");
        assert_eq!(m.clear_failed(), 1);
        assert_eq!(m.clear_failed(), 2);
        let text = m.render(None, None, None);
        assert_eq!(line(&text, "compute_auction_cycle_step_errors_total{step=\"abort_stale\"}"), Some("1"));
        assert_eq!(line(&text, "compute_auction_cycle_step_errors_total{step=\"clear_round\"}"), Some("2"));
        assert_eq!(line(&text, "compute_auction_cycle_step_errors_total{step=\"refund_unfilled\"}"), Some("0"));
        assert_eq!(line(&text, "compute_auction_clearing_errors_total"), Some("2"));
        assert_eq!(line(&text, "compute_auction_consecutive_failures"), Some("2"));
        assert_eq!(m.clear_succeeded(), 2);
        assert_eq!(line(&m.render(None, None, None), "compute_auction_consecutive_failures"), Some("0"));
        assert!(!m.set_degraded(true));
        assert_eq!(line(&m.render(None, None, None), "compute_auction_degraded"), Some("1"));
        assert!(m.set_degraded(false));
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::new();
        m.observe_round_duration(Duration::from_millis(3)); // <= 0.005
        m.observe_round_duration(Duration::from_millis(30)); // <= 0.05
        m.observe_round_duration(Duration::from_millis(30));
        m.observe_round_duration(Duration::from_secs(60)); // only +Inf
        let text = m.render(None, None, None);
        let b = |le: &str| {
            line(&text, &format!("{ROUND_DURATION}_bucket{{le=\"{le}\"}}"))
                .unwrap_or_else(|| panic!("no bucket {le} in\n{text}"))
                .to_string()
        };
        assert_eq!(b("0.005"), "1");
        assert_eq!(b("0.025"), "1");
        assert_eq!(b("0.05"), "3");
        assert_eq!(b("1"), "3");
        assert_eq!(b("30"), "3");
        assert_eq!(b("+Inf"), "4");
        assert_eq!(line(&text, &format!("{ROUND_DURATION}_count")), Some("4"));
        let sum: f64 = line(&text, &format!("{ROUND_DURATION}_sum")).unwrap().parse().unwrap();
        assert!((sum - 60.063).abs() < 1e-9, "{sum}");
        // a second scrape shows the same (rendering does not reset anything)
        assert_eq!(line(&m.render(None, None, None), &format!("{ROUND_DURATION}_count")), Some("4"));
    }

    #[test]
    fn recorders_are_independent() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.rounds_cleared.increment(2);
        assert_eq!(line(&a.render(None, None, None), "compute_auction_rounds_cleared_total"), Some("2"));
        assert_eq!(line(&b.render(None, None, None), "compute_auction_rounds_cleared_total"), Some("0"));
    }
}
