//! clear_round: the uniform (k+1)th-price clearing of one round, over SPI. The rule itself is
//! `compute_auction_core::clearing`; this module reads the book, locks what it uses, and writes
//! the round, its clears and the winners' new states.
//!
//! Lock order: clearing advisory lock -> slots (slot_id order) -> the top bids it can lock. Slots
//! and bids are locked with SKIP LOCKED: the round never waits for a row another transaction
//! holds (docs/CONCURRENCY.md, the liveness rules). Accounts are not touched: a winner's escrow
//! stays held until settle or abort.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use compute_auction_core::clearing::{self as rule, RunnerUpReason, Slot};
use compute_auction_core::limits::locks;
use compute_auction_core::notices as notice;
use compute_auction_core::{bid_status_sql, book_order_sql, tokens, validate};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::book;
use crate::errors::Code;
use crate::notices::{self, channels};
use crate::spi;
use crate::summaries;
use crate::times;

const LOCK_CLEARING: &str = "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)";

/// Folds the counters' deltas (open bids, tokens refunded) of finished transactions into their
/// base row: those from folded_below up to this statement's snapshot xmin (every transaction
/// below it has committed, and its deltas are visible, or aborted), read through the xid index
/// and deleted, and folded_below moves up to that xmin. Deltas of transactions still running,
/// or above the xmin, wait for a later round. No delta row is locked by anyone (they are only
/// inserted), so the DELETE never waits; the rows it leaves dead are below the new folded_below
/// and never read again.
const FOLD_COUNT: &str = concat!(
    "
WITH s AS MATERIALIZED (
    SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()) AS upto,
           coalesce((SELECT folded_below FROM compute_auction.open_bid_count WHERE id = 1),
                    '0'::pg_catalog.xid8) AS since
), d AS (
    DELETE FROM compute_auction.open_bid_count_deltas
     WHERE xid >= (SELECT since FROM s) AND xid < (SELECT upto FROM s)
 RETURNING delta, tokens_refunded
)
INSERT INTO compute_auction.open_bid_count (id, open_bids, tokens_refunded, folded_below)
SELECT 1, coalesce(sum(delta), 0), least(coalesce(sum(tokens_refunded), 0), ",
    refunded_cap_sql!(),
    ")::bigint,
       (SELECT greatest(since, upto) FROM s) FROM d
ON CONFLICT (id) DO UPDATE
   SET open_bids       = compute_auction.open_bid_count.open_bids + EXCLUDED.open_bids,
       tokens_refunded = least(compute_auction.open_bid_count.tokens_refunded::numeric + EXCLUDED.tokens_refunded,
                               ",
    refunded_cap_sql!(),
    ")::bigint,
       folded_below    = EXCLUDED.folded_below"
);

// SKIP LOCKED: a slot row another transaction holds (a runner's uncommitted settle, an
// operator's offer) is not offered this round instead of being waited for.
const LOCK_SLOTS: &str = "
SELECT slot_id, reserve_price_tokens, (extract(epoch FROM available_at) * 1000000)::bigint
  FROM compute_auction.compute_slots
 WHERE status = 'idle' AND available_at <= $1
 ORDER BY slot_id
   FOR UPDATE SKIP LOCKED";

/// The top $2 bids of the book this round can lock, read after they were locked. Rows other
/// transactions hold are passed over, never waited for; the lock is taken in book order, which
/// cannot deadlock because nothing here waits.
const LOCK_TOP: &str = concat!(
    "
SELECT id, max_price_tokens, task_id, bidder_id, (extract(epoch FROM placed_at) * 1000000)::bigint, placed_at
  FROM compute_auction.compute_auction_bids
 WHERE status = ",
    bid_status_sql!(open),
    " AND ttl_at > $1
 ORDER BY ",
    book_order_sql!(),
    "
 LIMIT $2
   FOR UPDATE SKIP LOCKED"
);

/// A fresh read of the open bids ranked ahead of the last candidate ($3, $4, $5: its price,
/// placed_at, id) that this round does not hold ($2): bids another transaction holds, or bids
/// that changed since LOCK_TOP's snapshot. `max_price_tokens >= $3` keeps it a range scan of
/// the book index, in a plan made for the round's arguments (spi::with_custom_plan).
const AHEAD: &str = concat!(
    "
SELECT id, max_price_tokens, task_id, bidder_id, (extract(epoch FROM placed_at) * 1000000)::bigint
  FROM compute_auction.compute_auction_bids
 WHERE status = ",
    bid_status_sql!(open),
    " AND ttl_at > $1 AND id <> ALL ($2)
   AND max_price_tokens >= $3
   AND (max_price_tokens > $3 OR (placed_at, id) < ($4::timestamptz, $5::bigint))"
);

/// AHEAD when the lockable book ran out (no last candidate): every open bid this round does not
/// hold (fewer than the round wants). A statement of its own, so AHEAD's price bound is always
/// there for its plan, which is made for each round's arguments (spi::with_custom_plan).
const AHEAD_ALL: &str = concat!(
    "
SELECT id, max_price_tokens, task_id, bidder_id, (extract(epoch FROM placed_at) * 1000000)::bigint
  FROM compute_auction.compute_auction_bids
 WHERE status = ",
    bid_status_sql!(open),
    " AND ttl_at > $1 AND id <> ALL ($2)"
);

/// Which of the bids ahead this round can lock now: any it gets changed after LOCK_TOP looked.
const PROBE: &str = concat!(
    "
SELECT id FROM compute_auction.compute_auction_bids
 WHERE id = ANY ($1) AND status = ",
    bid_status_sql!(open),
    " AND ttl_at > $2
   FOR UPDATE SKIP LOCKED"
);

const ELIGIBLE: &str = concat!(
    "
SELECT (coalesce((SELECT open_bids FROM compute_auction.open_bid_count WHERE id = 1), 0)
      + ",
    unfolded_sql!("delta"),
    "
      - (SELECT count(*) FROM compute_auction.compute_auction_bids WHERE status = ",
    bid_status_sql!(open),
    " AND ttl_at <= $1))::bigint"
);

const INSERT_SKIPS: &str = "
INSERT INTO compute_auction.round_skips (round_id, bid_id) SELECT $1, unnest($2::bigint[])";

/// The slots and clears of a round's winners (the bids' own transition is book::win).
const WRITE_WINNERS: &str = "
WITH w AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[])
           AS w(bid_id, slot_id, bidder_id, task_id, max_price_tokens)
), s AS (
    UPDATE compute_auction.compute_slots AS s
       SET status = 'assigned', updated_at = now()
      FROM w
     WHERE s.slot_id = w.slot_id AND s.status = 'idle'
 RETURNING s.slot_id
), c AS (
    INSERT INTO compute_auction.compute_auction_clears
           (slot_id, round_id, bid_id, bidder_id, winning_task_id, runner_up_task_id,
            clearing_price_tokens, max_price_tokens, slot_started_at)
    SELECT w.slot_id, $6, w.bid_id, w.bidder_id, w.task_id, $8, $7, w.max_price_tokens, $9 FROM w
 RETURNING 1
)
SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM c)";

/// A bid as read from the book.
struct BookBid {
    id: i64,
    price: i64,
    task: String,
    bidder: String,
    /// placed_at in microseconds since the epoch (time priority)
    placed_at: i64,
    /// placed_at itself, for the bids this round locked (LOCK_TOP): the round records its last
    /// winner's
    placed: Option<TimestampWithTimeZone>,
}

impl BookBid {
    fn read(r: &pgrx::spi::SpiHeapTupleData<'_>) -> Self {
        BookBid {
            id: spi::req(r, 1),
            price: spi::req(r, 2),
            task: spi::req(r, 3),
            bidder: spi::req(r, 4),
            placed_at: spi::req(r, 5),
            placed: None,
        }
    }

    fn rule(&self) -> rule::Bid {
        rule::Bid { id: self.id, price: self.price, placed_at: self.placed_at }
    }
}

/// What a round locked: its slots, its candidate bids (at most slots + 1, in book order) and the
/// bids it passed over because another transaction held them.
struct Book {
    slots: Vec<Slot>,
    bids: Vec<BookBid>,
    skipped: Vec<i64>,
}

/// How many times the book is re-read when concurrent commits change it under us.
const MAX_LOCK_ATTEMPTS: usize = 20;

/// Locks the available slots and the top `n + 1` bids this round can lock (n slots), and
/// returns them read after the locks were granted (so their values are current and cannot change
/// before commit), with the bids it passed over. Nothing here waits for a row another
/// transaction holds: such a slot is not offered, such a bid is skipped (`rule::scan`).
///
/// Each attempt runs in a subtransaction. It locks the top of the lockable book, then reads the
/// bids ranked ahead of its last candidate that it does not hold. If it can lock any of those,
/// they changed after it looked (a bid placed, raised or lowered meanwhile): the attempt is
/// rolled back, releasing its bid locks, and the next one starts over. Otherwise every one of
/// them is held by another transaction and the attempt is the round's book.
fn lock_book(c: &mut SpiClient<'_>, now: TimestampWithTimeZone) -> Book {
    let mut slots: Vec<Slot> = spi::run(c, LOCK_SLOTS, &[now.into()])
        .map(|r| Slot { id: spi::req(&r, 1), reserve: spi::req(&r, 2), available_at: spi::req(&r, 3) })
        .collect();
    slots.sort_by(rule::slot_order);
    if slots.is_empty() {
        return Book { slots, bids: Vec::new(), skipped: Vec::new() };
    }
    let want = slots.len() + 1;
    for _ in 0..MAX_LOCK_ATTEMPTS {
        let stable = spi::in_subtransaction(|| {
            let args: [DatumWithOid<'_>; 2] = [now.into(), tokens::count(want).into()];
            // the bids with their placed_at as a timestamp, then in book order by current values:
            // the rows are ours now, so they stay put
            let mut got: Vec<BookBid> = spi::run(c, LOCK_TOP, &args)
                .map(|r| BookBid { placed: Some(spi::req(&r, 6)), ..BookBid::read(&r) })
                .collect();
            got.sort_by(|a, b| rule::bid_order(&a.rule(), &b.rule()));
            // the last candidate bounds the scan, unless the lockable book ran out first
            let last = got.last().filter(|_| got.len() == want).and_then(|b| Some((b.price, b.placed?, b.id)));
            let held: Vec<i64> = got.iter().map(|b| b.id).collect();
            let ahead: Vec<BookBid> = match last {
                Some((price, placed, id)) => {
                    let args: [DatumWithOid<'_>; 5] = [now.into(), held.into(), price.into(), placed.into(), id.into()];
                    spi::with_custom_plan(|| spi::run(c, AHEAD, &args).map(|r| BookBid::read(&r)).collect())
                }
                None => {
                    let args: [DatumWithOid<'_>; 2] = [now.into(), held.into()];
                    spi::run(c, AHEAD_ALL, &args).map(|r| BookBid::read(&r)).collect()
                }
            };
            if !ahead.is_empty() {
                let ids: Vec<i64> = ahead.iter().map(|b| b.id).collect();
                let args: [DatumWithOid<'_>; 2] = [ids.into(), now.into()];
                if !spi::run(c, PROBE, &args).is_empty() {
                    return (false, None); // the book changed under us: start over
                }
            }
            // every bid ahead is held by another transaction: the rule passes over them
            let locked_out: HashSet<i64> = ahead.iter().map(|b| b.id).collect();
            let book: Vec<rule::Bid> = got.iter().chain(&ahead).map(BookBid::rule).collect();
            let sc = rule::scan(&book, &locked_out, want);
            let mut by_id: HashMap<i64, BookBid> = got.into_iter().map(|b| (b.id, b)).collect();
            let bids: Vec<BookBid> = sc.candidates.iter().filter_map(|b| by_id.remove(&b.id)).collect();
            (true, Some((bids, sc.skipped)))
        });
        if let Some((bids, skipped)) = stable {
            return Book { slots, bids, skipped };
        }
    }
    raise!(
        Code::ERRCODE_T_R_SERIALIZATION_FAILURE,
        "the order book kept changing while clear_round locked it",
        Some("Retry the round."),
    )
}

/// Clears one round at time `now`: fills the available slots with the highest eligible bids at
/// one uniform price, the (k+1)-th highest bid (or the k-th slot's reserve if higher).
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn clear_round(
    now: default!(Option<TimestampWithTimeZone>, "now()"),
) -> TableIterator<
    'static,
    (
        name!(slot_id, String),
        name!(bid_id, i64),
        name!(task_id, String),
        name!(bidder_id, String),
        name!(clearing_price_tokens, i64),
    ),
> {
    let now = times::timestamp("now", or_raise!(validate::required("now", now)));
    let cleared = spi::with(|c| clear(c, now));
    TableIterator::new(
        cleared.winners.into_iter().map(|w| (w.slot_id, w.bid_id, w.task_id, w.bidder_id, w.clearing_price_tokens)),
    )
}

/// Clears one round exactly as clear_round does and returns it as JSON: `round` (the row it
/// wrote, as last_round() shows it) and `winners` (clear_round's rows), so a scheduler needs no
/// second read to learn which round it cleared.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn clear_round_summary(now: default!(Option<TimestampWithTimeZone>, "now()")) -> pgrx::JsonB {
    let now = times::timestamp("now", or_raise!(validate::required("now", now)));
    pgrx::JsonB(spi::with(|c| {
        let cleared = clear(c, now);
        cleared.to_json(c)
    }))
}

/// One winner of a round: clear_round's result row.
pub struct Winner {
    pub slot_id: String,
    pub bid_id: i64,
    pub task_id: String,
    pub bidder_id: String,
    pub clearing_price_tokens: i64,
}

/// What one round did.
pub struct Cleared {
    pub round_id: i64,
    pub winners: Vec<Winner>,
}

impl Cleared {
    /// `{"round": {...}, "winners": [...]}`, the shape clear_round_summary and run_cycle share.
    pub fn to_json(&self, c: &mut SpiClient<'_>) -> serde_json::Value {
        serde_json::json!({
            "round": crate::reporting::round_json(c, Some(self.round_id)),
            "winners": self.winners.iter().map(|w| serde_json::json!({
                "slot_id": w.slot_id, "bid_id": w.bid_id, "task_id": w.task_id,
                "bidder_id": w.bidder_id, "clearing_price_tokens": w.clearing_price_tokens,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The body of clear_round, shared with clear_round_summary and run_cycle.
pub fn clear(c: &mut SpiClient<'_>, now: TimestampWithTimeZone) -> Cleared {
    let lock: [DatumWithOid<'_>; 2] = [locks::CLASS.into(), locks::CLEARING.into()];
    spi::run(c, LOCK_CLEARING, &lock);
    let started = Instant::now();
    // the counters' reads must stay range scans of the xid index (spi::without_seqscan)
    spi::without_seqscan(|| spi::run(c, FOLD_COUNT, &[]));

    let Book { slots, bids, skipped } = lock_book(c, now);
    let prices: Vec<i64> = bids.iter().map(|b| b.price).collect();
    let reserves: Vec<i64> = slots.iter().map(|s| s.reserve).collect();
    let outcome = rule::clear(&prices, &reserves);
    let k = outcome.filled;

    // bids_eligible = open unexpired bids - the bids this round skipped
    let open: i64 = spi::without_seqscan(|| spi::first::<i64>(spi::run(c, ELIGIBLE, &[now.into()]), 1)).unwrap_or(0);
    let eligible = open.saturating_sub(tokens::count(skipped.len()));
    let eligible = eligible.clamp(0, i32::MAX as i64) as i32;
    // the round's facts for the bids' stories (compute_auction_core::story): the lowest reserve
    // it leaves unfilled and its last winner
    let unfilled_reserve_min = slots[k..].iter().map(|s| s.reserve).min();
    let last_winner = k.checked_sub(1).and_then(|i| bids.get(i));
    let args: [DatumWithOid<'_>; 9] = [
        now.into(),
        tokens::count_i32(slots.len()).into(),
        eligible.into(),
        tokens::count_i32(k).into(),
        outcome.price.into(),
        unfilled_reserve_min.into(),
        last_winner.map(|b| b.id).into(),
        last_winner.map(|b| b.price).into(),
        last_winner.and_then(|b| b.placed).into(),
    ];
    let round_id: i64 = spi::first(spi::run(c, summaries::RECORD_ROUND, &args), 1)
        .unwrap_or_else(|| internal!("insert round returned nothing"));
    summaries::keep_up(c, round_id);
    if !skipped.is_empty() {
        let args: [DatumWithOid<'_>; 2] = [round_id.into(), skipped.into()];
        spi::run(c, INSERT_SKIPS, &args);
    }

    let mut winners = Vec::with_capacity(k);
    if let Some(price) = outcome.price {
        let won = &bids[..k];
        let bid_ids: Vec<i64> = won.iter().map(|b| b.id).collect();
        book::win(c, &bid_ids, round_id);
        let runner_up = outcome.runner_up.map(|i| bids[i].task.as_str());
        // last_result is written only on the (k+1)-th bid; a winner's result is its clear row
        let args: [DatumWithOid<'_>; 9] = [
            bid_ids.into(),
            slots[..k].iter().map(|s| s.id.as_str()).collect::<Vec<_>>().into(),
            won.iter().map(|b| b.bidder.as_str()).collect::<Vec<_>>().into(),
            won.iter().map(|b| b.task.as_str()).collect::<Vec<_>>().into(),
            won.iter().map(|b| b.price).collect::<Vec<_>>().into(),
            round_id.into(),
            price.into(),
            runner_up.into(),
            now.into(),
        ];
        let t = spi::run(c, WRITE_WINNERS, &args).first();
        let (s, cl): (i64, i64) = (spi::get_req(&t, 1), spi::get_req(&t, 2));
        let want = tokens::count(k);
        if s != want || cl != want {
            // Impossible while the rows are locked; refuse to commit a half-written round.
            internal!(format!("round {round_id}: {k} winners but wrote {s} slots, {cl} clears"));
        }
        for (slot, bid) in slots.iter().zip(won) {
            winners.push(Winner {
                slot_id: slot.id.clone(),
                bid_id: bid.id,
                task_id: bid.task.clone(),
                bidder_id: bid.bidder.clone(),
                clearing_price_tokens: price,
            });
        }
    }
    if let (Some(i), Some(reason)) = (outcome.runner_up, outcome.runner_up_reason) {
        let text = match reason {
            RunnerUpReason::Outbid(p) => format!("outbid at {p}"),
            RunnerUpReason::BelowReserve => "below reserve".to_string(),
        };
        let args: [DatumWithOid<'_>; 2] = [bids[i].id.into(), text.as_str().into()];
        spi::run(c, "UPDATE compute_auction.compute_auction_bids SET last_result = $2 WHERE id = $1", &args);
    }
    if let (true, Some(price)) = (k > 0, outcome.price) {
        notices::send(channels::CLEARED, &notice::cleared(round_id, price, tokens::count(k)));
        for w in &winners {
            let payload =
                notice::bid_won(w.bid_id, &w.bidder_id, &w.task_id, &w.slot_id, round_id, w.clearing_price_tokens);
            notices::send(channels::BID_WON, &payload);
        }
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let args: [DatumWithOid<'_>; 2] = [round_id.into(), ms.into()];
    spi::run(c, "UPDATE compute_auction.compute_auction_rounds SET duration_ms = $2 WHERE round_id = $1", &args);
    Cleared { round_id, winners }
}
