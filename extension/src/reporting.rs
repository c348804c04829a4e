//! Read-only views of the market: the order book, a bid's status, round statistics, price
//! history for dashboards, and the consistency audit. The queries read only the top of the book
//! or a time window, never the whole book (except audit, an operator's full check).

use compute_auction_core::limits::{MAX_ORDER_BOOK_DEPTH, MAX_PRICE_BUCKETS, MAX_STATS_ROUNDS};
use compute_auction_core::validate::{self, Invalid};
use compute_auction_core::{bid_status_sql, book_order_sql};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crate::spi;
use crate::times;

const ORDER_BOOK: &str = concat!(
    "
SELECT jsonb_build_object(
  'bids', coalesce((
     SELECT jsonb_agg(jsonb_build_object(
              'bid_id', b.id, 'bidder_id', b.bidder_id, 'task_id', b.task_id,
              'max_price_tokens', b.max_price_tokens, 'expected_value_usd', b.expected_value_usd,
              'ttl_at', b.ttl_at, 'placed_at', b.placed_at)
            ORDER BY ",
    book_order_sql!("b"),
    ")
       FROM (SELECT id, bidder_id, task_id, max_price_tokens, expected_value_usd, ttl_at, placed_at
               FROM compute_auction.compute_auction_bids
              WHERE status = ",
    bid_status_sql!(open),
    " AND ttl_at > now()
              ORDER BY ",
    book_order_sql!(),
    "
              LIMIT $1) AS b), '[]'::jsonb),
  'asks', coalesce((
     SELECT jsonb_agg(jsonb_build_object(
              'slot_id', s.slot_id, 'available_at', s.available_at,
              'reserve_price_tokens', s.reserve_price_tokens)
            ORDER BY s.available_at, s.slot_id)
       FROM (SELECT slot_id, available_at, reserve_price_tokens
               FROM compute_auction.compute_slots
              WHERE status = 'idle'
              ORDER BY available_at, slot_id
              LIMIT $1) AS s), '[]'::jsonb))"
);

/// The live book: open bids best first, idle slots soonest first, `depth` of each.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn order_book(depth: default!(Option<i32>, 100)) -> pgrx::JsonB {
    let depth = or_raise!(validate::required("depth", depth));
    if !(0..=MAX_ORDER_BOOK_DEPTH).contains(&depth) {
        invalid!(Invalid::OutOfRange { arg: "depth", detail: format!("{depth} is not in 0..={MAX_ORDER_BOOK_DEPTH}") });
    }
    json(ORDER_BOOK, &[depth.into()])
}

fn json(sql: &'static str, args: &[DatumWithOid<'_>]) -> pgrx::JsonB {
    spi::with_read(|c| spi::first::<pgrx::JsonB>(spi::read(c, sql, args), 1))
        .unwrap_or(pgrx::JsonB(serde_json::Value::Null))
}

/// The top winners' JSON array, from a relation of clears.
macro_rules! top_winners_sql {
    () => {
        "jsonb_agg(jsonb_build_object(
                 'bid_id', bid_id, 'task_id', winning_task_id, 'bidder_id', bidder_id,
                 'max_price_tokens', max_price_tokens, 'clearing_price_tokens', clearing_price_tokens,
                 'actual_impact', actual_impact, 'status', status, 'round_id', round_id,
                 'slot_id', slot_id,
                 'roi', CASE WHEN status = 'settled' AND clearing_price_tokens > 0
                             THEN actual_impact / clearing_price_tokens END)
               ORDER BY max_price_tokens DESC, bid_id)"
    };
}

/// How many of the highest-priced clears of all time `stats` looks at first for the window's top
/// winners (see STATS).
const TOP_CANDIDATES: i64 = 1000;

// `n`: the newest max_rounds + 1 rounds of the window (by round_id, so the cost is bounded by
// max_rounds, not by the window); one more than max_rounds means some were left out.
// `fill`: the slot totals of the window's whole quarter-hours (from `whole_quarter` on) from
// round_quarters, of its whole minutes before that from round_minutes (summaries.rs), and of
// the rounds themselves only before those, in the minute the window starts in.
// `cand`: the top winners, first among the $4 highest-priced clears of all time (their index
// order; a clear's slot_started_at is its round's cleared_at, which audit() checks): when 10 of
// them are in the window, or there are fewer than $4 clears at all, those are exactly the
// window's top 10. Only otherwise (a window whose
// clears are rarely among the highest of all time) `w` ranks the window's clears themselves.
const STATS: &str = concat!(
    "
WITH n AS (
    SELECT * FROM compute_auction.compute_auction_rounds
     WHERE $2 AND cleared_at >= $1
     ORDER BY round_id DESC
     LIMIT $3::bigint + 1
), kept AS (
    SELECT * FROM n ORDER BY round_id DESC LIMIT $3
), e AS (
    SELECT m0 + (to_timestamp(m0 * 60) < $1::timestamptz)::int AS whole_minute,
           q0 + (to_timestamp(q0 * 900) < $1::timestamptz)::int AS whole_quarter
      FROM (SELECT ",
    minute_of_sql!("$1::timestamptz"),
    " AS m0, ",
    quarter_of_sql!("$1::timestamptz"),
    " AS q0) AS x
), fill AS (
    SELECT sum(f) AS filled, sum(o) AS offered
      FROM (SELECT q.slots_filled AS f, q.slots_offered AS o
              FROM compute_auction.round_quarters AS q, e
             WHERE q.quarter >= e.whole_quarter
            UNION ALL
            SELECT m.slots_filled, m.slots_offered
              FROM compute_auction.round_minutes AS m, e
             WHERE m.minute >= e.whole_minute AND m.minute < e.whole_quarter * 15
            UNION ALL
            SELECT r.slots_filled, r.slots_offered
              FROM compute_auction.compute_auction_rounds AS r, e
             WHERE r.cleared_at >= $1 AND r.cleared_at < to_timestamp(e.whole_minute * 60)) AS x
), cand AS (
    -- lazily, in the index's order: the scan stops at the 10th clear of the window
    SELECT c.*
      FROM (SELECT * FROM compute_auction.compute_auction_clears
             ORDER BY max_price_tokens DESC, bid_id LIMIT $4) AS c
     WHERE c.slot_started_at >= $1 AND c.status <> 'aborted'
     ORDER BY c.max_price_tokens DESC, c.bid_id
     LIMIT 10
), r AS (
    SELECT * FROM compute_auction.compute_auction_rounds WHERE cleared_at >= $1
), span AS (
    SELECT min(round_id) AS lo, max(round_id) AS hi, count(*) AS n FROM r
), w AS (
    -- the window's clears by one range scan of their round ids; the per-round membership test
    -- runs only when the window's round ids have gaps (a round cleared with an earlier `now`)
    SELECT c.*
      FROM compute_auction.compute_auction_clears AS c, span
     WHERE c.round_id BETWEEN span.lo AND span.hi
       AND (span.n = span.hi - span.lo + 1 OR c.round_id IN (SELECT round_id FROM r))
       AND c.status <> 'aborted'
     ORDER BY c.max_price_tokens DESC, c.bid_id
     LIMIT 10
)
SELECT jsonb_build_object(
  'rounds', CASE WHEN NOT $2 THEN NULL ELSE coalesce((SELECT jsonb_agg(jsonb_build_object(
                 'round_id', round_id, 'cleared_at', cleared_at,
                 'clearing_price_tokens', clearing_price_tokens, 'slots_offered', slots_offered,
                 'slots_filled', slots_filled, 'bids_eligible', bids_eligible) ORDER BY round_id)
                FROM kept), '[]'::jsonb) END,
  'rounds_truncated', (SELECT count(*) > $3 FROM n),
  'fill_rate', (SELECT CASE WHEN offered > 0 THEN filled::float8 / offered::float8 END FROM fill),
  'top_winners', coalesce(CASE WHEN (SELECT count(*) FROM cand) = 10
                                    OR (SELECT count(*) FROM (SELECT 1 FROM compute_auction.compute_auction_clears
                                                               LIMIT $4) AS a) < $4
                               THEN (SELECT ",
    top_winners_sql!(),
    " FROM cand)
                               ELSE (SELECT ",
    top_winners_sql!(),
    " FROM w) END, '[]'::jsonb))"
);

/// Rounds, fill rate and the top 10 winning bids (with realised impact and roi) since `since`.
/// `include_rounds => false` leaves out the per-round list (null), for dashboards whose window
/// holds tens of thousands of rounds; otherwise the list holds the newest `max_rounds` rounds
/// of the window (in round_id order) and `rounds_truncated` says whether older ones were left
/// out, so no call returns an unbounded list.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn stats(
    since: default!(Option<TimestampWithTimeZone>, "now() - interval '24 hours'"),
    include_rounds: default!(Option<bool>, true),
    max_rounds: default!(Option<i32>, 1000),
) -> pgrx::JsonB {
    let since = times::timestamp("since", or_raise!(validate::required("since", since)));
    let include = or_raise!(validate::required("include_rounds", include_rounds));
    let max_rounds = or_raise!(validate::required("max_rounds", max_rounds));
    if !(0..=MAX_STATS_ROUNDS).contains(&max_rounds) {
        invalid!(Invalid::OutOfRange {
            arg: "max_rounds",
            detail: format!("{max_rounds} is not in 0..={MAX_STATS_ROUNDS}"),
        });
    }
    json(STATS, &[since.into(), include.into(), i64::from(max_rounds).into(), TOP_CANDIDATES.into()])
}

// The window's quarter-hours from round_quarters (summaries.rs) where a whole quarter-hour falls
// in one bucket; the minutes from round_minutes only of the quarter-hours that do not, where a
// whole minute falls in one bucket; and the rounds themselves only of the minutes that do not:
// the one the window starts in, and those a bucket boundary cuts. With a width that is a whole
// number of quarter-hours (the dashboard's day of 96 buckets: 15 minutes) that is the first
// quarter-hour's minutes and the first minute's rounds; with a whole number of minutes, the
// minutes of the quarter-hours the buckets cut. A period is whole when its first and its last
// microsecond fall in the same bucket, computed with the very expression a round's bucket is (so
// both agree to the last bit). Every bucket is exactly what the rounds give: the average is
// sum / count in numeric, as avg() is. date_part, not extract, for the buckets: since
// PostgreSQL 14 extract returns numeric, and numeric arithmetic on every round is most of the
// cost (2.7x on a day of 1-second rounds).
const PRICE_HISTORY: &str = concat!(
    "
WITH p AS (
    SELECT greatest(1.0, date_part('epoch', now() - $1) / $2) AS width, $1::timestamptz AS since
), qq AS (
    SELECT q.*, t.t0,
           floor(date_part('epoch', t.t0) / p.width) AS b,
           t.t0 >= p.since
           AND floor(date_part('epoch', t.t0) / p.width)
             = floor(date_part('epoch', t.t0 + interval '899.999999 seconds') / p.width) AS whole
      FROM p, compute_auction.round_quarters AS q,
           LATERAL (SELECT to_timestamp(q.quarter * 900) AS t0) AS t
     WHERE q.quarter >= ",
    quarter_of_sql!("p.since"),
    "
), mm AS (
    SELECT m.*, t.t0,
           floor(date_part('epoch', t.t0) / p.width) AS b,
           t.t0 >= p.since
           AND floor(date_part('epoch', t.t0) / p.width)
             = floor(date_part('epoch', t.t0 + interval '59.999999 seconds') / p.width) AS whole
      FROM p, qq, compute_auction.round_minutes AS m,
           LATERAL (SELECT to_timestamp(m.minute * 60) AS t0) AS t
     WHERE NOT qq.whole AND m.minute >= qq.quarter * 15 AND m.minute < qq.quarter * 15 + 15
       AND m.minute >= ",
    minute_of_sql!("p.since"),
    "
), parts AS (
    SELECT b, rounds, priced_rounds, price_sum, price_min, price_max, slots_filled, slots_offered
      FROM qq WHERE whole
    UNION ALL
    SELECT b, rounds, priced_rounds, price_sum, price_min, price_max, slots_filled, slots_offered
      FROM mm WHERE whole
    UNION ALL
    SELECT floor(date_part('epoch', r.cleared_at) / p.width), 1, (r.clearing_price_tokens IS NOT NULL)::int,
           coalesce(r.clearing_price_tokens, 0), r.clearing_price_tokens, r.clearing_price_tokens,
           r.slots_filled, r.slots_offered
      FROM p, mm,
           LATERAL (SELECT * FROM compute_auction.compute_auction_rounds AS r
                     WHERE r.cleared_at >= greatest(mm.t0, p.since)
                       AND r.cleared_at < mm.t0 + interval '1 minute') AS r
     WHERE NOT mm.whole
)
SELECT to_timestamp(parts.b * p.width) AS bucket_start,
       sum(rounds)::bigint,
       round(sum(price_sum) / nullif(sum(priced_rounds), 0))::bigint,
       min(price_min),
       max(price_max),
       sum(slots_filled)::bigint,
       sum(slots_offered)::bigint
  FROM parts, p
 GROUP BY parts.b, p.width
 ORDER BY parts.b"
);

/// Rounds since `since` aggregated into about `buckets` time buckets (empty buckets omitted), so
/// a dashboard never ships every round.
// a pgrx table function's type is its result columns, spelled out for the SQL signature
#[allow(clippy::type_complexity)]
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn price_history(
    since: default!(Option<TimestampWithTimeZone>, "now() - interval '24 hours'"),
    buckets: default!(Option<i32>, 96),
) -> TableIterator<
    'static,
    (
        name!(bucket_start, TimestampWithTimeZone),
        name!(rounds, i64),
        name!(avg_price_tokens, Option<i64>),
        name!(min_price_tokens, Option<i64>),
        name!(max_price_tokens, Option<i64>),
        name!(slots_filled, i64),
        name!(slots_offered, i64),
    ),
> {
    let since = times::timestamp("since", or_raise!(validate::required("since", since)));
    let buckets = or_raise!(validate::required("buckets", buckets));
    if !(1..=MAX_PRICE_BUCKETS).contains(&buckets) {
        invalid!(Invalid::OutOfRange {
            arg: "buckets",
            detail: format!("{buckets} is not in 1..={MAX_PRICE_BUCKETS}"),
        });
    }
    let rows = spi::with_read(|c| {
        let args: [DatumWithOid<'_>; 2] = [since.into(), (buckets as f64).into()];
        spi::read(c, PRICE_HISTORY, &args)
            .map(|r| {
                (
                    spi::req(&r, 1),
                    spi::req(&r, 2),
                    spi::col(&r, 3),
                    spi::col(&r, 4),
                    spi::col(&r, 5),
                    spi::req(&r, 6),
                    spi::req(&r, 7),
                )
            })
            .collect::<Vec<_>>()
    });
    TableIterator::new(rows)
}

/// A round as JSON (last_round, market_summary, clear_round_summary and run_cycle show the same
/// keys): round $1, or the latest when $1 is NULL.
macro_rules! round_json_sql {
    () => {
        "(SELECT to_jsonb(r) FROM (
            SELECT round_id, cleared_at, slots_offered, bids_eligible, slots_filled,
                   clearing_price_tokens, duration_ms
              FROM compute_auction.compute_auction_rounds
             WHERE $1::bigint IS NULL OR round_id = $1
             ORDER BY round_id DESC LIMIT 1) AS r)"
    };
}

const ROUND: &str = concat!("SELECT ", round_json_sql!());

/// Round `id` (the latest when None) as JSON; JSON null when there is none.
pub fn round_json(c: &mut pgrx::spi::SpiClient<'_>, id: Option<i64>) -> serde_json::Value {
    spi::first::<pgrx::JsonB>(spi::run(c, ROUND, &[id.into()]), 1).map_or(serde_json::Value::Null, |j| j.0)
}

/// The latest round as JSON, or JSON null before the first.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn last_round() -> pgrx::JsonB {
    json(ROUND, &[Option::<i64>::None.into()])
}

const MARKET_SUMMARY: &str = concat!(
    "
SELECT jsonb_build_object(
  'open_bids', coalesce((SELECT open_bids FROM compute_auction.open_bid_count WHERE id = 1), 0)
             + ",
    unfolded_sql!("delta"),
    ",
  'tokens_refunded_total',
             least(coalesce((SELECT tokens_refunded FROM compute_auction.open_bid_count WHERE id = 1), 0)
                   + ",
    unfolded_sql!("tokens_refunded"),
    ", ",
    refunded_cap_sql!(),
    ")::bigint,
  'idle_slots', (SELECT count(*) FROM compute_auction.compute_slots WHERE status = 'idle'),
  'assigned_slots', (SELECT count(*) FROM compute_auction.compute_slots WHERE status = 'assigned'),
  'bids_placed_total', (SELECT CASE WHEN is_called THEN last_value ELSE 0 END
                          FROM compute_auction.compute_auction_bids_id_seq),
  'last_round', ",
    round_json_sql!(),
    ",
  'last_clearing_price_tokens', (SELECT clearing_price_tokens FROM compute_auction.compute_auction_clears
                                  ORDER BY round_id DESC LIMIT 1))"
);

/// Every wallet's escrow: one pass over the accounts (not a counter), outside without_seqscan;
/// saturating at the bigint maximum, like tokens_refunded_total.
const TOKENS_HELD: &str =
    "SELECT least(coalesce(sum(held_tokens), 0), 9223372036854775807)::bigint FROM compute_auction.token_accounts";

/// Small, cheap counters for dashboards and metrics.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn market_summary() -> pgrx::JsonB {
    // the counters' reads must stay range scans of the xid index (spi::without_seqscan)
    let mut out = spi::without_seqscan(|| json(MARKET_SUMMARY, &[Option::<i64>::None.into()]));
    let held: Option<i64> = spi::with_read(|c| spi::first(spi::read(c, TOKENS_HELD, &[]), 1));
    if let serde_json::Value::Object(m) = &mut out.0 {
        m.insert("tokens_held".into(), held.unwrap_or(0).into());
    }
    out
}

const AUDIT: &str = concat!("
WITH l AS (
    SELECT account_id, sum(delta_balance) AS b, sum(delta_held) AS h
      FROM compute_auction.token_ledger GROUP BY account_id
), live AS (
    SELECT bidder_id, sum(max_price_tokens) AS held
      FROM compute_auction.compute_auction_bids WHERE status IN ", bid_status_sql!(live), " GROUP BY bidder_id
), p AS (
    -- pending entries count as applied (a charge is what leaves the wallet: spent)
    SELECT account_id, sum(delta_balance) AS b, sum(delta_held) AS h,
           sum(greatest(-(delta_balance + delta_held), 0)) AS spent
      FROM compute_auction.pending_entries GROUP BY account_id
)
SELECT 'ledger_mismatch', format('account %s: balance %s held %s, ledger sums %s and %s',
                                 a.account_id, a.balance_tokens, a.held_tokens, coalesce(l.b, 0), coalesce(l.h, 0))
  FROM compute_auction.token_accounts a LEFT JOIN l USING (account_id)
 WHERE a.balance_tokens <> coalesce(l.b, 0) OR a.held_tokens <> coalesce(l.h, 0)
UNION ALL
SELECT 'negative_balance', format('account %s: balance %s held %s', account_id, balance_tokens, held_tokens)
  FROM compute_auction.token_accounts WHERE balance_tokens < 0 OR held_tokens < 0
UNION ALL
SELECT 'held_mismatch', format('account %s: held %s (pending %s), live bids escrow %s',
                               a.account_id, a.held_tokens, coalesce(p.h, 0), coalesce(live.held, 0))
  FROM compute_auction.token_accounts a LEFT JOIN live ON live.bidder_id = a.account_id
  LEFT JOIN p ON p.account_id = a.account_id
 WHERE a.held_tokens + coalesce(p.h, 0) <> coalesce(live.held, 0)
UNION ALL
SELECT 'totals_mismatch', format('account %s: deposited %s - withdrawn %s - spent %s <> balance %s + held %s (with pending entries)',
                                 a.account_id, a.total_deposited, a.total_withdrawn, a.total_spent + coalesce(p.spent, 0),
                                 a.balance_tokens + coalesce(p.b, 0), a.held_tokens + coalesce(p.h, 0))
  FROM compute_auction.token_accounts a LEFT JOIN p ON p.account_id = a.account_id
 WHERE a.total_deposited - a.total_withdrawn - (a.total_spent + coalesce(p.spent, 0))
       <> a.balance_tokens + coalesce(p.b, 0) + a.held_tokens + coalesce(p.h, 0)
UNION ALL
SELECT 'pending_unknown_account', format('pending entry %s names account %s, which does not exist', e.entry_id, e.account_id)
  FROM compute_auction.pending_entries e
 WHERE NOT EXISTS (SELECT 1 FROM compute_auction.token_accounts a WHERE a.account_id = e.account_id)
UNION ALL
SELECT 'slot_double_assigned', format('slot %s has %s assigned clears', slot_id, count(*))
  FROM compute_auction.compute_auction_clears WHERE status = 'assigned'
 GROUP BY slot_id HAVING count(*) > 1
UNION ALL
SELECT 'won_without_clear', format('bid %s is won with %s assigned clears', b.id,
       (SELECT count(*) FROM compute_auction.compute_auction_clears c WHERE c.bid_id = b.id AND c.status = 'assigned'))
  FROM compute_auction.compute_auction_bids b
 WHERE b.status = ", bid_status_sql!(won), "
   AND (SELECT count(*) FROM compute_auction.compute_auction_clears c
         WHERE c.bid_id = b.id AND c.status = 'assigned') <> 1
UNION ALL
SELECT 'clear_bid_mismatch', format('clear of bid %s is %s but the bid is %s', c.bid_id, c.status, b.status)
  FROM compute_auction.compute_auction_clears c JOIN compute_auction.compute_auction_bids b ON b.id = c.bid_id
 WHERE (c.status = 'assigned' AND b.status <> ", bid_status_sql!(won), ")
    OR (c.status = 'settled' AND b.status <> ", bid_status_sql!(settled), ")
    OR (c.status = 'aborted' AND b.status <> ", bid_status_sql!(aborted), ")
UNION ALL
SELECT 'slot_state_mismatch', format('slot %s is %s with %s assigned clears', s.slot_id, s.status, count(c.slot_id))
  FROM compute_auction.compute_slots s
  LEFT JOIN compute_auction.compute_auction_clears c ON c.slot_id = s.slot_id AND c.status = 'assigned'
 GROUP BY s.slot_id, s.status
HAVING (s.status = 'assigned') <> (count(c.slot_id) = 1)
UNION ALL
SELECT 'price_above_bid', format('clear of bid %s: price %s above bid %s', bid_id, clearing_price_tokens, max_price_tokens)
  FROM compute_auction.compute_auction_clears WHERE clearing_price_tokens > max_price_tokens
UNION ALL
SELECT 'clear_time_mismatch', format('clear of bid %s: slot_started_at %s, its round %s cleared at %s',
                                     c.bid_id, c.slot_started_at, c.round_id, r.cleared_at)
  FROM compute_auction.compute_auction_clears c JOIN compute_auction.compute_auction_rounds r USING (round_id)
 WHERE c.slot_started_at <> r.cleared_at
UNION ALL
SELECT 'open_count_mismatch', format('open-bid counter %s, actual %s', n.cnt, o.cnt)
  FROM (SELECT coalesce((SELECT open_bids FROM compute_auction.open_bid_count WHERE id = 1), 0)
             + ", unfolded_sql!("delta"), " AS cnt) n,
       (SELECT count(*) AS cnt FROM compute_auction.compute_auction_bids WHERE status = ", bid_status_sql!(open), ") o
 WHERE n.cnt <> o.cnt
UNION ALL
SELECT 'refunded_count_mismatch', format('tokens-refunded counter %s, ledger refunds %s', n.t, l.t)
  FROM (SELECT coalesce((SELECT tokens_refunded FROM compute_auction.open_bid_count WHERE id = 1), 0)
             + ", unfolded_sql!("tokens_refunded"), " AS t) n,
       (SELECT coalesce(sum(delta_balance), 0)
               + coalesce((SELECT tokens_refunded FROM compute_auction.compacted_totals WHERE id = 1), 0) AS t
          FROM compute_auction.token_ledger
         WHERE entry_kind = 'refund') l
 WHERE least(n.t, ", refunded_cap_sql!(), ") <> least(l.t, ", refunded_cap_sql!(), ")
UNION ALL", summary_audit_sql!());

/// Consistency checks; zero rows means the books are consistent.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn audit() -> TableIterator<'static, (name!(check_name, String), name!(detail, String))> {
    let rows =
        spi::with_read(|c| spi::read(c, AUDIT, &[]).map(|r| (spi::req(&r, 1), spi::req(&r, 2))).collect::<Vec<_>>());
    TableIterator::new(rows)
}
