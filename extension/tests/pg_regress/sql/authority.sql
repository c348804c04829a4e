-- Authority, who may do what (docs/SECURITY.md, docs/SQL_API.md "Owners and runners"): the
-- operator rule, the runner rights, an account's owner role and a slot's runner role, role
-- membership, operators-only accounts and slots, and roles that no longer resolve.
--
-- The file starts from a fresh market (the public helpers regress_t, regress_pin and
-- regress_clock stay). It creates regress_ca_* roles, grants them what docs/roles.sql grants its
-- three group roles, acts as them with SET SESSION AUTHORIZATION (the checks read
-- session_user), and drops every role it created at the end. Role OIDs are never printed.
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

-- The three group roles of docs/roles.sql, under regress_ca_ names, with its grants.
CREATE ROLE regress_ca_operators NOLOGIN;
CREATE ROLE regress_ca_agents NOLOGIN;
CREATE ROLE regress_ca_runners NOLOGIN;
GRANT USAGE ON SCHEMA compute_auction TO regress_ca_operators, regress_ca_agents, regress_ca_runners;
GRANT SELECT ON ALL TABLES IN SCHEMA compute_auction TO regress_ca_operators, regress_ca_agents;
GRANT EXECUTE ON FUNCTION
    compute_auction.claim_slot(text),
    compute_auction.settle(text, bigint, double precision),
    compute_auction.abort_slot(text, text),
    compute_auction.bid_status(bigint),
    compute_auction.task_status(text),
    compute_auction.last_round()
TO regress_ca_runners;
GRANT EXECUTE ON FUNCTION
    compute_auction.place_bid(text, text, bigint, double precision, timestamptz),
    compute_auction.cancel_bid(bigint),
    compute_auction.submit_bids_for_tasks(text, jsonb, double precision, double precision, timestamptz),
    compute_auction.balance(text),
    compute_auction.pending_balance(text),
    compute_auction.wallet(text),
    compute_auction.bid_status(bigint),
    compute_auction.task_status(text),
    compute_auction.order_book(integer),
    compute_auction.stats(timestamptz, boolean, integer),
    compute_auction.price_history(timestamptz, integer),
    compute_auction.price_to_win(integer, interval),
    compute_auction.last_round(),
    compute_auction.market_summary()
TO regress_ca_agents;
GRANT regress_ca_agents, regress_ca_runners TO regress_ca_operators;
GRANT EXECUTE ON FUNCTION
    compute_auction.open_account(text, text, bigint, text),
    compute_auction.set_account_owner(text, text),
    compute_auction.set_low_balance_threshold(text, bigint),
    compute_auction.deposit(text, bigint, text, text),
    compute_auction.withdraw(text, bigint, text, text),
    compute_auction.offer_slot(text, timestamptz, bigint, text),
    compute_auction.set_slot_runner(text, text),
    compute_auction.retire_slot(text),
    compute_auction.clear_round(timestamptz),
    compute_auction.run_cycle(interval),
    compute_auction.refund_unfilled(timestamptz),
    compute_auction.abort_stale(interval, timestamptz),
    compute_auction.settle(text, bigint, double precision),
    compute_auction.abort_slot(text, text),
    compute_auction.apply_pending(),
    compute_auction.allocate_proportional(date, bigint, jsonb, text),
    compute_auction.allocate_fallback(date, bigint, text),
    compute_auction.clear_round_summary(timestamptz),
    compute_auction.schedule_clearing(text),
    compute_auction.unschedule_clearing(),
    compute_auction.audit(),
    compute_auction.unresolved_roles(),
    compute_auction.rebuild_round_summaries()
TO regress_ca_operators;

-- The cast. alice and bob are agents owning their wallets; the wallet "team" is owned by a
-- group role that carol belongs to through regress_ca_squad (membership counts through
-- inheritance); ron runs the slots of regress_ca_rack, rita is a runner of no slot; oscar is an
-- operator through the group; the treasurer is one because it may EXECUTE deposit (granted
-- directly); mallory and nora are NOINHERIT members (they hold their groups' rights only after
-- SET ROLE, and session_user never does); the stranger holds nothing.
CREATE ROLE regress_ca_alice IN ROLE regress_ca_agents;
CREATE ROLE regress_ca_bob IN ROLE regress_ca_agents;
CREATE ROLE regress_ca_team NOLOGIN;
CREATE ROLE regress_ca_squad NOLOGIN IN ROLE regress_ca_team;
CREATE ROLE regress_ca_carol IN ROLE regress_ca_agents, regress_ca_squad;
CREATE ROLE regress_ca_rack NOLOGIN;
CREATE ROLE regress_ca_ron IN ROLE regress_ca_runners, regress_ca_rack;
CREATE ROLE regress_ca_rita IN ROLE regress_ca_runners;
CREATE ROLE regress_ca_oscar IN ROLE regress_ca_operators;
CREATE ROLE regress_ca_treasurer;
GRANT USAGE ON SCHEMA compute_auction TO regress_ca_treasurer;
GRANT EXECUTE ON FUNCTION
    compute_auction.deposit(text, bigint, text, text),
    compute_auction.place_bid(text, text, bigint, double precision, timestamptz),
    compute_auction.cancel_bid(bigint)
TO regress_ca_treasurer;
CREATE ROLE regress_ca_mallory NOINHERIT IN ROLE regress_ca_operators;
CREATE ROLE regress_ca_nora NOINHERIT IN ROLE regress_ca_runners, regress_ca_rack;
CREATE ROLE regress_ca_stranger;
-- withdraw is an operator function in docs/roles.sql; alice may also withdraw from her own
-- wallet ("and withdraw, if granted")
GRANT EXECUTE ON FUNCTION compute_auction.withdraw(text, bigint, text, text) TO regress_ca_alice;

-- who is an operator (may EXECUTE deposit) and who has the runner rights (may EXECUTE settle),
-- the way the extension asks (has_function_privilege counts inherited grants only)
SELECT r AS role,
       has_function_privilege(r, 'compute_auction.deposit(text, bigint, text, text)', 'EXECUTE') AS operator,
       has_function_privilege(r, 'compute_auction.settle(text, bigint, double precision)', 'EXECUTE') AS runner_rights,
       pg_has_role(r, 'regress_ca_team', 'MEMBER') AS member_of_team,
       pg_has_role(r, 'regress_ca_rack', 'MEMBER') AS member_of_rack
  FROM unnest(ARRAY['regress_ca_alice', 'regress_ca_bob', 'regress_ca_carol', 'regress_ca_ron', 'regress_ca_rita',
                    'regress_ca_oscar', 'regress_ca_treasurer', 'regress_ca_mallory', 'regress_ca_nora',
                    'regress_ca_stranger']) WITH ORDINALITY AS x(r, n)
 ORDER BY n;

-- The market: four wallets (one without owner) and two slots (one without runner), set up by
-- the superuser, an operator.
SELECT compute_auction.open_account('alice', 'agent', 10000, 'regress_ca_alice');
SELECT compute_auction.open_account('bob', 'agent', 10000, 'regress_ca_bob');
SELECT compute_auction.open_account('team', 'quest', 10000, 'regress_ca_team');
SELECT compute_auction.open_account('orphan', 'agent', 10000);
SELECT compute_auction.offer_slot('slot-r', :'t0'::timestamptz - interval '1 minute', 0, 'regress_ca_rack');
SELECT compute_auction.offer_slot('slot-free', :'t0'::timestamptz - interval '1 minute', 0);
SELECT account_id, owner_role, owner_oid::text AS owner_oid FROM compute_auction.token_accounts ORDER BY account_id;
SELECT slot_id, runner_role, runner_oid::text AS runner_oid FROM compute_auction.compute_slots ORDER BY slot_id;

-- the superuser is an operator: it acts for a wallet it does not own
SELECT rolsuper FROM pg_roles WHERE rolname = session_user;
SELECT compute_auction.cancel_bid(compute_auction.place_bid('alice', 'task-su', 10));

-- ## Owners: an agent bids, replaces and cancels for its own wallet only

SET SESSION AUTHORIZATION regress_ca_bob;
SELECT session_user, current_user;
SELECT compute_auction.place_bid('bob', 'task-b1', 1000);
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION regress_ca_alice;
SELECT compute_auction.place_bid('alice', 'task-a1', 1500);
SELECT compute_auction.place_bid('alice', 'task-a1', 2000);
-- another owner's wallet, a wallet without owner, another's bid: 42501, and nothing changed
SELECT compute_auction.place_bid('bob', 'task-a2', 500);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('orphan', 'task-a2', 500);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.cancel_bid((SELECT id FROM compute_auction.compute_auction_bids WHERE task_id = 'task-b1'));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('bob', '[{"task_id": "task-a2", "expected_value_usd": 10}]', 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- refused before the state is looked at: bob's bid on task-b1 would be a 23505, orphan's a 23514
SELECT compute_auction.place_bid('bob', 'task-b1', 500);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.place_bid('orphan', 'task-a3', 99999);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- an unknown account is P0002 (checked first), whoever asks
SELECT compute_auction.place_bid('nobody', 'task-a2', 500);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- an agent may read any balance (balance checks no owner) and the tables
SELECT * FROM compute_auction.balance('bob');
SELECT account_id, balance_tokens, held_tokens FROM compute_auction.token_accounts ORDER BY account_id;
SELECT id, bidder_id, task_id, max_price_tokens, status FROM compute_auction.compute_auction_bids ORDER BY id;
-- withdraw (granted to alice): her own wallet, not bob's
SELECT compute_auction.withdraw('alice', 100, 'payout');
SELECT compute_auction.withdraw('bob', 100, 'payout');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('orphan', 100, 'payout');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- PostgreSQL's own 42501: no EXECUTE on the operator functions, nor on the internal array forms
SELECT compute_auction.deposit('alice', 100, 'self-service');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_account_owner('bob', 'regress_ca_alice');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.unresolved_roles();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_task_arrays('bob', '{task-a2}', '{10}', '{f}', 10, 0.6, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.claim_slot('slot-r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT account_id, balance_tokens, held_tokens, total_withdrawn, owner_role FROM compute_auction.token_accounts ORDER BY account_id;
RESET SESSION AUTHORIZATION;

-- bob has no EXECUTE on withdraw: PostgreSQL refuses him, even for his own wallet
SET SESSION AUTHORIZATION regress_ca_bob;
SELECT compute_auction.withdraw('bob', 100, 'payout');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;

-- a role with no grant at all is stopped at the schema
SET SESSION AUTHORIZATION regress_ca_stranger;
SELECT * FROM compute_auction.balance('alice');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT count(*) FROM compute_auction.token_accounts;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
SELECT account_id, balance_tokens, held_tokens, total_withdrawn FROM compute_auction.token_accounts ORDER BY account_id;

-- ## Membership counts through inheritance: carol acts for "team" through regress_ca_squad

SET SESSION AUTHORIZATION regress_ca_carol;
SELECT pg_has_role(session_user, 'regress_ca_team', 'MEMBER') AS carol_is_a_member_of_team;
SELECT * FROM compute_auction.submit_bids_for_tasks('team', '[
    {"task_id": "q-1", "expected_value_usd": 10},
    {"task_id": "q-2", "expected_value_usd": 5}
  ]', tokens_per_usd => 100);
SELECT compute_auction.place_bid('team', 'q-3', 300);
SELECT compute_auction.cancel_bid(compute_auction.place_bid('team', 'q-4', 100));
-- but not for alice
SELECT compute_auction.cancel_bid((SELECT id FROM compute_auction.compute_auction_bids WHERE task_id = 'task-a1'));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('alice', '[{"task_id": "task-a1", "expected_value_usd": 1}]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT id, bidder_id, task_id, max_price_tokens, status FROM compute_auction.compute_auction_bids ORDER BY id;
RESET SESSION AUTHORIZATION;

-- and alice, not a member, may not act for "team"
SET SESSION AUTHORIZATION regress_ca_alice;
SELECT compute_auction.place_bid('team', 'q-1', 1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('team', '[]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.cancel_bid((SELECT id FROM compute_auction.compute_auction_bids WHERE task_id = 'q-1'));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT id, status, max_price_tokens FROM compute_auction.compute_auction_bids WHERE bidder_id = 'team' ORDER BY id;
RESET SESSION AUTHORIZATION;

-- ## Operators act for every wallet: through the group (oscar), or by the EXECUTE on deposit
-- alone (the treasurer)

SET SESSION AUTHORIZATION regress_ca_oscar;
SELECT compute_auction.place_bid('orphan', 'task-o1', 400);
SELECT compute_auction.withdraw('bob', 100, 'payout by an operator');
SELECT compute_auction.cancel_bid(compute_auction.place_bid('bob', 'task-o2', 50));
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION regress_ca_treasurer;
SELECT compute_auction.place_bid('alice', 'task-t1', 10);
SELECT compute_auction.cancel_bid(compute_auction.place_bid('orphan', 'task-t2', 10));
SELECT compute_auction.deposit('orphan', 10, 'top-up');
RESET SESSION AUTHORIZATION;

-- mallory is a NOINHERIT member of the operators: after SET ROLE she may call place_bid, but
-- the check reads session_user, who is no operator and owns no wallet
SET SESSION AUTHORIZATION regress_ca_mallory;
SELECT compute_auction.place_bid('bob', 'task-m1', 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SET ROLE regress_ca_operators;
SELECT session_user, current_user;
SELECT compute_auction.place_bid('bob', 'task-m1', 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('orphan', 10, 'mallory');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET ROLE;
RESET SESSION AUTHORIZATION;
SELECT id, bidder_id, task_id, max_price_tokens, status FROM compute_auction.compute_auction_bids ORDER BY id;
SELECT account_id, balance_tokens, held_tokens, total_deposited, total_withdrawn FROM compute_auction.token_accounts ORDER BY account_id;

-- ## Runners: a round assigns both slots (slot-free, reserve 0, goes first to the best bid)

SELECT * FROM compute_auction.clear_round(:'t0');
SELECT slot_id, bid_id, bidder_id, status FROM compute_auction.compute_auction_clears ORDER BY slot_id;

-- rita has the runner rights but is no member of regress_ca_rack; nobody but operators runs
-- slot-free, which has no runner: 42501 from claim_slot, settle and abort_slot
SET SESSION AUTHORIZATION regress_ca_rita;
SELECT * FROM compute_auction.claim_slot('slot-r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-r', 10, 1.0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_slot('slot-r', 'not mine');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- an unknown slot is P0002 (checked first), whoever asks
SELECT compute_auction.settle('slot-z', 10, 1.0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION regress_ca_ron;
SELECT * FROM compute_auction.claim_slot('slot-free');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-free', 10, 1.0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_slot('slot-free', 'not mine');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;

-- nora is a NOINHERIT member of the runners and of regress_ca_rack: without SET ROLE she cannot
-- call claim_slot at all; with it she can, but session_user has no runner rights
SET SESSION AUTHORIZATION regress_ca_nora;
SELECT * FROM compute_auction.claim_slot('slot-r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SET ROLE regress_ca_runners;
SELECT * FROM compute_auction.claim_slot('slot-r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-r', 10, 1.0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET ROLE;
RESET SESSION AUTHORIZATION;

-- none of the refusals claimed, settled or aborted anything
SELECT slot_id, status, claimed_at IS NOT NULL AS claimed FROM compute_auction.compute_auction_clears ORDER BY slot_id;
SELECT slot_id, status FROM compute_auction.compute_slots ORDER BY slot_id;
SELECT account_id, balance_tokens, held_tokens FROM compute_auction.token_accounts ORDER BY account_id;

-- ron, a runner of regress_ca_rack, claims and settles slot-r; oscar, an operator, settles
-- slot-free
SET SESSION AUTHORIZATION regress_ca_ron;
SELECT * FROM compute_auction.claim_slot('slot-r');
SELECT compute_auction.settle('slot-r', 900, 0.5);
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_ca_oscar;
SELECT * FROM compute_auction.claim_slot('slot-free');
SELECT compute_auction.settle('slot-free', 900, 0.5);
RESET SESSION AUTHORIZATION;
SELECT slot_id, bid_id, status FROM compute_auction.compute_auction_clears ORDER BY slot_id;

-- a second round; ron aborts his slot's run
SELECT * FROM compute_auction.clear_round(:'t0'::timestamptz + interval '1 minute');
SET SESSION AUTHORIZATION regress_ca_ron;
SELECT compute_auction.abort_slot('slot-r', 'runner restarted');
RESET SESSION AUTHORIZATION;
SELECT c.slot_id, c.bid_id, c.status, b.status AS bid_status, b.last_result
  FROM compute_auction.compute_auction_clears c JOIN compute_auction.compute_auction_bids b ON b.id = c.bid_id
 ORDER BY c.round_id, c.slot_id;

-- ## Roles that no longer resolve get nothing until an operator names them again

SET SESSION AUTHORIZATION regress_ca_bob;
SELECT compute_auction.place_bid('bob', 'task-b2', 100);
RESET SESSION AUTHORIZATION;

-- bob is dropped and created again: same name, new OID
DROP ROLE regress_ca_bob;
CREATE ROLE regress_ca_bob IN ROLE regress_ca_agents;
-- slot-r's runner is renamed: same OID, new name
ALTER ROLE regress_ca_rack RENAME TO regress_ca_rack2;
-- and "team"'s owner is dropped for good
DROP ROLE regress_ca_squad;
DROP ROLE regress_ca_team;
SELECT object_kind, object_id, role_name,
       role_oid = 'regress_ca_bob'::regrole AS oid_is_the_new_bob,
       role_oid = 'regress_ca_rack2'::regrole AS oid_is_rack2,
       NOT EXISTS (SELECT FROM pg_roles WHERE oid = role_oid) AS role_is_gone
  FROM compute_auction.unresolved_roles();

-- a round assigns slot-r again (slot-free still runs orphan's task-o1)
SELECT * FROM compute_auction.clear_round(:'t0'::timestamptz + interval '2 minutes');

SET SESSION AUTHORIZATION regress_ca_bob;
SELECT compute_auction.place_bid('bob', 'task-b9', 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.cancel_bid((SELECT id FROM compute_auction.compute_auction_bids WHERE task_id = 'task-b2'));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_ca_ron;
SELECT pg_has_role(session_user, 'regress_ca_rack2', 'MEMBER') AS ron_is_still_a_member;
SELECT * FROM compute_auction.claim_slot('slot-r');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.settle('slot-r', 10, 1.0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.abort_slot('slot-r', 'renamed');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_ca_carol;
SELECT compute_auction.place_bid('team', 'q-9', 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;
SELECT id, bidder_id, task_id, max_price_tokens, status FROM compute_auction.compute_auction_bids ORDER BY id;
SELECT slot_id, status, claimed_at IS NOT NULL AS claimed FROM compute_auction.compute_auction_clears WHERE status = 'assigned' ORDER BY slot_id;
SELECT account_id, balance_tokens, held_tokens FROM compute_auction.token_accounts ORDER BY account_id;

-- an operator names them again (naming a dropped role is 22023, as for any role that does not
-- exist); then only "team" is still listed, until its owner is cleared
SELECT compute_auction.set_account_owner('bob', 'regress_ca_bob');
SELECT compute_auction.set_slot_runner('slot-r', 'regress_ca_rack2');
SELECT compute_auction.set_account_owner('team', 'regress_ca_team');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT object_kind, object_id, role_name FROM compute_auction.unresolved_roles();
SELECT compute_auction.set_account_owner('team', NULL);
SELECT * FROM compute_auction.unresolved_roles();
SELECT account_id, owner_role, owner_oid::text AS owner_oid FROM compute_auction.token_accounts ORDER BY account_id;
SELECT slot_id, runner_role, runner_oid::text AS runner_oid FROM compute_auction.compute_slots ORDER BY slot_id;

-- and they act again
SET SESSION AUTHORIZATION regress_ca_bob;
SELECT compute_auction.place_bid('bob', 'task-b9', 10);
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_ca_ron;
SELECT bid_id, task_id, bidder_id FROM compute_auction.claim_slot('slot-r');
SELECT compute_auction.settle('slot-r', 10, 1.0);
RESET SESSION AUTHORIZATION;
-- "team" has no owner now: operators only
SET SESSION AUTHORIZATION regress_ca_carol;
SELECT compute_auction.place_bid('team', 'q-9', 10);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET SESSION AUTHORIZATION;

SELECT id, bidder_id, task_id, max_price_tokens, status, last_result FROM compute_auction.compute_auction_bids ORDER BY id;
SELECT account_id, balance_tokens, held_tokens, total_deposited, total_spent, total_withdrawn
  FROM compute_auction.token_accounts ORDER BY account_id;

-- Leave nothing behind: revoke every grant (DROP OWNED BY), then drop the roles.
DROP OWNED BY regress_ca_operators, regress_ca_agents, regress_ca_runners, regress_ca_alice, regress_ca_bob,
    regress_ca_carol, regress_ca_rack2, regress_ca_ron, regress_ca_rita, regress_ca_oscar, regress_ca_treasurer,
    regress_ca_mallory, regress_ca_nora, regress_ca_stranger;
DROP ROLE regress_ca_alice, regress_ca_bob, regress_ca_carol, regress_ca_rack2, regress_ca_ron, regress_ca_rita,
    regress_ca_oscar, regress_ca_treasurer, regress_ca_mallory, regress_ca_nora, regress_ca_stranger,
    regress_ca_operators, regress_ca_agents, regress_ca_runners;
SELECT count(*) AS roles_left FROM pg_roles
 WHERE rolname IN ('regress_ca_operators', 'regress_ca_agents', 'regress_ca_runners', 'regress_ca_alice',
                   'regress_ca_bob', 'regress_ca_team', 'regress_ca_squad', 'regress_ca_carol', 'regress_ca_rack',
                   'regress_ca_rack2', 'regress_ca_ron', 'regress_ca_rita', 'regress_ca_oscar',
                   'regress_ca_treasurer', 'regress_ca_mallory', 'regress_ca_nora', 'regress_ca_stranger');
SELECT * FROM compute_auction.audit();
