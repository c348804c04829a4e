//! The /resources page ("Auction" tab) and the JSON bundle it refreshes from.
//!
//! The page is one self-contained HTML document (dashboard.html: inline CSS,
//! inline SVG charts drawn by a little plain JavaScript, no external assets).
//! The server embeds the current data in the page so the first paint needs no
//! extra request; the script then refreshes it from
//! GET /api/compute-auction/dashboard every few seconds.
//!
//! Rounds are never shipped one by one: the price chart is drawn from
//! `price_history()` buckets aggregated in SQL, and the fill rate and top winners come from one
//! `stats(since, include_rounds => false)` call, which never builds the per-round list.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{json, Map, Value};
use tokio_postgres::Client;

use crate::db::{self, DbError, PriceBucket};
use crate::fields;

const PAGE: &str = include_str!("dashboard.html");
const DATA_PLACEHOLDER: &str = "__INITIAL_DATA__";

/// Buckets per price_history call.
pub const CHART_BUCKETS: i32 = 96;
/// The dashboard window.
pub const WINDOW_HOURS: i32 = 24;
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

/// Collects the dashboard bundle. Each part that fails for a reason other than an unreachable
/// database is reported under "errors" and left null; the rest of the page still shows.
pub async fn collect(client: &Client, driver: Value) -> Result<Value, DbError> {
    let mut errors = Map::new();
    let now = db::db_now(client).await?;
    let window_start = now - ChronoDuration::hours(i64::from(WINDOW_HOURS));

    macro_rules! part {
        ($name:literal, $fut:expr) => {
            match $fut.await {
                Ok(v) => Some(v),
                Err(e) if e.is_unavailable() => return Err(e),
                Err(e) => {
                    tracing::warn!(part = $name, error = %e, "dashboard part failed");
                    errors.insert($name.to_string(), json!(e.message()));
                    None
                }
            }
        };
    }

    // the day relative to the statement's own now(), so its buckets fall on the quarter-hours
    let day = part!("price_history", db::price_history(client, db::Since::HoursAgo(WINDOW_HOURS), CHART_BUCKETS));
    let mut chart_since = window_start;
    let mut chart_rows = day.clone().unwrap_or_default();
    for _ in 0..2 {
        let Some(s) = refine_since(chart_since, now, &chart_rows) else { break };
        match part!("price_history", db::price_history(client, db::Since::At(s), CHART_BUCKETS)) {
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

    // fill rate and top winners of the window: one stats(since, include_rounds => false) call
    let stats = part!("stats", async { db::stats(client, f64::from(WINDOW_HOURS), None).await?.parse() });
    let stat = |key: &str| stats.as_ref().and_then(|s| fields::get(s, fields::STATS, key)).cloned();
    let fill_rate = stat("fill_rate").unwrap_or(Value::Null);
    let top_winners = stat("top_winners").filter(Value::is_array).unwrap_or(Value::Array(vec![]));
    let book = part!("order_book", async { db::order_book(client, BOOK_DEPTH).await?.parse() });
    let market = part!("market_summary", async { db::market_summary(client).await?.parse() });
    let priced = part!("last_priced_round", db::last_priced_round(client, PRICED_ROUND_LOOKBACK));
    let ptw = part!("price_to_win", async { db::price_to_win(client, None).await?.parse() });

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
    fn sums_totals() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 2, 12, 0, 0).unwrap();
        let t = totals(&[bucket(t0, 3, 2, 6), bucket(t0, 4, 1, 8)]);
        assert_eq!(t, Totals { rounds: 7, slots_filled: 3, slots_offered: 14 });
    }
}
