//! Wallets and the append-only token ledger.
//!
//! Every change to `token_accounts` goes through [`post`], which updates the account and writes
//! its `token_ledger` row in one statement, so `balance_tokens = sum(delta_balance)` and
//! `held_tokens = sum(delta_held)` hold for every account at every commit.

use compute_auction_core::tokens;
use compute_auction_core::validate::{self, Invalid};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::authority;
use crate::errors::{self, Code, OrRaise};
use crate::spi;

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
 RETURNING balance_tokens, held_tokens
), l AS (
    INSERT INTO compute_auction.token_ledger
           (account_id, delta_balance, delta_held, entry_kind, bid_id, slot_id, round_id, reason,
            idempotency_key, balance_after, held_after)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, a.balance_tokens, a.held_tokens FROM a
)
SELECT balance_tokens, held_tokens FROM a";

/// Applies `e` to its (already locked) account and journals it. Returns the new
/// (balance_tokens, held_tokens). Overflow raises 22003 and a negative result 23514 from the
/// database itself, so a caller that skipped a check still cannot corrupt the books.
pub fn post(c: &mut SpiClient<'_>, e: &Entry<'_>) -> (i64, i64) {
    let args: [DatumWithOid<'_>; 12] = [
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
    ];
    let t = spi::run(c, POST, &args);
    if t.is_empty() {
        errors::not_found("account", e.account);
    }
    let row = t.first();
    (spi::get_req(&row, 1), spi::get_req(&row, 2))
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
        errors::not_found("account", account);
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
        None => errors::not_found("account", account),
        Some(false) => errors::not_owner(account),
        Some(true) => {}
    }
}

/// Locks an account the session must be allowed to act for (42501 otherwise).
pub fn lock_owned(c: &mut SpiClient<'_>, account: &str) -> Locked {
    let l = lock(c, account);
    if !l.may_act {
        errors::not_owner(account);
    }
    l
}

pub fn check_id<'a>(arg: &'static str, v: Option<&'a str>) -> &'a str {
    let v = validate::required(arg, v).or_raise();
    validate::id(arg, v).or_raise();
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
    let kind = validate::required("kind", kind).or_raise();
    if !KINDS.contains(&kind) {
        errors::invalid(Invalid::OutOfRange {
            arg: "kind",
            detail: format!("{kind:?} is not one of agent, quest, system"),
        });
    }
    let initial = validate::required("initial_tokens", initial_tokens).or_raise();
    validate::non_negative("initial_tokens", initial).or_raise();
    if let Some(r) = owner_role {
        validate::id("owner_role", r).or_raise();
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
            errors::raise(
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
                kind: "open",
                reason: Some("initial tokens"),
                deposited: initial,
                ..Default::default()
            },
        )
        .0
    })
}

/// If `key` was already used for this account and entry kind, the first call's result.
fn replay(c: &mut SpiClient<'_>, account: &str, kind: &'static str, key: Option<&str>, delta: i64) -> Option<i64> {
    let key = key?;
    let t = spi::run(
        c,
        "SELECT delta_balance, balance_after FROM compute_auction.token_ledger
          WHERE account_id = $1 AND entry_kind = $2 AND idempotency_key = $3",
        &[account.into(), kind.into(), key.into()],
    );
    if t.is_empty() {
        return None;
    }
    let row = t.first();
    let first_delta: i64 = spi::get_req(&row, 1);
    if first_delta != delta {
        errors::raise(
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
    let amount = validate::positive("amount", validate::required("amount", amount).or_raise()).or_raise();
    let reason = validate::required("reason", reason).or_raise();
    if let Some(k) = idempotency_key {
        validate::id("idempotency_key", k).or_raise();
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
        if let Some(first) = replay(c, account, "deposit", idempotency_key, amount) {
            return first;
        }
        tokens::add("balance_tokens", l.balance, amount).or_raise();
        tokens::add("total_deposited", l.total_deposited, amount).or_raise();
        post(
            c,
            &Entry {
                account,
                delta_balance: amount,
                kind: "deposit",
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
        if let Some(first) = replay(c, account, "withdraw", idempotency_key, -amount) {
            return first;
        }
        if l.balance < amount {
            errors::insufficient_funds(account, amount, l.balance);
        }
        tokens::add("total_withdrawn", l.total_withdrawn, amount).or_raise();
        post(
            c,
            &Entry {
                account,
                delta_balance: -amount,
                kind: "withdraw",
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
    let row = spi::with(|c| {
        let t = spi::run(
            c,
            "SELECT balance_tokens, held_tokens FROM compute_auction.token_accounts WHERE account_id = $1",
            &[account.into()],
        );
        if t.is_empty() {
            errors::not_found("account", account);
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
    let row = spi::with(|c| {
        let t = spi::run(c, PENDING_BALANCE, &[account.into()]);
        if t.is_empty() {
            errors::not_found("account", account);
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
