//! Placing, replacing and cancelling bids. A bid escrows `max_price_tokens` from the bidder's
//! spendable balance into `held_tokens` until it settles, expires, is cancelled or aborted.
//!
//! Lock order (see docs/CONCURRENCY.md): task advisory lock -> bid row -> account row. Only the
//! bidder's own rows are ever locked: another bidder's live bid on the task is read without a
//! lock, and authority is checked before anything is locked. Every wait is bounded by the
//! function's `lock_timeout` (sql/finalize.sql): 55P03, retry.

use compute_auction_core::book::BidStatus;
use compute_auction_core::limits::{self, locks};
use compute_auction_core::{bid_status_sql, validate};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crate::book;
use crate::errors::Code;
use crate::ledger;
use crate::spi;
use crate::times;

/// Takes the task lock, then reads the clock: (ttl_at, ttl in range, placed_at). The bid's time
/// priority (`placed_at`) is that moment, `clock_timestamp()`, not its transaction's start, so
/// holding a transaction open before bidding gains nothing; the default TTL ($4) counts from it.
/// $5: the longest TTL.
const TASK_LOCK_AND_TTL: &str = "
SELECT coalesce($3, t + $4),
       ($3 IS NULL OR ($3 > now() AND $3 <= now() + $5)),
       t
  FROM (SELECT pg_catalog.clock_timestamp() AS t
          FROM (SELECT pg_catalog.pg_advisory_xact_lock($1, pg_catalog.hashtext($2))) AS l
        OFFSET 0) AS x";

/// A bid in one statement when the task has no live bid, in the order the rules ask for:
/// - `v`: whether the session may act for the bidder's wallet (the authority rule, evaluated once
///   per bid: the wallet update below re-checks only that the owner is still the one it was
///   evaluated for) and the task's live bid, read without a lock (it may be another bidder's);
///   no row: no such account;
/// - `k`: only when the session may act and the task has no live bid, the task lock, then the
///   clock (the bid's time priority) and the TTL check (TASK_LOCK_AND_TTL; $5..$7: ttl_at, the
///   default TTL, the longest TTL; $8 the task lock class);
/// - `b`, `c`: the bid row with its open-bid count delta (book::OPEN), only when the TTL is in
///   range; a bid another bidder placed since `v` read is refused by the unique index (23505);
/// - `a`, `l`: the escrow and its ledger row (ledger::POST), only when the wallet has the funds,
///   its held tokens do not overflow and its owner is unchanged; otherwise the caller posts the
///   escrow the ordinary way (and raises).
///
/// Locks, when any: the task, then the new bid row, then the account (docs/CONCURRENCY.md).
/// Returns (may act, live bid id, its bidder, its status, TTL in range, bid id, wallet updated,
/// TTL, placed_at, the balance after the escrow, the account's low-balance threshold). A bidder whose balance (read without a lock) is short gets no bid row, so a
/// refused bid takes no bid id.
/// Its plan follows the tables' size (spi::run_sized): a generic plan made on a tiny book would
/// read the book with a sequential scan on every bid.
const PLACE_NEW: &str = concat!(
    "
WITH v AS MATERIALIZED (
    SELECT ",
    may_act_sql!(),
    " AS may_act, owner_oid::pg_catalog.oid::pg_catalog.int8 AS owner_oid, owner_role, balance_tokens,
           live.id AS live_id, live.bidder_id AS live_bidder, live.status AS live_status
      FROM compute_auction.token_accounts
      LEFT JOIN (SELECT id, bidder_id, status
                   FROM compute_auction.compute_auction_bids
                  WHERE task_id = $2 AND status IN ",
    bid_status_sql!(live),
    ") AS live ON true
     WHERE account_id = $1
), k AS MATERIALIZED (
    SELECT coalesce($5, t + $6) AS ttl, ($5 IS NULL OR ($5 > now() AND $5 <= now() + $7)) AS ok, t
      FROM (SELECT pg_catalog.clock_timestamp() AS t
              FROM (SELECT pg_catalog.pg_advisory_xact_lock($8, pg_catalog.hashtext($2))
                      FROM v WHERE v.may_act AND v.live_id IS NULL) AS l
            OFFSET 0) AS x
), b AS (
    INSERT INTO compute_auction.compute_auction_bids
           (bidder_id, task_id, max_price_tokens, expected_value_usd, ttl_at, placed_at, status)
    SELECT $1, $2, $3, $4, k.ttl, k.t, ",
    bid_status_sql!(open),
    " FROM k WHERE k.ok AND (SELECT v.balance_tokens FROM v) >= $3
 RETURNING id
), c AS (
    INSERT INTO compute_auction.open_bid_count_deltas (delta) SELECT 1 FROM b
), a AS (
    UPDATE compute_auction.token_accounts
       SET balance_tokens = balance_tokens - $3,
           held_tokens    = held_tokens + $3,
           updated_at     = now()
     WHERE account_id = $1
       AND EXISTS (SELECT 1 FROM b)
       AND balance_tokens >= $3
       AND held_tokens <= 9223372036854775807 - $3
       AND owner_oid::pg_catalog.oid::pg_catalog.int8 IS NOT DISTINCT FROM (SELECT v.owner_oid FROM v)
       AND owner_role IS NOT DISTINCT FROM (SELECT v.owner_role FROM v)
 RETURNING balance_tokens, held_tokens, low_balance_threshold
), l AS (
    INSERT INTO compute_auction.token_ledger
           (account_id, delta_balance, delta_held, entry_kind, bid_id, reason, balance_after, held_after)
    SELECT $1, -$3, $3, $9, b.id, $10, a.balance_tokens, a.held_tokens FROM a, b
)
SELECT v.may_act, v.live_id, v.live_bidder, v.live_status, k.ok, b.id, EXISTS (SELECT 1 FROM a), k.ttl, k.t,
       (SELECT a.balance_tokens FROM a), (SELECT a.low_balance_threshold FROM a)
  FROM v LEFT JOIN k ON true LEFT JOIN b ON true"
);

/// The tables PLACE_NEW reads, for spi::run_sized.
const PLACE_NEW_TABLES: [&std::ffi::CStr; 2] = [c"token_accounts", c"compute_auction_bids"];

/// The bidder's own live bid, locked and re-read (a round may have just made it won).
const LOCK_OWN_BID: &str = "
SELECT status, max_price_tokens
  FROM compute_auction.compute_auction_bids
 WHERE id = $1
   FOR UPDATE";

/// Places a bid for `task_id`, or replaces the bidder's own open bid on it in place (same id,
/// escrow adjusted by the difference). Returns the bid id.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
pub fn place_bid(
    bidder_id: Option<&str>,
    task_id: Option<&str>,
    max_price_tokens: Option<i64>,
    expected_value_usd: default!(Option<f64>, "NULL"),
    ttl_at: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> i64 {
    let bidder = ledger::check_id("bidder_id", bidder_id);
    let task = ledger::check_id("task_id", task_id);
    let price = or_raise!(validate::required("max_price_tokens", max_price_tokens));
    let price = or_raise!(validate::positive("max_price_tokens", price));
    if let Some(ev) = expected_value_usd {
        or_raise!(validate::finite("expected_value_usd", ev));
    }
    spi::with(|c| place(c, bidder, task, price, expected_value_usd, ttl_at).0)
}

/// 22023: the one message for a `ttl_at` out of range (place_bid, submit_bids_for_tasks).
pub fn ttl_refused() -> ! {
    raise!(
        Code::ERRCODE_INVALID_PARAMETER_VALUE,
        format!("ttl_at must be in the future and at most {} ahead", limits::BID_TTL_MAX_TEXT),
        Some(&format!("Pass NULL for the default: {} after the bid is placed.", limits::BID_TTL_DEFAULT_TEXT)),
    )
}

/// 55000: a won bid cannot be replaced.
fn won_refused(task: &str, id: i64) -> ! {
    wrong_state!(
        format!("task {task} was already won by bid {id}"),
        Some("A won bid cannot be replaced: settle or abort its slot first."),
    )
}

/// 55000: only open bids can be cancelled.
fn not_open(id: i64, status: &str) -> ! {
    wrong_state!(format!("bid {id} is {status}, not open"), Some("Only open bids can be cancelled."))
}

/// What place_bid did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placed {
    New,
    Replaced,
}

/// The body of place_bid, shared with submit_bids_for_tasks. Returns (bid id, what happened).
pub fn place(
    c: &mut pgrx::spi::SpiClient<'_>,
    bidder: &str,
    task: &str,
    price: i64,
    ev: Option<f64>,
    ttl_at: Option<TimestampWithTimeZone>,
) -> (i64, Placed) {
    let ttl_at = ttl_at.map(|t| times::timestamp("ttl_at", t));
    // authority before any lock (a call for someone else's wallet locks nothing), and the task's
    // live bid, read before the task lock and without a lock: another bidder's is refused at
    // once (23505), however long its owner holds the task. With no live bid, the same statement
    // places the bid.
    let args: [DatumWithOid<'_>; 10] = [
        bidder.into(),
        task.into(),
        price.into(),
        ev.into(),
        ttl_at.into(),
        times::seconds(limits::BID_TTL_DEFAULT_SECS).into(),
        times::days(limits::BID_TTL_MAX_DAYS).into(),
        locks::CLASS_TASK.into(),
        ledger::kinds::ESCROW.into(),
        "bid placed".into(),
    ];
    let t = spi::run_sized(c, PLACE_NEW, &args, &PLACE_NEW_TABLES);
    if t.is_empty() {
        not_found!("account", bidder);
    }
    let r = t.first();
    match spi::get::<bool>(&r, 1) {
        None => not_found!("account", bidder),
        Some(false) => not_owner!(bidder),
        Some(true) => {}
    }
    let Some(live_id) = spi::get::<i64>(&r, 2) else {
        // a new bid, placed by the statement unless the TTL was refused or the wallet could not
        // be updated
        if !spi::get_req::<bool>(&r, 5) {
            ttl_refused();
        }
        let Some(id) = spi::get::<i64>(&r, 6) else {
            // the balance read without a lock was short: raise under the lock, or, when the
            // wallet was refilled since, open the bid the ordinary way
            let acct = ledger::lock_owned(c, bidder);
            if price > acct.balance {
                insufficient_funds!(bidder, price, acct.balance);
            }
            or_raise!(compute_auction_core::tokens::add("held_tokens", acct.held, price));
            let ttl: TimestampWithTimeZone = spi::get_req(&r, 8);
            let placed_at: TimestampWithTimeZone = spi::get_req(&r, 9);
            return (book::open(c, bidder, task, price, ev, ttl, placed_at), Placed::New);
        };
        if !spi::get_req::<bool>(&r, 7) {
            // not enough funds, held tokens that would overflow, or an owner changed since the
            // authority check: the ordinary way, which re-checks the authority under the lock
            // and raises what it always raised (42501, 23514, 22003)
            let acct = ledger::lock_owned(c, bidder);
            if price > acct.balance {
                insufficient_funds!(bidder, price, acct.balance);
            }
            or_raise!(compute_auction_core::tokens::add("held_tokens", acct.held, price));
            book::escrow_new(c, bidder, id, price);
        } else if let Some(after) = spi::get::<i64>(&r, 10) {
            // the statement escrowed the price (ledger::post announces the other paths)
            ledger::low_balance(bidder, after, -price, spi::get(&r, 11));
        }
        return (id, Placed::New);
    };
    let owner: String = spi::get_req(&r, 3);
    if owner != bidder {
        raise!(
            Code::ERRCODE_UNIQUE_VIOLATION,
            format!("task {task} already has a live bid ({live_id}) by another bidder"),
            Some("A task has at most one open or won bid."),
        );
    }
    if book::status(&spi::get_req::<String>(&r, 4)) == BidStatus::Won {
        // refused before any lock: a won bid belongs to its slot's settlement now
        won_refused(task, live_id);
    }

    // our own open bid: replaced in place under the task lock
    let args: [DatumWithOid<'_>; 5] = [
        locks::CLASS_TASK.into(),
        task.into(),
        ttl_at.into(),
        times::seconds(limits::BID_TTL_DEFAULT_SECS).into(),
        times::days(limits::BID_TTL_MAX_DAYS).into(),
    ];
    let row = spi::run(c, TASK_LOCK_AND_TTL, &args).first();
    let ttl: TimestampWithTimeZone = spi::get_req(&row, 1);
    let placed_at: TimestampWithTimeZone = spi::get_req(&row, 3);
    if !spi::get_req::<bool>(&row, 2) {
        ttl_refused();
    }

    // Our own bid: lock it and read its current state under the task lock (a round may have
    // made it won, or it may have ended meanwhile, and then we bid anew). A bid another bidder
    // placed after our read is refused by the unique index on live bids per task (23505).
    let existing = {
        let own = spi::run(c, LOCK_OWN_BID, &[live_id.into()]).first();
        let status = book::status(&spi::get_req::<String>(&own, 1));
        status.is_live().then(|| (live_id, status, spi::get_req::<i64>(&own, 2)))
    };
    let old_price = match &existing {
        None => 0,
        Some((id, status, old)) => {
            if *status == BidStatus::Won {
                won_refused(task, *id);
            }
            *old
        }
    };

    let acct = ledger::lock_owned(c, bidder);
    let diff = price - old_price; // both positive i64: cannot overflow
    if diff > acct.balance {
        insufficient_funds!(bidder, diff, acct.balance);
    }
    or_raise!(compute_auction_core::tokens::add("held_tokens", acct.held, diff));

    match existing {
        None => (book::open(c, bidder, task, price, ev, ttl, placed_at), Placed::New),
        Some((id, ..)) => {
            book::replace(c, id, bidder, old_price, price, ev, ttl, placed_at);
            (id, Placed::Replaced)
        }
    }
}

/// Whose bid it is and its state, read without a lock (it may be someone else's).
const BID_OWNER: &str = "SELECT bidder_id, status FROM compute_auction.compute_auction_bids WHERE id = $1";

const LOCK_BID: &str = "
SELECT bidder_id, status, max_price_tokens
  FROM compute_auction.compute_auction_bids
 WHERE id = $1
   FOR UPDATE";

/// Cancels an open bid and releases its escrow. Returns the tokens released.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn cancel_bid(bid_id: Option<i64>) -> i64 {
    let id = or_raise!(validate::required("bid_id", bid_id));
    spi::with(|c| cancel(c, id, "cancelled", true))
}

/// Cancels open bid `id` (lock order bid -> account). `check_owner` is false only when the
/// caller already checked the bidder's ownership.
pub fn cancel(c: &mut pgrx::spi::SpiClient<'_>, id: i64, why: &str, check_owner: bool) -> i64 {
    if check_owner {
        // authority first, without a lock: a bid that is not ours is never locked
        let t = spi::run(c, BID_OWNER, &[id.into()]);
        if t.is_empty() {
            not_found!("bid", &id.to_string());
        }
        let r = t.first();
        let (owner, status): (String, String) = (spi::get_req(&r, 1), spi::get_req(&r, 2));
        ledger::check_may_act(c, &owner);
        if book::status(&status) != BidStatus::Open {
            not_open(id, &status); // refused before any lock
        }
    }
    let t = spi::run(c, LOCK_BID, &[id.into()]);
    if t.is_empty() {
        not_found!("bid", &id.to_string());
    }
    let r = t.first();
    let bidder: String = spi::get_req(&r, 1);
    let status: String = spi::get_req(&r, 2);
    let price: i64 = spi::get_req(&r, 3);
    if book::status(&status) != BidStatus::Open {
        not_open(id, &status);
    }
    if check_owner {
        ledger::lock_owned(c, &bidder);
    } else {
        ledger::lock(c, &bidder);
    }
    book::cancel(c, id, &bidder, price, why);
    price
}
