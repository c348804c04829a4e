//! Summaries of the rounds, kept by clear_round in each round's own transaction (issue 21), so
//! that a report over a window costs what the window's minutes (or distinct prices) cost, not
//! what its rounds cost:
//! - `round_minutes` and `round_quarters`: per minute and per quarter-hour of cleared_at, the
//!   rounds' count, priced count, price sum, min and max, and slot totals (price_history, stats'
//!   fill rate). A reader takes a window's whole quarter-hours from the second, the minutes
//!   only of the quarter-hours it cuts, and the rounds only of the minutes it cuts: a day is
//!   about 96 + 15 rows however many rounds it holds;
//! - `recent_prices`: a histogram of the clearing prices of every priced round with cleared_at
//!   at or after `recent_prices_since.since`, which each round moves up to its now() - the
//!   advice window (price_to_win's p50 and p90). A reader corrects the histogram by the few
//!   rounds between `since` and its own window start, so its percentiles are exact.
//!
//! They are exact, never estimates: `rebuild_round_summaries()` recomputes them from the rounds
//! (the upgrade to 0.2.0 does, and an operator must after writing rounds by hand), and audit()
//! reports any difference as `summary_mismatch`. Writers hold the clearing lock.

use compute_auction_core::limits::locks;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::spi;

/// The window of price_to_win's clearing-price percentiles, and of `recent_prices`.
macro_rules! advice_window_sql {
    () => {
        "interval '24 hours'"
    };
}

/// The period of `$secs` seconds (seconds since the epoch / `$secs`, rounded down) of a
/// timestamptz expression, in exact numeric arithmetic.
macro_rules! period_of_sql {
    ($ts:literal, $secs:literal) => {
        concat!("pg_catalog.floor(EXTRACT(epoch FROM ", $ts, ") / ", $secs, ")::bigint")
    };
}

/// The minute of a timestamptz expression: `round_minutes.minute`.
macro_rules! minute_of_sql {
    ($ts:literal) => {
        period_of_sql!($ts, "60")
    };
}

/// The quarter-hour of a timestamptz expression: `round_quarters.quarter` (a quarter-hour is
/// 15 whole minutes: its first minute is quarter * 15).
macro_rules! quarter_of_sql {
    ($ts:literal) => {
        period_of_sql!($ts, "900")
    };
}

/// Counts the round of CTE `r` in the period table `$table` (key column `$key`, periods of
/// `$secs` seconds): the upsert RECORD_ROUND runs for each level.
macro_rules! count_round_sql {
    ($table:literal, $key:literal, $secs:literal) => {
        concat!(
            "INSERT INTO compute_auction.",
            $table,
            " AS m
           (",
            $key,
            ", rounds, priced_rounds, price_sum, price_min, price_max, slots_offered, slots_filled)
    SELECT ",
            period_of_sql!("r.cleared_at", $secs),
            ", 1, (r.clearing_price_tokens IS NOT NULL)::int,
           coalesce(r.clearing_price_tokens, 0), r.clearing_price_tokens, r.clearing_price_tokens,
           r.slots_offered, r.slots_filled
      FROM r
    ON CONFLICT (",
            $key,
            ") DO UPDATE
       SET rounds        = m.rounds + 1,
           priced_rounds = m.priced_rounds + EXCLUDED.priced_rounds,
           price_sum     = m.price_sum + EXCLUDED.price_sum,
           price_min     = least(m.price_min, EXCLUDED.price_min),
           price_max     = greatest(m.price_max, EXCLUDED.price_max),
           slots_offered = m.slots_offered + EXCLUDED.slots_offered,
           slots_filled  = m.slots_filled + EXCLUDED.slots_filled"
        )
    };
}

/// The clearing prices of the priced rounds with cleared_at >= now() - the advice window, as a
/// histogram to be merged (compute_auction_core::percentiles): columns `prices`, `counts` (the
/// recent prices' histogram, in price order) and `adj_prices`, `adj_counts`: the rounds in the
/// window it does not count yet (cleared at or after the window start but before `since`: +1)
/// and those it still counts (cleared at or after `since` but before the window start: -1).
/// Only the rounds between the two bounds are read: about one clearing interval's worth. Each
/// pair of arrays is one ordered scan (array_agg over a sorted subquery keeps its order), so
/// the histogram is read once and the adjustments sorted once.
macro_rules! recent_histogram_sql {
    () => {
        concat!(
            "(WITH s AS (
    SELECT coalesce((SELECT since FROM compute_auction.recent_prices_since WHERE id = 1),
                    'infinity'::timestamptz) AS since,
           now() - ",
            advice_window_sql!(),
            " AS w
), adj AS (
    SELECT r.clearing_price_tokens AS p, sum(CASE WHEN r.cleared_at < s.w THEN -1 ELSE 1 END)::bigint AS n
      FROM compute_auction.compute_auction_rounds AS r, s
     WHERE r.cleared_at >= least(s.since, s.w) AND r.cleared_at < greatest(s.since, s.w)
       AND r.clearing_price_tokens IS NOT NULL
     GROUP BY 1
)
SELECT h.prices, h.counts, a.adj_prices, a.adj_counts
  FROM (SELECT coalesce(array_agg(clearing_price_tokens), '{}') AS prices, coalesce(array_agg(rounds), '{}') AS counts
          FROM (SELECT clearing_price_tokens, rounds FROM compute_auction.recent_prices
                 ORDER BY clearing_price_tokens) AS o) AS h,
       (SELECT coalesce(array_agg(p), '{}') AS adj_prices, coalesce(array_agg(n), '{}') AS adj_counts
          FROM (SELECT p, n FROM adj ORDER BY p) AS o) AS a)"
        )
    };
}

/// The clearing prices of the priced rounds with cleared_at >= $1 (a window start other than
/// the advice window's), in the same columns as `recent_histogram_sql!` (no adjustments): the
/// window's whole quarter-hours from round_quarter_prices, and the rounds themselves only in
/// the quarter-hour $1 cuts. Its cost is the window's quarter-hours times their distinct prices,
/// plus at most one quarter-hour of rounds.
macro_rules! window_histogram_sql {
    () => {
        concat!(
            "(WITH e AS (
    SELECT $1::timestamptz AS w, q0 + (to_timestamp(q0 * 900) < $1::timestamptz)::int AS whole_quarter
      FROM (SELECT ",
            quarter_of_sql!("$1::timestamptz"),
            " AS q0) AS x
), h AS (
    SELECT p, sum(n)::bigint AS n
      FROM (SELECT qp.clearing_price_tokens AS p, qp.rounds AS n
              FROM compute_auction.round_quarter_prices AS qp, e
             WHERE qp.quarter >= e.whole_quarter
            UNION ALL
            SELECT r.clearing_price_tokens, 1
              FROM compute_auction.compute_auction_rounds AS r, e
             WHERE r.cleared_at >= e.w AND r.cleared_at < to_timestamp(e.whole_quarter * 900)
               AND r.clearing_price_tokens IS NOT NULL) AS x
     GROUP BY p
)
SELECT coalesce(array_agg(p), '{}') AS prices, coalesce(array_agg(n), '{}') AS counts,
       '{}'::bigint[] AS adj_prices, '{}'::bigint[] AS adj_counts
  FROM (SELECT p, n FROM h ORDER BY p) AS o)"
        )
    };
}

/// Writes the round and counts it in the summaries (the histogram counts it when it is not
/// older than the histogram's `since`): $1..$9 as the round's columns, its facts for the bids'
/// stories last. Returns round_id.
pub const RECORD_ROUND: &str = concat!(
    "
WITH r AS (
    INSERT INTO compute_auction.compute_auction_rounds
           (cleared_at, slots_offered, bids_eligible, slots_filled, clearing_price_tokens,
            unfilled_reserve_min, last_winner_bid_id, last_winner_price_tokens, last_winner_placed_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    RETURNING round_id, cleared_at, slots_offered, slots_filled, clearing_price_tokens
), m AS (
    ",
    count_round_sql!("round_minutes", "minute", "60"),
    "
), q AS (
    ",
    count_round_sql!("round_quarters", "quarter", "900"),
    "
), qp AS (
    INSERT INTO compute_auction.round_quarter_prices AS h (quarter, clearing_price_tokens, rounds)
    SELECT ",
    quarter_of_sql!("r.cleared_at"),
    ", r.clearing_price_tokens, 1
      FROM r WHERE r.clearing_price_tokens IS NOT NULL
    ON CONFLICT (quarter, clearing_price_tokens) DO UPDATE SET rounds = h.rounds + 1
), p AS (
    INSERT INTO compute_auction.recent_prices AS h (clearing_price_tokens, rounds)
    SELECT r.clearing_price_tokens, 1
      FROM r, compute_auction.recent_prices_since AS s
     WHERE s.id = 1 AND r.cleared_at >= s.since AND r.clearing_price_tokens IS NOT NULL
    ON CONFLICT (clearing_price_tokens) DO UPDATE SET rounds = h.rounds + 1
)
SELECT round_id FROM r"
);

/// Moves the histogram's `since` up to now() - the advice window, uncounting the priced rounds
/// it passes (an index range of cleared_at: the rounds of about one clearing interval), and
/// records round $1 as counted. Returns whether the summaries exist (false before the first
/// round of a fresh install) and whether a round between the last one counted and $1 was
/// written by someone else (see `through_round_id` in schema.sql).
const AGE_PRICES: &str = concat!(
    "
WITH s AS (
    SELECT since, through_round_id, now() - ",
    advice_window_sql!(),
    " AS upto FROM compute_auction.recent_prices_since WHERE id = 1
), g AS (
    SELECT r.clearing_price_tokens AS p, count(*) AS n
      FROM compute_auction.compute_auction_rounds AS r, s
     WHERE r.cleared_at >= s.since AND r.cleared_at < s.upto AND r.clearing_price_tokens IS NOT NULL
     GROUP BY 1
), d AS (
    DELETE FROM compute_auction.recent_prices AS h USING g
     WHERE h.clearing_price_tokens = g.p AND h.rounds <= g.n
), u AS (
    UPDATE compute_auction.recent_prices AS h SET rounds = h.rounds - g.n
      FROM g
     WHERE h.clearing_price_tokens = g.p AND h.rounds > g.n
), a AS (
    UPDATE compute_auction.recent_prices_since AS t
       SET since = greatest(t.since, s.upto), through_round_id = $1
      FROM s
     WHERE t.id = 1
)
SELECT EXISTS (SELECT 1 FROM s),
       coalesce((SELECT max(round_id) FROM compute_auction.compute_auction_rounds WHERE round_id < $1)
                > (SELECT through_round_id FROM s), false)"
);

/// Recomputes the histogram from the rounds, with `since` = now() - the advice window (after
/// CLEAR_PRICES: the CTEs of one statement do not see each other's writes).
const CLEAR_PRICES: &str = "DELETE FROM compute_auction.recent_prices";
const REBUILD_PRICES: &str = concat!(
    "
WITH s AS (
    INSERT INTO compute_auction.recent_prices_since (id, since, through_round_id)
    VALUES (1, now() - ",
    advice_window_sql!(),
    ", coalesce((SELECT max(round_id) FROM compute_auction.compute_auction_rounds), 0))
    ON CONFLICT (id) DO UPDATE SET since = EXCLUDED.since, through_round_id = EXCLUDED.through_round_id
    RETURNING since
), i AS (
    INSERT INTO compute_auction.recent_prices (clearing_price_tokens, rounds)
    SELECT r.clearing_price_tokens, count(*)
      FROM compute_auction.compute_auction_rounds AS r, s
     WHERE r.cleared_at >= s.since AND r.clearing_price_tokens IS NOT NULL
     GROUP BY 1
    RETURNING 1
)
SELECT count(*) FROM i"
);

/// The totals per period of `$secs` seconds recomputed from the rounds (the aggregate
/// RECORD_ROUND keeps), the period as column `$key`: of all the rounds, or (`span`) of those in
/// the periods from $1's to $2's.
macro_rules! periods_of_rounds_sql {
    ($key:literal, $secs:literal) => {
        periods_of_rounds_sql!(@ $key, $secs, "true")
    };
    ($key:literal, $secs:literal, span) => {
        periods_of_rounds_sql!(@ $key, $secs, concat!(
            "cleared_at >= to_timestamp(",
            period_of_sql!("$1::timestamptz", $secs),
            " * ",
            $secs,
            ") AND cleared_at < to_timestamp((",
            period_of_sql!("$2::timestamptz", $secs),
            " + 1) * ",
            $secs,
            ")"
        ))
    };
    (@ $key:literal, $secs:literal, $where:expr) => {
        concat!(
            "SELECT ",
            period_of_sql!("cleared_at", $secs),
            " AS ",
            $key,
            ", count(*) AS rounds, count(clearing_price_tokens) AS priced_rounds,
       coalesce(sum(clearing_price_tokens), 0) AS price_sum, min(clearing_price_tokens) AS price_min,
       max(clearing_price_tokens) AS price_max, sum(slots_offered) AS slots_offered,
       sum(slots_filled) AS slots_filled
  FROM compute_auction.compute_auction_rounds WHERE ",
            $where,
            " GROUP BY 1"
        )
    };
}

/// The clearing prices per quarter-hour (round_quarter_prices) recomputed from the rounds, of
/// all of them or of those matching `$where`.
macro_rules! quarter_prices_of_rounds_sql {
    ($where:expr) => {
        concat!(
            "SELECT ",
            quarter_of_sql!("cleared_at"),
            " AS quarter, clearing_price_tokens, count(*) AS rounds
  FROM compute_auction.compute_auction_rounds
 WHERE clearing_price_tokens IS NOT NULL AND ",
            $where,
            " GROUP BY 1, 2"
        )
    };
}

/// audit()'s rows for one period table: where it differs from what the rounds give.
macro_rules! period_audit_sql {
    ($table:literal, $key:literal, $secs:literal) => {
        concat!(
            "
SELECT 'summary_mismatch', format('",
            $table,
            " ",
            $key,
            " %s: kept %s, the rounds give %s',
                                  ",
            $key,
            ", coalesce((to_jsonb(k) - '",
            $key,
            "')::text, 'nothing'),
                                  coalesce((to_jsonb(a) - '",
            $key,
            "')::text, 'nothing'))
  FROM compute_auction.",
            $table,
            " AS k FULL JOIN (",
            periods_of_rounds_sql!($key, $secs),
            ") AS a USING (",
            $key,
            ")
 WHERE ROW(k.rounds, k.priced_rounds, k.price_sum, k.price_min, k.price_max, k.slots_offered, k.slots_filled)
       IS DISTINCT FROM
       ROW(a.rounds, a.priced_rounds, a.price_sum, a.price_min, a.price_max, a.slots_offered, a.slots_filled)"
        )
    };
}

/// audit()'s rows for the summaries: `summary_mismatch` where round_minutes, round_quarters or
/// recent_prices differ from what the rounds give.
macro_rules! summary_audit_sql {
    () => {
        concat!(
            period_audit_sql!("round_minutes", "minute", "60"),
            "
UNION ALL",
            period_audit_sql!("round_quarters", "quarter", "900"),
            "
UNION ALL
SELECT 'summary_mismatch', format('round_quarter_prices quarter %s price %s: kept %s rounds, the rounds give %s',
                                  quarter, clearing_price_tokens, coalesce(k.rounds, 0), coalesce(a.rounds, 0))
  FROM compute_auction.round_quarter_prices AS k FULL JOIN (",
            quarter_prices_of_rounds_sql!("true"),
            ") AS a USING (quarter, clearing_price_tokens)
 WHERE k.rounds IS DISTINCT FROM a.rounds
UNION ALL
SELECT 'summary_mismatch', format('recent_prices price %s: kept %s rounds, the rounds since %s give %s',
                                  clearing_price_tokens, coalesce(k.rounds, 0),
                                  (SELECT since FROM compute_auction.recent_prices_since WHERE id = 1),
                                  coalesce(a.rounds, 0))
  FROM compute_auction.recent_prices AS k FULL JOIN (
       SELECT r.clearing_price_tokens, count(*) AS rounds
         FROM compute_auction.compute_auction_rounds AS r
        WHERE r.clearing_price_tokens IS NOT NULL
          AND r.cleared_at >= coalesce((SELECT since FROM compute_auction.recent_prices_since WHERE id = 1),
                                       'infinity'::timestamptz)
        GROUP BY 1) AS a USING (clearing_price_tokens)
 WHERE k.rounds IS DISTINCT FROM a.rounds"
        )
    };
}

/// One period table's statements: emptied and made again from all the rounds (rebuild), and
/// the periods from $1's to $2's deleted and made again from the rounds left in them
/// (forget_rounds).
struct Level {
    clear: &'static str,
    rebuild: &'static str,
    forget: &'static str,
    remake: &'static str,
}

macro_rules! level {
    ($table:literal, $key:literal, $secs:literal) => {
        Level {
            clear: concat!("DELETE FROM compute_auction.", $table),
            rebuild: concat!(
                "WITH i AS (INSERT INTO compute_auction.",
                $table,
                " (",
                $key,
                ", rounds, priced_rounds, price_sum, price_min, price_max, slots_offered, slots_filled) ",
                periods_of_rounds_sql!($key, $secs),
                " RETURNING 1) SELECT count(*) FROM i"
            ),
            forget: concat!(
                "DELETE FROM compute_auction.",
                $table,
                " WHERE ",
                $key,
                " BETWEEN ",
                period_of_sql!("$1::timestamptz", $secs),
                " AND ",
                period_of_sql!("$2::timestamptz", $secs)
            ),
            remake: concat!(
                "INSERT INTO compute_auction.",
                $table,
                " (",
                $key,
                ", rounds, priced_rounds, price_sum, price_min, price_max, slots_offered, slots_filled) ",
                periods_of_rounds_sql!($key, $secs, span)
            ),
        }
    };
}

/// round_quarter_prices' statements, as a Level.
const QUARTER_PRICES: Level = Level {
    clear: "DELETE FROM compute_auction.round_quarter_prices",
    rebuild: concat!(
        "WITH i AS (INSERT INTO compute_auction.round_quarter_prices (quarter, clearing_price_tokens, rounds) ",
        quarter_prices_of_rounds_sql!("true"),
        " RETURNING 1) SELECT count(*) FROM i"
    ),
    forget: concat!(
        "DELETE FROM compute_auction.round_quarter_prices WHERE quarter BETWEEN ",
        quarter_of_sql!("$1::timestamptz"),
        " AND ",
        quarter_of_sql!("$2::timestamptz")
    ),
    remake: concat!(
        "INSERT INTO compute_auction.round_quarter_prices (quarter, clearing_price_tokens, rounds) ",
        quarter_prices_of_rounds_sql!(concat!(
            "cleared_at >= to_timestamp(",
            quarter_of_sql!("$1::timestamptz"),
            " * 900) AND cleared_at < to_timestamp((",
            quarter_of_sql!("$2::timestamptz"),
            " + 1) * 900)"
        ))
    ),
};

/// The period tables, finest first, then the clearing prices per quarter-hour.
const LEVELS: [Level; 3] =
    [level!("round_minutes", "minute", "60"), level!("round_quarters", "quarter", "900"), QUARTER_PRICES];

/// Whether the histogram counted rounds cleared at or before $1 (its `since` is not after it).
const PRICES_REACH: &str =
    "SELECT coalesce((SELECT since <= $1 FROM compute_auction.recent_prices_since WHERE id = 1), false)";

/// After rounds with cleared_at in [`from`, `to`] were deleted (prune_history, the one place
/// rounds are deleted): the minutes and quarter-hours of that span are made again from the
/// rounds left in them, and the histogram, when it counted any of the span, from the rounds (a
/// retention shorter than the advice window). Takes the clearing lock, so no round is cleared meanwhile (held to
/// the end of the caller's transaction, as every writer of the summaries does).
pub fn forget_rounds(c: &mut SpiClient<'_>, from: TimestampWithTimeZone, to: TimestampWithTimeZone) {
    let lock: [DatumWithOid<'_>; 2] = [locks::CLASS.into(), locks::CLEARING.into()];
    spi::run(c, "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)", &lock);
    for level in &LEVELS {
        let span: [DatumWithOid<'_>; 2] = [from.into(), to.into()];
        spi::run(c, level.forget, &span);
        let span: [DatumWithOid<'_>; 2] = [from.into(), to.into()];
        spi::run(c, level.remake, &span);
    }
    if spi::first::<bool>(spi::run(c, PRICES_REACH, &[to.into()]), 1).unwrap_or(false) {
        spi::run(c, CLEAR_PRICES, &[]);
        spi::run(c, REBUILD_PRICES, &[]);
    }
}

/// After clear_round has written round `round_id` with RECORD_ROUND: ages the histogram, and
/// rebuilds the summaries from the rounds when they do not exist yet (the first round of a
/// fresh install) or a round below this one was written by someone else since the last (a
/// 0.1.0 clear_round that was waiting when the upgrade committed; rounds written by hand). Under
/// the clearing lock.
pub fn keep_up(c: &mut SpiClient<'_>, round_id: i64) {
    let t = spi::run(c, AGE_PRICES, &[round_id.into()]).first();
    let exists = spi::get::<bool>(&t, 1).unwrap_or(false);
    let foreign = spi::get::<bool>(&t, 2).unwrap_or(false);
    if !exists || foreign {
        rebuild(c);
    }
}

/// Every summary from the rounds: the rows of each period table (LEVELS' order) and of the
/// histogram.
fn rebuild(c: &mut SpiClient<'_>) -> ([i64; 3], i64) {
    let mut periods = [0_i64; 3];
    for (n, level) in periods.iter_mut().zip(&LEVELS) {
        spi::run(c, level.clear, &[]);
        *n = spi::first::<i64>(spi::run(c, level.rebuild, &[]), 1).unwrap_or(0);
    }
    spi::run(c, CLEAR_PRICES, &[]);
    let prices = spi::first::<i64>(spi::run(c, REBUILD_PRICES, &[]), 1).unwrap_or(0);
    (periods, prices)
}

/// Recomputes round_minutes, round_quarters, round_quarter_prices and recent_prices from
/// compute_auction_rounds, under the clearing lock (so no round is cleared meanwhile). Returns
/// {"minutes": n, "quarters": n, "quarter_prices": n, "prices": n}: the rows each summary now
/// has. The upgrade to 0.2.0 runs it; an operator runs it after writing or deleting
/// rounds by hand.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn rebuild_round_summaries() -> pgrx::JsonB {
    spi::with(|c| {
        let lock: [DatumWithOid<'_>; 2] = [locks::CLASS.into(), locks::CLEARING.into()];
        spi::run(c, "SELECT pg_catalog.pg_advisory_xact_lock($1, $2)", &lock);
        let ([minutes, quarters, quarter_prices], prices) = rebuild(c);
        pgrx::JsonB(serde_json::json!({
            "minutes": minutes, "quarters": quarters, "quarter_prices": quarter_prices, "prices": prices,
        }))
    })
}
