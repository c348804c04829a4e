//! Input validation shared by every public function. The pgrx layer maps each [`Invalid`] to its
//! documented SQLSTATE (see `extension/src/errors.rs` and docs/SQL_API.md).

use std::fmt;

pub use crate::limits::MAX_ID_CHARS;

#[derive(Clone, Debug, PartialEq)]
pub enum Invalid {
    /// A required argument was NULL (22004).
    Null { arg: &'static str },
    /// An id was the empty string (22023).
    Empty { arg: &'static str },
    /// An id was longer than [`MAX_ID_CHARS`] (22001).
    TooLong { arg: &'static str, chars: usize },
    /// An amount or price that must be positive was not (22023).
    NotPositive { arg: &'static str, value: i64 },
    /// An amount that must be zero or more was negative (22023).
    Negative { arg: &'static str, value: i64 },
    /// A float was NaN or infinite (22023).
    NotFinite { arg: &'static str },
    /// Any other value outside its documented range (22023).
    OutOfRange { arg: &'static str, detail: String },
    /// Token arithmetic would leave bigint (22003).
    Overflow { what: &'static str },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Null { arg } => write!(f, "{arg} must not be NULL"),
            Invalid::Empty { arg } => write!(f, "{arg} must not be empty"),
            Invalid::TooLong { arg, chars } => {
                write!(f, "{arg} is {chars} characters long; at most {MAX_ID_CHARS} are allowed")
            }
            Invalid::NotPositive { arg, value } => write!(f, "{arg} must be positive, got {value}"),
            Invalid::Negative { arg, value } => write!(f, "{arg} must not be negative, got {value}"),
            Invalid::NotFinite { arg } => write!(f, "{arg} must be a finite number"),
            Invalid::OutOfRange { arg, detail } => write!(f, "{arg} is out of range: {detail}"),
            Invalid::Overflow { what } => write!(f, "{what} would overflow bigint"),
        }
    }
}

pub fn required<T>(arg: &'static str, v: Option<T>) -> Result<T, Invalid> {
    v.ok_or(Invalid::Null { arg })
}

/// An account, task or slot id: non-empty, at most [`MAX_ID_CHARS`] characters. Any other text,
/// quotes and SQL included, is an ordinary id.
pub fn id(arg: &'static str, v: &str) -> Result<(), Invalid> {
    if v.is_empty() {
        return Err(Invalid::Empty { arg });
    }
    let chars = v.chars().count();
    if chars > MAX_ID_CHARS {
        return Err(Invalid::TooLong { arg, chars });
    }
    Ok(())
}

pub fn positive(arg: &'static str, v: i64) -> Result<i64, Invalid> {
    if v > 0 {
        Ok(v)
    } else {
        Err(Invalid::NotPositive { arg, value: v })
    }
}

pub fn non_negative(arg: &'static str, v: i64) -> Result<i64, Invalid> {
    if v >= 0 {
        Ok(v)
    } else {
        Err(Invalid::Negative { arg, value: v })
    }
}

pub fn finite(arg: &'static str, v: f64) -> Result<f64, Invalid> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Invalid::NotFinite { arg })
    }
}

/// Microseconds in a day.
const DAY_US: i128 = 86_400_000_000;

/// How far from now a timestamp or date argument may be: 100 years, in days (issue 17).
pub const MAX_TIME_OFFSET_DAYS: i64 = 36_525;

/// The longest interval argument: 10 years, in days. An interval's months count 30 days each,
/// as PostgreSQL's interval comparison counts them.
pub const MAX_INTERVAL_DAYS: i64 = 3_653;

/// A timestamp argument (microseconds, PostgreSQL's epoch; `i64::MIN`/`i64::MAX` are
/// -infinity/infinity) must lie within MAX_TIME_OFFSET_DAYS of `now` (same unit).
pub fn time_near(arg: &'static str, v_us: i64, now_us: i64) -> Result<i64, Invalid> {
    let off = i128::from(v_us) - i128::from(now_us);
    if v_us == i64::MIN || v_us == i64::MAX || off.abs() > i128::from(MAX_TIME_OFFSET_DAYS) * DAY_US {
        return Err(Invalid::OutOfRange {
            arg,
            detail: format!("must be a finite time within {MAX_TIME_OFFSET_DAYS} days (100 years) of now()"),
        });
    }
    Ok(v_us)
}

/// A date argument (days, PostgreSQL's epoch; `i32::MIN`/`i32::MAX` are -infinity/infinity)
/// must lie within MAX_TIME_OFFSET_DAYS of `today` (same unit).
pub fn date_near(arg: &'static str, v_days: i32, today: i32) -> Result<i32, Invalid> {
    let off = i64::from(v_days) - i64::from(today);
    if v_days == i32::MIN || v_days == i32::MAX || off.abs() > MAX_TIME_OFFSET_DAYS {
        return Err(Invalid::OutOfRange {
            arg,
            detail: format!("must be a finite date within {MAX_TIME_OFFSET_DAYS} days (100 years) of today"),
        });
    }
    Ok(v_days)
}

/// An interval argument (months, days, microseconds) must be non-negative and at most
/// MAX_INTERVAL_DAYS long.
pub fn interval_bounded(arg: &'static str, months: i32, days: i32, micros: i64) -> Result<(), Invalid> {
    let total = (i128::from(months) * 30 + i128::from(days)) * DAY_US + i128::from(micros);
    if total < 0 || total > i128::from(MAX_INTERVAL_DAYS) * DAY_US {
        return Err(Invalid::OutOfRange {
            arg,
            detail: format!("must be a non-negative interval of at most {MAX_INTERVAL_DAYS} days (10 years)"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(id("a", ""), Err(Invalid::Empty { arg: "a" }));
        assert!(id("a", &"x".repeat(256)).is_ok());
        assert_eq!(id("a", &"x".repeat(257)), Err(Invalid::TooLong { arg: "a", chars: 257 }));
        // characters, not bytes
        assert!(id("a", &"é".repeat(256)).is_ok());
        assert!(id("a", "'; DROP TABLE x; --").is_ok());
    }

    #[test]
    fn numbers() {
        assert!(positive("p", 1).is_ok());
        assert!(positive("p", 0).is_err());
        assert!(non_negative("p", 0).is_ok());
        assert!(non_negative("p", -1).is_err());
        assert!(finite("f", f64::NAN).is_err());
        assert!(finite("f", f64::INFINITY).is_err());
        assert!(finite("f", -0.5).is_ok());
    }

    #[test]
    fn times() {
        let now = 800_000_000_000_000; // 2025, in microseconds since 2000
        assert!(time_near("t", now, now).is_ok());
        let edge = MAX_TIME_OFFSET_DAYS * 86_400_000_000;
        assert!(time_near("t", now + edge, now).is_ok());
        assert!(time_near("t", now - edge, now).is_ok());
        assert!(time_near("t", now + edge + 1, now).is_err());
        assert!(time_near("t", now - edge - 1, now).is_err());
        assert!(time_near("t", i64::MAX, now).is_err());
        assert!(time_near("t", i64::MIN, now).is_err());
        assert!(time_near("t", i64::MIN, i64::MAX).is_err()); // no overflow
        assert!(date_near("d", 9_000, 9_000 + 36_525).is_ok());
        assert!(date_near("d", 9_000, 9_000 + 36_526).is_err());
        assert!(date_near("d", i32::MAX, 9_000).is_err());
        assert!(date_near("d", i32::MIN, 9_000).is_err());
    }

    #[test]
    fn intervals() {
        assert_eq!(interval_bounded("i", 0, 0, 0), Ok(()));
        assert!(interval_bounded("i", 120, 0, 0).is_ok()); // '10 years'
        assert!(interval_bounded("i", 0, 3_653, 0).is_ok());
        assert!(interval_bounded("i", 0, 3_653, 1).is_err());
        assert!(interval_bounded("i", 0, 0, -1).is_err());
        assert!(interval_bounded("i", 1, -31, 0).is_err()); // 30 - 31 days: negative
        assert!(interval_bounded("i", i32::MAX, i32::MAX, i64::MAX).is_err()); // no overflow
        assert!(interval_bounded("i", i32::MIN, 0, 0).is_err());
    }
}
