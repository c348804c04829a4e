-- Reporting, the read-only functions: order_book, stats, price_history, last_round,
-- market_summary, price_to_win. Continues cycle.sql's story, after run_cycle's round 5 (alice
-- won slot-a, bob slot-b, at 800; carol's 800 is the only open bid).
\set SHOW_CONTEXT never
\pset null NULL
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';
SELECT t0 FROM regress_clock \gset

-- doc: reporting settle
SELECT compute_auction.settle('slot-a', 1300, 2.5);
-- /doc

-- doc: order_book
SELECT jsonb_pretty(regress_pin(compute_auction.order_book(5), '{placed_at,ttl_at,available_at}'));
-- /doc
SELECT jsonb_array_length(compute_auction.order_book(0) -> 'bids') AS bids_at_depth_0;
SELECT compute_auction.order_book(10001);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.order_book(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- doc: stats
SELECT jsonb_pretty(regress_pin(compute_auction.stats(since => :'t0'), '{duration_ms}'));
-- /doc
SELECT jsonb_pretty(compute_auction.stats(:'t0', include_rounds => false) - 'top_winners');
SELECT c ->> 'rounds_truncated' AS truncated, jsonb_array_length(c -> 'rounds') AS rounds
  FROM compute_auction.stats(:'t0', max_rounds => 2) AS c;
SELECT compute_auction.stats(:'t0', max_rounds => 100001);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.stats('infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.stats(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- doc: price_history
SELECT regress_t(bucket_start) AS bucket_start, rounds, avg_price_tokens, min_price_tokens, max_price_tokens, slots_filled, slots_offered
  FROM compute_auction.price_history(:'t0', 4);
-- /doc
SELECT * FROM compute_auction.price_history(:'t0', 0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.price_history(:'t0', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- doc: last_round
SELECT jsonb_pretty(regress_pin(compute_auction.last_round(), '{cleared_at,duration_ms}'));
-- /doc

-- doc: market_summary
SELECT jsonb_pretty(regress_pin(compute_auction.market_summary(), '{cleared_at,duration_ms}'));
-- /doc

-- (when the free slot became available, and the runs' durations, follow the suite's clock)
-- doc: price_to_win
SELECT jsonb_pretty(regress_pin(compute_auction.price_to_win(), '{next_slot_at,run_duration_estimate_s}'));
-- /doc
-- for the next three slots to be free, over the last hour's prices
-- doc: price_to_win slots
SELECT jsonb_pretty(regress_pin(compute_auction.price_to_win(3, interval '1 hour'), '{next_slot_at,run_duration_estimate_s}'));
-- /doc
SELECT * FROM compute_auction.audit();

-- the summaries clear_round kept agree with the rounds (audit above); rebuilt from the rounds,
-- every report reads the same. How many quarter-hours the rounds span (and so how many
-- quarter-hour prices there are) depends on where the
-- suite's clock falls in its quarter-hour (run_cycle's round is at the real now(), the others
-- 9 to 13 minutes later), so that count is compared with the table rather than printed.
-- doc: rebuild_round_summaries
SELECT r - 'quarters' - 'quarter_prices' AS rows_rebuilt,
       (r->>'quarters')::bigint = (SELECT count(*) FROM compute_auction.round_quarters) AS quarters_rebuilt,
       (r->>'quarter_prices')::bigint = (SELECT count(*) FROM compute_auction.round_quarter_prices)
           AS quarter_prices_rebuilt
  FROM compute_auction.rebuild_round_summaries() AS r;
-- /doc
SELECT jsonb_pretty(regress_pin(compute_auction.price_to_win(), '{next_slot_at,run_duration_estimate_s}'));
SELECT regress_t(bucket_start) AS bucket_start, rounds, avg_price_tokens, min_price_tokens, max_price_tokens, slots_filled, slots_offered
  FROM compute_auction.price_history(:'t0', 4);
SELECT compute_auction.stats(:'t0', false)->'fill_rate' AS fill_rate;
SELECT * FROM compute_auction.audit();
