-- Clearing: clear_round, and claim_slot after it. Continues bids.sql's story: the book holds
-- alice 3000 (task-1), bob 2500, carol 2000 and dave 2000 (dave placed after carol), and
-- slot-a (reserve 0) and slot-b (reserve 100) are available. Rounds clear at t0 and after.
\set SHOW_CONTEXT never
\pset null NULL
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';
SELECT t0 FROM regress_clock \gset

-- doc: clear_round
LISTEN compute_auction_cleared;
SELECT * FROM compute_auction.clear_round(:'t0');
-- /doc

-- doc: clear_round rows
SELECT round_id, regress_t(cleared_at) AS cleared_at, slots_offered, bids_eligible, slots_filled, clearing_price_tokens
  FROM compute_auction.compute_auction_rounds ORDER BY round_id;
SELECT slot_id, bid_id, winning_task_id, runner_up_task_id, clearing_price_tokens, max_price_tokens, status,
       regress_t(slot_started_at) AS slot_started_at
  FROM compute_auction.compute_auction_clears ORDER BY slot_id;
SELECT id, bidder_id, task_id, max_price_tokens, status, last_result, round_id
  FROM compute_auction.compute_auction_bids ORDER BY id;
-- /doc

-- doc: clear_round why_not_won
SELECT compute_auction.bid_status(4) ->> 'why_not_won' AS dave, compute_auction.bid_status(3) ->> 'why_not_won' AS carol;
-- /doc
SELECT compute_auction.bid_status(1) ->> 'result' AS alice_result;
SELECT slot_id, status FROM compute_auction.compute_slots ORDER BY slot_id;
-- a won bid cannot be replaced
SELECT compute_auction.place_bid('alice', 'task-1', 3500);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT max_price_tokens, status FROM compute_auction.compute_auction_bids WHERE id = 1;
-- an assigned slot cannot be offered again
SELECT compute_auction.offer_slot('slot-a', :'t0', 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- doc: clear_round nothing filled
SELECT compute_auction.offer_slot('slot-c', :'t0', 5000);
SELECT * FROM compute_auction.clear_round(:'t0'::timestamptz + interval '1 minute');
SELECT round_id, slots_offered, bids_eligible, slots_filled, clearing_price_tokens
  FROM compute_auction.compute_auction_rounds WHERE round_id = 2;
SELECT id, last_result, compute_auction.bid_status(id) ->> 'why_not_won' AS why_not_won
  FROM compute_auction.compute_auction_bids WHERE id IN (3, 4) ORDER BY id;
SELECT compute_auction.retire_slot('slot-c');
-- /doc
-- a round with no slot available writes its row and no last_result
SELECT * FROM compute_auction.clear_round(:'t0'::timestamptz + interval '1 minute 30 seconds');
SELECT round_id, slots_offered, bids_eligible, slots_filled, clearing_price_tokens
  FROM compute_auction.compute_auction_rounds WHERE round_id = 3;
SELECT compute_auction.bid_status(4) ->> 'why_not_won' AS dave;
-- the documented errors
SELECT * FROM compute_auction.clear_round(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.clear_round('infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.clear_round(now() + interval '101 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT count(*) AS rounds FROM compute_auction.compute_auction_rounds;

-- doc: claim_slot after clearing
SELECT * FROM compute_auction.claim_slot('slot-a');
SELECT claimed_at IS NOT NULL AS claimed FROM compute_auction.compute_auction_clears WHERE slot_id = 'slot-a';
SELECT * FROM compute_auction.claim_slot('slot-a');
-- /doc
SELECT * FROM compute_auction.audit();
