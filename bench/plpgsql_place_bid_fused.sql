-- Experiment (not part of the comparison targets): the work of place_bid fused into two
-- statements instead of five, to measure what fewer executor round trips inside one call buy.
-- 1. task lock + TTL + the live bid on the task, locked            (was statements 1 and 2)
-- 2. wallet update with the balance and ownership checks in its WHERE, the bid, the counter
--    delta and the ledger row, in one statement                        (was statements 3, 4 and 5)
-- Only the common path (a new bid) is fused; replacing an open bid, and the errors, fall back to
-- bench_plpgsql.place_bid (bench/plpgsql_place_bid.sql), which must be loaded first.
CREATE OR REPLACE FUNCTION bench_plpgsql.place_bid_fused(
    p_bidder_id          text,
    p_task_id            text,
    p_max_price_tokens   bigint,
    p_expected_value_usd double precision DEFAULT NULL,
    p_ttl_at             timestamptz DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = compute_auction, pg_catalog, pg_temp
AS $fn$
DECLARE
    v_ttl     timestamptz;
    v_ttl_ok  boolean;
    v_live_id bigint;
    v_id      bigint;
BEGIN
    IF p_bidder_id IS NULL OR p_bidder_id = '' OR length(p_bidder_id) > 256
       OR p_task_id IS NULL OR p_task_id = '' OR length(p_task_id) > 256
       OR p_max_price_tokens IS NULL OR p_max_price_tokens <= 0
       OR p_expected_value_usd IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8) THEN
        RETURN bench_plpgsql.place_bid(p_bidder_id, p_task_id, p_max_price_tokens, p_expected_value_usd, p_ttl_at);
    END IF;

    SELECT coalesce(p_ttl_at, now() + interval '15 minutes'),
           (p_ttl_at IS NULL OR (p_ttl_at > now() AND p_ttl_at <= now() + interval '30 days')),
           live.id
      INTO v_ttl, v_ttl_ok, v_live_id
      FROM (SELECT pg_catalog.pg_advisory_xact_lock(1128355140, pg_catalog.hashtext(p_task_id))) AS l
      LEFT JOIN LATERAL (SELECT b.id FROM compute_auction.compute_auction_bids AS b
                          WHERE b.task_id = p_task_id AND b.status IN ('open', 'won')
                            FOR UPDATE) AS live ON true;
    IF NOT v_ttl_ok OR v_live_id IS NOT NULL THEN
        RETURN bench_plpgsql.place_bid(p_bidder_id, p_task_id, p_max_price_tokens, p_expected_value_usd, p_ttl_at);
    END IF;

    WITH a AS (
        UPDATE compute_auction.token_accounts AS t
           SET balance_tokens = t.balance_tokens - p_max_price_tokens,
               held_tokens    = t.held_tokens + p_max_price_tokens,
               updated_at     = now()
         WHERE t.account_id = p_bidder_id
           AND t.balance_tokens >= p_max_price_tokens
           AND (pg_catalog.has_function_privilege(session_user,
                    'compute_auction.deposit(text, bigint, text, text)'::pg_catalog.regprocedure, 'EXECUTE')
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                            WHERE r.oid = t.owner_oid::pg_catalog.oid AND r.rolname = t.owner_role
                              AND pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER')))
     RETURNING t.balance_tokens, t.held_tokens
    ), b AS (
        INSERT INTO compute_auction.compute_auction_bids
               (bidder_id, task_id, max_price_tokens, expected_value_usd, ttl_at)
        SELECT p_bidder_id, p_task_id, p_max_price_tokens, p_expected_value_usd, v_ttl FROM a
     RETURNING id
    ), c AS (
        INSERT INTO compute_auction.open_bid_count_deltas (delta) SELECT 1 FROM b
    ), l AS (
        INSERT INTO compute_auction.token_ledger
               (account_id, delta_balance, delta_held, entry_kind, bid_id, reason, balance_after, held_after)
        SELECT p_bidder_id, -p_max_price_tokens, p_max_price_tokens, 'escrow', b.id, 'bid placed',
               a.balance_tokens, a.held_tokens
          FROM a, b
    )
    SELECT b.id INTO v_id FROM b;
    IF v_id IS NULL THEN
        -- unknown account, not the owner, or not enough tokens: the full version raises the error
        RETURN bench_plpgsql.place_bid(p_bidder_id, p_task_id, p_max_price_tokens, p_expected_value_usd, p_ttl_at);
    END IF;
    RETURN v_id;
END
$fn$;
