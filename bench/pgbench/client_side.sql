-- what an application does without the extension: the same work as place_bid as several
-- client-side statements in one transaction (lock the wallet, check the balance in the client,
-- move the tokens to escrow, insert the bid and its open-bid counter delta, journal it, commit)
\set a random(1, 10000)
\set p random(1, 100000)
\set np -1 * :p
\set r random(1, 1000000000000000)
BEGIN;
SELECT balance_tokens AS bal FROM compute_auction.token_accounts WHERE account_id = 'acct-' || :a FOR UPDATE \gset
\if :bal >= :p
UPDATE compute_auction.token_accounts
   SET balance_tokens = balance_tokens - :p, held_tokens = held_tokens + :p, updated_at = now()
 WHERE account_id = 'acct-' || :a
RETURNING balance_tokens AS nb, held_tokens AS nh \gset
WITH b AS (
    INSERT INTO compute_auction.compute_auction_bids (bidder_id, task_id, max_price_tokens, expected_value_usd, ttl_at)
    VALUES ('acct-' || :a, 'task-' || :client_id || '-' || :r, :p, NULL, now() + interval '15 minutes')
    RETURNING id
), c AS (
    INSERT INTO compute_auction.open_bid_count_deltas (delta) SELECT 1 FROM b
)
SELECT id AS bid FROM b \gset
INSERT INTO compute_auction.token_ledger
       (account_id, delta_balance, delta_held, entry_kind, bid_id, reason, balance_after, held_after)
VALUES ('acct-' || :a, :np, :p, 'escrow', :bid, 'bid placed', :nb, :nh);
COMMIT;
\else
ROLLBACK;
\endif
