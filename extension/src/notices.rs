//! Sending the notices (compute_auction_core::notices says what each channel's payload holds).
//!
//! NOTIFY is transactional: PostgreSQL queues a notice in the transaction (or subtransaction)
//! that sent it and delivers it at commit, so a rolled-back change is never announced. Every
//! notice but one is sent as its event happens. `compute_auction_bids_refunded` is batched per
//! account and status per transaction: the refunds are collected here, per subtransaction (a
//! subtransaction's commit hands them to its parent, its abort drops them), and sent just
//! before the transaction commits, from a transaction callback. The callbacks are registered
//! once per backend, the first time a refund is recorded.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::c_void;

use compute_auction_core::book::BidStatus;
use compute_auction_core::notices;
use pgrx::pg_sys;
use pgrx::prelude::*;

pub use compute_auction_core::notices::channels;

/// Queues `payload` on `channel`, delivered at commit. The payload builders of
/// compute_auction_core::notices keep every payload below NOTIFY's limit.
pub fn send(channel: &'static str, payload: &str) {
    // SAFETY: pg_notify takes two text arguments, both given and not NULL; it raises (through
    // pgrx's guard) on a payload that is too long, which the builders never produce
    unsafe {
        pgrx::direct_function_call::<()>(pg_sys::pg_notify, &[channel.into_datum(), payload.into_datum()]);
    }
}

/// The refunds a subtransaction recorded: (account, status) -> (bid id, tokens).
type Refunds = BTreeMap<(String, BidStatus), Vec<(i64, i64)>>;

#[derive(Default)]
struct Pending {
    registered: bool,
    by_subxact: BTreeMap<pg_sys::SubTransactionId, Refunds>,
}

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::default();
}

/// Records that `bids` (bid id, tokens returned) of `account` were refunded, and are now
/// `status`: they are announced on `compute_auction_bids_refunded` when the transaction commits.
pub fn refunded(account: &str, status: BidStatus, bids: impl IntoIterator<Item = (i64, i64)>) {
    // SAFETY: reads the current transaction state; called only inside a transaction
    let sub = unsafe { pg_sys::GetCurrentSubTransactionId() };
    PENDING.with_borrow_mut(|p| {
        if !p.registered {
            // SAFETY: the callbacks are plain functions that live as long as the library, which
            // PostgreSQL never unloads; registered once per backend
            unsafe {
                pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
                pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
            }
            p.registered = true;
        }
        p.by_subxact.entry(sub).or_default().entry((account.to_owned(), status)).or_default().extend(bids);
    });
}

/// Sends the transaction's refund notices (every subtransaction has ended by now).
fn flush() {
    let all = PENDING.with_borrow_mut(|p| std::mem::take(&mut p.by_subxact));
    let mut merged: Refunds = BTreeMap::new();
    for (key, bids) in all.into_values().flatten() {
        merged.entry(key).or_default().extend(bids);
    }
    for ((account, status), mut bids) in merged {
        bids.sort_unstable();
        for payload in notices::bids_refunded(&account, status, &bids) {
            send(channels::BIDS_REFUNDED, &payload);
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    match event {
        // before PreCommit_Notify, which queues what Async_Notify collected
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT | pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE => flush(),
        // committed (already flushed), aborted, prepared, or a parallel worker's: nothing to send
        _ => PENDING.with_borrow_mut(|p| p.by_subxact.clear()),
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    PENDING.with_borrow_mut(|p| match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => {
            if let Some(mine) = p.by_subxact.remove(&my) {
                let theirs = p.by_subxact.entry(parent).or_default();
                for (key, bids) in mine {
                    theirs.entry(key).or_default().extend(bids);
                }
            }
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
            p.by_subxact.remove(&my);
        }
        _ => {}
    });
}
