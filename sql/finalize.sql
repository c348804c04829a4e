-- Privileges, applied after every function exists. The extension creates no roles: an
-- administrator creates the two documented group roles and grants them (docs/roles.sql,
-- docs/SECURITY.md). Until then only the owner (the installing superuser) can use the market.
REVOKE ALL ON SCHEMA compute_auction FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA compute_auction FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA compute_auction FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA compute_auction FROM PUBLIC;

-- The participants' functions (agents and slot runners) never wait long for a lock another
-- transaction holds: at most lock_timeout, then 55P03 (retry). This is the one place that sets
-- the bound (docs/CONCURRENCY.md); the market's cycle functions do not wait at all (SKIP LOCKED).
ALTER FUNCTION compute_auction.place_bid(text, text, bigint, double precision, timestamptz) SET lock_timeout = '1s';
ALTER FUNCTION compute_auction.cancel_bid(bigint) SET lock_timeout = '1s';
ALTER FUNCTION compute_auction.claim_slot(text) SET lock_timeout = '1s';
ALTER FUNCTION compute_auction.submit_bids_for_tasks(text, jsonb, double precision, double precision, timestamptz)
    SET lock_timeout = '1s';
ALTER FUNCTION compute_auction.settle(text, bigint, double precision) SET lock_timeout = '1s';
ALTER FUNCTION compute_auction.abort_slot(text, text) SET lock_timeout = '1s';
