-- compute_auction: the two documented group roles and their grants.
-- Run as a superuser (or the extension's owner) in each database that has the extension.
-- The extension itself creates no roles; it revokes everything from PUBLIC at install.
--
--   compute_auction_operator  runs the market: slots, wallets, clearing, settlement, fallback
--   compute_auction_agent     takes part in it: bids, claims, reads the book and stats
--
-- Then grant membership to login roles, e.g.
--   CREATE ROLE runner_17 LOGIN IN ROLE compute_auction_agent;
--   SELECT compute_auction.set_account_owner('agent-17', 'runner_17');
-- An account with an owner_role can be bid, cancelled or withdrawn from only by that role (or
-- its members), a compute_auction_operator member, or a superuser.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'compute_auction_operator') THEN
        CREATE ROLE compute_auction_operator NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'compute_auction_agent') THEN
        CREATE ROLE compute_auction_agent NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA compute_auction TO compute_auction_operator, compute_auction_agent;

-- Both may read the market's tables (applications read them); nobody but the owner writes them.
GRANT SELECT ON ALL TABLES IN SCHEMA compute_auction TO compute_auction_operator, compute_auction_agent;

-- Agents: bid, replace, cancel, claim, read.
GRANT EXECUTE ON FUNCTION
    compute_auction.place_bid(text, text, bigint, double precision, timestamptz),
    compute_auction.cancel_bid(bigint),
    compute_auction.claim_slot(text),
    compute_auction.submit_bids_for_tasks(text, jsonb, double precision, double precision, timestamptz),
    compute_auction.balance(text),
    compute_auction.pending_balance(text),
    compute_auction.bid_status(bigint),
    compute_auction.order_book(integer),
    compute_auction.stats(timestamptz, boolean, integer),
    compute_auction.price_history(timestamptz, integer),
    compute_auction.price_to_win(),
    compute_auction.last_round(),
    compute_auction.market_summary()
TO compute_auction_agent;

-- Operators: everything agents can, plus running the market.
GRANT compute_auction_agent TO compute_auction_operator;
GRANT EXECUTE ON FUNCTION
    compute_auction.open_account(text, text, bigint, text),
    compute_auction.set_account_owner(text, text),
    compute_auction.deposit(text, bigint, text, text),
    compute_auction.withdraw(text, bigint, text, text),
    compute_auction.offer_slot(text, timestamptz, bigint),
    compute_auction.retire_slot(text),
    compute_auction.clear_round(timestamptz),
    compute_auction.run_cycle(interval),
    compute_auction.refund_unfilled(timestamptz),
    compute_auction.abort_stale(interval, timestamptz),
    compute_auction.settle(text, bigint, double precision),
    compute_auction.abort_slot(text, text),
    compute_auction.apply_pending(),
    compute_auction.allocate_proportional(date, bigint, jsonb, text),
    compute_auction.schedule_clearing(text),
    compute_auction.unschedule_clearing(),
    compute_auction.audit()
TO compute_auction_operator;
