//! Every error the extension raises, with its SQLSTATE. The table in docs/SQL_API.md lists
//! them; keep the two in step. Errors are raised with `ereport!`, never with a panic, so the
//! caller sees the documented SQLSTATE and the transaction rolls back whole.

use compute_auction_core::validate::Invalid;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

pub use pgrx::PgSqlErrorCode as Code;

/// Raises an ERROR with `code`, `message` and an optional hint. Never returns.
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, hint: Option<&str>) -> ! {
    let mut report = ErrorReport::new(code, message.into(), function_name!());
    if let Some(h) = hint {
        report = report.set_hint(h.to_string());
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Raises an ERROR with a detail and a hint. Never returns.
pub fn raise_with_detail(code: PgSqlErrorCode, message: &str, detail: &str, hint: &str) -> ! {
    ErrorReport::new(code, message.to_string(), function_name!())
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

pub fn invalid(e: Invalid) -> ! {
    raise(invalid_code(&e), e.to_string(), None)
}

/// Unwraps a validation result or raises its SQLSTATE.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, Invalid> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => invalid(e),
        }
    }
}

/// P0002: an account, slot or bid that does not exist.
pub fn not_found(what: &str, id: &str) -> ! {
    raise(Code::ERRCODE_NO_DATA_FOUND, format!("{what} {id} does not exist"), None)
}

/// 55000: the object exists but is in the wrong state for the call.
pub fn wrong_state(message: impl Into<String>, hint: Option<&str>) -> ! {
    raise(Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, message, hint)
}

/// 23514: the wallet's spendable balance cannot cover the amount.
pub fn insufficient_funds(account: &str, need: i64, have: i64) -> ! {
    raise(
        Code::ERRCODE_CHECK_VIOLATION,
        format!("insufficient funds in account {account}: needs {need} tokens, has {have} spendable"),
        Some("Deposit tokens (refill through good work) or bid less."),
    )
}

/// 42501: the session's role may not act for this account.
pub fn not_owner(account: &str) -> ! {
    raise(
        Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("role {} may not act for account {account}", session_user_name()),
        Some("Only members of the account's owner role, and operators, may act for the account (docs/SECURITY.md)."),
    )
}

/// 42501: the session may not claim, settle or abort this slot.
pub fn not_runner(slot: &str) -> ! {
    raise(
        Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("role {} may not run slot {slot}", session_user_name()),
        Some("Only members of the slot's runner role that hold the runner rights, and operators, may run the slot (docs/SECURITY.md)."),
    )
}

fn session_user_name() -> String {
    Spi::get_one::<String>("SELECT session_user::text").ok().flatten().unwrap_or_default()
}

/// XX000 for a failure of the SPI machinery itself: a bug, never a consequence of input.
pub fn internal(e: impl std::fmt::Display) -> ! {
    raise(Code::ERRCODE_INTERNAL_ERROR, format!("compute_auction internal error: {e}"), None)
}
