//! clear_round: the uniform (k+1)th-price clearing of one round, over SPI. The rule itself is
//! `compute_auction_core::clearing`; this module reads the book, locks what it uses, and writes
//! the round, its clears and the winners' new states.
//!
//! Lock order: clearing advisory lock -> slots (slot_id order) -> bids (id order). Accounts are
//! not touched: a winner's escrow stays held until settle or abort.

use std::collections::HashSet;
use std::time::Instant;

use compute_auction_core::clearing::{self as rule, RunnerUpReason, Slot};
use compute_auction_core::{tokens, validate};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::errors::{self, Code, OrRaise};
use crate::spi;

const LOCK_CLEARING: &str = "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)";

const FOLD_COUNT: &str = "
WITH d AS (DELETE FROM compute_auction.open_bid_count_deltas RETURNING delta)
INSERT INTO compute_auction.open_bid_count (id, open_bids)
SELECT 1, coalesce(sum(delta), 0) FROM d
ON CONFLICT (id) DO UPDATE SET open_bids = compute_auction.open_bid_count.open_bids + EXCLUDED.open_bids";

const LOCK_SLOTS: &str = "
SELECT slot_id, reserve_price_tokens, (extract(epoch FROM available_at) * 1000000)::bigint
  FROM compute_auction.compute_slots
 WHERE status = 'idle' AND available_at <= $1
 ORDER BY slot_id
   FOR UPDATE";

// `= ANY (ARRAY(...))`, not `IN (...)`: with a generic plan the IN form can become a hash
// semi-join over a sequential scan of the whole book; this form is a primary-key index scan
// whatever the plan.
const LOCK_BIDS: &str = "
SELECT id
  FROM compute_auction.compute_auction_bids
 WHERE id = ANY (ARRAY(SELECT id FROM compute_auction.compute_auction_bids
                        WHERE status = 'open' AND ttl_at > $1
                        ORDER BY max_price_tokens DESC, placed_at, id
                        LIMIT $2))
 ORDER BY id
   FOR UPDATE";

const READ_BIDS: &str = "
SELECT id, max_price_tokens, task_id, bidder_id
  FROM compute_auction.compute_auction_bids
 WHERE status = 'open' AND ttl_at > $1
 ORDER BY max_price_tokens DESC, placed_at, id
 LIMIT $2";

const ELIGIBLE: &str = "
SELECT (coalesce((SELECT open_bids FROM compute_auction.open_bid_count WHERE id = 1), 0)
      + coalesce((SELECT sum(delta) FROM compute_auction.open_bid_count_deltas), 0)
      - (SELECT count(*) FROM compute_auction.compute_auction_bids WHERE status = 'open' AND ttl_at <= $1))::bigint";

const INSERT_ROUND: &str = "
INSERT INTO compute_auction.compute_auction_rounds
       (cleared_at, slots_offered, bids_eligible, slots_filled, clearing_price_tokens)
VALUES ($1, $2, $3, $4, $5)
RETURNING round_id";

const WRITE_WINNERS: &str = "
WITH w AS (
    SELECT * FROM unnest($1::bigint[], $2::text[]) AS w(bid_id, slot_id)
), b AS (
    UPDATE compute_auction.compute_auction_bids AS b
       SET status = 'won', round_id = $3, updated_at = now()
      FROM w
     WHERE b.id = w.bid_id AND b.status = 'open'
 RETURNING b.id, b.bidder_id, b.task_id, b.max_price_tokens, w.slot_id
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
    SELECT b.slot_id, $3, b.id, b.bidder_id, b.task_id, $5, $4, b.max_price_tokens, $6 FROM b
 RETURNING 1
), d AS (
    INSERT INTO compute_auction.open_bid_count_deltas (delta) VALUES ($7)
)
SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM s), (SELECT count(*) FROM c)";

/// A bid as read from the book.
struct BookBid {
    id: i64,
    price: i64,
    task: String,
    bidder: String,
}

/// How many times the book is re-read when concurrent writers change it under us.
const MAX_LOCK_ATTEMPTS: usize = 20;

/// Locks the available slots and the top `n + 1` eligible bids, and returns them read after the
/// locks were granted (so their values are current and cannot change before commit).
///
/// Bids are locked in id order. When the book changed while we waited (a bid was cancelled,
/// replaced or outbid by a new one), the re-read can name a bid we do not hold, possibly with a
/// lower id than one we do: taking it now would break the id order and could deadlock. So each
/// attempt runs in a subtransaction that is rolled back (releasing its bid locks) before the
/// next attempt locks the new top of the book, again in id order from scratch.
fn lock_book(c: &mut SpiClient<'_>, now: TimestampWithTimeZone) -> (Vec<Slot>, Vec<BookBid>) {
    let mut slots: Vec<Slot> = spi::run(c, LOCK_SLOTS, &[now.into()])
        .map(|r| Slot { id: spi::req(&r, 1), reserve: spi::req(&r, 2), available_at: spi::req(&r, 3) })
        .collect();
    slots.sort_by(rule::slot_order);
    if slots.is_empty() {
        return (slots, Vec::new());
    }
    let want = tokens::count(slots.len()) + 1;
    for _ in 0..MAX_LOCK_ATTEMPTS {
        let stable = spi::in_subtransaction(|| {
            let args: [DatumWithOid<'_>; 2] = [now.into(), want.into()];
            let locked: HashSet<i64> = spi::run(c, LOCK_BIDS, &args).map(|r| spi::req::<i64>(&r, 1)).collect();
            let args: [DatumWithOid<'_>; 2] = [now.into(), want.into()];
            let bids: Vec<BookBid> = spi::run(c, READ_BIDS, &args)
                .map(|r| BookBid {
                    id: spi::req(&r, 1),
                    price: spi::req(&r, 2),
                    task: spi::req(&r, 3),
                    bidder: spi::req(&r, 4),
                })
                .collect();
            if bids.iter().all(|b| locked.contains(&b.id)) {
                (true, Some(bids))
            } else {
                (false, None)
            }
        });
        if let Some(bids) = stable {
            return (slots, bids);
        }
    }
    errors::raise(
        Code::ERRCODE_T_R_SERIALIZATION_FAILURE,
        "the order book kept changing while clear_round locked it",
        Some("retry the round"),
    )
}

/// Clears one round at time `now`: fills the available slots with the highest eligible bids at
/// one uniform price, the (k+1)-th highest bid (or the k-th slot's reserve if higher).
#[pg_extern(security_definer)]
#[search_path(@extschema@, pg_catalog, pg_temp)]
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
    let now = validate::required("now", now).or_raise();
    TableIterator::new(spi::with(|c| clear(c, now)))
}

/// The body of clear_round, shared with run_cycle.
pub fn clear(c: &mut SpiClient<'_>, now: TimestampWithTimeZone) -> Vec<(String, i64, String, String, i64)> {
    let lock: [DatumWithOid<'_>; 2] = [spi::LOCK_CLASS.into(), spi::LOCK_CLEARING.into()];
    spi::run(c, LOCK_CLEARING, &lock);
    let started = Instant::now();
    spi::run(c, FOLD_COUNT, &[]);

    let (slots, bids) = lock_book(c, now);
    let prices: Vec<i64> = bids.iter().map(|b| b.price).collect();
    let reserves: Vec<i64> = slots.iter().map(|s| s.reserve).collect();
    let outcome = rule::clear(&prices, &reserves);
    let k = outcome.filled;

    let eligible: i64 = spi::first::<i64>(spi::run(c, ELIGIBLE, &[now.into()]), 1).unwrap_or(0);
    let eligible = eligible.clamp(0, i32::MAX as i64) as i32;
    let args: [DatumWithOid<'_>; 5] = [
        now.into(),
        tokens::count_i32(slots.len()).into(),
        eligible.into(),
        tokens::count_i32(k).into(),
        outcome.price.into(),
    ];
    let round_id: i64 = spi::first(spi::run(c, INSERT_ROUND, &args), 1)
        .unwrap_or_else(|| errors::internal("insert round returned nothing"));

    let mut out = Vec::with_capacity(k);
    if let Some(price) = outcome.price {
        let runner_up = outcome.runner_up.map(|i| bids[i].task.as_str());
        let bid_ids: Vec<i64> = bids[..k].iter().map(|b| b.id).collect();
        let slot_ids: Vec<String> = slots[..k].iter().map(|s| s.id.clone()).collect();
        // last_result is written only on the (k+1)-th bid; a winner's result is its clear row
        let args: [DatumWithOid<'_>; 7] = [
            bid_ids.into(),
            slot_ids.into(),
            round_id.into(),
            price.into(),
            runner_up.into(),
            now.into(),
            (-tokens::count(k)).into(),
        ];
        let t = spi::run(c, WRITE_WINNERS, &args).first();
        let (b, s, cl): (i64, i64, i64) = (spi::get_req(&t, 1), spi::get_req(&t, 2), spi::get_req(&t, 3));
        let want = tokens::count(k);
        if b != want || s != want || cl != want {
            // Impossible while the rows are locked; refuse to commit a half-written round.
            errors::internal(format!("round {round_id}: {k} winners but wrote {b} bids, {s} slots, {cl} clears"));
        }
        for (i, bid) in bids[..k].iter().enumerate() {
            out.push((slots[i].id.clone(), bid.id, bid.task.clone(), bid.bidder.clone(), price));
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
    if k > 0 {
        let args: [DatumWithOid<'_>; 3] = [round_id.into(), outcome.price.into(), tokens::count(k).into()];
        spi::run(
            c,
            "SELECT pg_catalog.pg_notify('compute_auction_cleared',
                 pg_catalog.json_build_object('round_id', $1, 'clearing_price_tokens', $2,
                                              'slots_filled', $3)::text)",
            &args,
        );
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let args: [DatumWithOid<'_>; 2] = [round_id.into(), ms.into()];
    spi::run(c, "UPDATE compute_auction.compute_auction_rounds SET duration_ms = $2 WHERE round_id = $1", &args);
    out
}
