-- compute_auction: the three documented group roles and their grants.
-- Run as a superuser (or the extension's owner) in each database that has the extension; it
-- can be run again (after an upgrade, say): it only creates what is missing and grants.
-- The extension itself creates no roles; it revokes everything from PUBLIC at install.
--
--   compute_auction_operator  runs the market: slots, runners, wallets, clearing, fallback
--   compute_auction_agent     takes part in it: bids for its own wallets, reads the book and stats
--   compute_auction_runner    runs slots: claims, settles and aborts the slots it is runner of
--
-- Rights come from these grants in this database, not from the role names (docs/SECURITY.md):
-- an operator is whoever may EXECUTE deposit here, a runner whoever may EXECUTE settle, an
-- agent whoever may EXECUTE place_bid. Then grant membership to login roles, and name each
-- wallet's owner and each slot's runner, e.g.
--   CREATE ROLE agent_17 LOGIN IN ROLE compute_auction_agent;
--   SELECT compute_auction.set_account_owner('agent-17', 'agent_17');
--   CREATE ROLE runner_17 LOGIN IN ROLE compute_auction_runner;
--   SELECT compute_auction.offer_slot('agent-slot-17', now(), 0, 'runner_17');
-- A wallet is acted for only by members of its owner role and by operators; a slot is run only
-- by members of its runner role (holding the runner grants) and by operators. A wallet without
-- an owner, or a slot without a runner, is operators-only.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'compute_auction_operator') THEN
        CREATE ROLE compute_auction_operator NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'compute_auction_agent') THEN
        CREATE ROLE compute_auction_agent NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'compute_auction_runner') THEN
        CREATE ROLE compute_auction_runner NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA compute_auction
    TO compute_auction_operator, compute_auction_agent, compute_auction_runner;

-- Operators and agents may read the market's tables (applications read them); nobody but the
-- owner writes them.
GRANT SELECT ON ALL TABLES IN SCHEMA compute_auction TO compute_auction_operator, compute_auction_agent;

-- Runners: claim, settle and abort their own slots, and follow the bid they run.
GRANT EXECUTE ON FUNCTION
    compute_auction.claim_slot(text),
    compute_auction.settle(text, bigint, double precision),
    compute_auction.abort_slot(text, text),
    compute_auction.bid_status(bigint),
    compute_auction.task_status(text),
    compute_auction.last_round()
TO compute_auction_runner;

-- Agents: bid, replace, cancel, read.
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
TO compute_auction_agent;

-- Operators: everything agents and runners can, plus running the market.
GRANT compute_auction_agent, compute_auction_runner TO compute_auction_operator;
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
    compute_auction.prune_history(interval),
    compute_auction.schedule_pruning(interval, text),
    compute_auction.unschedule_pruning(),
    compute_auction.audit(),
    compute_auction.unresolved_roles(),
    compute_auction.rebuild_round_summaries()
TO compute_auction_operator;
