-- Quests and the fallback: submit_bids_for_tasks, allocate_proportional, allocate_fallback.
-- Continues reporting.sql's story: quest-42 holds 20000 tokens and no bids; carol's bid on
-- task-9 is open.
\set SHOW_CONTEXT never
\pset null NULL
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';
SELECT t0 FROM regress_clock \gset

-- doc: submit_bids_for_tasks
SELECT * FROM compute_auction.balance('quest-42');
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42', '[
    {"task_id": "q-1",    "expected_value_usd": 50},
    {"task_id": "q-2",    "expected_value_usd": 120},
    {"task_id": "q-3",    "expected_value_usd": 10, "blocked": true},
    {"task_id": "task-9", "expected_value_usd": 30}
  ]', tokens_per_usd => 100);
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42', '[
    {"task_id": "q-1",    "expected_value_usd": 50},
    {"task_id": "q-2",    "expected_value_usd": 120},
    {"task_id": "q-3",    "expected_value_usd": 10, "blocked": true},
    {"task_id": "task-9", "expected_value_usd": 30}
  ]', tokens_per_usd => 100);
SELECT * FROM compute_auction.balance('quest-42');
-- /doc

-- doc: submit_bids_for_tasks cancel
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42', '[
    {"task_id": "q-1", "expected_value_usd": 50, "blocked": true},
    {"task_id": "q-2", "expected_value_usd": 0}
  ]', 100);
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42', '[{"task_id": "q-1", "expected_value_usd": 50}]', 100, 1.5);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc
-- an explicit ttl_at, a bid that won already, and the other documented errors
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42', '[{"task_id": "q-4", "expected_value_usd": 20}]', 100,
    ttl_at => :'t0'::timestamptz + interval '1 hour');
SELECT regress_t(ttl_at) AS ttl_at FROM compute_auction.compute_auction_bids WHERE task_id = 'q-4';
SELECT * FROM compute_auction.submit_bids_for_tasks('bob', '[{"task_id": "task-8", "expected_value_usd": 20}]', 100);
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42', '{"task_id": "q-1"}', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42', '[{"task_id": "q-1", "expected_value_usd": -1}]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42', '[{"task_id": "q-1", "expected_value_usd": 1}, {"task_id": "q-1", "expected_value_usd": 2}]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42', '[{"task_id": "q-1", "expected_value_usd": 1e400}]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42', '[{"task_id": "q-1", "expected_value_usd": 1}]', 0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42', '[{"task_id": "q-1", "expected_value_usd": 1}]', 100,
    ttl_at => now() + interval '31 days');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42',
    (SELECT jsonb_agg(jsonb_build_object('task_id', 'bulk-' || i, 'expected_value_usd', 1)) FROM generate_series(1, 1001) AS i), 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42', jsonb_build_array(jsonb_build_object('task_id', repeat('t', 257), 'expected_value_usd', 1)), 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-0', '[{"task_id": "q-1", "expected_value_usd": 1}]', 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.submit_bids_for_tasks('quest-42', NULL, 100);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- none of the failed calls changed the quest's wallet or bids
SELECT * FROM compute_auction.balance('quest-42');
SELECT id, task_id, max_price_tokens, status FROM compute_auction.compute_auction_bids WHERE bidder_id = 'quest-42' ORDER BY id;

-- doc: allocate_proportional
SELECT * FROM compute_auction.allocate_proportional('2026-11-23', 1000, '[
    {"quest_id": "quest-42", "expected_value": 2},
    {"quest_id": "quest-7",  "expected_value": 1},
    {"quest_id": "quest-9",  "expected_value": 0.5}
  ]');
SELECT day, quest_id, allocated_tokens, round(share::numeric, 4) AS share, source
  FROM compute_auction.quest_budget_allocations ORDER BY quest_id;
-- /doc
SELECT * FROM compute_auction.allocate_proportional('2026-11-24', 10, '[{"quest_id": "a", "expected_value": 0}, {"quest_id": "b", "expected_value": 0}, {"quest_id": "c", "expected_value": 0}]');
SELECT * FROM compute_auction.allocate_proportional('2026-11-24', 10, '[]');
SELECT count(*) FROM compute_auction.quest_budget_allocations WHERE day = '2026-11-24';
SELECT * FROM compute_auction.allocate_proportional('2026-11-24', 10, '{}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional('2026-11-24', 10, '[{"quest_id": "a", "expected_value": -1}]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional('2026-11-24', 10, '[{"quest_id": "a", "expected_value": 1e400}]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional('2026-11-24', 10, jsonb_build_array(jsonb_build_object('quest_id', repeat('q', 257), 'expected_value', 1)));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional('3000-01-01', 10, '[]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.allocate_proportional('2026-11-24', 10, '[]', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- doc: allocate_fallback
BEGIN;
SELECT compute_auction.open_account('quest-7', 'quest', 5000);
SELECT compute_auction.place_bid('quest-7', 'q7-1', 1000, 30);
SELECT compute_auction.place_bid('quest-42', 'q-5', 2000, 70);
SELECT * FROM compute_auction.allocate_fallback('2026-11-23', 1000);
SELECT day, quest_id, allocated_tokens, round(share::numeric, 4) AS share, source
  FROM compute_auction.quest_budget_allocations ORDER BY quest_id;
ROLLBACK;
SELECT * FROM compute_auction.allocate_fallback('2026-11-23', -1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc
SELECT * FROM compute_auction.allocate_fallback(NULL, 1000);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.audit();

-- the end of the story: the ledger's kinds, as docs/SQL_API.md "Ledger entry kinds" shows them
-- doc: ledger kinds
SELECT * FROM compute_auction.audit();
SELECT entry_kind, count(*), min(delta_balance) AS min_db, max(delta_balance) AS max_db, min(delta_held) AS min_dh, max(delta_held) AS max_dh
  FROM compute_auction.token_ledger GROUP BY 1 ORDER BY 1;
-- /doc
-- the story's roles go with it (authority.sql and errors.sql start from a fresh market)
DROP ROLE regress_ca_agent_dave, regress_ca_runner_a;
