-- The error contract (docs/SQL_API.md, "Conventions" and "Errors and SQLSTATEs"), function by
-- function: a NULL in every argument that has no NULL default is 22004 and the message names
-- the argument; an empty id is 22023 and one over 256 characters 22001; a time that is not
-- finite or not within 100 years of now(), and an interval that is negative or over 10 years,
-- are 22023; token arithmetic that would overflow bigint is 22003; an unknown id is P0002; and
-- a value inside each documented range is accepted.
--
-- The file starts from a fresh market (the public helpers regress_t, regress_pin and
-- regress_clock stay), sets up a few rows, and takes a snapshot of the books. Every accepted
-- call that writes runs in a transaction that is rolled back, and every error rolls back its
-- own statement, so at the end the books equal the snapshot.
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

-- every public function of the schema; each has a group below
SELECT p.oid::regprocedure AS function
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE nspname = 'compute_auction'
 ORDER BY p.oid::regprocedure::text;

-- The fixtures: alice (10000 tokens, one open bid on task-1, a keyed deposit and withdrawal),
-- quest-1, "full" (a balance of exactly the bigint maximum), "drained" (deposited nearly the
-- maximum and withdrew it all), and the idle slot slot-1.
SELECT compute_auction.open_account('alice', 'agent', 10000);
SELECT compute_auction.open_account('quest-1', 'quest', 10000);
SELECT compute_auction.open_account('full', 'agent', 9223372036854775807);
SELECT compute_auction.open_account('drained', 'agent', 9223372036854775000);
SELECT compute_auction.withdraw('drained', 9223372036854775000, 'all of it');
SELECT compute_auction.deposit('alice', 100, 'keyed', 'dep-1');
SELECT compute_auction.withdraw('alice', 100, 'keyed', 'wd-1');
SELECT compute_auction.offer_slot('slot-1', :'t0'::timestamptz - interval '1 minute');
SELECT compute_auction.place_bid('alice', 'task-1', 100, ttl_at => :'t0'::timestamptz + interval '1 hour');

-- The snapshot: every row of every table that a call could change.
CREATE TEMP VIEW books AS
          SELECT 'token_accounts' AS tbl, to_jsonb(x) AS r FROM compute_auction.token_accounts x
UNION ALL SELECT 'token_ledger', to_jsonb(x) FROM compute_auction.token_ledger x
UNION ALL SELECT 'pending_entries', to_jsonb(x) FROM compute_auction.pending_entries x
UNION ALL SELECT 'compute_auction_bids', to_jsonb(x) FROM compute_auction.compute_auction_bids x
UNION ALL SELECT 'compute_slots', to_jsonb(x) FROM compute_auction.compute_slots x
UNION ALL SELECT 'compute_auction_rounds', to_jsonb(x) FROM compute_auction.compute_auction_rounds x
UNION ALL SELECT 'compute_auction_clears', to_jsonb(x) FROM compute_auction.compute_auction_clears x
UNION ALL SELECT 'round_skips', to_jsonb(x) FROM compute_auction.round_skips x
UNION ALL SELECT 'quest_budget_allocations', to_jsonb(x) FROM compute_auction.quest_budget_allocations x
UNION ALL SELECT 'open_bid_count', to_jsonb(x) FROM compute_auction.open_bid_count x
UNION ALL SELECT 'open_bid_count_deltas', to_jsonb(x) FROM compute_auction.open_bid_count_deltas x;
CREATE TEMP TABLE before AS SELECT * FROM books;
SELECT tbl, count(*) AS rows FROM before GROUP BY tbl ORDER BY tbl;

-- A representative of each code.
-- doc: errors
SELECT * FROM compute_auction.balance(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account(repeat('x', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', 'task-9', 100, ttl_at => 'infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.cancel_bid(999);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('full', 1, 'one more');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc

-- ## Wallets & ledger

-- open_account(account_id, kind, initial_tokens, owner_role): NULL is allowed in owner_role only
SELECT compute_auction.open_account(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('erin', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('erin', 'agent', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account(repeat('x', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('erin', owner_role => '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('erin', owner_role => repeat('r', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('erin', owner_role => 'regress_ca_no_such_role');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('erin', 'robot');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('erin', 'agent', -1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('alice');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT compute_auction.open_account(repeat('x', 256), 'system', 5000);
SELECT compute_auction.open_account('erin', 'quest', 0, 'pg_monitor');
SELECT compute_auction.open_account('frank', owner_role => NULL);
ROLLBACK;

-- deposit(account_id, amount, reason, idempotency_key): NULL is allowed in idempotency_key only;
-- 22003 when the balance or total_deposited would pass the bigint maximum
SELECT compute_auction.deposit(NULL, 1, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('alice', NULL, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('alice', 1, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('', 1, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit(repeat('x', 257), 1, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('alice', 1, 'r', '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('alice', 1, 'r', repeat('k', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('alice', 0, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('alice', -1, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('alice', 101, 'keyed', 'dep-1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('nobody', 1, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('full', 1, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('drained', 1000, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('alice', 9223372036854775807, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT compute_auction.deposit('alice', 5000, 'r', repeat('k', 256));
SELECT compute_auction.deposit('alice', 100, 'keyed', 'dep-1');
SELECT compute_auction.deposit('drained', 807, 'up to the maximum');
ROLLBACK;

-- withdraw(account_id, amount, reason, idempotency_key): NULL is allowed in idempotency_key
-- only. Its 22003 (total_withdrawn passing the maximum) cannot be reached: total_withdrawn never
-- exceeds total_deposited, which deposit keeps within bigint.
SELECT compute_auction.withdraw(NULL, 1, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('alice', NULL, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('alice', 1, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('', 1, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw(repeat('x', 257), 1, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('alice', 1, 'r', '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('alice', 1, 'r', repeat('k', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('alice', 0, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('alice', 99, 'keyed', 'wd-1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('nobody', 1, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('alice', 9223372036854775807, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT compute_auction.withdraw('alice', 5000, 'r', 'wd-2');
SELECT compute_auction.withdraw('full', 9223372036854775807, 'all of it');
ROLLBACK;

-- balance(account_id) and pending_balance(account_id)
SELECT * FROM compute_auction.balance(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.balance('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.balance(repeat('x', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.balance('nobody');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.balance('alice');
SELECT * FROM compute_auction.pending_balance(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.pending_balance('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.pending_balance(repeat('x', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.pending_balance('nobody');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.pending_balance('full');

-- set_account_owner(account_id, owner_role): a NULL owner_role clears the owner; the account is
-- checked (P0002) before the role (22023)
SELECT compute_auction.set_account_owner(NULL, 'pg_monitor');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_account_owner('', 'pg_monitor');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_account_owner(repeat('x', 257), 'pg_monitor');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_account_owner('alice', '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_account_owner('alice', repeat('r', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_account_owner('alice', 'regress_ca_no_such_role');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_account_owner('nobody', 'regress_ca_no_such_role');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT compute_auction.set_account_owner('alice', 'pg_monitor');
SELECT account_id, owner_role, owner_oid FROM compute_auction.token_accounts WHERE account_id = 'alice';
SELECT compute_auction.set_account_owner('alice', NULL);
ROLLBACK;

-- apply_pending(), audit() and unresolved_roles() take no arguments
SELECT compute_auction.apply_pending();
SELECT * FROM compute_auction.unresolved_roles();

-- ## Slots

-- offer_slot(slot_id, available_at, reserve_price_tokens, runner_role): NULL is allowed in
-- runner_role only (an explicit NULL available_at or reserve is refused)
SELECT compute_auction.offer_slot(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-2', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-2', :'t0', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot(repeat('s', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-2', runner_role => '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-2', runner_role => repeat('r', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-2', runner_role => 'regress_ca_no_such_role');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-2', :'t0', -1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-2', 'infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-2', '-infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-2', :'t0'::timestamptz + interval '101 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.offer_slot('slot-2', :'t0'::timestamptz - interval '101 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT compute_auction.offer_slot('slot-2', :'t0'::timestamptz + interval '50 years', 5000, 'pg_monitor');
SELECT compute_auction.offer_slot('slot-3', :'t0'::timestamptz - interval '50 years');
SELECT slot_id, available_at = :'t0'::timestamptz + interval '50 years' AS in_50_years,
       available_at = :'t0'::timestamptz - interval '50 years' AS years_50_ago, reserve_price_tokens, runner_role
  FROM compute_auction.compute_slots ORDER BY slot_id;
ROLLBACK;

-- set_slot_runner(slot_id, runner_role): a NULL runner_role clears the runner; the slot is
-- checked (P0002) before the role (22023)
SELECT compute_auction.set_slot_runner(NULL, 'pg_monitor');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_slot_runner('', 'pg_monitor');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_slot_runner(repeat('s', 257), 'pg_monitor');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_slot_runner('slot-1', '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_slot_runner('slot-1', repeat('r', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_slot_runner('slot-1', 'regress_ca_no_such_role');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_slot_runner('slot-z', 'regress_ca_no_such_role');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT compute_auction.set_slot_runner('slot-1', 'pg_monitor');
SELECT compute_auction.set_slot_runner('slot-1', NULL);
ROLLBACK;

-- retire_slot(slot_id)
SELECT compute_auction.retire_slot(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.retire_slot('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.retire_slot(repeat('s', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.retire_slot('slot-z');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT compute_auction.retire_slot('slot-1');
ROLLBACK;

-- claim_slot(slot_id): an idle slot has nothing to claim (zero rows)
SELECT * FROM compute_auction.claim_slot(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.claim_slot('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.claim_slot(repeat('s', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.claim_slot('slot-z');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.claim_slot('slot-1');

-- ## Bids

-- place_bid(bidder_id, task_id, max_price_tokens, expected_value_usd, ttl_at): NULL is allowed
-- in expected_value_usd and ttl_at. Its 22003 (held_tokens passing the maximum) cannot be
-- reached: balance + held never exceeds total_deposited, which deposit keeps within bigint.
SELECT compute_auction.place_bid(NULL, 'task-2', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', NULL, 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', 'task-2', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('', 'task-2', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', '', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid(repeat('x', 257), 'task-2', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', repeat('t', 257), 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', 'task-2', 0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', 'task-2', -1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', 'task-2', 100, 'NaN');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', 'task-2', 100, 'Infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', 'task-2', 100, '-Infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', 'task-2', 100, ttl_at => 'infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', 'task-2', 100, ttl_at => '-infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', 'task-2', 100, ttl_at => :'t0'::timestamptz + interval '101 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', 'task-2', 100, ttl_at => now() - interval '1 minute');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', 'task-2', 100, ttl_at => now() + interval '31 days');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('nobody', 'task-2', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('alice', 'task-2', 10001);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('quest-1', 'task-1', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('full', 'task-2', 9223372036854775807, ttl_at => 'infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT compute_auction.place_bid('alice', 'task-2', 5000, -12.5, :'t0'::timestamptz + interval '15 days');
SELECT compute_auction.place_bid('alice', repeat('t', 256), 1, NULL, NULL);
SELECT compute_auction.place_bid('full', 'task-3', 9223372036854775807);
SELECT id, bidder_id, length(task_id) AS task_id_chars, max_price_tokens, expected_value_usd,
       CASE WHEN id = 2 THEN regress_t(ttl_at) ELSE 'placed_at + ' || (ttl_at - placed_at)::text END AS ttl_at
  FROM compute_auction.compute_auction_bids WHERE id > 1 ORDER BY id;
ROLLBACK;

-- cancel_bid(bid_id)
SELECT compute_auction.cancel_bid(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.cancel_bid(999);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.cancel_bid(-1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT compute_auction.cancel_bid(1);
ROLLBACK;

-- bid_status(bid_id)
SELECT compute_auction.bid_status(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.bid_status(999);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.bid_status(1) ->> 'status' AS status;

-- ## Clearing and the cycle

-- clear_round(now) and clear_round_summary(now): an explicit NULL now is refused
SELECT * FROM compute_auction.clear_round(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.clear_round('infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.clear_round('-infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.clear_round(:'t0'::timestamptz + interval '101 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.clear_round(:'t0'::timestamptz - interval '101 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.clear_round_summary(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.clear_round_summary('infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.clear_round_summary(:'t0'::timestamptz + interval '101 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT * FROM compute_auction.clear_round(:'t0');
SELECT compute_auction.clear_round_summary(:'t0'::timestamptz - interval '50 years') -> 'winners' AS winners;
ROLLBACK;

-- run_cycle(assignment_timeout): a month counts as 30 days, so '121 months' (3630 days) is
-- accepted and '122 months' (3660 days) is not
SELECT compute_auction.run_cycle(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.run_cycle('-1 minute');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.run_cycle('3654 days');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.run_cycle('122 months');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.run_cycle('11 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT regress_pin(compute_auction.run_cycle('5 years'), '{cleared_at,duration_ms}') AS cycle;
SELECT regress_pin(compute_auction.run_cycle('121 months'), '{cleared_at,duration_ms}') AS cycle;
ROLLBACK;

-- schedule_clearing(schedule) and unschedule_clearing(): without pg_cron in this database they
-- refuse with 55000 (VERBOSITY terse: the hint names this database)
SELECT compute_auction.schedule_clearing(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.schedule_clearing('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.schedule_clearing('   ');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
SELECT compute_auction.schedule_clearing('*/5 * * * *');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.unschedule_clearing();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
\set VERBOSITY default

-- ## Settlement

-- settle(slot_id, actual_cost_tokens, actual_impact)
SELECT compute_auction.settle(NULL, 10, 0.5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-1', NULL, 0.5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-1', 10, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('', 10, 0.5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle(repeat('s', 257), 10, 0.5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-1', -1, 0.5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-1', 10, 'NaN');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-1', 10, 'Infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-z', 10, 0.5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-1', 10, 0.5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT * FROM compute_auction.clear_round(:'t0');
SELECT compute_auction.settle('slot-1', 9223372036854775807, -3.5);
ROLLBACK;

-- abort_slot(slot_id, reason)
SELECT compute_auction.abort_slot(NULL, 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_slot('slot-1', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_slot('', 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_slot(repeat('s', 257), 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_slot('slot-z', 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_slot('slot-1', 'r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT * FROM compute_auction.clear_round(:'t0');
SELECT compute_auction.abort_slot('slot-1', 'the runner went away');
ROLLBACK;

-- abort_stale(older_than, now): explicit NULLs are refused
SELECT compute_auction.abort_stale(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_stale('1 hour', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_stale('-1 hour');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_stale('11 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_stale('1 hour', 'infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_stale('1 hour', :'t0'::timestamptz + interval '101 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_stale('5 years', :'t0'::timestamptz + interval '50 years');

-- refund_unfilled(now): bids expiring together whose escrows exceed the bigint maximum between
-- them are no error: a call refunds what fits, the next one the rest
SELECT * FROM compute_auction.refund_unfilled(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.refund_unfilled('infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.refund_unfilled('-infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.refund_unfilled(:'t0'::timestamptz + interval '101 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.refund_unfilled(:'t0'::timestamptz - interval '50 years');
BEGIN;
SELECT compute_auction.open_account('whale-1', 'agent', 5000000000000000000);
SELECT compute_auction.open_account('whale-2', 'agent', 5000000000000000000);
SELECT compute_auction.place_bid('whale-1', 'w-1', 5000000000000000000, ttl_at => :'t0'::timestamptz + interval '1 minute');
SELECT compute_auction.place_bid('whale-2', 'w-2', 5000000000000000000, ttl_at => :'t0'::timestamptz + interval '1 minute');
SELECT * FROM compute_auction.refund_unfilled(:'t0'::timestamptz + interval '2 minutes');
SELECT * FROM compute_auction.refund_unfilled(:'t0'::timestamptz + interval '2 minutes');
SELECT (compute_auction.market_summary() ->> 'tokens_refunded_total')::numeric AS tokens_refunded_total;
SELECT * FROM compute_auction.clear_round(:'t0'::timestamptz + interval '3 minutes');
SELECT (compute_auction.market_summary() ->> 'tokens_refunded_total')::numeric AS tokens_refunded_total;
SELECT * FROM compute_auction.audit();
ROLLBACK;

-- ## Reporting

-- order_book(depth): 0..10000
SELECT compute_auction.order_book(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.order_book(-1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.order_book(10001);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT jsonb_array_length(b -> 'bids') AS bids, jsonb_array_length(b -> 'asks') AS asks
  FROM compute_auction.order_book(5000) AS b;

-- stats(since, include_rounds, max_rounds): max_rounds 0..100000
SELECT compute_auction.stats(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.stats(:'t0', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.stats(:'t0', true, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.stats('infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.stats(:'t0'::timestamptz - interval '101 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.stats(:'t0', true, -1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.stats(:'t0', true, 100001);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.stats(:'t0'::timestamptz - interval '50 years', false, 50000);

-- price_history(since, buckets): buckets 1..10000
SELECT * FROM compute_auction.price_history(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.price_history(:'t0', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.price_history('-infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.price_history(:'t0'::timestamptz + interval '101 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.price_history(:'t0', 0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.price_history(:'t0', 10001);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.price_history(:'t0'::timestamptz - interval '50 years', 5000);

-- last_round() and market_summary() take no arguments
SELECT compute_auction.last_round();
SELECT compute_auction.market_summary() AS market_summary;
SELECT compute_auction.price_to_win() ->> 'price_to_win_now' AS price_to_win_now;
-- price_to_win(slots_free, price_window): slots_free in 1..10000 or NULL (the slots free now),
-- price_window longer than 0 and at most 7 days, never NULL
SELECT compute_auction.price_to_win(0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.price_to_win(10001);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.price_to_win(-1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.price_to_win(1, interval '7 days 1 second');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.price_to_win(1, interval '0');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.price_to_win(1, interval '-1 hour');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.price_to_win(1, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.price_to_win(10000, interval '7 days') ->> 'price_window_s' AS longest_window_s;

-- ## Quests & fallback

-- submit_bids_for_tasks(quest_id, tasks, tokens_per_usd, bid_fraction, ttl_at): NULL is allowed
-- in ttl_at only (an explicit NULL bid_fraction is refused)
SELECT * FROM compute_auction.submit_bids_for_tasks(NULL, '[]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', NULL, 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[]', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[]', 100, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('', '[]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks(repeat('q', 257), '[]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": "", "expected_value_usd": 1}]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', jsonb_build_array(jsonb_build_object('task_id', repeat('t', 257), 'expected_value_usd', 1)), 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '{}', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": 7, "expected_value_usd": 1}]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": "q-1", "expected_value_usd": null}]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": "q-1", "expected_value_usd": -1}]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": "q-1", "expected_value_usd": 1e400}]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": "q-1", "expected_value_usd": 1}]', 0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": "q-1", "expected_value_usd": 1}]', 'NaN');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": "q-1", "expected_value_usd": 1}]', 'Infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": "q-1", "expected_value_usd": 1}]', 100, 0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": "q-1", "expected_value_usd": 1}]', 100, 1.5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": "q-1", "expected_value_usd": 1}]', 100, 'NaN');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": "q-1", "expected_value_usd": 1}]', 100, ttl_at => 'infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": "q-1", "expected_value_usd": 1}]', 100,
    ttl_at => :'t0'::timestamptz + interval '101 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[{"task_id": "q-1", "expected_value_usd": 1}]', 100,
    ttl_at => now() + interval '31 days');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('nobody', '[{"task_id": "q-1", "expected_value_usd": 1}]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1',
    (SELECT jsonb_agg(jsonb_build_object('task_id', 'bulk-' || i, 'expected_value_usd', 1)) FROM generate_series(1, 1001) AS i), 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-1', '[
    {"task_id": "q-1", "expected_value_usd": 50},
    {"task_id": "q-2", "expected_value_usd": 20, "blocked": null},
    {"task_id": "q-3", "expected_value_usd": 5, "blocked": true}
  ]', 50, 0.5, :'t0'::timestamptz + interval '15 days');
ROLLBACK;

-- submit_bids_for_task_arrays(quest_id, task_ids, expected_values_usd, blocked, tokens_per_usd,
-- bid_fraction, ttl_at), the internal form: NULL is allowed in ttl_at only, and no array may
-- hold a NULL
SELECT * FROM compute_auction.submit_bids_for_task_arrays(NULL, '{q-1}', '{1}', '{f}', 100, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('quest-1', NULL, '{1}', '{f}', 100, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('quest-1', '{q-1}', NULL, '{f}', 100, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('quest-1', '{q-1}', '{1}', NULL, 100, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('quest-1', '{q-1}', '{1}', '{f}', NULL, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('quest-1', '{q-1}', '{1}', '{f}', 100, NULL, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('quest-1', '{q-1,NULL}', '{1,2}', '{f,f}', 100, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('quest-1', '{q-1}', '{NULL}', '{f}', 100, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('quest-1', '{q-1}', '{1}', '{NULL}', 100, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('quest-1', '{q-1,q-2}', '{1}', '{f,f}', 100, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('quest-1', '{q-1}', '{NaN}', '{f}', 100, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('', '{q-1}', '{1}', '{f}', 100, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('quest-1', ARRAY[repeat('t', 257)], '{1}', '{f}', 100, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('quest-1', '{q-1}', '{1}', '{f}', 100, 0.6, 'infinity');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('nobody', '{q-1}', '{1}', '{f}', 100, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT * FROM compute_auction.submit_bids_for_task_arrays('quest-1', '{q-1,q-2}', '{50,20}', '{f,t}', 50, 0.5, NULL);
ROLLBACK;

-- allocate_proportional(day, daily_budget_tokens, quests, source): an explicit NULL source is
-- refused; the shares are exact up to the bigint maximum
SELECT * FROM compute_auction.allocate_proportional(NULL, 10, '[]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional(current_date, NULL, '[]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional(current_date, 10, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional(current_date, 10, '[]', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional('infinity', 10, '[]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional(current_date + 36890, 10, '[]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional(current_date - 36890, 10, '[]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional(current_date, -1, '[]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional(current_date, 10, '{}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional(current_date, 10, '[{"quest_id": "a"}]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional(current_date, 10, '[{"quest_id": "", "expected_value": 1}]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional(current_date, 10, jsonb_build_array(jsonb_build_object('quest_id', repeat('q', 257), 'expected_value', 1)));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional(current_date, 10, '[{"quest_id": "a", "expected_value": -1}]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional(current_date, 10, '[{"quest_id": "a", "expected_value": 1}, {"quest_id": "a", "expected_value": 2}]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional(current_date, 10, '[{"quest_id": "a", "expected_value": 1e400}]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT * FROM compute_auction.allocate_proportional(current_date + 18000, 1000, '[{"quest_id": "a", "expected_value": 2}, {"quest_id": "b", "expected_value": 1}]');
SELECT * FROM compute_auction.allocate_proportional(current_date, 9223372036854775807,
    '[{"quest_id": "a", "expected_value": 1}, {"quest_id": "b", "expected_value": 1}, {"quest_id": "c", "expected_value": 1}]', 'max');
SELECT sum(allocated_tokens) = 9223372036854775807 AS shares_sum_to_the_budget
  FROM compute_auction.quest_budget_allocations WHERE day = current_date;
ROLLBACK;

-- allocate_proportional_arrays(day, daily_budget_tokens, quest_ids, expected_values, source),
-- the internal form: no argument may be NULL, nor any array element
SELECT * FROM compute_auction.allocate_proportional_arrays(NULL, 10, '{a}', '{1}', 's');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional_arrays(current_date, NULL, '{a}', '{1}', 's');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional_arrays(current_date, 10, NULL, '{1}', 's');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional_arrays(current_date, 10, '{a}', NULL, 's');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional_arrays(current_date, 10, '{a}', '{1}', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional_arrays(current_date, 10, '{a,NULL}', '{1,1}', 's');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional_arrays(current_date, 10, '{a}', '{NULL}', 's');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional_arrays(current_date, 10, '{a,b}', '{1}', 's');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional_arrays(current_date, 10, '{a}', '{NaN}', 's');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional_arrays(current_date, 10, '{a}', '{Infinity}', 's');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional_arrays('infinity', 10, '{a}', '{1}', 's');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional_arrays(current_date, 10, ARRAY[repeat('q', 257)], '{1}', 's');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional_arrays(current_date, 10, '{""}', '{1}', 's');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT * FROM compute_auction.allocate_proportional_arrays(current_date, 10, '{a,b,c}', '{0,0,0}', 's');
ROLLBACK;

-- allocate_fallback(day, daily_budget_tokens, source): an explicit NULL source is refused
SELECT * FROM compute_auction.allocate_fallback(NULL, 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_fallback(current_date, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_fallback(current_date, 10, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_fallback('infinity', 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_fallback(current_date + 36890, 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_fallback(current_date, -1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
BEGIN;
SELECT compute_auction.place_bid('quest-1', 'q-7', 100, 30);
SELECT * FROM compute_auction.allocate_fallback(current_date, 1000);
ROLLBACK;

-- ## Ids are data: quotes and SQL are stored as is and never run
CREATE TEMP TABLE t (x int);
BEGIN;
SELECT compute_auction.open_account('x''); DROP TABLE t; --', 'agent', 1000, NULL);
SELECT compute_auction.deposit('x''); DROP TABLE t; --', 10, 'x''); DROP TABLE t; --', 'x''); DROP TABLE t; --');
SELECT compute_auction.place_bid('x''); DROP TABLE t; --', 'x''); DROP TABLE t; --', 100);
SELECT compute_auction.offer_slot('x''); DROP TABLE t; --', :'t0');
SELECT account_id, account_id = 'x''); DROP TABLE t; --' AS stored_as_is, balance_tokens, held_tokens
  FROM compute_auction.token_accounts WHERE account_id LIKE 'x%';
SELECT bidder_id, task_id FROM compute_auction.compute_auction_bids WHERE bidder_id LIKE 'x%';
SELECT reason, idempotency_key FROM compute_auction.token_ledger WHERE entry_kind = 'deposit' AND account_id LIKE 'x%';
SELECT slot_id FROM compute_auction.compute_slots WHERE slot_id LIKE 'x%';
ROLLBACK;
SELECT to_regclass('pg_temp.t') IS NOT NULL AS t_still_exists;
DROP TABLE t;

-- ## Nothing changed: the books equal the snapshot, both ways
SELECT 'added' AS change, * FROM (SELECT * FROM books EXCEPT ALL SELECT * FROM before) AS a
UNION ALL
SELECT 'removed', * FROM (SELECT * FROM before EXCEPT ALL SELECT * FROM books) AS r;
SELECT * FROM compute_auction.audit();
