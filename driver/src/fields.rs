//! The fields of the extension's results that the driver and its dashboard read, function by
//! function. The code reads them through [`get`] (a debug build panics on a key missing from its
//! list) or through structs whose keys the tests below compare with the lists, and the page's
//! script is scanned for them; `compute-auction-driver fields` (hidden) prints the lists, and
//! tests/test_driver_fields.py checks each against the real functions' results on a populated
//! market. A field the extension does not return then fails a test instead of leaving a
//! dashboard box or a metric empty.

use serde_json::{json, Value};

/// `market_summary()`: the metrics' market gauges and the dashboard's counters.
pub const MARKET_SUMMARY: &[&str] = &[
    "open_bids",
    "idle_slots",
    "assigned_slots",
    "bids_placed_total",
    "tokens_refunded_total",
    "last_round",
    "last_clearing_price_tokens",
    "tokens_held",
];
/// `market_summary()->'last_round'` (the dashboard's latest round).
pub const MARKET_LAST_ROUND: &[&str] = &["round_id", "cleared_at"];
/// `stats(since, false)`: the dashboard's fill rate and top winners.
pub const STATS: &[&str] = &["fill_rate", "top_winners"];
/// Each of `stats()->'top_winners'` (the dashboard's winners table and chart).
pub const STATS_WINNER: &[&str] =
    &["bid_id", "bidder_id", "task_id", "max_price_tokens", "clearing_price_tokens", "actual_impact", "roi"];
/// `clear_round_summary()->'round'` (db::RoundInfo).
pub const CLEAR_ROUND: &[&str] = &[
    "round_id",
    "cleared_at",
    "slots_offered",
    "bids_eligible",
    "slots_filled",
    "clearing_price_tokens",
    "duration_ms",
];
/// Each of `clear_round_summary()->'winners'` (db::Assignment).
pub const CLEAR_WINNER: &[&str] = &["slot_id", "bid_id", "task_id", "bidder_id", "clearing_price_tokens"];
/// `order_book(depth)` (the dashboard's book).
pub const ORDER_BOOK: &[&str] = &["bids", "asks"];
/// Each of `order_book()->'bids'`.
pub const BOOK_BID: &[&str] = &["bid_id", "bidder_id", "task_id", "max_price_tokens", "expected_value_usd", "ttl_at"];
/// Each of `order_book()->'asks'`.
pub const BOOK_ASK: &[&str] = &["slot_id", "available_at", "reserve_price_tokens"];
/// `price_to_win()` (the dashboard's "Price to win" card).
pub const PRICE_TO_WIN: &[&str] = &[
    "price_to_win",
    "price_to_win_now",
    "next_slot_id",
    "next_slot_at",
    "next_slot_estimated",
    "recent_clearing_p50",
    "recent_clearing_p90",
    "slots_available",
];
/// `bid_status(id)` (the dashboard's bid lookup).
pub const BID_STATUS: &[&str] = &[
    "bid_id",
    "bidder_id",
    "task_id",
    "status",
    "reason",
    "max_price_tokens",
    "rank",
    "ahead",
    "rank_estimated",
    "slots_needed",
    "ttl_at",
    "why_not_won",
    "result",
    "rounds",
];
/// Each of `bid_status(id)->'rounds'` (the bid lookup's rounds table; `slot_id` is there for
/// the round the bid won).
pub const BID_ROUND: &[&str] = &["round_id", "clearing_price_tokens", "bid_price_tokens", "reason", "slot_id"];
/// `task_status(task_id)` (the bid lookup by task id).
pub const TASK_STATUS: &[&str] = &["bids", "bids_truncated"];
/// Each of `task_status(task_id)->'bids'`.
pub const TASK_BID: &[&str] = &["bid_id", "status"];
/// `wallet(account_id)` (the dashboard's wallet view).
pub const WALLET: &[&str] = &[
    "account_id",
    "kind",
    "balance_tokens",
    "held_tokens",
    "pending_balance_tokens",
    "pending_held_tokens",
    "open_bids",
    "won_bids",
    "total_spent",
    "low_balance_threshold",
    "bids",
    "recent_entries",
];
/// Each of `wallet(account_id)->'bids'`.
pub const WALLET_BID: &[&str] = &["bid_id", "task_id", "status", "max_price_tokens"];
/// Each of `wallet(account_id)->'recent_entries'`.
pub const WALLET_ENTRY: &[&str] =
    &["id", "entry_kind", "delta_balance", "delta_held", "bid_id", "reason", "balance_after"];
/// The result columns of `price_history(since, buckets)` (db::PriceBucket).
pub const PRICE_HISTORY: &[&str] = &[
    "bucket_start",
    "rounds",
    "avg_price_tokens",
    "min_price_tokens",
    "max_price_tokens",
    "slots_filled",
    "slots_offered",
];

/// Every list, by name, as `compute-auction-driver fields` prints it.
pub fn all() -> Value {
    json!({
        "market_summary": MARKET_SUMMARY,
        "market_summary.last_round": MARKET_LAST_ROUND,
        "stats": STATS,
        "stats.top_winners[]": STATS_WINNER,
        "clear_round_summary.round": CLEAR_ROUND,
        "clear_round_summary.winners[]": CLEAR_WINNER,
        "order_book": ORDER_BOOK,
        "order_book.bids[]": BOOK_BID,
        "order_book.asks[]": BOOK_ASK,
        "price_to_win": PRICE_TO_WIN,
        "price_history": PRICE_HISTORY,
        "bid_status": BID_STATUS,
        "bid_status.rounds[]": BID_ROUND,
        "task_status": TASK_STATUS,
        "task_status.bids[]": TASK_BID,
        "wallet": WALLET,
        "wallet.bids[]": WALLET_BID,
        "wallet.recent_entries[]": WALLET_ENTRY,
    })
}

/// `v[key]`, where `key` is one of `list` (debug builds check that, so the lists cannot fall
/// behind the code that reads the fields).
pub fn get<'a>(v: &'a Value, list: &[&str], key: &str) -> Option<&'a Value> {
    debug_assert!(list.contains(&key), "{key} is read but not in its fields list");
    v.get(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn keys(v: Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    fn sorted(list: &[&str]) -> Vec<String> {
        let mut k: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        k.sort();
        k
    }

    #[test]
    fn structs_read_exactly_the_listed_fields() {
        let at = chrono::Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
        let round = crate::db::RoundInfo {
            round_id: 1,
            cleared_at: at,
            slots_offered: 1,
            bids_eligible: 1,
            slots_filled: 1,
            clearing_price_tokens: Some(1),
            duration_ms: Some(1.0),
        };
        assert_eq!(keys(serde_json::to_value(&round).unwrap()), sorted(CLEAR_ROUND));
        let winner = crate::db::Assignment {
            slot_id: "s".into(),
            bid_id: 1,
            task_id: "t".into(),
            bidder_id: "b".into(),
            clearing_price_tokens: 1,
        };
        assert_eq!(keys(serde_json::to_value(&winner).unwrap()), sorted(CLEAR_WINNER));
        let outcome = crate::db::ClearOutcome { round, assignments: vec![winner] };
        assert_eq!(keys(serde_json::to_value(&outcome).unwrap()), ["round", "winners"]);
        let bucket = crate::db::PriceBucket {
            bucket_start: at,
            rounds: 1,
            avg_price_tokens: None,
            min_price_tokens: None,
            max_price_tokens: None,
            slots_filled: 0,
            slots_offered: 0,
        };
        assert_eq!(keys(serde_json::to_value(&bucket).unwrap()), sorted(PRICE_HISTORY));
    }

    #[test]
    fn metrics_read_listed_market_fields() {
        for (_, key) in crate::metrics::MARKET_GAUGES {
            assert!(MARKET_SUMMARY.contains(&key), "{key}");
        }
    }

    /// `prefix.field` in the dashboard's script, where `prefix` is a whole identifier.
    fn script_fields(page: &str, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let bytes = page.as_bytes();
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
        let mut from = 0;
        while let Some(i) = page[from..].find(prefix) {
            let at = from + i;
            from = at + prefix.len();
            if at > 0 && (ident(bytes[at - 1]) || bytes[at - 1] == b'.') {
                continue;
            }
            let field: String = page[from..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !field.is_empty() {
                out.push(field);
            }
        }
        out
    }

    #[test]
    fn the_page_reads_listed_fields() {
        let page = include_str!("dashboard.html");
        for (prefix, list) in [
            ("m.", MARKET_SUMMARY),
            ("lr.", MARKET_LAST_ROUND),
            ("w.", STATS_WINNER),
            ("book.", ORDER_BOOK),
            ("bid.", BOOK_BID),
            ("ask.", BOOK_ASK),
            ("ptw.", PRICE_TO_WIN),
            ("bs.", BID_STATUS),
            ("rnd.", BID_ROUND),
            ("tsk.", TASK_STATUS),
            ("tkb.", TASK_BID),
            ("wal.", WALLET),
            ("wb.", WALLET_BID),
            ("we.", WALLET_ENTRY),
        ] {
            let used = script_fields(page, prefix);
            assert!(!used.is_empty(), "the page reads nothing through {prefix}: renamed?");
            for f in used {
                assert!(
                    list.contains(&f.as_str()),
                    "dashboard.html reads {prefix}{f}, which is not in its fields list"
                );
            }
        }
    }

    #[test]
    fn lists_have_no_duplicates() {
        for (name, list) in all().as_object().unwrap() {
            let list: Vec<&str> = list.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            let mut d = list.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), list.len(), "{name}");
        }
    }
}
