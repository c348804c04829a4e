//! compute_auction: a continuous uniform-price auction for AI-agent compute slots, inside
//! PostgreSQL.
//!
//! Modules by concern: `ledger` (wallets and the token journal), `bids`, `slots`, `clearing`
//! (clear_round), `summaries` (the rounds' per-minute totals and recent prices), `settlement` (settle,
//! abort, refunds), `reporting` (order book, stats, audit), `notices` (NOTIFY).
//! The market rules are pure Rust in the `compute_auction_core` crate; this crate is the thin
//! SPI layer around them. The DDL is `sql/schema.sql`.

use pgrx::prelude::*;

::pgrx::pg_module_magic!();

// first: their macros (raising errors; the authority rules in SQL) are used by the modules after
// them
#[macro_use]
mod errors;
#[macro_use]
mod authority;
mod bids;
#[macro_use]
mod book;
// before the readers: the summaries' SQL (price percentiles, the audit rows) are its macros
#[macro_use]
mod summaries;
mod clearing;
mod cycle;
mod ledger;
mod notices;
mod quests;
mod reporting;
mod retention;
mod settlement;
mod slots;
mod spi;
mod story;
mod times;

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!(
    "../sql/quests.sql",
    name = "quests",
    requires = [quests::submit_bids_for_task_arrays, quests::allocate_proportional_arrays]
);
extension_sql_file!("../sql/authority.sql", name = "authority");
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
// a failed unwrap or assert is a failed #[pg_test] (clippy.toml allows them in #[cfg(test)]
// code, which `any(test, ...)` does not count as)
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    include!("pg_tests.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
