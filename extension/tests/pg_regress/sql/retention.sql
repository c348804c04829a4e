-- Retention: prune_history, the ledger's checkpoint entries, idempotency keys kept past
-- compaction, schedule_pruning and unschedule_pruning (without pg_cron), and who may call them.
--
-- The file starts from a fresh market (the public helpers regress_t, regress_pin and
-- regress_clock stay). Everything it writes is written by the extension's functions, so every
-- ledger entry is older than a later statement's now(): prune_history('0') prunes up to the
-- start of its own statement's transaction.
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

-- doc: history
-- A small market: alice deposits with a key, wins a slot and settles, bob's bid expires, carol
-- cancels one bid and keeps another open; an empty round an hour before t0, then a round at t0.
SELECT compute_auction.open_account('alice', 'agent', 1000);
SELECT compute_auction.open_account('bob', 'agent', 1000);
SELECT compute_auction.open_account('carol', 'agent', 1000);
SELECT compute_auction.deposit('alice', 500, 'refill', 'refill-1');
SELECT compute_auction.offer_slot('slot-1', :'t0'::timestamptz - interval '2 hours');
SELECT count(*) FROM compute_auction.clear_round(:'t0'::timestamptz - interval '1 hour');
SELECT compute_auction.place_bid('alice', 'task-a', 300) AS a \gset
SELECT compute_auction.place_bid('bob', 'task-b', 100, ttl_at => :'t0'::timestamptz + interval '1 minute') AS b \gset
SELECT compute_auction.place_bid('carol', 'task-c', 50) AS c \gset
SELECT compute_auction.place_bid('carol', 'task-d', 40) AS d \gset
SELECT slot_id, task_id, clearing_price_tokens FROM compute_auction.clear_round(:'t0');
SELECT compute_auction.settle('slot-1', 90, 1.0);
SELECT compute_auction.cancel_bid(:c);
SELECT * FROM compute_auction.refund_unfilled(:'t0'::timestamptz + interval '2 minutes');
SELECT id - :a AS bid, task_id, status FROM compute_auction.compute_auction_bids ORDER BY id;
SELECT account_id, entry_kind, delta_balance, delta_held, balance_after, held_after, idempotency_key
  FROM compute_auction.token_ledger ORDER BY account_id, id;
CREATE TEMP TABLE before AS
SELECT account_id, balance_tokens, held_tokens, total_deposited, total_spent, total_withdrawn
  FROM compute_auction.token_accounts;
-- /doc

-- doc: prune_history
SELECT * FROM compute_auction.prune_history('0');
-- alice's and bob's entries became one checkpoint each (the id and balances of the newest);
-- carol's escrow of her open bid is kept, and with it everything after it: only the entries
-- before it became a checkpoint
SELECT account_id, entry_kind, delta_balance, delta_held, balance_after, held_after, reason
  FROM compute_auction.token_ledger ORDER BY account_id, id;
SELECT id - :a AS bid, task_id, status FROM compute_auction.compute_auction_bids ORDER BY id;
SELECT regress_t(cleared_at) AS cleared_at, slots_filled FROM compute_auction.compute_auction_rounds ORDER BY round_id;
SELECT * FROM compute_auction.audit();
-- a retry with a key whose entry was compacted returns the first call's result, moving nothing
SELECT compute_auction.deposit('alice', 500, 'refill', 'refill-1');
SELECT account_id, entry_kind, idempotency_key, delta_balance, balance_after FROM compute_auction.idempotency_keys;
-- and a second prune has nothing left to do
SELECT * FROM compute_auction.prune_history('0');
-- /doc

-- every balance and running total is unchanged
SELECT 'changed' AS what, * FROM (
    SELECT account_id, balance_tokens, held_tokens, total_deposited, total_spent, total_withdrawn
      FROM compute_auction.token_accounts EXCEPT SELECT * FROM before) AS x;
-- the key with a different amount is still refused
SELECT compute_auction.deposit('alice', 501, 'refill', 'refill-1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- a horizon of a day keeps everything
BEGIN;
SELECT count(*) AS entries_before FROM compute_auction.token_ledger;
SELECT sum(rows_removed) AS removed FROM compute_auction.prune_history('1 day');
ROLLBACK;
-- the market goes on: carol's open bid wins the next round and settles
SELECT compute_auction.offer_slot('slot-1', :'t0'::timestamptz);
SELECT slot_id, task_id, clearing_price_tokens FROM compute_auction.clear_round(:'t0'::timestamptz + interval '5 minutes');
SELECT compute_auction.settle('slot-1', 40, 1.0);
SELECT * FROM compute_auction.audit();

-- ## Errors
SELECT * FROM compute_auction.prune_history(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.prune_history('-1 hour');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.prune_history('11 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.schedule_pruning(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.schedule_pruning('30 days', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.schedule_pruning('30 days', ' ');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.schedule_pruning('-1 day');
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- doc: schedule_pruning without pg_cron
SELECT compute_auction.schedule_pruning('30 days');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.unschedule_pruning();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc

-- ## Operators only: EXECUTE on the functions alone gives nothing (the session must be an
-- operator: may EXECUTE deposit), and an agent without EXECUTE is refused by PostgreSQL
CREATE ROLE regress_ca_pruner;
CREATE ROLE regress_ca_agent;
GRANT USAGE ON SCHEMA compute_auction TO regress_ca_pruner, regress_ca_agent;
GRANT EXECUTE ON FUNCTION compute_auction.prune_history(interval), compute_auction.schedule_pruning(interval, text),
    compute_auction.unschedule_pruning() TO regress_ca_pruner;
CREATE TEMP TABLE entries AS SELECT count(*) AS n FROM compute_auction.token_ledger;
SET SESSION AUTHORIZATION regress_ca_pruner;
SELECT * FROM compute_auction.prune_history('0');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.schedule_pruning('30 days');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.unschedule_pruning();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_ca_agent;
SELECT * FROM compute_auction.prune_history('0');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
-- nothing was pruned by the refused calls
SELECT (SELECT count(*) FROM compute_auction.token_ledger) = n AS ledger_unchanged FROM entries;
DROP OWNED BY regress_ca_pruner, regress_ca_agent;
DROP ROLE regress_ca_pruner, regress_ca_agent;
SELECT * FROM compute_auction.audit();
