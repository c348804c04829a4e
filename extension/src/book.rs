//! Bid state transitions: the only code that changes a bid's status (the states are
//! `compute_auction_core::book::BidStatus`). Each transition keeps the open-bid counter
//! (`open_bid_count_deltas`) and posts, or records as pending, the wallet entries that go with
//! it through crate::ledger, so no caller can move a bid and forget either.
//!
//! | transition | status            | open count | wallet                                  |
//! |------------|-------------------|------------|-----------------------------------------|
//! | [`open`]   | -> open           | +1         | escrow the price                        |
//! | [`replace`]| open -> open      |            | escrow or release the difference        |
//! | [`cancel`] | open -> cancelled | -1         | release the price                       |
//! | [`win`]    | open -> won       | -k         | (the escrow stays held)                 |
//! | [`expire`] | open -> expired   | -n         | refund the price                        |
//! | [`finish`] | won -> settled    |            | pending: charge the clearing price, return the premium |
//! | [`finish`] | won -> aborted    |            | pending: refund the price               |
//!
//! Callers lock the rows first, in the documented order (docs/CONCURRENCY.md); the functions
//! here assume the bid and, where they post, the account are locked.

use compute_auction_core::book::BidStatus;
use compute_auction_core::notices as notice;
use compute_auction_core::{bid_status_sql, tokens};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::ledger::{self, kinds, Entry, Pending};
use crate::notices::{self, channels};
use crate::spi;

/// An `UPDATE` of bids from one status to another (`set`: the other columns it sets, `which`:
/// the rows), writing the open-bid count's delta (`delta` per bid moved: -1 for a bid leaving
/// the open book); the statement returns how many bids it moved.
macro_rules! transition_sql {
    ($from:ident -> $to:ident, set $set:literal, which $which:literal, delta $delta:literal) => {
        concat!(
            "
WITH b AS (
    UPDATE compute_auction.compute_auction_bids
       SET status = ",
            bid_status_sql!($to),
            ", ",
            $set,
            ", updated_at = now()
     WHERE ",
            $which,
            " AND status = ",
            bid_status_sql!($from),
            "
 RETURNING 1
), c AS (
    INSERT INTO compute_auction.open_bid_count_deltas (delta)
    SELECT ",
            $delta,
            " * count(*) FROM b HAVING count(*) > 0
)
SELECT count(*) FROM b"
        )
    };
}

/// The sum of column `$col` of the counter deltas not yet folded into the base row (those of
/// transactions at or above its folded_below), read through the xid index: the deltas earlier
/// rounds folded and deleted are never read again, however long vacuum takes to remove them.
macro_rules! unfolded_sql {
    ($col:literal) => {
        concat!(
            "coalesce((SELECT sum(",
            $col,
            ") FROM compute_auction.open_bid_count_deltas
                       WHERE xid >= coalesce((SELECT folded_below FROM compute_auction.open_bid_count WHERE id = 1),
                                             '0'::pg_catalog.xid8)), 0)"
        )
    };
}

/// The tokens-refunded counter's ceiling, bigint's largest value: the lifetime total saturates
/// there (summed as numeric, then capped) instead of overflowing, which would fail every later
/// round's fold and stop clearing for good. No real market reaches it; audit() compares the
/// ledger's refunds capped the same way.
macro_rules! refunded_cap_sql {
    () => {
        "9223372036854775807"
    };
}

/// A bid status read from the table.
pub fn status(s: &str) -> BidStatus {
    BidStatus::parse(s).unwrap_or_else(|| internal!(format!("unknown bid status {s:?}")))
}

/// $6: placed_at, the moment place_bid ran.
const OPEN: &str = concat!(
    "
WITH b AS (
    INSERT INTO compute_auction.compute_auction_bids
           (bidder_id, task_id, max_price_tokens, expected_value_usd, ttl_at, placed_at, status)
    VALUES ($1, $2, $3, $4, $5, $6, ",
    bid_status_sql!(open),
    ")
 RETURNING id
), c AS (
    INSERT INTO compute_auction.open_bid_count_deltas (delta) SELECT 1 FROM b
)
SELECT id FROM b"
);

/// A new open bid of `bidder` (its account locked) on `task`, escrowing `price`. Returns its id.
pub fn open(
    c: &mut SpiClient<'_>,
    bidder: &str,
    task: &str,
    price: i64,
    ev: Option<f64>,
    ttl_at: TimestampWithTimeZone,
    placed_at: TimestampWithTimeZone,
) -> i64 {
    let args: [DatumWithOid<'_>; 6] =
        [bidder.into(), task.into(), price.into(), ev.into(), ttl_at.into(), placed_at.into()];
    let id = spi::first::<i64>(spi::run(c, OPEN, &args), 1).unwrap_or_else(|| internal!("insert bid returned nothing"));
    escrow_new(c, bidder, id, price);
    id
}

/// OPEN for many bids of one bidder: $2..$4 the tasks, prices and EVs in order; each bid's
/// `placed_at` is the clock when its row is made (so they keep the given order in time
/// priority too), its TTL $5 or the default TTL ($6) after that. One delta row counts them all.
/// Returns the ids in the given order.
const OPEN_MANY: &str = concat!(
    "
WITH n AS (
    SELECT * FROM unnest($2::text[], $3::bigint[], $4::float8[]) WITH ORDINALITY AS n(task_id, price, ev, ord)
), b AS (
    INSERT INTO compute_auction.compute_auction_bids
           (bidder_id, task_id, max_price_tokens, expected_value_usd, ttl_at, placed_at, status)
    SELECT $1, n.task_id, n.price, n.ev, coalesce($5, t.t + $6), t.t, ",
    bid_status_sql!(open),
    "
      FROM n, LATERAL (SELECT pg_catalog.clock_timestamp() AS t, n.ord) AS t
     ORDER BY n.ord
 RETURNING id, task_id
), c AS (
    INSERT INTO compute_auction.open_bid_count_deltas (delta) SELECT count(*) FROM b HAVING count(*) > 0
)
SELECT array(SELECT b.id FROM b JOIN n USING (task_id) ORDER BY n.ord)"
);

/// New open bids of `bidder` (its account locked, the tasks' locks held and no live bid on any
/// of them) on `tasks` at `prices`, escrowing each in one ledger posting (ledger::post_many, in
/// the same order). Returns their ids in the given order. submit_bids_for_tasks: two statements
/// for a backlog instead of one or two per task.
pub fn open_many(
    c: &mut SpiClient<'_>,
    bidder: &str,
    tasks: &[&str],
    prices: &[i64],
    evs: &[Option<f64>],
    ttl_at: Option<TimestampWithTimeZone>,
) -> Vec<i64> {
    if tasks.is_empty() {
        return Vec::new();
    }
    let args: [DatumWithOid<'_>; 6] = [
        bidder.into(),
        tasks.to_vec().into(),
        prices.to_vec().into(),
        evs.to_vec().into(),
        ttl_at.into(),
        crate::times::seconds(compute_auction_core::limits::BID_TTL_DEFAULT_SECS).into(),
    ];
    let ids: Vec<i64> = spi::first(spi::run(c, OPEN_MANY, &args), 1).unwrap_or_default();
    if ids.len() != tasks.len() {
        internal!(format!("opened {} of {} bids", ids.len(), tasks.len()));
    }
    let entries: Vec<Entry<'_>> = ids
        .iter()
        .zip(prices)
        .map(|(&id, &price)| Entry {
            account: bidder,
            delta_balance: -price,
            delta_held: price,
            kind: kinds::ESCROW,
            bid_id: Some(id),
            reason: Some("bid placed"),
            ..Default::default()
        })
        .collect();
    ledger::post_many(c, &entries);
    ids
}

const REPLACE: &str = "
UPDATE compute_auction.compute_auction_bids
   SET max_price_tokens   = $2,
       expected_value_usd = $3,
       ttl_at             = $4,
       placed_at          = CASE WHEN max_price_tokens = $2 THEN placed_at ELSE $5 END,
       last_result        = NULL,
       updated_at         = now()
 WHERE id = $1";

/// Replaces open bid `id` (locked, price `old_price`) of `bidder` (account locked) in place: a
/// new price keeps the id but takes `placed_at` as its time priority; the escrow moves by the
/// difference.
#[allow(clippy::too_many_arguments)] // the bid's columns
pub fn replace(
    c: &mut SpiClient<'_>,
    id: i64,
    bidder: &str,
    old_price: i64,
    price: i64,
    ev: Option<f64>,
    ttl_at: TimestampWithTimeZone,
    placed_at: TimestampWithTimeZone,
) {
    let args: [DatumWithOid<'_>; 5] = [id.into(), price.into(), ev.into(), ttl_at.into(), placed_at.into()];
    spi::run(c, REPLACE, &args);
    let diff = price - old_price; // both positive i64: cannot overflow
    if diff > 0 {
        escrow(c, bidder, id, diff, kinds::ESCROW, "bid raised");
    } else if diff < 0 {
        escrow(c, bidder, id, diff, kinds::RELEASE, "bid lowered");
    }
}

/// The escrow of new bid `id` (already written, with its open-count delta) of `bidder` (account
/// locked): bids::place's way when its one-statement bid could not update the wallet.
pub fn escrow_new(c: &mut SpiClient<'_>, bidder: &str, id: i64, price: i64) {
    escrow(c, bidder, id, price, kinds::ESCROW, "bid placed");
}

/// Moves `amount` from balance to held (negative: back).
fn escrow(c: &mut SpiClient<'_>, account: &str, bid: i64, amount: i64, kind: &'static str, reason: &str) {
    ledger::post(
        c,
        &Entry {
            account,
            delta_balance: -amount,
            delta_held: amount,
            kind,
            bid_id: Some(bid),
            reason: Some(reason),
            ..Default::default()
        },
    );
}

const CANCEL: &str = transition_sql!(open -> cancelled, set "last_result = $2", which "id = $1", delta "-1");

/// Cancels open bid `id` (locked, escrowing `price`) of `bidder` (account locked), releasing its
/// escrow.
pub fn cancel(c: &mut SpiClient<'_>, id: i64, bidder: &str, price: i64, why: &str) {
    let n: i64 = spi::first(spi::run(c, CANCEL, &[id.into(), why.into()]), 1).unwrap_or(0);
    if n != 1 {
        internal!(format!("bid {id}: cancelled {n} rows"));
    }
    escrow(c, bidder, id, -price, kinds::RELEASE, why);
    notices::refunded(bidder, BidStatus::Cancelled, [(id, price)]);
}

const WIN: &str = transition_sql!(open -> won, set "round_id = $2", which "id = ANY ($1)", delta "-1");

/// The round's winners (open bids it locked) become won in `round`; their escrow stays held
/// until the run is settled or aborted.
pub fn win(c: &mut SpiClient<'_>, bids: &[i64], round: i64) {
    let args: [DatumWithOid<'_>; 2] = [bids.to_vec().into(), round.into()];
    let n: i64 = spi::first(spi::run(c, WIN, &args), 1).unwrap_or(0);
    if n != tokens::count(bids.len()) {
        // impossible while the rows are locked; refuse to commit a half-written round
        internal!(format!("round {round}: {} winners but {n} bids became won", bids.len()));
    }
}

const EXPIRE: &str =
    transition_sql!(open -> expired, set "last_result = 'expired unfilled'", which "id = ANY ($1)", delta "-1");

/// Expired open bids (id, bidder, escrow), bids and accounts locked, in account order: each
/// becomes expired and its escrow goes back to its bidder. Returns the tokens refunded.
pub fn expire(c: &mut SpiClient<'_>, bids: &[(i64, String, i64)]) -> i64 {
    if bids.is_empty() {
        return 0;
    }
    let ids: Vec<i64> = bids.iter().map(|b| b.0).collect();
    let n: i64 = spi::first(spi::run(c, EXPIRE, &[ids.into()]), 1).unwrap_or(0);
    if n != tokens::count(bids.len()) {
        internal!(format!("{} bids to expire but {n} expired", bids.len()));
    }
    let mut total: i64 = 0;
    let entries: Vec<Entry<'_>> = bids
        .iter()
        .map(|(id, bidder, amount)| {
            total = or_raise!(tokens::add("tokens_refunded", total, *amount));
            Entry {
                account: bidder,
                delta_balance: *amount,
                delta_held: -*amount,
                kind: kinds::REFUND,
                bid_id: Some(*id),
                reason: Some("bid expired unfilled"),
                ..Default::default()
            }
        })
        .collect();
    ledger::post_many(c, &entries);
    // in account order: one run of bids per account
    for run in bids.chunk_by(|a, b| a.1 == b.1) {
        notices::refunded(&run[0].1, BidStatus::Expired, run.iter().map(|b| (b.0, b.2)));
    }
    total
}

/// How a won bid's run ended.
pub enum Outcome<'a> {
    /// Settled at the round's clearing price.
    Settled { price: i64 },
    /// Aborted: the whole escrow goes back.
    Aborted { reason: &'a str },
}

/// The one transition not written with transition_sql!: its target ($2) is settled or aborted,
/// and it does not require the bid to be won. The slot's assigned clear is what decides that a
/// run ends; a bid that disagrees with it is an inconsistency audit() reports
/// (clear_bid_mismatch), and refusing here would stop abort_stale, and with it run_cycle's
/// round, from ever finishing the slot.
const FINISH: &str = "
UPDATE compute_auction.compute_auction_bids
   SET status = $2, last_result = $3, updated_at = now()
 WHERE id = $1";

/// Won bid `bid` (locked) of `bidder`, escrowing `max_price`, won `slot` in `round`: it becomes
/// settled or aborted, and the wallet entries the outcome implies are recorded as pending (the
/// winner's account is never waited for; ledger::apply_pending posts them). Returns the tokens
/// charged (settled) or refunded (aborted).
pub fn finish(
    c: &mut SpiClient<'_>,
    bid: i64,
    bidder: &str,
    max_price: i64,
    slot: &str,
    round: i64,
    how: &Outcome<'_>,
) -> i64 {
    let (to, result, moved, entries) = match how {
        Outcome::Settled { price } => {
            let premium = or_raise!(tokens::premium(max_price, *price));
            let mut entries = Vec::with_capacity(2);
            if *price > 0 {
                entries.push(Pending {
                    kind: kinds::CHARGE,
                    delta_balance: 0,
                    delta_held: -price,
                    reason: "clearing price of a settled run",
                });
            }
            if premium > 0 {
                entries.push(Pending {
                    kind: kinds::PREMIUM,
                    delta_balance: premium,
                    delta_held: -premium,
                    reason: "winning premium returned",
                });
            }
            (BidStatus::Settled, format!("settled at {price}"), *price, entries)
        }
        Outcome::Aborted { reason } => {
            let refund = Pending { kind: kinds::REFUND, delta_balance: max_price, delta_held: -max_price, reason };
            (BidStatus::Aborted, format!("run aborted: {reason}"), max_price, vec![refund])
        }
    };
    let args: [DatumWithOid<'_>; 3] = [bid.into(), to.as_str().into(), result.as_str().into()];
    spi::run(c, FINISH, &args);
    ledger::record_pending(c, bidder, bid, slot, round, &entries);
    if let Outcome::Aborted { reason } = how {
        notices::send(channels::RUN_ABORTED, &notice::run_aborted(slot, bid, bidder, round, reason));
    }
    moved
}
