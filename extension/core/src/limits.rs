//! The market's shared numbers, each defined once: the extension, its tests and the driver read
//! them from here. Where SQL DDL must repeat one (a CHECK constraint), a test reads the DDL and
//! checks that it matches (tests/test_code_health.py).

/// Longest id (account, task, slot, quest, idempotency key) accepted, in characters. The
/// `length(...) BETWEEN 1 AND 256` CHECKs of sql/schema.sql repeat it.
pub const MAX_ID_CHARS: usize = 256;

/// A bid placed without `ttl_at` expires this many seconds after it was placed (15 minutes).
pub const BID_TTL_DEFAULT_SECS: i64 = 15 * 60;

/// The latest `ttl_at` a bid may ask for: now() + this many calendar days (an interval of
/// days, as `interval '30 days'` is, so the bound follows the session's time zone across a
/// daylight-saving change).
pub const BID_TTL_MAX_DAYS: i32 = 30;

/// How [`BID_TTL_DEFAULT_SECS`] and [`BID_TTL_MAX_DAYS`] read in an error message or hint.
pub const BID_TTL_DEFAULT_TEXT: &str = "15 minutes";
pub const BID_TTL_MAX_TEXT: &str = "30 days";

/// The largest `depth` order_book accepts; the driver's `--order-book-max-depth` is capped by it.
pub const MAX_ORDER_BOOK_DEPTH: i32 = 10_000;

/// The longest `price_window` price_to_win accepts, in days (22023 beyond it).
pub const PRICE_WINDOW_MAX_DAYS: i32 = 7;

/// price_to_win estimates a run's duration from the latest this many clears (their settled
/// runs' median): a bounded read however long the history. SQL spells it with
/// [`recent_runs_sql!`], a literal: a `LIMIT $n` would make the planner's generic plan guess a
/// tenth of the clears, so a long history would be planned again on every call.
pub const RECENT_RUNS: i64 = 200;

/// RECENT_RUNS as an SQL literal (a unit test keeps the two equal).
#[macro_export]
macro_rules! recent_runs_sql {
    () => {
        "200"
    };
}

/// bid_status tells the story of a bid's newest this many rounds (`rounds_truncated` when it
/// took part in more), read with the newest this-many-times-ten of its price changes.
pub const STORY_ROUNDS: i64 = 100;
pub const STORY_PRICE_CHANGES: i64 = STORY_ROUNDS * 10;

/// task_status lists at most this many of a task's bids, newest first.
pub const TASK_BIDS_MAX: i64 = 100;

/// wallet lists an account's newest this many live bids and ledger entries.
pub const WALLET_ENTRIES: i64 = 20;

/// The largest `max_rounds` stats accepts.
pub const MAX_STATS_ROUNDS: i32 = 100_000;

/// The largest `buckets` price_history accepts.
pub const MAX_PRICE_BUCKETS: i32 = 10_000;

/// At most this many tasks per submit_bids_for_tasks call (54000 beyond it): one call holds one
/// advisory lock per task until it commits, and the cluster's shared lock table is finite.
pub const MAX_TASKS_PER_CALL: usize = 1000;

/// The advisory-lock key space (two-int4 form). Every advisory lock the extension or the driver
/// takes is listed here; docs/CONCURRENCY.md gives the order they are taken in.
pub mod locks {
    /// Key space of the extension's advisory locks: "CAUC".
    pub const CLASS: i32 = 0x4341_5543;
    /// (CLASS, CLEARING): transaction lock that serializes clear_round (and run_cycle) calls.
    pub const CLEARING: i32 = 1;
    /// (CLASS, DRIVER_LEADER): session lock held by the leading driver; the extension never
    /// takes it.
    pub const DRIVER_LEADER: i32 = 2;
    /// (CLASS, PRUNING): transaction lock that serializes prune_history calls (taken with
    /// pg_try_advisory_xact_lock: a second call returns at once instead of waiting).
    pub const PRUNING: i32 = 3;
    /// (CLASS_TASK, hashtext(task_id)): per-task transaction locks of place_bid and
    /// submit_bids_for_tasks.
    pub const CLASS_TASK: i32 = CLASS + 1;
    /// (CLASS_DAY, day - 2000-01-01): per-day transaction lock of allocate_proportional.
    pub const CLASS_DAY: i32 = CLASS + 2;
}

/// Retention (prune_history): how much one call does and how long idempotency keys live.
pub mod retention {
    /// Rows one statement of prune_history reads or removes at most: the chunk. Each chunk is
    /// one statement, so the rows it locks are few and it never waits (SKIP LOCKED).
    pub const CHUNK_ROWS: i64 = 1000;
    /// Rows one prune_history call removes from one table at most; it reports `more` for a
    /// table it stopped at this budget, and a later call goes on from there.
    pub const MAX_ROWS_PER_CALL: i64 = 100_000;
    /// A deposit or withdraw retried with the same idempotency key returns the first call's
    /// result for at least this many days after the first call, whatever the horizon: keys of
    /// compacted ledger entries are kept in `idempotency_keys` until they are older than both
    /// the horizon and this window.
    pub const KEY_WINDOW_DAYS: i32 = 7;
    /// How [`KEY_WINDOW_DAYS`] reads in the documentation.
    pub const KEY_WINDOW_TEXT: &str = "7 days";
}

/// Whether a loop that removed `removed` rows of `budget` stopped at its budget with a full last
/// chunk (so there may be more to remove): prune_history's `more`.
pub const fn stopped_at_budget(removed: i64, budget: i64, last_chunk_full: bool) -> bool {
    removed >= budget && last_chunk_full
}

#[cfg(test)]
mod tests {
    #[test]
    fn recent_runs_literal_is_the_constant() {
        assert_eq!(crate::recent_runs_sql!(), RECENT_RUNS.to_string());
    }

    use super::*;

    /// "15 minutes" -> 900: the texts say what the numbers are.
    fn seconds(text: &str) -> i64 {
        let (n, unit) = text.split_once(' ').unwrap();
        let n: i64 = n.parse().unwrap();
        n * match unit {
            "minutes" => 60,
            "days" => 86_400,
            other => panic!("unit {other}"),
        }
    }

    #[test]
    fn ttl_texts_match_their_numbers() {
        assert_eq!(seconds(BID_TTL_DEFAULT_TEXT), BID_TTL_DEFAULT_SECS);
        assert_eq!(seconds(BID_TTL_MAX_TEXT), i64::from(BID_TTL_MAX_DAYS) * 86_400);
    }

    #[test]
    fn retention_numbers_are_consistent() {
        assert_eq!(seconds(retention::KEY_WINDOW_TEXT), i64::from(retention::KEY_WINDOW_DAYS) * 86_400);
        const { assert!(retention::CHUNK_ROWS > 0 && retention::CHUNK_ROWS <= retention::MAX_ROWS_PER_CALL) };
        assert!(stopped_at_budget(retention::MAX_ROWS_PER_CALL, retention::MAX_ROWS_PER_CALL, true));
        assert!(!stopped_at_budget(retention::MAX_ROWS_PER_CALL, retention::MAX_ROWS_PER_CALL, false));
        assert!(!stopped_at_budget(10, retention::MAX_ROWS_PER_CALL, true));
    }

    #[test]
    fn lock_classes_are_distinct() {
        let keys =
            [(locks::CLASS, locks::CLEARING), (locks::CLASS, locks::DRIVER_LEADER), (locks::CLASS, locks::PRUNING)];
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], keys[2]);
        assert_ne!(keys[1], keys[2]);
        assert_ne!(locks::CLASS_TASK, locks::CLASS);
        assert_ne!(locks::CLASS_DAY, locks::CLASS_TASK);
        assert_eq!(locks::CLASS, 1_128_355_139);
    }
}
