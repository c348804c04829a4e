-- The market cycle: run_cycle and clear_round_summary. Continues settlement.sql's story: both
-- slots are idle again. run_cycle clears at the transaction's real now(), which the suite cannot
-- pin: its round's cleared_at and every round's duration_ms are masked.
\set SHOW_CONTEXT never
\pset null NULL
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';
SELECT t0 FROM regress_clock \gset

-- doc: run_cycle
LISTEN compute_auction_cleared;
SELECT compute_auction.place_bid('alice', 'task-7', 1500);
SELECT compute_auction.place_bid('bob', 'task-8', 1000);
SELECT compute_auction.place_bid('carol', 'task-9', 800);
SELECT jsonb_pretty(regress_pin(compute_auction.run_cycle(), '{cleared_at,duration_ms}'));
-- /doc
SELECT compute_auction.run_cycle(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.run_cycle('-1 minute');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.run_cycle('3654 days');
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- doc: clear_round_summary
BEGIN;
SELECT compute_auction.offer_slot('slot-d', :'t0', 500);
SELECT jsonb_pretty(regress_pin(compute_auction.clear_round_summary(:'t0'::timestamptz + interval '3 minutes'), '{duration_ms}'));
SELECT slot_id, status FROM compute_auction.compute_slots WHERE slot_id = 'slot-d';
ROLLBACK;
-- /doc
SELECT compute_auction.clear_round_summary(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.clear_round_summary('infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.audit();

-- doc: schedule_clearing without pg_cron
SELECT compute_auction.schedule_clearing('*/5 * * * *');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.unschedule_clearing();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc
SELECT compute_auction.schedule_clearing('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.schedule_clearing(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
