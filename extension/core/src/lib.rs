//! The market rules of compute_auction, as plain Rust with no PostgreSQL types.
//!
//! The pgrx layer (`extension/src`) reads rows over SPI, calls these functions, and writes the
//! result back. Keeping the arithmetic here means it is unit- and property-tested without a
//! database, and every token amount is an `i64` handled with checked arithmetic.

pub mod book;
pub mod clearing;
pub mod limits;
pub mod notices;
pub mod percentiles;
pub mod planner;
pub mod story;
pub mod tokens;
pub mod validate;
