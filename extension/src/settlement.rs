//! The end of a bid's life: settle (charge the clearing price, return the premium), abort (full
//! refund), abort_stale, and refund_unfilled (expired open bids get their escrow back).
//!
//! Lock order: slot -> clear -> bid -> accounts (account_id order). settle and abort_slot (the
//! runner's) wait for a row at most their `lock_timeout` (sql/finalize.sql; 55P03, retry). The
//! cycle's abort_stale and refund_unfilled never wait: a row another transaction holds is left,
//! with everything that depends on it, for a later cycle.

use std::collections::{BTreeMap, HashSet};

use compute_auction_core::{tokens, validate};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::authority;
use crate::errors::{self, Code, OrRaise};
use crate::ledger::{self, check_id, Entry};
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
), b AS (
    UPDATE compute_auction.compute_auction_bids
       SET status = $3, last_result = $7, updated_at = now()
     WHERE id = $8
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
        errors::not_found("slot", slot);
    }
    let t = spi::run(c, LOCK_CLEAR, &[slot.into()]);
    if t.is_empty() {
        if !must_exist {
            return None;
        }
        errors::wrong_state(
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

    // The wallet entries the outcome implies are recorded, not applied: the winner's account
    // row is never waited for (its owner may hold it). apply_pending posts them, below at once
    // when the account is free, else in a later cycle.
    let (status, result, cost, impact, reason, moved, entries) = match how {
        Finish::Settle { cost, impact } => {
            let premium = tokens::premium(max_price, price).or_raise();
            let mut entries = Vec::with_capacity(2);
            if price > 0 {
                entries.push(Pending { kind: "charge", delta_balance: 0, delta_held: -price, reason: CHARGE_REASON });
            }
            if premium > 0 {
                entries.push(Pending {
                    kind: "premium",
                    delta_balance: premium,
                    delta_held: -premium,
                    reason: PREMIUM_REASON,
                });
            }
            ("settled", format!("settled at {price}"), Some(*cost), Some(*impact), None, price, entries)
        }
        Finish::Abort { reason } => {
            let refund = Pending { kind: "refund", delta_balance: max_price, delta_held: -max_price, reason };
            ("aborted", format!("run aborted: {reason}"), None, None, Some(*reason), max_price, vec![refund])
        }
    };
    record_pending(c, &bidder, bid_id, slot, round_id, &entries);
    let args: [DatumWithOid<'_>; 8] = [
        round_id.into(),
        slot.into(),
        status.into(),
        cost.into(),
        impact.into(),
        reason.into(),
        result.as_str().into(),
        bid_id.into(),
    ];
    spi::run(c, FINISH, &args);
    apply_pending(c, Some(&[bidder]));
    Some(moved)
}

const CHARGE_REASON: &str = "clearing price of a settled run";
const PREMIUM_REASON: &str = "winning premium returned";

/// One wallet entry a settlement or abort implies.
struct Pending<'a> {
    kind: &'static str,
    delta_balance: i64,
    delta_held: i64,
    reason: &'a str,
}

const RECORD_PENDING: &str = "
INSERT INTO compute_auction.pending_entries
       (account_id, bid_id, slot_id, round_id, entry_kind, delta_balance, delta_held, reason)
SELECT $1, $2, $3, $4, e.kind, e.db, e.dh, e.reason
  FROM unnest($5::text[], $6::bigint[], $7::bigint[], $8::text[]) WITH ORDINALITY AS e(kind, db, dh, reason, n)
 ORDER BY e.n";

fn record_pending(c: &mut SpiClient<'_>, account: &str, bid: i64, slot: &str, round: i64, entries: &[Pending<'_>]) {
    if entries.is_empty() {
        return;
    }
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind).collect();
    let db: Vec<i64> = entries.iter().map(|e| e.delta_balance).collect();
    let dh: Vec<i64> = entries.iter().map(|e| e.delta_held).collect();
    let reasons: Vec<&str> = entries.iter().map(|e| e.reason).collect();
    let args: [DatumWithOid<'_>; 8] =
        [account.into(), bid.into(), slot.into(), round.into(), kinds.into(), db.into(), dh.into(), reasons.into()];
    spi::run(c, RECORD_PENDING, &args);
}

/// The accounts with pending entries (all, or those of $1), locked without waiting: an account
/// another transaction holds is applied by a later call.
const LOCK_PENDING_ACCOUNTS: &str = "
SELECT account_id FROM compute_auction.token_accounts
 WHERE account_id IN (SELECT p.account_id FROM compute_auction.pending_entries p
                       WHERE $1::text[] IS NULL OR p.account_id = ANY ($1))
 ORDER BY account_id
   FOR UPDATE SKIP LOCKED";

const PENDING_OF: &str = "
SELECT entry_id, entry_kind, delta_balance, delta_held, bid_id, slot_id, round_id, reason
  FROM compute_auction.pending_entries
 WHERE account_id = $1
 ORDER BY entry_id";

const DELETE_PENDING: &str = "DELETE FROM compute_auction.pending_entries WHERE entry_id = ANY ($1)";

/// Applies the pending entries of every account it can lock without waiting (of `accounts`
/// only, when given), each account's in entry_id order, writing each entry's token_ledger row
/// in this transaction as it changes the wallet, and deletes them. Returns how many it applied.
pub fn apply_pending(c: &mut SpiClient<'_>, accounts: Option<&[String]>) -> i64 {
    let filter: Option<Vec<String>> = accounts.map(<[String]>::to_vec);
    let locked: Vec<String> = spi::run(c, LOCK_PENDING_ACCOUNTS, &[filter.into()]).map(|r| spi::req(&r, 1)).collect();
    let mut applied = 0;
    for account in &locked {
        type Row = (i64, String, i64, i64, i64, String, i64, String);
        let rows: Vec<Row> = spi::run(c, PENDING_OF, &[account.as_str().into()])
            .map(|r| {
                (
                    spi::req(&r, 1),
                    spi::req(&r, 2),
                    spi::req(&r, 3),
                    spi::req(&r, 4),
                    spi::req(&r, 5),
                    spi::req(&r, 6),
                    spi::req(&r, 7),
                    spi::req(&r, 8),
                )
            })
            .collect();
        let mut ids = Vec::with_capacity(rows.len());
        for (id, kind, delta_balance, delta_held, bid, slot, round, reason) in &rows {
            // what leaves the wallet for good (a charge) is spent
            let spent = tokens::add("spent", *delta_balance, *delta_held).or_raise().saturating_neg().max(0);
            ledger::post(
                c,
                &Entry {
                    account,
                    delta_balance: *delta_balance,
                    delta_held: *delta_held,
                    kind,
                    bid_id: Some(*bid),
                    slot_id: Some(slot),
                    round_id: Some(*round),
                    reason: Some(reason),
                    spent,
                    ..Default::default()
                },
            );
            ids.push(*id);
        }
        applied += tokens::count(ids.len());
        spi::run(c, DELETE_PENDING, &[ids.into()]);
    }
    applied
}

/// Applies the wallet entries that settlements and aborts recorded while their winners' accounts
/// were held: every account it can lock without waiting. run_cycle and the driver's cycle call
/// it; settle and abort_slot also apply their own at once when the account is free. Returns how
/// many entries it applied.
#[pg_extern(security_definer, name = "apply_pending")]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn apply_pending_sql() -> i64 {
    spi::with(|c| apply_pending(c, None))
}

/// Settles the slot's assigned run: charges the winner the clearing price (not its bid) and
/// returns the premium, all from escrow. Returns the tokens charged.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn settle(slot_id: Option<&str>, actual_cost_tokens: Option<i64>, actual_impact: Option<f64>) -> i64 {
    let slot = check_id("slot_id", slot_id);
    let cost = validate::required("actual_cost_tokens", actual_cost_tokens).or_raise();
    validate::non_negative("actual_cost_tokens", cost).or_raise();
    let impact = validate::required("actual_impact", actual_impact).or_raise();
    validate::finite("actual_impact", impact).or_raise();
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
    let reason = validate::required("reason", reason).or_raise();
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
    let older_than = times::interval("older_than", validate::required("older_than", older_than).or_raise());
    let now = times::timestamp("now", validate::required("now", now).or_raise());
    spi::with(|c| {
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
            errors::raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "older_than must not be negative", None);
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
        let clears: Vec<(String, i64, String)> = spi::run(c, LOCK_STALE_CLEARS, &args)
            .map(|r| (spi::req(&r, 1), spi::req(&r, 2), spi::req(&r, 3)))
            .collect();
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
    })
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

const EXPIRED_SKIP_LOCKED: &str = "
SELECT id, bidder_id, max_price_tokens
  FROM compute_auction.compute_auction_bids
 WHERE status = 'open' AND ttl_at <= $1
 ORDER BY id
   FOR UPDATE SKIP LOCKED";

const LOCK_ACCOUNTS_SKIP_LOCKED: &str = "
SELECT account_id, balance_tokens, held_tokens
  FROM compute_auction.token_accounts
 WHERE account_id = ANY($1)
 ORDER BY account_id
   FOR UPDATE SKIP LOCKED";

const REFUND: &str = "
WITH e AS (
    UPDATE compute_auction.compute_auction_bids
       SET status = 'expired', last_result = 'expired unfilled', updated_at = now()
     WHERE id = ANY($1)
), a AS (
    UPDATE compute_auction.token_accounts AS a
       SET balance_tokens = a.balance_tokens + d.amount,
           held_tokens    = a.held_tokens - d.amount,
           updated_at     = now()
      FROM unnest($2::text[], $3::bigint[]) AS d(account_id, amount)
     WHERE a.account_id = d.account_id
), l AS (
    INSERT INTO compute_auction.token_ledger
           (account_id, delta_balance, delta_held, entry_kind, bid_id, reason, balance_after, held_after)
    SELECT r.account_id, r.amount, -r.amount, 'refund', r.bid_id, 'bid expired unfilled', r.bal, r.held
      FROM unnest($4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[])
           AS r(account_id, amount, bid_id, bal, held)
), c AS (
    INSERT INTO compute_auction.open_bid_count_deltas (delta) VALUES ($9)
)
SELECT 1";

/// Every open bid whose TTL has passed becomes `expired` and its escrow goes back to its bidder.
/// The cost grows with the number of expired bids, not with the book.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn refund_unfilled(
    now: default!(Option<TimestampWithTimeZone>, "now()"),
) -> TableIterator<'static, (name!(bids_expired, i64), name!(tokens_refunded, i64))> {
    let now = times::timestamp("now", validate::required("now", now).or_raise());
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
    // per account, in account order: the refund total and each entry's running balances
    let mut by_account: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for (id, bidder, amount) in &expired {
        by_account.entry(bidder.as_str()).or_default().push((*id, *amount));
    }
    let names: Vec<&str> = by_account.keys().copied().collect();
    let mut start: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in spi::run(c, LOCK_ACCOUNTS_SKIP_LOCKED, &[names.clone().into()]) {
        start.insert(spi::req(&r, 1), (spi::req(&r, 2), spi::req(&r, 3)));
    }
    by_account.retain(|acct, _| start.contains_key(*acct));
    if by_account.is_empty() {
        return (0, 0);
    }
    let (mut acc_ids, mut acc_sums) = (Vec::new(), Vec::new());
    let (mut l_acc, mut l_amt, mut l_bid, mut l_bal, mut l_held) = (vec![], vec![], vec![], vec![], vec![]);
    let mut total: i64 = 0;
    for (acct, entries) in &by_account {
        let (mut bal, mut held) = *start.get(*acct).unwrap_or_else(|| errors::not_found("account", acct));
        let mut sum: i64 = 0;
        for (bid, amount) in entries {
            bal = tokens::add("balance_tokens", bal, *amount).or_raise();
            held = tokens::sub("held_tokens", held, *amount).or_raise();
            sum = tokens::add("refund", sum, *amount).or_raise();
            l_acc.push(acct.to_string());
            l_amt.push(*amount);
            l_bid.push(*bid);
            l_bal.push(bal);
            l_held.push(held);
        }
        total = tokens::add("tokens_refunded", total, sum).or_raise();
        acc_ids.push(acct.to_string());
        acc_sums.push(sum);
    }
    let ids: Vec<i64> = by_account.values().flatten().map(|(id, _)| *id).collect();
    let n = tokens::count(ids.len());
    let args: [DatumWithOid<'_>; 9] = [
        ids.into(),
        acc_ids.into(),
        acc_sums.into(),
        l_acc.into(),
        l_amt.into(),
        l_bid.into(),
        l_bal.into(),
        l_held.into(),
        (-n).into(),
    ];
    spi::run(c, REFUND, &args);
    (n, total)
}
