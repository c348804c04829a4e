-- the floor: the same bid row into the same table and indexes, no wallet, no ledger
\set a random(1, 10000)
\set p random(1, 100000)
\set r random(1, 1000000000000000)
INSERT INTO compute_auction.compute_auction_bids (bidder_id, task_id, max_price_tokens, expected_value_usd, ttl_at)
VALUES ('acct-' || :a, 'task-' || :client_id || '-' || :r, :p, NULL, now() + interval '15 minutes');
