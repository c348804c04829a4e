-- Slots, the asks of the market: offer_slot, retire_slot, set_slot_runner, claim_slot.
-- Continues ledger.sql's story.
\set SHOW_CONTEXT never
\pset null NULL
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';
SELECT t0 FROM regress_clock \gset

-- doc: offer_slot
SELECT compute_auction.offer_slot('slot-a', :'t0'::timestamptz - interval '1 minute');
SELECT compute_auction.offer_slot('slot-b', :'t0'::timestamptz - interval '1 minute', 100);
SELECT compute_auction.offer_slot('slot-old');
-- /doc
SELECT compute_auction.offer_slot('slot-x', :'t0', -1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-x', 'infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-x', runner_role => 'regress_ca_nobody');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-x', runner_role => '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot(repeat('s', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-x', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-x', :'t0', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- doc: retire_slot
SELECT compute_auction.retire_slot('slot-old');
SELECT slot_id, status, reserve_price_tokens FROM compute_auction.compute_slots ORDER BY slot_id;
-- /doc
SELECT slot_id, status, regress_t(available_at) AS available_at, reserve_price_tokens
  FROM compute_auction.compute_slots WHERE slot_id <> 'slot-old' ORDER BY slot_id;
SELECT compute_auction.retire_slot('slot-old');
SELECT compute_auction.retire_slot('slot-z');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.retire_slot(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- offering a retired slot brings it back; retire it again
SELECT compute_auction.offer_slot('slot-old', :'t0' , 0);
SELECT slot_id, status FROM compute_auction.compute_slots WHERE slot_id = 'slot-old';
SELECT compute_auction.retire_slot('slot-old');

-- doc: set_slot_runner
CREATE ROLE regress_ca_runner_a;
SELECT compute_auction.set_slot_runner('slot-a', 'regress_ca_runner_a');
SELECT compute_auction.set_slot_runner('slot-b', 'regress_ca_runner_b');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_slot_runner('slot-z', 'regress_ca_runner_a');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT slot_id, status, runner_role, runner_oid FROM compute_auction.compute_slots ORDER BY slot_id;
-- /doc
SELECT compute_auction.set_slot_runner('slot-a', '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_slot_runner('slot-a', repeat('r', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_slot_runner(NULL, 'regress_ca_runner_a');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- clearing the runner, and offering again keeps it
SELECT compute_auction.set_slot_runner('slot-old', 'regress_ca_runner_a');
SELECT compute_auction.set_slot_runner('slot-old', NULL);
SELECT compute_auction.offer_slot('slot-a', :'t0'::timestamptz - interval '1 minute');
SELECT slot_id, runner_role FROM compute_auction.compute_slots ORDER BY slot_id;

-- doc: claim_slot
SELECT * FROM compute_auction.claim_slot('slot-a');
SELECT * FROM compute_auction.claim_slot('slot-z');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc
SELECT * FROM compute_auction.claim_slot('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.claim_slot(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
