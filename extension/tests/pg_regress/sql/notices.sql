-- Notifications and the dashboard's lookups (docs/SQL_API.md "Notifications", wallet,
-- task_status, set_low_balance_threshold). The file starts from a fresh market (the public
-- helpers regress_t, regress_pin and regress_clock stay). psql prints each notice after the
-- command whose transaction committed it; the sender's PID is masked.
\set SHOW_CONTEXT never
\pset null NULL
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';
SELECT t0 FROM regress_clock \gset
SET client_min_messages = warning;
DROP EXTENSION compute_auction CASCADE;
CREATE EXTENSION compute_auction;
RESET client_min_messages;
SELECT compute_auction.open_account('nina', 'agent', 1000);
SELECT compute_auction.offer_slot('slot-n', :'t0'::timestamptz - interval '1 minute', 0);

-- doc: set_low_balance_threshold
LISTEN compute_auction_low_balance;
SELECT compute_auction.set_low_balance_threshold('nina', 500);
SELECT compute_auction.place_bid('nina', 'task-n1', 300, ttl_at => :'t0'::timestamptz + interval '5 minutes');
SELECT compute_auction.place_bid('nina', 'task-n2', 400, ttl_at => :'t0'::timestamptz + interval '5 minutes');
SELECT compute_auction.set_low_balance_threshold('nina', 0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc
SELECT compute_auction.set_low_balance_threshold('nobody', 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_low_balance_threshold(NULL, 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_low_balance_threshold(repeat('x', 257), 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- operators only: EXECUTE alone is not enough, and the threshold stays as it was
CREATE ROLE regress_ca_thresholds;
GRANT USAGE ON SCHEMA compute_auction TO regress_ca_thresholds;
GRANT EXECUTE ON FUNCTION compute_auction.set_low_balance_threshold(text, bigint) TO regress_ca_thresholds;
SET SESSION AUTHORIZATION regress_ca_thresholds;
SELECT compute_auction.set_low_balance_threshold('nina', 1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
SELECT low_balance_threshold FROM compute_auction.token_accounts WHERE account_id = 'nina';
DROP OWNED BY regress_ca_thresholds;
DROP ROLE regress_ca_thresholds;

-- doc: notifications
LISTEN compute_auction_bid_won;
LISTEN compute_auction_bids_refunded;
LISTEN compute_auction_run_aborted;
SELECT slot_id, bid_id FROM compute_auction.clear_round(:'t0'::timestamptz);
SELECT compute_auction.abort_slot('slot-n', 'runner crashed');
SELECT * FROM compute_auction.refund_unfilled(:'t0'::timestamptz + interval '10 minutes');
-- /doc
UNLISTEN *;

-- doc: wallet
SELECT jsonb_pretty(regress_pin(compute_auction.wallet('nina'), '{at,placed_at,ttl_at}') - 'recent_entries');
SELECT e ->> 'entry_kind' AS kind, e -> 'delta_balance' AS delta_balance, e ->> 'reason' AS reason
  FROM jsonb_array_elements(compute_auction.wallet('nina') -> 'recent_entries') AS e;
SELECT compute_auction.wallet('nobody');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc
SELECT compute_auction.wallet(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.wallet(repeat('x', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.wallet('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- doc: task_status
SELECT jsonb_pretty(compute_auction.task_status('task-n2') - 'bid');
SELECT compute_auction.task_status('task-n2') -> 'bid' ->> 'reason' AS newest_bid_reason;
SELECT compute_auction.task_status('no-such-task');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc
SELECT compute_auction.task_status(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.task_status(repeat('x', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.task_status('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.audit();
