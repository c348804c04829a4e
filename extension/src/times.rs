//! Time arguments are checked before use (issue 17): a timestamp or date must be finite and
//! within 100 years of now(), an interval non-negative and at most 10 years (the bounds and the
//! rule are `compute_auction_core::validate`); otherwise 22023 naming the argument. So no
//! infinite or far-off time reaches a table (where it would break clearing or reporting), and
//! no call fails with an undocumented date/time SQLSTATE (22008).

use compute_auction_core::validate;
use pgrx::pg_sys;
use pgrx::prelude::{Date, Interval, TimestampWithTimeZone};

/// now(): the transaction's start, in microseconds since PostgreSQL's epoch.
fn now_us() -> i64 {
    // SAFETY: reads the current transaction's start time; always valid inside a function call.
    unsafe { pg_sys::GetCurrentTransactionStartTimestamp() }
}

/// A timestamp argument, checked.
pub fn timestamp(arg: &'static str, v: TimestampWithTimeZone) -> TimestampWithTimeZone {
    or_raise!(validate::time_near(arg, pg_sys::TimestampTz::from(v), now_us()));
    v
}

/// A date argument, checked.
pub fn date(arg: &'static str, v: Date) -> Date {
    let today = i32::try_from(now_us().div_euclid(86_400_000_000)).unwrap_or(i32::MAX);
    or_raise!(validate::date_near(arg, pg_sys::DateADT::from(v), today));
    v
}

/// An interval argument, checked.
pub fn interval(arg: &'static str, v: Interval) -> Interval {
    or_raise!(validate::interval_bounded(arg, v.months(), v.days(), v.micros()));
    v
}

/// A whole number of seconds as an interval (the default TTL of `compute_auction_core::limits`).
pub fn seconds(secs: i64) -> Interval {
    Interval::from_micros(secs.saturating_mul(1_000_000))
}

/// A whole number of calendar days as an interval (`interval 'N days'`: the longest TTL).
pub fn days(days: i32) -> Interval {
    Interval::new(0, days, 0).unwrap_or_else(|e| internal!(format!("interval of {days} days: {e}")))
}
