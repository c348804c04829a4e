//! bid_status: a bid's whole story, derived when it is read. Its rank in the book, the rounds it
//! took part in and the reason it did not win each (compute_auction_core::story's codes), from
//! the rounds' O(1) facts, the bid's own escrow and release ledger rows and the round_skips
//! rows of the rounds that passed it over; clear_round writes nothing per losing bid.
//! Every read is bounded: the newest STORY_ROUNDS rounds of its life, the newest
//! STORY_PRICE_CHANGES of its price changes, and a rank counted exactly up to
//! MAX_ORDER_BOOK_DEPTH bids ahead (an estimate beyond, flagged).

use compute_auction_core::limits::{MAX_ORDER_BOOK_DEPTH, STORY_PRICE_CHANGES, STORY_ROUNDS, TASK_BIDS_MAX};
use compute_auction_core::story::{self, Reason, RoundFacts, Standing};
use compute_auction_core::{bid_status_sql, tokens, validate};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::{json, Value};

use crate::spi;

/// A timestamptz expression in microseconds since the epoch (time priority, as clear_round
/// reads it).
macro_rules! micros_sql {
    ($ts:literal) => {
        concat!("(extract(epoch FROM ", $ts, ") * 1000000)::bigint")
    };
}

/// The bid, its clear and the times its story needs. Columns: the keys every status has (JSON),
/// status, max_price_tokens, placed_at, ttl passed, the stored last_result, ttl_at, the time its
/// status last changed, the round it won (its id and cleared_at), that round's clearing price
/// and slot, the round's cleared_at as JSON.
const BID: &str = concat!(
    "
SELECT jsonb_build_object(
         'bid_id', b.id, 'bidder_id', b.bidder_id, 'task_id', b.task_id, 'status', b.status,
         'max_price_tokens', b.max_price_tokens, 'expected_value_usd', b.expected_value_usd,
         'ttl_at', b.ttl_at, 'placed_at', b.placed_at, 'round_id', b.round_id, 'slot_id', c.slot_id,
         'clearing_price_tokens', c.clearing_price_tokens, 'actual_impact', c.actual_impact),
       b.status, b.max_price_tokens, ",
    micros_sql!("b.placed_at"),
    ", b.ttl_at <= now(), b.last_result, b.ttl_at, b.updated_at,
       w.round_id, w.cleared_at, c.clearing_price_tokens, c.slot_id, b.placed_at
  FROM compute_auction.compute_auction_bids AS b
  LEFT JOIN compute_auction.compute_auction_clears AS c ON c.bid_id = b.id
  LEFT JOIN compute_auction.compute_auction_rounds AS w ON w.round_id = b.round_id
 WHERE b.id = $1"
);

/// The bid's newest $2 escrow and release rows, newest first: (time, delta_held).
const PRICE_CHANGES: &str = concat!(
    "
SELECT ",
    micros_sql!("at"),
    ", delta_held, at
  FROM compute_auction.token_ledger
 WHERE bid_id = $1 AND entry_kind IN ('escrow', 'release')
 ORDER BY id DESC
 LIMIT $2"
);

/// Rounds of the bid's life with their facts and whether each skipped the bid ($1): the newest
/// $4 cleared at or after $2 and before $3, newest first (both bounds index conditions: a bid
/// that won long ago reads no later round); ROUND_BY_ID, the round it won, whenever it cleared
/// (a round's `now` may precede the bid's first ledger row).
const ROUNDS: &str = concat!(
    "
SELECT r.round_id, r.slots_offered, r.slots_filled, r.clearing_price_tokens, r.unfilled_reserve_min,
       r.last_winner_bid_id, r.last_winner_price_tokens, ",
    micros_sql!("r.last_winner_placed_at"),
    ",
       EXISTS (SELECT 1 FROM compute_auction.round_skips AS k WHERE k.round_id = r.round_id AND k.bid_id = $1),
       ",
    micros_sql!("r.cleared_at"),
    ", to_jsonb(r.cleared_at)
  FROM compute_auction.compute_auction_rounds AS r
 WHERE r.cleared_at >= $2 AND r.cleared_at < $3 AND r.round_id IS DISTINCT FROM $5
 ORDER BY r.cleared_at DESC, r.round_id DESC
 LIMIT $4"
);

/// The round the bid won ($2), in ROUNDS' columns.
const ROUND_BY_ID: &str = concat!(
    "
SELECT r.round_id, r.slots_offered, r.slots_filled, r.clearing_price_tokens, r.unfilled_reserve_min,
       r.last_winner_bid_id, r.last_winner_price_tokens, ",
    micros_sql!("r.last_winner_placed_at"),
    ",
       EXISTS (SELECT 1 FROM compute_auction.round_skips AS k WHERE k.round_id = r.round_id AND k.bid_id = $1),
       ",
    micros_sql!("r.cleared_at"),
    ", to_jsonb(r.cleared_at)
  FROM compute_auction.compute_auction_rounds AS r
 WHERE r.round_id = $2"
);

/// How many open, unexpired bids rank ahead of ($1 price, $2 placed_at, $3 id), counted up to
/// $4: a range scan of the book index.
const AHEAD: &str = concat!(
    "
SELECT count(*) FROM (
    SELECT 1 FROM compute_auction.compute_auction_bids
     WHERE status = ",
    bid_status_sql!(open),
    " AND ttl_at > now()
       AND max_price_tokens >= $1
       AND (max_price_tokens > $1 OR (placed_at, id) < ($2::timestamptz, $3::bigint))
     LIMIT $4) AS a"
);

/// The planner's statistics of the bids' prices and the open bids' count, for the estimate of
/// a rank beyond the exact count's limit.
const PRICE_STATS: &str = concat!(
    "
SELECT s.most_common_vals::text::bigint[], s.most_common_freqs::float8[], s.histogram_bounds::text::bigint[],
       (coalesce((SELECT open_bids FROM compute_auction.open_bid_count WHERE id = 1), 0) + ",
    unfolded_sql!("delta"),
    ")::bigint
  FROM (SELECT 1) AS one
  LEFT JOIN pg_catalog.pg_stats AS s
    ON s.schemaname = 'compute_auction' AND s.tablename = 'compute_auction_bids'
   AND s.attname = 'max_price_tokens'"
);

/// The reserve of the $1-th cheapest slot that is or will be free (idle, or assigned and not
/// asked to retire).
const NTH_RESERVE: &str = "
SELECT reserve_price_tokens FROM compute_auction.compute_slots
 WHERE status = 'idle' OR (status = 'assigned' AND NOT retire_requested)
 ORDER BY reserve_price_tokens
 OFFSET $1 - 1 LIMIT 1";

/// One round of the story.
struct Entry {
    facts: RoundFacts,
    reason: Reason,
    bid_price: i64,
    cleared_at: Value,
    /// at the bid's current price and time priority (the last stretch of its price history)
    current: bool,
}

impl Entry {
    fn to_json(&self, won_slot: Option<&str>) -> Value {
        let mut v = json!({
            "round_id": self.facts.round_id,
            "cleared_at": self.cleared_at,
            "clearing_price_tokens": self.facts.price,
            "reason": self.reason.code(),
            "bid_price_tokens": self.bid_price,
            "slots_offered": self.facts.slots_offered,
            "slots_filled": self.facts.slots_filled,
        });
        match self.reason {
            Reason::Won => v["slot_id"] = won_slot.into(),
            Reason::BelowReserve => v["reserve_tokens"] = self.facts.unfilled_reserve_min.into(),
            _ => {}
        }
        v
    }
}

/// Any bid's status, prices and story: its rank in the book, the slots it would need, the
/// rounds it took part in with the reason it did not win each, and the one reason code that
/// sums it up (docs/SQL_API.md#bid_status).
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn bid_status(bid_id: Option<i64>) -> pgrx::JsonB {
    let id = or_raise!(validate::required("bid_id", bid_id));
    pgrx::JsonB(spi::with_read(|c| story_of(c, id)))
}

/// Bid `id`'s bid_status (P0002 for an unknown bid).
fn story_of(c: &SpiClient<'_>, id: i64) -> Value {
    let t = spi::read(c, BID, &[id.into()]);
    if t.is_empty() {
        not_found!("bid", &id.to_string());
    }
    let t = t.first();
    let mut out = spi::get::<pgrx::JsonB>(&t, 1).map(|j| j.0).unwrap_or(Value::Null);
    let status: String = spi::get_req(&t, 2);
    let price: i64 = spi::get_req(&t, 3);
    let placed_us: i64 = spi::get_req(&t, 4);
    let ttl_passed: bool = spi::get_req(&t, 5);
    let stored_last: Option<String> = spi::get(&t, 6);
    let ttl_at: TimestampWithTimeZone = spi::get_req(&t, 7);
    let changed_at: TimestampWithTimeZone = spi::get_req(&t, 8);
    let won_round: Option<i64> = spi::get(&t, 9);
    let won_at: Option<TimestampWithTimeZone> = spi::get(&t, 10);
    let won_price: Option<i64> = spi::get(&t, 11);
    let won_slot: Option<String> = spi::get(&t, 12);
    let placed_at: TimestampWithTimeZone = spi::get_req(&t, 13);
    let is = |s: &str| status == s;
    let cancelled = is(compute_auction_core::bid_status_name!(cancelled));
    let expired = is(compute_auction_core::bid_status_name!(expired));
    let open = is(compute_auction_core::bid_status_name!(open));

    // the price history, newest changes first, then oldest first with the price after each
    // (escrow and release rows only: after the last of them the bid held its price, or 0
    // once cancelled)
    let args: [DatumWithOid<'_>; 2] = [id.into(), STORY_PRICE_CHANGES.into()];
    let rows: Vec<(i64, i64, TimestampWithTimeZone)> =
        spi::read(c, PRICE_CHANGES, &args).map(|r| (spi::req(&r, 1), spi::req(&r, 2), spi::req(&r, 3))).collect();
    let mut after = if cancelled { 0 } else { price };
    let mut changes: Vec<(i64, i64)> = Vec::with_capacity(rows.len());
    for (at, delta, _) in &rows {
        changes.push((*at, after));
        after = after.saturating_sub(*delta);
    }
    changes.reverse();
    let history = story::price_history(&changes, price, placed_us);
    // the story starts at the oldest price change read (or the bid's placement)
    let start = rows.last().map_or(placed_at, |r| r.2);
    // and ends at the round it won, its cancel, or its TTL, whichever came
    let end = match (won_at, cancelled) {
        (Some(w), _) => w,
        (None, true) => changed_at.min(ttl_at),
        (None, false) => ttl_at,
    };

    let limit = STORY_ROUNDS + 1;
    let args: [DatumWithOid<'_>; 5] = [id.into(), start.into(), end.into(), limit.into(), won_round.into()];
    let round = |r: pgrx::spi::SpiHeapTupleData<'_>| -> (RoundFacts, bool, i64, Value) {
        let winner = match (spi::col::<i64>(&r, 6), spi::col::<i64>(&r, 7), spi::col::<i64>(&r, 8)) {
            (Some(id), Some(price), Some(placed_at)) => Some(Standing { price, placed_at, id }),
            _ => None,
        };
        let facts = RoundFacts {
            round_id: spi::req(&r, 1),
            slots_offered: i64::from(spi::req::<i32>(&r, 2)),
            slots_filled: i64::from(spi::req::<i32>(&r, 3)),
            price: spi::col(&r, 4),
            unfilled_reserve_min: spi::col(&r, 5),
            last_winner: winner,
        };
        let cleared_at = spi::col::<pgrx::JsonB>(&r, 11).map_or(Value::Null, |j| j.0);
        (facts, spi::req(&r, 9), spi::req(&r, 10), cleared_at)
    };
    // the round it won first (the newest of its story), then the others newest first
    let mut read: Vec<(RoundFacts, bool, i64, Value)> = match won_round {
        Some(w) => {
            let a: [DatumWithOid<'_>; 2] = [id.into(), w.into()];
            spi::read(c, ROUND_BY_ID, &a).map(round).collect()
        }
        None => Vec::new(),
    };
    read.extend(spi::read(c, ROUNDS, &args).map(round));
    let truncated = tokens::count(read.len()) > STORY_ROUNDS;
    let last_stretch = history.last().map(|h| (h.price, h.placed_at));
    let mut entries: Vec<Entry> = Vec::new();
    for (facts, skipped, at, cleared_at) in read.into_iter().take(usize::try_from(STORY_ROUNDS).unwrap_or(0)) {
        let Some(standing) = story::standing_at(&history, at, id) else { continue };
        let reason = if Some(facts.round_id) == won_round {
            Some(Reason::Won)
        } else {
            story::reason_in_round(&facts, &standing, skipped)
        };
        if let Some(reason) = reason {
            let current = last_stretch == Some((standing.price, standing.placed_at));
            entries.push(Entry { facts, reason, bid_price: standing.price, cleared_at, current });
        }
    }
    entries.reverse(); // oldest first

    let latest = entries.last();
    // the bid's one reason: its end, or for an open bid the latest round it took part in
    // at its current price (none: it waits for its first round)
    let current = latest.filter(|e| e.current);
    let reason = if won_round.is_some() {
        Some(Reason::Won)
    } else if cancelled {
        Some(Reason::Cancelled)
    } else if expired || (open && ttl_passed) {
        Some(Reason::Expired)
    } else {
        current.map(|e| e.reason)
    };
    let described = latest.map(|e| e.reason.describe(&e.facts));
    let last_result = if cancelled || expired { stored_last.clone() } else { described.clone() };
    let result = match (won_round, won_price) {
        (Some(r), Some(p)) => Some(format!("won at {p} in round {r}")),
        _ => last_result.clone(),
    };
    let why_not_won = if !open {
        None
    } else if ttl_passed {
        Some("expired; refund pending".to_string())
    } else {
        match current {
            Some(e) => Some(format!("{}; waiting for the next round", e.reason.describe(&e.facts))),
            None => Some("no round has taken it yet; waiting for the next round".to_string()),
        }
    };

    // where it stands in the book now (open and unexpired bids only)
    let (mut ahead, mut estimated, mut slots_needed) = (None::<i64>, false, None::<i64>);
    if open && !ttl_passed {
        // exact up to `limit` ahead: one more is counted to tell `limit` from more
        let limit = i64::from(MAX_ORDER_BOOK_DEPTH);
        let args: [DatumWithOid<'_>; 4] = [price.into(), placed_at.into(), id.into(), (limit + 1).into()];
        let mut n: i64 = spi::with_custom_plan(|| spi::first(spi::read(c, AHEAD, &args), 1)).unwrap_or(0);
        if n > limit {
            let s = spi::read(c, PRICE_STATS, &[]).first();
            let vals: Vec<i64> = spi::get(&s, 1).unwrap_or_default();
            let freqs: Vec<f64> = spi::get::<Vec<f64>>(&s, 2).unwrap_or_default();
            let bounds: Vec<i64> = spi::get(&s, 3).unwrap_or_default();
            let open_bids: i64 = spi::get(&s, 4).unwrap_or(0);
            let mcv: Vec<(i64, f64)> = vals.into_iter().zip(freqs).collect();
            n = story::estimate_ahead(price, &mcv, &bounds, open_bids, limit);
            estimated = true;
        }
        ahead = Some(n);
        let rank = n.saturating_add(1);
        // with `rank` slots free at once it wins if the rank-th cheapest meets its price
        if !estimated {
            let r: Option<i64> = spi::first(spi::read(c, NTH_RESERVE, &[rank.into()]), 1);
            slots_needed = r.filter(|&reserve| reserve <= price).map(|_| rank);
        }
    }

    if let Value::Object(m) = &mut out {
        m.insert("reason".into(), reason.map(Reason::code).into());
        m.insert("rank".into(), ahead.map(|n| n.saturating_add(1)).into());
        m.insert("ahead".into(), ahead.into());
        m.insert("rank_estimated".into(), (ahead.is_some() && estimated).into());
        m.insert("slots_needed".into(), slots_needed.into());
        m.insert("rounds".into(), entries.iter().map(|e| e.to_json(won_slot.as_deref())).collect::<Vec<_>>().into());
        m.insert("rounds_truncated".into(), truncated.into());
        m.insert("last_result".into(), last_result.into());
        m.insert("result".into(), result.into());
        m.insert("why_not_won".into(), why_not_won.into());
    }
    out
}

/// A task's bids, newest first, read through the task index: (id, status).
const TASK_BIDS: &str = "
SELECT id, status FROM compute_auction.compute_auction_bids WHERE task_id = $1 ORDER BY id DESC LIMIT $2";

/// A task's bids and the story of its newest (docs/SQL_API.md#task_status): what the
/// dashboard's bid lookup shows for a task id.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn task_status(task_id: Option<&str>) -> pgrx::JsonB {
    let task = or_raise!(validate::required("task_id", task_id));
    or_raise!(validate::id("task_id", task));
    pgrx::JsonB(spi::with_read(|c| {
        let args: [DatumWithOid<'_>; 2] = [task.into(), (TASK_BIDS_MAX + 1).into()];
        let bids: Vec<(i64, String)> =
            spi::read(c, TASK_BIDS, &args).map(|r| (spi::req(&r, 1), spi::req(&r, 2))).collect();
        let Some(&(newest, _)) = bids.first() else { not_found!("task", task) };
        let truncated = tokens::count(bids.len()) > TASK_BIDS_MAX;
        let listed: Vec<Value> = bids
            .iter()
            .take(usize::try_from(TASK_BIDS_MAX).unwrap_or(0))
            .map(|(id, status)| json!({"bid_id": id, "status": status}))
            .collect();
        json!({
            "task_id": task,
            "bids": listed,
            "bids_truncated": truncated,
            "bid": story_of(c, newest),
        })
    }))
}
