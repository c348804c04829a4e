//! Every error the extension raises, with its SQLSTATE. The table in docs/SQL_API.md lists
//! them; keep the two in step. Errors are raised with `ereport!`, never with a panic, so the
//! caller sees the documented SQLSTATE and the transaction rolls back whole.
//!
//! Code raises through the macros below (`raise!`, `not_found!`, `or_raise!`, ...), which pass
//! the calling function's name, and the functions they call are `#[track_caller]`: an error
//! report's location (`\set VERBOSITY verbose`: function, file and line) is the place that
//! raised it, never this module.

/// Expands to a call of `errors::$f` with the calling function's name first.
macro_rules! raise_from_here {
    ($f:ident, $($a:expr),* $(,)?) => {
        $crate::errors::$f(::pgrx::function_name!(), $($a),*)
    };
}

/// `raise!(code, message, hint)`: see [`raise`].
macro_rules! raise {
    ($($a:expr),* $(,)?) => { raise_from_here!(raise, $($a),*) };
}

/// `raise_with_detail!(code, message, detail, hint)`: see [`raise_with_detail`].
macro_rules! raise_with_detail {
    ($($a:expr),* $(,)?) => { raise_from_here!(raise_with_detail, $($a),*) };
}

/// `invalid!(e)`: see [`invalid`].
macro_rules! invalid {
    ($($a:expr),* $(,)?) => { raise_from_here!(invalid, $($a),*) };
}

/// `not_found!(what, id)`: see [`not_found`].
macro_rules! not_found {
    ($($a:expr),* $(,)?) => { raise_from_here!(not_found, $($a),*) };
}

/// `wrong_state!(message, hint)`: see [`wrong_state`].
macro_rules! wrong_state {
    ($($a:expr),* $(,)?) => { raise_from_here!(wrong_state, $($a),*) };
}

/// `insufficient_funds!(account, need, have)`: see [`insufficient_funds`].
macro_rules! insufficient_funds {
    ($($a:expr),* $(,)?) => { raise_from_here!(insufficient_funds, $($a),*) };
}

/// `not_owner!(account)`: see [`not_owner`].
macro_rules! not_owner {
    ($($a:expr),* $(,)?) => { raise_from_here!(not_owner, $($a),*) };
}

/// `not_runner!(slot)`: see [`not_runner`].
macro_rules! not_runner {
    ($($a:expr),* $(,)?) => { raise_from_here!(not_runner, $($a),*) };
}

/// `internal!(e)`: see [`internal`].
macro_rules! internal {
    ($($a:expr),* $(,)?) => { raise_from_here!(internal, $($a),*) };
}

/// Unwraps a validation result (`Result<T, Invalid>`) or raises its SQLSTATE from here.
macro_rules! or_raise {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => raise_from_here!(invalid, e),
        }
    };
}

use compute_auction_core::validate::Invalid;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

pub use pgrx::PgSqlErrorCode as Code;

/// Raises an ERROR with `code`, `message` and an optional hint, located at the caller (`at`: its
/// function). Never returns.
#[track_caller]
pub fn raise(at: &'static str, code: PgSqlErrorCode, message: impl Into<String>, hint: Option<&str>) -> ! {
    let mut report = ErrorReport::new(code, message.into(), at);
    if let Some(h) = hint {
        report = report.set_hint(h.to_string());
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Raises an ERROR with a detail and a hint. Never returns.
#[track_caller]
pub fn raise_with_detail(at: &'static str, code: PgSqlErrorCode, message: &str, detail: &str, hint: &str) -> ! {
    ErrorReport::new(code, message.to_string(), at)
        .set_detail(detail.to_string())
        .set_hint(hint.to_string())
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// The SQLSTATE of each kind of bad input.
pub fn invalid_code(e: &Invalid) -> PgSqlErrorCode {
    match e {
        Invalid::Null { .. } => Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, // 22004
        Invalid::TooLong { .. } => Code::ERRCODE_STRING_DATA_RIGHT_TRUNCATION, // 22001
        Invalid::Overflow { .. } => Code::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE, // 22003
        Invalid::Empty { .. }
        | Invalid::NotPositive { .. }
        | Invalid::Negative { .. }
        | Invalid::NotFinite { .. }
        | Invalid::OutOfRange { .. } => Code::ERRCODE_INVALID_PARAMETER_VALUE, // 22023
    }
}

#[track_caller]
pub fn invalid(at: &'static str, e: Invalid) -> ! {
    raise(at, invalid_code(&e), e.to_string(), None)
}

/// P0002: an account, slot or bid that does not exist.
#[track_caller]
pub fn not_found(at: &'static str, what: &str, id: &str) -> ! {
    raise(at, Code::ERRCODE_NO_DATA_FOUND, format!("{what} {id} does not exist"), None)
}

/// 55000: the object exists but is in the wrong state for the call.
#[track_caller]
pub fn wrong_state(at: &'static str, message: impl Into<String>, hint: Option<&str>) -> ! {
    raise(at, Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, message, hint)
}

/// 23514: the wallet's spendable balance cannot cover the amount.
#[track_caller]
pub fn insufficient_funds(at: &'static str, account: &str, need: i64, have: i64) -> ! {
    raise(
        at,
        Code::ERRCODE_CHECK_VIOLATION,
        format!("insufficient funds in account {account}: needs {need} tokens, has {have} spendable"),
        Some("Deposit tokens (refill through good work) or bid less."),
    )
}

/// 42501: the session's role may not act for this account.
#[track_caller]
pub fn not_owner(at: &'static str, account: &str) -> ! {
    raise(
        at,
        Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("role {} may not act for account {account}", session_user_name()),
        Some("Only members of the account's owner role, and operators, may act for the account (docs/SECURITY.md)."),
    )
}

/// 42501: the session may not claim, settle or abort this slot.
#[track_caller]
pub fn not_runner(at: &'static str, slot: &str) -> ! {
    raise(
        at,
        Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("role {} may not run slot {slot}", session_user_name()),
        Some("Only members of the slot's runner role that hold the runner rights, and operators, may run the slot (docs/SECURITY.md)."),
    )
}

fn session_user_name() -> String {
    Spi::get_one::<String>("SELECT session_user::text").ok().flatten().unwrap_or_default()
}

/// XX000 for a failure of the SPI machinery itself: a bug, never a consequence of input.
#[track_caller]
pub fn internal(at: &'static str, e: impl std::fmt::Display) -> ! {
    raise(at, Code::ERRCODE_INTERNAL_ERROR, format!("compute_auction internal error: {e}"), None)
}
