//! The end of a bid's life: settle (charge the clearing price, return the premium), abort (full
//! refund), abort_stale, and refund_unfilled (expired open bids get their escrow back).
//!
//! Lock order: slot -> clear -> bid -> accounts (account_id order). settle and abort_slot (the
//! runner's) wait for a row at most their `lock_timeout` (sql/finalize.sql; 55P03, retry). The
//! cycle's abort_stale and refund_unfilled never wait: a row another transaction holds is left,
//! with everything that depends on it, for a later cycle.

use std::collections::{BTreeSet, HashSet};

use compute_auction_core::{bid_status_sql, tokens, validate};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::authority;
use crate::book;
use crate::errors::Code;
use crate::ledger::{self, check_id};
use crate::spi;
use crate::times;

const LOCK_SLOT: &str = "
SELECT status FROM compute_auction.compute_slots WHERE slot_id = $1 FOR UPDATE";

const LOCK_CLEAR: &str = "
SELECT round_id, bid_id, bidder_id, clearing_price_tokens, max_price_tokens
  FROM compute_auction.compute_auction_clears
 WHERE slot_id = $1 AND status = 'assigned'
   FOR UPDATE";

const LOCK_BID: &str = "SELECT 1 FROM compute_auction.compute_auction_bids WHERE id = $1 FOR UPDATE";

const FINISH: &str = "
WITH c AS (
    UPDATE compute_auction.compute_auction_clears
       SET status = $3, slot_finished_at = now(),
           actual_cost_tokens = $4, actual_impact = $5, abort_reason = $6
     WHERE round_id = $1 AND slot_id = $2
)
UPDATE compute_auction.compute_slots
   SET status = CASE WHEN retire_requested THEN 'retired' ELSE 'idle' END,
       retire_requested = false,
       available_at = CASE WHEN retire_requested THEN available_at ELSE now() END,
       updated_at = now()
 WHERE slot_id = $2";

/// How an assignment ends.
pub enum Finish<'a> {
    Settle { cost: i64, impact: f64 },
    Abort { reason: &'a str },
}

/// Ends the slot's assigned run. Returns Some(tokens charged or refunded), or None when the slot
/// has nothing assigned and `must_exist` is false.
pub fn finish(c: &mut SpiClient<'_>, slot: &str, how: &Finish<'_>, must_exist: bool) -> Option<i64> {
    if spi::run(c, LOCK_SLOT, &[slot.into()]).is_empty() {
        not_found!("slot", slot);
    }
    let t = spi::run(c, LOCK_CLEAR, &[slot.into()]);
    if t.is_empty() {
        if !must_exist {
            return None;
        }
        wrong_state!(
            format!("slot {slot} has nothing assigned"),
            Some("A slot is settled or aborted once per won round."),
        );
    }
    let t = t.first();
    let round_id: i64 = spi::get_req(&t, 1);
    let bid_id: i64 = spi::get_req(&t, 2);
    let bidder: String = spi::get_req(&t, 3);
    let price: i64 = spi::get_req(&t, 4);
    let max_price: i64 = spi::get_req(&t, 5);
    spi::run(c, LOCK_BID, &[bid_id.into()]);

    // The bid's transition records the wallet entries it implies as pending: the winner's
    // account row is never waited for (its owner may hold it). They are posted below at once
    // when the account is free, else by a later cycle's apply_pending.
    let (status, cost, impact, reason, outcome) = match how {
        Finish::Settle { cost, impact } => {
            ("settled", Some(*cost), Some(*impact), None, book::Outcome::Settled { price })
        }
        Finish::Abort { reason } => ("aborted", None, None, Some(*reason), book::Outcome::Aborted { reason }),
    };
    let moved = book::finish(c, bid_id, &bidder, max_price, slot, round_id, &outcome);
    let args: [DatumWithOid<'_>; 6] =
        [round_id.into(), slot.into(), status.into(), cost.into(), impact.into(), reason.into()];
    spi::run(c, FINISH, &args);
    ledger::apply_pending(c, Some(&[bidder]));
    Some(moved)
}

/// Applies the wallet entries that settlements and aborts recorded while their winners' accounts
/// were held: every account it can lock without waiting. run_cycle and the driver's cycle call
/// it; settle and abort_slot also apply their own at once when the account is free. Returns how
/// many entries it applied.
#[pg_extern(security_definer, name = "apply_pending")]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn apply_pending_sql() -> i64 {
    spi::with(|c| ledger::apply_pending(c, None))
}

/// Settles the slot's assigned run: charges the winner the clearing price (not its bid) and
/// returns the premium, all from escrow. Returns the tokens charged.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn settle(slot_id: Option<&str>, actual_cost_tokens: Option<i64>, actual_impact: Option<f64>) -> i64 {
    let slot = check_id("slot_id", slot_id);
    let cost = or_raise!(validate::required("actual_cost_tokens", actual_cost_tokens));
    or_raise!(validate::non_negative("actual_cost_tokens", cost));
    let impact = or_raise!(validate::required("actual_impact", actual_impact));
    or_raise!(validate::finite("actual_impact", impact));
    spi::with(|c| {
        authority::check_may_run(c, slot); // before any lock: another runner's slot is never locked
        finish(c, slot, &Finish::Settle { cost, impact }, true).unwrap_or(0)
    })
}

/// The run never happened: refunds the winner's whole escrow, marks bid and clear aborted, and
/// makes the slot available again at once. Returns the tokens refunded.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn abort_slot(slot_id: Option<&str>, reason: Option<&str>) -> i64 {
    let slot = check_id("slot_id", slot_id);
    let reason = or_raise!(validate::required("reason", reason));
    spi::with(|c| {
        authority::check_may_run(c, slot); // before any lock
        finish(c, slot, &Finish::Abort { reason }, true).unwrap_or(0)
    })
}

/// Aborts, with full refunds, every assignment not settled within `older_than` of its round.
/// Returns how many were aborted.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn abort_stale(
    older_than: default!(Option<Interval>, "'1 hour'"),
    now: default!(Option<TimestampWithTimeZone>, "now()"),
) -> i64 {
    let older_than = times::interval("older_than", or_raise!(validate::required("older_than", older_than)));
    let now = times::timestamp("now", or_raise!(validate::required("now", now)));
    spi::with(|c| stale(c, older_than, now))
}

/// The body of abort_stale, shared with run_cycle.
pub fn stale(c: &mut SpiClient<'_>, older_than: Interval, now: TimestampWithTimeZone) -> i64 {
    let args: [DatumWithOid<'_>; 2] = [now.into(), older_than.into()];
    let t = spi::run(
        c,
        "SELECT $2 < interval '0',
                array(SELECT slot_id FROM compute_auction.compute_auction_clears
                       WHERE status = 'assigned' AND slot_started_at < $1 - $2
                       ORDER BY slot_id)",
        &args,
    )
    .first();
    if spi::get_req::<bool>(&t, 1) {
        raise!(Code::ERRCODE_INVALID_PARAMETER_VALUE, "older_than must not be negative", None);
    }
    let stale: Vec<String> = spi::get_req(&t, 2);
    if stale.is_empty() {
        return 0;
    }
    // Lock everything before changing anything, in the global order, and without waiting:
    // the stale slots (slot_id order), their clears, their bids (id order). A slot any of
    // whose rows another transaction holds is left for a later cycle; the rest are aborted.
    // The winners' accounts are not needed: the refunds are recorded as pending entries and
    // applied when each account is free, so holding one's wallet never delays an abort.
    let slots: Vec<String> = spi::run(c, LOCK_STALE_SLOTS, &[stale.into()]).map(|r| spi::req(&r, 1)).collect();
    let args: [DatumWithOid<'_>; 3] = [slots.into(), now.into(), older_than.into()];
    let clears: Vec<(String, i64, String)> =
        spi::run(c, LOCK_STALE_CLEARS, &args).map(|r| (spi::req(&r, 1), spi::req(&r, 2), spi::req(&r, 3))).collect();
    let bids: Vec<i64> = clears.iter().map(|x| x.1).collect();
    let bids: HashSet<i64> = spi::run(c, LOCK_BIDS_SKIP_LOCKED, &[bids.into()]).map(|r| spi::req(&r, 1)).collect();
    let still: Vec<String> = clears.into_iter().filter(|(_, bid, _)| bids.contains(bid)).map(|x| x.0).collect();
    let reason = "stale: not settled in time";
    let mut n = 0;
    for slot in &still {
        if finish(c, slot, &Finish::Abort { reason }, false).is_some() {
            n += 1;
        }
    }
    n
}

const LOCK_STALE_SLOTS: &str = "
SELECT slot_id FROM compute_auction.compute_slots WHERE slot_id = ANY($1) ORDER BY slot_id FOR UPDATE SKIP LOCKED";

/// The clears still assigned and stale once their slots are locked (a run settled meanwhile is
/// left alone), skipping any another transaction holds.
const LOCK_STALE_CLEARS: &str = "
SELECT slot_id, bid_id, bidder_id
  FROM compute_auction.compute_auction_clears
 WHERE slot_id = ANY($1) AND status = 'assigned' AND slot_started_at < $2 - $3
 ORDER BY slot_id
   FOR UPDATE SKIP LOCKED";

const LOCK_BIDS_SKIP_LOCKED: &str = "
SELECT id FROM compute_auction.compute_auction_bids WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED";

const EXPIRED_SKIP_LOCKED: &str = concat!(
    "
SELECT id, bidder_id, max_price_tokens
  FROM compute_auction.compute_auction_bids
 WHERE status = ",
    bid_status_sql!(open),
    " AND ttl_at <= $1
 ORDER BY id
   FOR UPDATE SKIP LOCKED"
);

const LOCK_ACCOUNTS_SKIP_LOCKED: &str = "
SELECT account_id FROM compute_auction.token_accounts
 WHERE account_id = ANY($1)
 ORDER BY account_id
   FOR UPDATE SKIP LOCKED";

/// Every open bid whose TTL has passed becomes `expired` and its escrow goes back to its bidder.
/// The cost grows with the number of expired bids, not with the book.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn refund_unfilled(
    now: default!(Option<TimestampWithTimeZone>, "now()"),
) -> TableIterator<'static, (name!(bids_expired, i64), name!(tokens_refunded, i64))> {
    let now = times::timestamp("now", or_raise!(validate::required("now", now)));
    TableIterator::once(spi::with(|c| refund(c, now)))
}

/// Expires and refunds the open bids past their TTL at `now`. Bids and accounts another
/// transaction holds (a bidder's own open transaction) are left for the next cycle, never
/// waited for.
pub fn refund(c: &mut SpiClient<'_>, now: TimestampWithTimeZone) -> (i64, i64) {
    let expired: Vec<(i64, String, i64)> = spi::run(c, EXPIRED_SKIP_LOCKED, &[now.into()])
        .map(|r| (spi::req(&r, 1), spi::req(&r, 2), spi::req(&r, 3)))
        .collect();
    if expired.is_empty() {
        return (0, 0);
    }
    // the bids of the accounts it can lock, in account order
    let names: Vec<&str> = expired.iter().map(|b| b.1.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    let locked: HashSet<String> =
        spi::run(c, LOCK_ACCOUNTS_SKIP_LOCKED, &[names.into()]).map(|r| spi::req(&r, 1)).collect();
    let mut bids: Vec<(i64, String, i64)> = expired.into_iter().filter(|b| locked.contains(&b.1)).collect();
    bids.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    // what one call refunds must fit in a bigint (its result, the ledger batch): the bids past
    // that stay open, locked until this transaction ends, and the next call refunds them, so
    // huge escrows never make refund_unfilled (and run_cycle with it) fail
    let mut sum: i64 = 0;
    let fits = bids.iter().take_while(|b| sum.checked_add(b.2).map(|t| sum = t).is_some()).count();
    bids.truncate(fits);
    let total = book::expire(c, &bids);
    (tokens::count(bids.len()), total)
}
