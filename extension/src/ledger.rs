//! Wallets and the token ledger: appended to by every wallet change, compacted only by
//! prune_history (crate::retention).
//!
//! Every change to `token_accounts` goes through [`post`] (one entry) or [`post_many`] (a batch),
//! which update the accounts and write their `token_ledger` rows in one statement, so
//! `balance_tokens = sum(delta_balance)` and `held_tokens = sum(delta_held)` hold for every
//! account at every commit. Entries a settlement or abort implies while the winner's account
//! may be held by its owner are recorded as pending ([`record_pending`]) and posted by
//! [`apply_pending`] when the account is free.

use compute_auction_core::book::BidStatus;
use compute_auction_core::limits::WALLET_ENTRIES;
use compute_auction_core::notices as notice;
use compute_auction_core::validate::{self, Invalid};
use compute_auction_core::{bid_status_sql, tokens};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::authority;
use crate::errors::Code;
use crate::notices::{self, channels};
use crate::spi;

/// The ledger's entry kinds (`token_ledger.entry_kind`; sql/schema.sql's CHECK lists them).
pub mod kinds {
    /// initial tokens of a new account
    pub const OPEN: &str = "open";
    /// credit (refill through good work)
    pub const DEPOSIT: &str = "deposit";
    /// debit out of the market
    pub const WITHDRAW: &str = "withdraw";
    /// balance -> held for a bid (new or raised)
    pub const ESCROW: &str = "escrow";
    /// held -> balance: bid cancelled or lowered
    pub const RELEASE: &str = "release";
    /// held -> balance: bid expired unfilled or run aborted (counted in market_summary's
    /// tokens_refunded_total)
    pub const REFUND: &str = "refund";
    /// held -> gone: the clearing price of a settled win
    pub const CHARGE: &str = "charge";
    /// held -> balance: max price minus clearing price
    pub const PREMIUM: &str = "premium";
    /// prune_history: an account's entries older than the horizon, compacted into one (the sum
    /// of their deltas, the id, at and balances after of the newest of them)
    pub const CHECKPOINT: &str = "checkpoint";

    /// Every kind, checked against the schema's CHECK by a #[pg_test].
    #[cfg_attr(not(feature = "pg_test"), allow(dead_code))]
    pub const ALL: [&str; 9] = [OPEN, DEPOSIT, WITHDRAW, ESCROW, RELEASE, REFUND, CHARGE, PREMIUM, CHECKPOINT];
}

/// The tokens `e` refunds: what market_summary's tokens_refunded_total counts.
fn refunded(e: &Entry<'_>) -> i64 {
    if e.kind == kinds::REFUND {
        e.delta_balance
    } else {
        0
    }
}

/// One ledger entry and the account change it records.
#[derive(Default)]
pub struct Entry<'a> {
    pub account: &'a str,
    pub delta_balance: i64,
    pub delta_held: i64,
    pub kind: &'a str,
    pub bid_id: Option<i64>,
    pub slot_id: Option<&'a str>,
    pub round_id: Option<i64>,
    pub reason: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub deposited: i64,
    pub spent: i64,
    pub withdrawn: i64,
}

const POST: &str = "
WITH a AS (
    UPDATE compute_auction.token_accounts
       SET balance_tokens  = balance_tokens + $2,
           held_tokens     = held_tokens + $3,
           total_deposited = total_deposited + $10,
           total_spent     = total_spent + $11,
           total_withdrawn = total_withdrawn + $12,
           updated_at      = now()
     WHERE account_id = $1
 RETURNING balance_tokens, held_tokens, low_balance_threshold
), l AS (
    INSERT INTO compute_auction.token_ledger
           (account_id, delta_balance, delta_held, entry_kind, bid_id, slot_id, round_id, reason,
            idempotency_key, balance_after, held_after)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, a.balance_tokens, a.held_tokens FROM a
), r AS (
    INSERT INTO compute_auction.open_bid_count_deltas (delta, tokens_refunded)
    SELECT 0, $13 FROM a WHERE $13 <> 0
)
SELECT balance_tokens, held_tokens, low_balance_threshold FROM a";

/// Applies `e` to its (already locked) account and journals it. Returns the new
/// (balance_tokens, held_tokens). Overflow raises 22003 and a negative result 23514 from the
/// database itself, so a caller that skipped a check still cannot corrupt the books.
pub fn post(c: &mut SpiClient<'_>, e: &Entry<'_>) -> (i64, i64) {
    let args: [DatumWithOid<'_>; 13] = [
        e.account.into(),
        e.delta_balance.into(),
        e.delta_held.into(),
        e.kind.into(),
        e.bid_id.into(),
        e.slot_id.into(),
        e.round_id.into(),
        e.reason.into(),
        e.idempotency_key.into(),
        e.deposited.into(),
        e.spent.into(),
        e.withdrawn.into(),
        refunded(e).into(),
    ];
    let t = spi::run(c, POST, &args);
    if t.is_empty() {
        not_found!("account", e.account);
    }
    let row = t.first();
    let (balance, held): (i64, i64) = (spi::get_req(&row, 1), spi::get_req(&row, 2));
    low_balance(e.account, balance, e.delta_balance, spi::get(&row, 3));
    (balance, held)
}

/// Announces on `compute_auction_low_balance` a wallet change of `delta` that left `account`'s
/// spendable balance at `after`, if it fell below the account's threshold with it.
pub fn low_balance(account: &str, after: i64, delta: i64, threshold: Option<i64>) {
    let Some(threshold) = threshold else { return };
    let Some(before) = after.checked_sub(delta) else { return };
    if notice::falls_below(before, after, threshold) {
        notices::send(channels::LOW_BALANCE, &notice::low_balance(account, after, threshold));
    }
}

/// $1..$9: the entries in order; $10: the tokens they refund. Each account is updated once with
/// its entries' sums; each entry's balances after it are the account's new balances less the
/// entries that follow it.
const POST_MANY: &str = "
WITH e AS (
    SELECT *
      FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                  $7::bigint[], $8::text[], $9::bigint[])
           WITH ORDINALITY AS e(account_id, db, dh, kind, bid_id, slot_id, round_id, reason, spent, n)
), s AS (
    SELECT account_id, sum(db) AS db, sum(dh) AS dh, sum(spent) AS spent FROM e GROUP BY account_id
), a AS (
    UPDATE compute_auction.token_accounts AS t
       SET balance_tokens = t.balance_tokens + s.db,
           held_tokens    = t.held_tokens + s.dh,
           total_spent    = t.total_spent + s.spent,
           updated_at     = now()
      FROM s
     WHERE t.account_id = s.account_id
 RETURNING t.account_id, t.balance_tokens, t.held_tokens, t.low_balance_threshold
), l AS (
    INSERT INTO compute_auction.token_ledger
           (account_id, delta_balance, delta_held, entry_kind, bid_id, slot_id, round_id, reason,
            balance_after, held_after)
    SELECT e.account_id, e.db, e.dh, e.kind, e.bid_id, e.slot_id, e.round_id, e.reason,
           a.balance_tokens - coalesce(sum(e.db) OVER later, 0),
           a.held_tokens - coalesce(sum(e.dh) OVER later, 0)
      FROM e JOIN a ON a.account_id = e.account_id
    WINDOW later AS (PARTITION BY e.account_id ORDER BY e.n ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
     ORDER BY e.n
), r AS (
    INSERT INTO compute_auction.open_bid_count_deltas (delta, tokens_refunded)
    SELECT 0, $10 WHERE $10 <> 0
)
SELECT count(*),
       array_agg(a.account_id) FILTER (WHERE a.low_balance_threshold IS NOT NULL),
       array_agg(a.balance_tokens) FILTER (WHERE a.low_balance_threshold IS NOT NULL),
       array_agg(s.db::bigint) FILTER (WHERE a.low_balance_threshold IS NOT NULL),
       array_agg(a.low_balance_threshold) FILTER (WHERE a.low_balance_threshold IS NOT NULL)
  FROM a JOIN s ON s.account_id = a.account_id";

/// Applies a batch of entries to their (already locked) accounts in one statement, journaling
/// each in order. Like [`post`], overflow raises 22003 and a negative balance 23514 from the
/// database itself. Only `spent` of the running totals may be set (deposits and withdrawals
/// are single entries).
pub fn post_many(c: &mut SpiClient<'_>, entries: &[Entry<'_>]) {
    if entries.is_empty() {
        return;
    }
    let mut refund: i64 = 0;
    for e in entries {
        if e.deposited != 0 || e.withdrawn != 0 {
            internal!("post_many takes no deposits or withdrawals");
        }
        refund = or_raise!(tokens::add("tokens_refunded", refund, refunded(e)));
    }
    let col = |f: fn(&Entry<'_>) -> i64| entries.iter().map(f).collect::<Vec<i64>>();
    let accounts: Vec<&str> = entries.iter().map(|e| e.account).collect();
    let entry_kinds: Vec<&str> = entries.iter().map(|e| e.kind).collect();
    let bids: Vec<Option<i64>> = entries.iter().map(|e| e.bid_id).collect();
    let slots: Vec<Option<&str>> = entries.iter().map(|e| e.slot_id).collect();
    let rounds: Vec<Option<i64>> = entries.iter().map(|e| e.round_id).collect();
    let reasons: Vec<Option<&str>> = entries.iter().map(|e| e.reason).collect();
    let mut distinct = accounts.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let args: [DatumWithOid<'_>; 10] = [
        accounts.into(),
        col(|e| e.delta_balance).into(),
        col(|e| e.delta_held).into(),
        entry_kinds.into(),
        bids.into(),
        slots.into(),
        rounds.into(),
        reasons.into(),
        col(|e| e.spent).into(),
        refund.into(),
    ];
    let t = spi::run(c, POST_MANY, &args).first();
    let updated: i64 = spi::get(&t, 1).unwrap_or(0);
    if updated != tokens::count(distinct.len()) {
        internal!(format!("post_many updated {updated} of {} accounts", distinct.len()));
    }
    // the accounts with a threshold: their balance after the batch and the batch's change
    let with: Vec<String> = spi::get(&t, 2).unwrap_or_default();
    let after: Vec<i64> = spi::get(&t, 3).unwrap_or_default();
    let delta: Vec<i64> = spi::get(&t, 4).unwrap_or_default();
    let threshold: Vec<i64> = spi::get(&t, 5).unwrap_or_default();
    for (((account, after), delta), threshold) in with.iter().zip(after).zip(delta).zip(threshold) {
        low_balance(account, after, delta, Some(threshold));
    }
}

/// A locked account row.
pub struct Locked {
    pub balance: i64,
    pub held: i64,
    pub total_deposited: i64,
    pub total_withdrawn: i64,
    /// Whether the session may act for this account (crate::authority).
    pub may_act: bool,
}

const LOCK: &str = concat!(
    "SELECT balance_tokens, held_tokens, total_deposited, total_withdrawn, ",
    may_act_sql!(),
    " FROM compute_auction.token_accounts WHERE account_id = $1 FOR UPDATE"
);

/// The same authority check, read without a lock.
const MAY_ACT: &str = concat!("SELECT ", may_act_sql!(), " FROM compute_auction.token_accounts WHERE account_id = $1");

/// Locks the account row (`FOR UPDATE`) or raises P0002.
pub fn lock(c: &mut SpiClient<'_>, account: &str) -> Locked {
    let t = spi::run(c, LOCK, &[account.into()]);
    if t.is_empty() {
        not_found!("account", account);
    }
    let row = t.first();
    Locked {
        balance: spi::get_req(&row, 1),
        held: spi::get_req(&row, 2),
        total_deposited: spi::get_req(&row, 3),
        total_withdrawn: spi::get_req(&row, 4),
        may_act: spi::get_req(&row, 5),
    }
}

/// Checks, without locking anything, that the account exists (P0002) and that the session may
/// act for it (42501): a caller checks authority before it locks a row that may be someone
/// else's.
pub fn check_may_act(c: &mut SpiClient<'_>, account: &str) {
    match spi::first::<bool>(spi::run(c, MAY_ACT, &[account.into()]), 1) {
        None => not_found!("account", account),
        Some(false) => not_owner!(account),
        Some(true) => {}
    }
}

/// Locks an account the session must be allowed to act for (42501 otherwise).
pub fn lock_owned(c: &mut SpiClient<'_>, account: &str) -> Locked {
    let l = lock(c, account);
    if !l.may_act {
        not_owner!(account);
    }
    l
}

pub fn check_id<'a>(arg: &'static str, v: Option<&'a str>) -> &'a str {
    let v = or_raise!(validate::required(arg, v));
    or_raise!(validate::id(arg, v));
    v
}

const KINDS: [&str; 3] = ["agent", "quest", "system"];

/// Opens a wallet. Returns its spendable balance. 23505 if it exists.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn open_account(
    account_id: Option<&str>,
    kind: default!(Option<&str>, "'agent'"),
    initial_tokens: default!(Option<i64>, 0),
    owner_role: default!(Option<&str>, "NULL"),
) -> i64 {
    let account = check_id("account_id", account_id);
    let kind = or_raise!(validate::required("kind", kind));
    if !KINDS.contains(&kind) {
        invalid!(Invalid::OutOfRange { arg: "kind", detail: format!("{kind:?} is not one of agent, quest, system") });
    }
    let initial = or_raise!(validate::required("initial_tokens", initial_tokens));
    or_raise!(validate::non_negative("initial_tokens", initial));
    if let Some(r) = owner_role {
        or_raise!(validate::id("owner_role", r));
    }
    spi::with(|c| {
        let owner_oid = owner_role.map(|r| authority::role_oid(c, "owner_role", r));
        let t = spi::run(
            c,
            "INSERT INTO compute_auction.token_accounts (account_id, kind, owner_role, owner_oid)
             VALUES ($1, $2, $3, $4::pg_catalog.oid::pg_catalog.regrole)
             ON CONFLICT (account_id) DO NOTHING RETURNING 1",
            &[account.into(), kind.into(), owner_role.into(), owner_oid.into()],
        );
        if t.is_empty() {
            raise!(
                Code::ERRCODE_UNIQUE_VIOLATION,
                format!("account {account} already exists"),
                Some("Use deposit() to add tokens to an existing account."),
            );
        }
        if initial == 0 {
            return 0;
        }
        post(
            c,
            &Entry {
                account,
                delta_balance: initial,
                kind: kinds::OPEN,
                reason: Some("initial tokens"),
                deposited: initial,
                ..Default::default()
            },
        )
        .0
    })
}

/// The first call of a key: its ledger entry, or, once prune_history has compacted that entry,
/// the key it kept (one statement, so one snapshot: a concurrent prune's move of the key from
/// one to the other is seen whole or not at all).
const REPLAY: &str = "
SELECT delta_balance, balance_after FROM compute_auction.token_ledger
 WHERE account_id = $1 AND entry_kind = $2 AND idempotency_key = $3
UNION ALL
SELECT delta_balance, balance_after FROM compute_auction.idempotency_keys
 WHERE account_id = $1 AND entry_kind = $2 AND idempotency_key = $3
 LIMIT 1";

/// If `key` was already used for this account and entry kind, the first call's result.
fn replay(c: &mut SpiClient<'_>, account: &str, kind: &'static str, key: Option<&str>, delta: i64) -> Option<i64> {
    let key = key?;
    let t = spi::run(c, REPLAY, &[account.into(), kind.into(), key.into()]);
    if t.is_empty() {
        return None;
    }
    let row = t.first();
    let first_delta: i64 = spi::get_req(&row, 1);
    if first_delta != delta {
        raise!(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("idempotency key {key:?} was already used for a {kind} of {} tokens", first_delta.abs()),
            Some("Use a new key for a different amount."),
        );
    }
    Some(spi::get_req(&row, 2))
}

/// The validated (account, amount, reason) of deposit and withdraw.
fn transfer_args<'a>(
    account_id: Option<&'a str>,
    amount: Option<i64>,
    reason: Option<&'a str>,
    idempotency_key: Option<&str>,
) -> (&'a str, i64, &'a str) {
    let account = check_id("account_id", account_id);
    let amount = or_raise!(validate::positive("amount", or_raise!(validate::required("amount", amount))));
    let reason = or_raise!(validate::required("reason", reason));
    if let Some(k) = idempotency_key {
        or_raise!(validate::id("idempotency_key", k));
    }
    (account, amount, reason)
}

/// Credits an account (how agents and quests refill through good work). Returns the new
/// spendable balance. A repeated `idempotency_key` returns the first call's result.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn deposit(
    account_id: Option<&str>,
    amount: Option<i64>,
    reason: Option<&str>,
    idempotency_key: default!(Option<&str>, "NULL"),
) -> i64 {
    let (account, amount, reason) = transfer_args(account_id, amount, reason, idempotency_key);
    spi::with(|c| {
        let l = lock(c, account);
        if let Some(first) = replay(c, account, kinds::DEPOSIT, idempotency_key, amount) {
            return first;
        }
        or_raise!(tokens::add("balance_tokens", l.balance, amount));
        or_raise!(tokens::add("total_deposited", l.total_deposited, amount));
        post(
            c,
            &Entry {
                account,
                delta_balance: amount,
                kind: kinds::DEPOSIT,
                reason: Some(reason),
                idempotency_key,
                deposited: amount,
                ..Default::default()
            },
        )
        .0
    })
}

/// Debits spendable tokens out of the market. Returns the new spendable balance; 23514 if the
/// balance would go below zero.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn withdraw(
    account_id: Option<&str>,
    amount: Option<i64>,
    reason: Option<&str>,
    idempotency_key: default!(Option<&str>, "NULL"),
) -> i64 {
    let (account, amount, reason) = transfer_args(account_id, amount, reason, idempotency_key);
    spi::with(|c| {
        check_may_act(c, account); // before the lock: another's account is never locked
        let l = lock_owned(c, account);
        if let Some(first) = replay(c, account, kinds::WITHDRAW, idempotency_key, -amount) {
            return first;
        }
        if l.balance < amount {
            insufficient_funds!(account, amount, l.balance);
        }
        or_raise!(tokens::add("total_withdrawn", l.total_withdrawn, amount));
        post(
            c,
            &Entry {
                account,
                delta_balance: -amount,
                kind: kinds::WITHDRAW,
                reason: Some(reason),
                idempotency_key,
                withdrawn: amount,
                ..Default::default()
            },
        )
        .0
    })
}

/// The account's spendable and escrowed tokens.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn balance(account_id: Option<&str>) -> TableIterator<'static, (name!(balance_tokens, i64), name!(held_tokens, i64))> {
    let account = check_id("account_id", account_id);
    let row = spi::with_read(|c| {
        let t = spi::read(
            c,
            "SELECT balance_tokens, held_tokens FROM compute_auction.token_accounts WHERE account_id = $1",
            &[account.into()],
        );
        if t.is_empty() {
            not_found!("account", account);
        }
        let r = t.first();
        (spi::get_req::<i64>(&r, 1), spi::get_req::<i64>(&r, 2))
    });
    TableIterator::once(row)
}

/// The account's balances with its pending entries (settlements and aborts recorded while the
/// account was held) applied: what `balance` will say once they are.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn pending_balance(
    account_id: Option<&str>,
) -> TableIterator<'static, (name!(balance_tokens, i64), name!(held_tokens, i64))> {
    let account = check_id("account_id", account_id);
    let row = spi::with_read(|c| {
        let t = spi::read(c, PENDING_BALANCE, &[account.into()]);
        if t.is_empty() {
            not_found!("account", account);
        }
        let r = t.first();
        (spi::get_req::<i64>(&r, 1), spi::get_req::<i64>(&r, 2))
    });
    TableIterator::once(row)
}

const PENDING_BALANCE: &str = "
SELECT (a.balance_tokens + coalesce(sum(p.delta_balance), 0))::bigint,
       (a.held_tokens + coalesce(sum(p.delta_held), 0))::bigint
  FROM compute_auction.token_accounts a
  LEFT JOIN compute_auction.pending_entries p ON p.account_id = a.account_id
 WHERE a.account_id = $1
 GROUP BY a.account_id, a.balance_tokens, a.held_tokens";

/// Names (or clears, with NULL) the existing database role that owns an account (22023 if no
/// role has that name): its members may bid, cancel, submit and withdraw for it, as operators
/// may. An account without an owner is operators-only.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn set_account_owner(account_id: Option<&str>, owner_role: Option<&str>) {
    let account = check_id("account_id", account_id);
    spi::with(|c| {
        authority::name_role(
            c,
            "account",
            account,
            "owner_role",
            owner_role,
            "SELECT 1 FROM compute_auction.token_accounts WHERE account_id = $1",
            "UPDATE compute_auction.token_accounts
                SET owner_role = $2, owner_oid = $3::pg_catalog.oid::pg_catalog.regrole, updated_at = now()
              WHERE account_id = $1 RETURNING 1",
        )
    })
}

const SET_THRESHOLD: &str = "
WITH o AS (
    SELECT low_balance_threshold FROM compute_auction.token_accounts WHERE account_id = $1 FOR UPDATE
)
UPDATE compute_auction.token_accounts AS a
   SET low_balance_threshold = $2, updated_at = now()
  FROM o
 WHERE a.account_id = $1
RETURNING o.low_balance_threshold, a.balance_tokens";

/// Sets (or clears, with NULL) the balance below which the account's wallet changes are
/// announced on `compute_auction_low_balance`; a balance already below it is announced at once.
/// Returns the threshold it replaced. Operators only.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn set_low_balance_threshold(account_id: Option<&str>, tokens: Option<i64>) -> Option<i64> {
    let account = check_id("account_id", account_id);
    if let Some(t) = tokens {
        or_raise!(validate::positive("tokens", t));
    }
    spi::with(|c| {
        authority::check_operator(c, "set_low_balance_threshold");
        let t = spi::run(c, SET_THRESHOLD, &[account.into(), tokens.into()]);
        if t.is_empty() {
            not_found!("account", account);
        }
        let row = t.first();
        let (previous, balance): (Option<i64>, i64) = (spi::get(&row, 1), spi::get_req(&row, 2));
        if let Some(threshold) = tokens.filter(|&t| balance < t) {
            notices::send(channels::LOW_BALANCE, &notice::low_balance(account, balance, threshold));
        }
        previous
    })
}

const WALLET: &str = concat!(
    "
SELECT jsonb_build_object(
  'account_id', a.account_id,
  'kind', a.kind,
  'balance_tokens', a.balance_tokens,
  'held_tokens', a.held_tokens,
  'pending_balance_tokens', a.balance_tokens + coalesce(p.db, 0),
  'pending_held_tokens', a.held_tokens + coalesce(p.dh, 0),
  'total_deposited', a.total_deposited,
  'total_spent', a.total_spent,
  'total_withdrawn', a.total_withdrawn,
  'low_balance_threshold', a.low_balance_threshold,
  'owner_role', a.owner_role,
  'open_bids', (SELECT count(*) FROM compute_auction.compute_auction_bids b
                 WHERE b.bidder_id = a.account_id AND b.status = ",
    bid_status_sql!(open),
    "),
  'won_bids', (SELECT count(*) FROM compute_auction.compute_auction_bids b
                WHERE b.bidder_id = a.account_id AND b.status = ",
    bid_status_sql!(won),
    "),
  'bids', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'bid_id', b.id, 'task_id', b.task_id, 'status', b.status,
                    'max_price_tokens', b.max_price_tokens, 'placed_at', b.placed_at, 'ttl_at', b.ttl_at)
                  ORDER BY b.id DESC), '[]')
             FROM (SELECT * FROM compute_auction.compute_auction_bids b
                    WHERE b.bidder_id = a.account_id AND b.status IN ",
    bid_status_sql!(live),
    "
                    ORDER BY b.id DESC LIMIT $2) b),
  'recent_entries', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'id', l.id, 'at', l.at, 'entry_kind', l.entry_kind,
                    'delta_balance', l.delta_balance, 'delta_held', l.delta_held,
                    'bid_id', l.bid_id, 'slot_id', l.slot_id, 'round_id', l.round_id, 'reason', l.reason,
                    'balance_after', l.balance_after, 'held_after', l.held_after)
                  ORDER BY l.id DESC), '[]')
             FROM (SELECT * FROM compute_auction.token_ledger l
                    WHERE l.account_id = a.account_id ORDER BY l.id DESC LIMIT $2) l))
  FROM compute_auction.token_accounts a
  LEFT JOIN (SELECT sum(delta_balance) AS db, sum(delta_held) AS dh
               FROM compute_auction.pending_entries WHERE account_id = $1) p ON true
 WHERE a.account_id = $1"
);

/// One wallet at a glance (docs/SQL_API.md#wallet): its balances with and without its pending
/// entries, its thresholds and totals, its open bids and its newest bids and ledger entries.
/// What the dashboard's wallet view shows.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn wallet(account_id: Option<&str>) -> pgrx::JsonB {
    let account = check_id("account_id", account_id);
    spi::with_read(|c| {
        let args: [DatumWithOid<'_>; 2] = [account.into(), WALLET_ENTRIES.into()];
        match spi::first::<pgrx::JsonB>(spi::read(c, WALLET, &args), 1) {
            Some(j) => j,
            None => not_found!("account", account),
        }
    })
}

/// One wallet entry a settlement or abort implies, recorded while the winner's account may be
/// held by its owner.
pub struct Pending<'a> {
    pub kind: &'static str,
    pub delta_balance: i64,
    pub delta_held: i64,
    pub reason: &'a str,
}

const RECORD_PENDING: &str = "
INSERT INTO compute_auction.pending_entries
       (account_id, bid_id, slot_id, round_id, entry_kind, delta_balance, delta_held, reason)
SELECT $1, $2, $3, $4, e.kind, e.db, e.dh, e.reason
  FROM unnest($5::text[], $6::bigint[], $7::bigint[], $8::text[]) WITH ORDINALITY AS e(kind, db, dh, reason, n)
 ORDER BY e.n";

/// Records `entries` for `account` (of bid `bid`, run on `slot` in `round`) as pending, without
/// touching the account row.
pub fn record_pending(c: &mut SpiClient<'_>, account: &str, bid: i64, slot: &str, round: i64, entries: &[Pending<'_>]) {
    if entries.is_empty() {
        return;
    }
    let entry_kinds: Vec<&str> = entries.iter().map(|e| e.kind).collect();
    let db: Vec<i64> = entries.iter().map(|e| e.delta_balance).collect();
    let dh: Vec<i64> = entries.iter().map(|e| e.delta_held).collect();
    let reasons: Vec<&str> = entries.iter().map(|e| e.reason).collect();
    let args: [DatumWithOid<'_>; 8] = [
        account.into(),
        bid.into(),
        slot.into(),
        round.into(),
        entry_kinds.into(),
        db.into(),
        dh.into(),
        reasons.into(),
    ];
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

/// The pending entries of the locked accounts, each account's in entry_id order, deleted as
/// they are read (they are posted in this same transaction).
const TAKE_PENDING: &str = "
WITH d AS (
    DELETE FROM compute_auction.pending_entries WHERE account_id = ANY ($1)
 RETURNING entry_id, account_id, entry_kind, delta_balance, delta_held, bid_id, slot_id, round_id, reason
)
SELECT account_id, entry_kind, delta_balance, delta_held, bid_id, slot_id, round_id, reason
  FROM d ORDER BY account_id, entry_id";

/// Posts the pending entries of every account it can lock without waiting (of `accounts` only,
/// when given), each account's in the order they were recorded, in one batch. Returns how many
/// it posted.
pub fn apply_pending(c: &mut SpiClient<'_>, accounts: Option<&[String]>) -> i64 {
    let filter: Option<Vec<String>> = accounts.map(<[String]>::to_vec);
    let locked: Vec<String> = spi::run(c, LOCK_PENDING_ACCOUNTS, &[filter.into()]).map(|r| spi::req(&r, 1)).collect();
    if locked.is_empty() {
        return 0;
    }
    type Row = (String, String, i64, i64, i64, String, i64, String);
    let rows: Vec<Row> = spi::run(c, TAKE_PENDING, &[locked.into()])
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
    let entries: Vec<Entry<'_>> = rows
        .iter()
        .map(|(account, kind, delta_balance, delta_held, bid, slot, round, reason)| Entry {
            account,
            delta_balance: *delta_balance,
            delta_held: *delta_held,
            kind,
            bid_id: Some(*bid),
            slot_id: Some(slot),
            round_id: Some(*round),
            reason: Some(reason),
            // what leaves the wallet for good (a charge) is spent
            spent: or_raise!(tokens::add("spent", *delta_balance, *delta_held)).saturating_neg().max(0),
            ..Default::default()
        })
        .collect();
    post_many(c, &entries);
    // an aborted run's refund is announced once it reaches the wallet
    for e in entries.iter().filter(|e| e.kind == kinds::REFUND) {
        notices::refunded(e.account, BidStatus::Aborted, e.bid_id.map(|b| (b, e.delta_balance)));
    }
    tokens::count(entries.len())
}
