-- Settlement: settle, abort_slot, abort_stale, refund_unfilled. Continues clearing.sql's
-- story: alice (bid 3000) holds slot-a and bob (bid 2500) slot-b, both at 2000.
\set SHOW_CONTEXT never
\pset null NULL
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';
SELECT t0 FROM regress_clock \gset

-- doc: settle
SELECT compute_auction.settle('slot-a', 1800, 0.9);
SELECT * FROM compute_auction.balance('alice');
SELECT entry_kind, delta_balance, delta_held, reason
  FROM compute_auction.token_ledger WHERE bid_id = 1 ORDER BY id;
SELECT compute_auction.settle('slot-a', 1800, 0.9);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc
SELECT slot_id, status, actual_cost_tokens, actual_impact, slot_finished_at IS NOT NULL AS finished
  FROM compute_auction.compute_auction_clears WHERE bid_id = 1;
SELECT status, last_result FROM compute_auction.compute_auction_bids WHERE id = 1;
SELECT account_id, total_spent FROM compute_auction.token_accounts WHERE account_id = 'alice';
SELECT status FROM compute_auction.compute_slots WHERE slot_id = 'slot-a';
SELECT compute_auction.settle('slot-b', -1, 0.5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-b', 10, 'NaN');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-z', 10, 0.5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle(repeat('s', 257), 10, 0.5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-b', NULL, 0.5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT status FROM compute_auction.compute_auction_clears WHERE slot_id = 'slot-b';

-- doc: abort_slot
SELECT compute_auction.abort_slot('slot-b', 'runner crashed');
SELECT * FROM compute_auction.balance('bob');
-- /doc
SELECT compute_auction.abort_slot('slot-b', 'again');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_slot('slot-z', 'unknown');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_slot('slot-b', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT c.status, c.abort_reason, b.status AS bid_status, b.last_result
  FROM compute_auction.compute_auction_clears c JOIN compute_auction.compute_auction_bids b ON b.id = c.bid_id
 WHERE c.slot_id = 'slot-b';

-- doc: abort_stale
SELECT * FROM compute_auction.clear_round(:'t0'::timestamptz + interval '2 minutes');
SELECT compute_auction.abort_stale('1 hour', :'t0'::timestamptz + interval '2 hours');
SELECT compute_auction.abort_stale('11 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT id, bidder_id, status, last_result FROM compute_auction.compute_auction_bids WHERE id IN (3, 4) ORDER BY id;
-- /doc
SELECT compute_auction.abort_stale('-1 hour');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_stale('1 hour', 'infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_stale(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- doc: refund_unfilled
SELECT compute_auction.place_bid('bob', 'task-6', 1200, ttl_at => :'t0'::timestamptz + interval '5 minutes');
SELECT * FROM compute_auction.refund_unfilled(:'t0'::timestamptz + interval '10 minutes');
SELECT status, last_result FROM compute_auction.compute_auction_bids WHERE id = 6;
-- /doc
SELECT entry_kind, delta_balance, delta_held, reason FROM compute_auction.token_ledger WHERE bid_id = 6 ORDER BY id;
SELECT * FROM compute_auction.refund_unfilled(:'t0'::timestamptz + interval '10 minutes');
SELECT * FROM compute_auction.refund_unfilled(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.refund_unfilled('-infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.audit();
