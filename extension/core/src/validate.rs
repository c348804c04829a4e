//! Input validation shared by every public function. The pgrx layer maps each [`Invalid`] to its
//! documented SQLSTATE (see `extension/src/errors.rs` and docs/SQL_API.md).

use std::fmt;

/// Longest id (account, task, slot) accepted, in characters.
pub const MAX_ID_CHARS: usize = 256;

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
}
