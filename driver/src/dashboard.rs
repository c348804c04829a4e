//! The /resources page ("Auction" tab) and the JSON bundle it refreshes from.
//!
//! The page is one self-contained HTML document (dashboard.html: inline CSS,
//! inline SVG charts drawn by a little plain JavaScript, no external assets).
//! The server embeds the current data in the page so the first paint needs no
//! extra request; the script then refreshes it from
//! GET /api/compute-auction/dashboard every few seconds.
//!
//! Rounds are never shipped one by one: the price chart is drawn from
//! `price_history()` buckets aggregated in SQL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use deadpool_postgres::Pool;
use serde_json::{json, Map, Value};
use tokio_postgres::Client;

use crate::db::{self, DbError, PriceBucket};

const PAGE: &str = include_str!("dashboard.html");
const DATA_PLACEHOLDER: &str = "__INITIAL_DATA__";

/// Buckets per price_history call.
pub const CHART_BUCKETS: i32 = 96;
/// The dashboard window.
pub const WINDOW_HOURS: i64 = 24;
/// Depth of the order book shown on the page.
pub const BOOK_DEPTH: i32 = 20;
/// The chart never zooms in to less than this span.
const MIN_CHART_SPAN_SECS: i64 = 60;
/// How far back (in rounds) to look for the last round that filled a slot.
const PRICED_ROUND_LOOKBACK: i64 = 5_000;

/// The page with `data` (the JSON bundle, or null) embedded.
pub fn render_page(data: &Value) -> String {
    PAGE.replacen(DATA_PLACEHOLDER, &script_safe_json(data), 1)
}

/// JSON that can sit inside a <script> element: `<`, `>` and `&` only occur
/// inside JSON strings, where their \u escapes mean the same thing.
pub fn script_safe_json(v: &Value) -> String {
    let text = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    let mut out = String::with_capacity(text.len() + 16);
    for ch in text.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Where the chart should start so it shows the rounds of the window rather
/// than 24 h of empty space: if the earliest bucket with rounds starts well
/// after `since`, zoom in to it (never to less than a minute). None = keep.
pub fn refine_since(since: DateTime<Utc>, now: DateTime<Utc>, rows: &[PriceBucket]) -> Option<DateTime<Utc>> {
    let first = rows.first()?.bucket_start;
    let span = (now - since).num_milliseconds();
    if span <= MIN_CHART_SPAN_SECS * 1000 {
        return None;
    }
    let candidate = first.min(now - ChronoDuration::seconds(MIN_CHART_SPAN_SECS));
    let gained = (candidate - since).num_milliseconds();
    // Only worth another query when at least a quarter of the chart is empty.
    if gained * 4 >= span {
        Some(candidate)
    } else {
        None
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub rounds: i64,
    pub slots_filled: i64,
    pub slots_offered: i64,
}

pub fn totals(rows: &[PriceBucket]) -> Totals {
    rows.iter().fold(Totals::default(), |t, r| Totals {
        rounds: t.rounds + r.rounds,
        slots_filled: t.slots_filled + r.slots_filled,
        slots_offered: t.slots_offered + r.slots_offered,
    })
}

/// The last 24 h's top winners come from `stats()`, which also builds the
/// window's full rounds array (86,400 entries at one round a second, seconds
/// of work). So they are cached, with a time-to-live proportional to what the
/// call cost, and refreshed in the background while the stale value is served.
#[derive(Default)]
pub struct WinnersCache {
    slot: tokio::sync::Mutex<Option<CachedWinners>>,
    refreshing: AtomicBool,
}

struct CachedWinners {
    at: Instant,
    ttl: Duration,
    value: Value,
}

/// How long a top-winners value stays fresh after a call that took `cost`.
pub fn winners_ttl(cost: Duration) -> Duration {
    cost.saturating_mul(20).clamp(Duration::from_secs(2), Duration::from_secs(60))
}

impl WinnersCache {
    async fn load(pool: &Pool) -> Result<(Value, Duration), DbError> {
        let client = pool.get().await?;
        let t0 = Instant::now();
        let since = db::db_now(&client).await? - ChronoDuration::hours(WINDOW_HOURS);
        let v = db::stats_top_winners(&client, since).await?;
        Ok((v, t0.elapsed()))
    }

    /// The top winners: fresh, stale (while a refresh runs), or loaded now
    /// when nothing is cached yet.
    pub async fn get(self: &Arc<Self>, pool: &Pool) -> Result<Value, DbError> {
        let mut slot = self.slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.at.elapsed() >= c.ttl && !self.refreshing.swap(true, Ordering::SeqCst) {
                let me = Arc::clone(self);
                let pool = pool.clone();
                tokio::spawn(async move {
                    match Self::load(&pool).await {
                        Ok((value, cost)) => {
                            *me.slot.lock().await =
                                Some(CachedWinners { at: Instant::now(), ttl: winners_ttl(cost), value });
                        }
                        Err(e) => tracing::warn!(error = %e, "refreshing the top winners failed"),
                    }
                    me.refreshing.store(false, Ordering::SeqCst);
                });
            }
            return Ok(c.value.clone());
        }
        let (value, cost) = Self::load(pool).await?;
        *slot = Some(CachedWinners { at: Instant::now(), ttl: winners_ttl(cost), value: value.clone() });
        Ok(value)
    }
}

/// Collects the dashboard bundle. Each part that fails for a reason other
/// than an unreachable database is reported under "errors" and left null, so
/// an older extension (e.g. without price_to_win) still gets a page.
pub async fn collect(
    client: &Client,
    pool: &Pool,
    winners: &Arc<WinnersCache>,
    driver: Value,
) -> Result<Value, DbError> {
    let mut errors = Map::new();
    let now = db::db_now(client).await?;
    let window_start = now - ChronoDuration::hours(WINDOW_HOURS);

    macro_rules! part {
        ($name:literal, $fut:expr) => {
            match $fut.await {
                Ok(v) => Some(v),
                Err(e) if e.is_unavailable() => return Err(e),
                Err(e) => {
                    if e.code() != Some("42883") || $name != "price_to_win" {
                        tracing::warn!(part = $name, error = %e, "dashboard part failed");
                    }
                    errors.insert($name.to_string(), json!(e.message()));
                    None
                }
            }
        };
    }

    let day = part!("price_history", db::price_history(client, window_start, CHART_BUCKETS));
    let mut chart_since = window_start;
    let mut chart_rows = day.clone().unwrap_or_default();
    for _ in 0..2 {
        let Some(s) = refine_since(chart_since, now, &chart_rows) else { break };
        match part!("price_history", db::price_history(client, s, CHART_BUCKETS)) {
            Some(rows) => {
                chart_since = s;
                chart_rows = rows;
            }
            None => break,
        }
    }
    let t = totals(day.as_deref().unwrap_or(&[]));
    // price_history buckets are at least one second wide
    let bucket_seconds = ((now - chart_since).num_milliseconds() as f64 / 1000.0 / f64::from(CHART_BUCKETS)).max(1.0);

    // fill rate over the window = slots filled / slots offered, as stats() defines it
    let fill_rate = if t.slots_offered > 0 && day.is_some() {
        json!(t.slots_filled as f64 / t.slots_offered as f64)
    } else {
        Value::Null
    };
    let top_winners = part!("top_winners", winners.get(pool)).unwrap_or(Value::Array(vec![]));
    let book = part!("order_book", db::order_book_value(client, BOOK_DEPTH));
    let market = part!("market_summary", db::market_summary(client));
    let priced = part!("last_priced_round", db::last_priced_round(client, PRICED_ROUND_LOOKBACK));
    let ptw = part!("price_to_win", db::price_to_win_value(client));

    Ok(json!({
        "generated_at": now,
        "window": {"since": window_start, "until": now, "hours": WINDOW_HOURS},
        "totals": {
            "rounds": t.rounds,
            "slots_filled": t.slots_filled,
            "slots_offered": t.slots_offered,
            "available": day.is_some(),
        },
        "chart": {
            "since": chart_since,
            "until": now,
            "bucket_seconds": bucket_seconds,
            "zoomed": chart_since > window_start,
            "buckets": chart_rows,
        },
        "fill_rate": fill_rate,
        "top_winners": top_winners,
        "order_book": book,
        "market": market,
        "last_priced_round": priced.flatten(),
        "price_to_win": ptw,
        "driver": driver,
        "errors": errors,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn bucket(start: DateTime<Utc>, rounds: i64, filled: i64, offered: i64) -> PriceBucket {
        PriceBucket {
            bucket_start: start,
            rounds,
            avg_price_tokens: Some(100),
            min_price_tokens: Some(90),
            max_price_tokens: Some(110),
            slots_filled: filled,
            slots_offered: offered,
        }
    }

    #[test]
    fn page_embeds_data_safely() {
        let page = render_page(&json!({"x": "</script><script>alert(1)</script>&"}));
        assert!(!page.contains(DATA_PLACEHOLDER));
        assert!(!page.contains("</script><script>alert(1)"));
        assert!(page.contains("\\u003c/script\\u003e"));
        // the escaped text is still the same JSON
        let v: Value = serde_json::from_str(&script_safe_json(&json!({"a": "<b>&</b>\u{2028}"}))).unwrap();
        assert_eq!(v["a"], "<b>&</b>\u{2028}");
    }

    #[test]
    fn page_is_self_contained() {
        let page = render_page(&Value::Null);
        for id in [
            "fill-rate",
            "rounds-count",
            "last-price",
            "top-winners",
            "order-book-bids",
            "order-book-asks",
            "price-chart",
            "price-to-win",
        ] {
            assert!(page.contains(&format!("id=\"{id}\"")), "missing #{id}");
        }
        // no external resources: the machine running it may be offline
        let stripped = page.replace("http://www.w3.org/2000/svg", "");
        assert!(!stripped.contains("http://") && !stripped.contains("https://") && !stripped.contains("//cdn"));
        assert!(!page.contains("console."));
    }

    #[test]
    fn zooms_to_recent_rounds() {
        let now = Utc.with_ymd_and_hms(2025, 1, 2, 12, 0, 0).unwrap();
        let since = now - ChronoDuration::hours(24);
        // no rounds: nothing to zoom to
        assert_eq!(refine_since(since, now, &[]), None);
        // rounds only in the last 10 minutes: zoom in
        let first = now - ChronoDuration::minutes(10);
        assert_eq!(refine_since(since, now, &[bucket(first, 5, 1, 2)]), Some(first));
        // rounds only in the last 5 seconds: zoom to at most the last minute
        let first = now - ChronoDuration::seconds(5);
        assert_eq!(refine_since(since, now, &[bucket(first, 5, 1, 2)]), Some(now - ChronoDuration::seconds(60)));
        // rounds across most of the window: keep 24 h
        let first = since + ChronoDuration::hours(2);
        assert_eq!(refine_since(since, now, &[bucket(first, 5, 1, 2)]), None);
        // already a minute wide: stop
        let s = now - ChronoDuration::seconds(60);
        assert_eq!(refine_since(s, now, &[bucket(now - ChronoDuration::seconds(1), 1, 1, 1)]), None);
    }

    #[test]
    fn winners_ttl_follows_cost() {
        assert_eq!(winners_ttl(Duration::from_millis(3)), Duration::from_secs(2));
        assert_eq!(winners_ttl(Duration::from_secs(2)), Duration::from_secs(40));
        assert_eq!(winners_ttl(Duration::from_secs(30)), Duration::from_secs(60));
    }

    #[test]
    fn sums_totals() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 2, 12, 0, 0).unwrap();
        let t = totals(&[bucket(t0, 3, 2, 6), bucket(t0, 4, 1, 8)]);
        assert_eq!(t, Totals { rounds: 7, slots_filled: 3, slots_offered: 14 });
    }
}
