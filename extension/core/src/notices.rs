//! The notices compute_auction sends with NOTIFY: one channel per event kind, each payload a
//! JSON object shorter than NOTIFY's limit. The pgrx layer (`extension/src/notices.rs`) decides
//! when to send them; this module is what they say.
//!
//! Every payload is built here with serde_json, so quoting and escaping are never done by hand,
//! and each builder checks its own size: a payload that could reach the limit is cut where the
//! contract allows (an abort's free-text reason) or split (a refund's bid ids), never refused
//! by PostgreSQL at commit.

use serde_json::{json, Value};

use crate::book::BidStatus;

/// NOTIFY refuses a payload of this many bytes or more (PostgreSQL's
/// `NOTIFY_PAYLOAD_MAX_LENGTH`: BLCKSZ - NAMEDATALEN - 128 with the default 8 kB pages).
pub const PAYLOAD_LIMIT_BYTES: usize = 8000;

/// At most this many bid ids in one `compute_auction_bids_refunded` notice.
pub const REFUND_IDS_PER_NOTICE: usize = 500;

/// An abort's reason longer than this many characters is cut in its notice (the clear keeps
/// it whole in `abort_reason`).
pub const REASON_MAX_CHARS: usize = 1000;

/// The channels, each named once here (docs/SQL_API.md "Notifications" lists them).
pub mod channels {
    /// A round filled slots: `{round_id, clearing_price_tokens, slots_filled}` (0.1.0).
    pub const CLEARED: &str = "compute_auction_cleared";
    /// One bid won a slot.
    pub const BID_WON: &str = "compute_auction_bid_won";
    /// An account's bids whose whole escrow went back to it, batched per transaction.
    pub const BIDS_REFUNDED: &str = "compute_auction_bids_refunded";
    /// A won bid's run was aborted: its slot is going away.
    pub const RUN_ABORTED: &str = "compute_auction_run_aborted";
    /// A wallet's spendable balance fell below its threshold.
    pub const LOW_BALANCE: &str = "compute_auction_low_balance";

    pub const ALL: [&str; 5] = [CLEARED, BID_WON, BIDS_REFUNDED, RUN_ABORTED, LOW_BALANCE];
}

/// The statuses a refunded bid can have: the `status` of a `compute_auction_bids_refunded`
/// notice.
pub const REFUNDED_STATUSES: [BidStatus; 3] = [BidStatus::Expired, BidStatus::Cancelled, BidStatus::Aborted];

fn text(v: &Value) -> String {
    v.to_string()
}

/// `compute_auction_cleared`: unchanged since 0.1.0, byte for byte (the text
/// json_build_object gave it then; numbers only, so nothing needs escaping).
pub fn cleared(round_id: i64, clearing_price_tokens: i64, slots_filled: i64) -> String {
    format!(
        "{{\"round_id\" : {round_id}, \"clearing_price_tokens\" : {clearing_price_tokens}, \"slots_filled\" : {slots_filled}}}"
    )
}

/// `compute_auction_bid_won`. Ids are at most `limits::MAX_ID_CHARS` characters, so the payload
/// stays far below the limit.
pub fn bid_won(bid_id: i64, bidder_id: &str, task_id: &str, slot_id: &str, round_id: i64, price: i64) -> String {
    text(&json!({
        "bid_id": bid_id,
        "bidder_id": bidder_id,
        "task_id": task_id,
        "slot_id": slot_id,
        "round_id": round_id,
        "clearing_price_tokens": price,
    }))
}

/// `compute_auction_run_aborted`. The reason is cut (with `reason_truncated: true`) to at most
/// REASON_MAX_CHARS characters and to what keeps the payload below the limit once escaped
/// (serde_json writes a control character as six bytes), whatever the ids and the reason hold.
pub fn run_aborted(slot_id: &str, bid_id: i64, bidder_id: &str, round_id: i64, reason: &str) -> String {
    let payload = |reason: &str, truncated: bool| {
        text(&json!({
            "slot_id": slot_id,
            "bid_id": bid_id,
            "bidder_id": bidder_id,
            "round_id": round_id,
            "reason": reason,
            "reason_truncated": truncated,
        }))
    };
    let whole = payload(reason, false);
    if reason.chars().count() <= REASON_MAX_CHARS && whole.len() < PAYLOAD_LIMIT_BYTES {
        return whole;
    }
    // what the reason may take: the limit less the rest of the payload, escaping counted
    let mut budget = PAYLOAD_LIMIT_BYTES - 1 - payload("", true).len();
    let mut cut = String::new();
    for ch in reason.chars().take(REASON_MAX_CHARS) {
        let escaped = text(&Value::String(ch.to_string())).len() - 2; // without the quotes
        if escaped > budget {
            break;
        }
        budget -= escaped;
        cut.push(ch);
    }
    payload(&cut, true)
}

/// `compute_auction_low_balance`.
pub fn low_balance(account_id: &str, balance_tokens: i64, threshold_tokens: i64) -> String {
    text(&json!({
        "account_id": account_id,
        "balance_tokens": balance_tokens,
        "threshold_tokens": threshold_tokens,
    }))
}

/// Whether a wallet change from `before` to `after` crosses below `threshold`: the balance was
/// at or above it and is now below it.
pub const fn falls_below(before: i64, after: i64, threshold: i64) -> bool {
    before >= threshold && after < threshold
}

fn refunded_part(account_id: &str, status: BidStatus, ids: &[i64], tokens: i64, part: usize, parts: usize) -> String {
    text(&json!({
        "account_id": account_id,
        "status": status.as_str(),
        "bid_ids": ids,
        "tokens_refunded": tokens,
        "part": part,
        "parts": parts,
    }))
}

/// `compute_auction_bids_refunded` for one account's bids of one status in one transaction:
/// `bids` is (bid id, tokens refunded), in the order to report. They are split into parts of
/// at most REFUND_IDS_PER_NOTICE ids, each part shorter than the limit and with a
/// `tokens_refunded` that fits a bigint; every part carries its number (`part`, from 1) and the
/// count (`parts`).
pub fn bids_refunded(account_id: &str, status: BidStatus, bids: &[(i64, i64)]) -> Vec<String> {
    // the payload with no ids and the widest numbers, then each id costs its digits and a comma
    let fixed = refunded_part(account_id, status, &[], i64::MAX, usize::MAX, usize::MAX).len();
    let mut chunks: Vec<(usize, usize, i64)> = Vec::new(); // (start, end, tokens)
    let (mut start, mut bytes, mut tokens) = (0usize, fixed, 0i64);
    for (i, &(id, t)) in bids.iter().enumerate() {
        let cost = id.to_string().len() + 1;
        let sum = tokens.checked_add(t);
        let full = i - start == REFUND_IDS_PER_NOTICE || bytes + cost >= PAYLOAD_LIMIT_BYTES || sum.is_none();
        if full && i > start {
            chunks.push((start, i, tokens));
            (start, bytes, tokens) = (i, fixed, 0);
        }
        bytes += cost;
        tokens = tokens.saturating_add(t);
    }
    if start < bids.len() {
        chunks.push((start, bids.len(), tokens));
    }
    let parts = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(n, &(s, e, t))| {
            let ids: Vec<i64> = bids[s..e].iter().map(|b| b.0).collect();
            refunded_part(account_id, status, &ids, t, n + 1, parts)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap_or(Value::Null)
    }

    #[test]
    fn twelve_hundred_bids_are_three_parts() {
        let bids: Vec<(i64, i64)> = (1..=1200).map(|i| (i, 10)).collect();
        let parts = bids_refunded("alice", BidStatus::Expired, &bids);
        assert_eq!(parts.len(), 3);
        let v: Vec<Value> = parts.iter().map(|p| parse(p)).collect();
        assert_eq!(v[0]["bid_ids"].as_array().map(Vec::len), Some(500));
        assert_eq!(v[2]["bid_ids"].as_array().map(Vec::len), Some(200));
        assert_eq!(v[1]["part"], 2);
        assert_eq!(v[1]["parts"], 3);
        assert_eq!(v[2]["tokens_refunded"], 2000);
        assert_eq!(v[0]["status"], "expired");
    }

    #[test]
    fn widest_ids_stay_under_the_limit() {
        let account = "\u{1}".repeat(256); // escaped as \u0001: six bytes a character
        let bids: Vec<(i64, i64)> = (0..2000).map(|i| (i64::MAX - i, i64::MAX / 3)).collect();
        let parts = bids_refunded(&account, BidStatus::Cancelled, &bids);
        let mut seen = Vec::new();
        for p in &parts {
            assert!(p.len() < PAYLOAD_LIMIT_BYTES, "{} bytes", p.len());
            let v = parse(p);
            assert!(v["tokens_refunded"].as_i64().is_some());
            seen.extend(v["bid_ids"].as_array().into_iter().flatten().filter_map(Value::as_i64));
        }
        assert_eq!(seen, bids.iter().map(|b| b.0).collect::<Vec<_>>());
    }

    #[test]
    fn no_bids_no_notice() {
        assert!(bids_refunded("a", BidStatus::Expired, &[]).is_empty());
    }

    #[test]
    fn long_reasons_are_cut() {
        let reason = "é".repeat(5000);
        let p = run_aborted(&"s".repeat(256), 1, &"b".repeat(256), 2, &reason);
        assert!(p.len() < PAYLOAD_LIMIT_BYTES);
        let v = parse(&p);
        assert_eq!(v["reason_truncated"], true);
        assert_eq!(v["reason"].as_str().map(|s| s.chars().count()), Some(REASON_MAX_CHARS));
        assert_eq!(parse(&run_aborted("s", 1, "b", 2, "crashed"))["reason_truncated"], false);
    }

    #[test]
    fn the_widest_abort_still_fits() {
        // ids and a reason of control characters: six bytes each once escaped
        let (id, reason) = ("\u{1}".repeat(256), "\u{1b}".repeat(5000));
        let p = run_aborted(&id, i64::MAX, &id, i64::MAX, &reason);
        assert!(p.len() < PAYLOAD_LIMIT_BYTES, "{} bytes", p.len());
        let v = parse(&p);
        assert_eq!(v["reason_truncated"], true);
        let kept = v["reason"].as_str().map_or(0, |s| s.chars().count());
        assert!(kept > 500 && kept < REASON_MAX_CHARS, "{kept}");
        let emoji = "\u{1F600}".repeat(256);
        assert!(run_aborted(&emoji, 1, &emoji, 1, &reason).len() < PAYLOAD_LIMIT_BYTES);
        // a reason that fits is kept whole
        let v = parse(&run_aborted(&id, 1, &id, 1, "runner crashed"));
        assert_eq!((v["reason"].as_str(), v["reason_truncated"].as_bool()), (Some("runner crashed"), Some(false)));
    }

    #[test]
    fn cleared_is_0_1_0s_text() {
        assert_eq!(cleared(1, 2000, 2), r#"{"round_id" : 1, "clearing_price_tokens" : 2000, "slots_filled" : 2}"#);
    }

    #[test]
    fn crossing_below() {
        assert!(falls_below(100, 99, 100));
        assert!(!falls_below(99, 50, 100)); // already below
        assert!(!falls_below(100, 100, 100));
        assert!(!falls_below(50, 150, 100));
    }
}
