-- Bids: place_bid, cancel_bid, bid_status. Continues slots.sql's story.
\set SHOW_CONTEXT never
\pset null NULL
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';
SELECT t0 FROM regress_clock \gset

-- doc: place_bid
SELECT compute_auction.place_bid('alice', 'task-1', 2500, 40.0);
SELECT compute_auction.place_bid('alice', 'task-1', 3000, 40.0);
SELECT entry_kind, delta_balance, delta_held, bid_id, reason
  FROM compute_auction.token_ledger WHERE account_id = 'alice' ORDER BY id;
SELECT compute_auction.place_bid('bob', 'task-2', 2500);
SELECT compute_auction.place_bid('carol', 'task-3', 2000);
SELECT compute_auction.place_bid('dave', 'task-4', 2000, ttl_at => :'t0'::timestamptz + interval '1 hour');
-- /doc
-- a replace at a lower price releases the difference, and a replace at the same price keeps
-- the bid's place in the queue (placed_at)
SELECT compute_auction.place_bid('bob', 'task-2', 2000);
SELECT placed_at AS bob_placed_at FROM compute_auction.compute_auction_bids WHERE id = 2 \gset
SELECT compute_auction.place_bid('bob', 'task-2', 2000);
SELECT placed_at = :'bob_placed_at' AS same_place_in_queue FROM compute_auction.compute_auction_bids WHERE id = 2;
SELECT compute_auction.place_bid('bob', 'task-2', 2500);
SELECT entry_kind, delta_balance, delta_held, bid_id, reason
  FROM compute_auction.token_ledger WHERE account_id = 'bob' ORDER BY id;
SELECT id, bidder_id, task_id, max_price_tokens, expected_value_usd, status, regress_t(ttl_at) AS ttl_at
  FROM compute_auction.compute_auction_bids WHERE id = 4;

-- doc: place_bid errors
SELECT compute_auction.place_bid('bob', 'task-1', 5000);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('dave', 'task-5', 99999);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('dave', 'task-5', 100, ttl_at => now() - interval '1 minute');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('dave', 'task-5', 100, ttl_at => 'infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc
SELECT compute_auction.place_bid('dave', 'task-5', 100, ttl_at => now() + interval '31 days');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('dave', 'task-5', 0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('dave', 'task-5', 100, 'NaN');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('dave', '', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('nobody', 'task-5', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('dave', repeat('t', 257), 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('dave', 'task-5', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- none of the failed calls changed a wallet, a bid or the ledger
SELECT account_id, balance_tokens, held_tokens FROM compute_auction.token_accounts ORDER BY account_id;
SELECT id, bidder_id, task_id, max_price_tokens, status FROM compute_auction.compute_auction_bids ORDER BY id;
SELECT count(*) AS ledger_rows FROM compute_auction.token_ledger;

-- doc: cancel_bid
SELECT compute_auction.place_bid('carol', 'task-x', 700);
SELECT compute_auction.cancel_bid(5);
SELECT compute_auction.cancel_bid(5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc
SELECT compute_auction.cancel_bid(999);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.cancel_bid(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT entry_kind, delta_balance, delta_held, reason FROM compute_auction.token_ledger WHERE bid_id = 5 ORDER BY id;

-- doc: bid_status
SELECT jsonb_pretty(regress_pin(compute_auction.bid_status(4), '{placed_at}'));
-- /doc
SELECT compute_auction.bid_status(999);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.bid_status(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.audit();
