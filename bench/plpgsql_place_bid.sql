-- The same work as compute_auction.place_bid, as one PL/pgSQL function: the benchmark's
-- "stored procedure" alternative (bench/run loads it into its own database, next to the
-- extension's tables; it lives in the schema bench_plpgsql, not in the extension).
--
-- Statement for statement it mirrors extension/src/bids.rs::place and ledger.rs::{lock, post}:
--   1. the per-task advisory lock and the TTL check          (TASK_LOCK_AND_TTL)
--   2. the live bid on the task, locked                      (LIVE_BID)
--   3. the bidder's wallet, locked, with the ownership check (ledger::LOCK)
--   4. the bid row plus its open-bid counter delta           (book::OPEN / book::REPLACE)
--   5. the wallet update plus its ledger row                 (ledger::POST)
-- with the same argument checks and SQLSTATEs. PL/pgSQL keeps each statement's plan for the
-- life of the session, as the extension does with its SPI plans.

CREATE SCHEMA IF NOT EXISTS bench_plpgsql;

CREATE OR REPLACE FUNCTION bench_plpgsql.place_bid(
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
    v_ttl      timestamptz;
    v_ttl_ok   boolean;
    v_live     record;
    v_balance  bigint;
    v_held     bigint;
    v_may_act  boolean;
    v_old      bigint := 0;
    v_diff     bigint;
    v_id       bigint;
    v_kind     text;
    v_reason   text;
BEGIN
    IF p_bidder_id IS NULL THEN
        RAISE EXCEPTION 'bidder_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF p_bidder_id = '' THEN
        RAISE EXCEPTION 'bidder_id must not be empty' USING ERRCODE = '22023';
    END IF;
    IF length(p_bidder_id) > 256 THEN
        RAISE EXCEPTION 'bidder_id is % characters long; at most 256 are allowed', length(p_bidder_id)
            USING ERRCODE = '22001';
    END IF;
    IF p_task_id IS NULL THEN
        RAISE EXCEPTION 'task_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF p_task_id = '' THEN
        RAISE EXCEPTION 'task_id must not be empty' USING ERRCODE = '22023';
    END IF;
    IF length(p_task_id) > 256 THEN
        RAISE EXCEPTION 'task_id is % characters long; at most 256 are allowed', length(p_task_id)
            USING ERRCODE = '22001';
    END IF;
    IF p_max_price_tokens IS NULL THEN
        RAISE EXCEPTION 'max_price_tokens must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF p_max_price_tokens <= 0 THEN
        RAISE EXCEPTION 'max_price_tokens must be positive, got %', p_max_price_tokens USING ERRCODE = '22023';
    END IF;
    IF p_expected_value_usd IS NOT NULL
       AND p_expected_value_usd IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8) THEN
        RAISE EXCEPTION 'expected_value_usd must be a finite number' USING ERRCODE = '22023';
    END IF;

    -- 1. task lock and TTL
    SELECT coalesce(p_ttl_at, now() + interval '15 minutes'),
           (p_ttl_at IS NULL OR (p_ttl_at > now() AND p_ttl_at <= now() + interval '30 days'))
      INTO v_ttl, v_ttl_ok
      FROM (SELECT pg_catalog.pg_advisory_xact_lock(1128355140, pg_catalog.hashtext(p_task_id))) AS l;
    IF NOT v_ttl_ok THEN
        RAISE EXCEPTION 'ttl_at must be in the future and at most 30 days ahead'
            USING ERRCODE = '22023', HINT = 'pass NULL for the default of now() + 15 minutes';
    END IF;

    -- 2. the live bid on the task
    SELECT id, bidder_id, status, max_price_tokens INTO v_live
      FROM compute_auction.compute_auction_bids
     WHERE task_id = p_task_id AND status IN ('open', 'won')
       FOR UPDATE;
    IF FOUND THEN
        IF v_live.bidder_id <> p_bidder_id THEN
            RAISE EXCEPTION 'task % already has a live bid (%) by another bidder', p_task_id, v_live.id
                USING ERRCODE = '23505', HINT = 'at most one open or won bid per task';
        END IF;
        IF v_live.status = 'won' THEN
            RAISE EXCEPTION 'task % was already won by bid %', p_task_id, v_live.id USING ERRCODE = '55000';
        END IF;
        v_old := v_live.max_price_tokens;
    END IF;

    -- 3. the wallet, locked, and whether the session may act for it
    SELECT balance_tokens, held_tokens,
           -- the extension's rule (extension/src/authority.rs): an operator, or a member of
           -- the wallet's resolving owner
           (pg_catalog.has_function_privilege(session_user,
                'compute_auction.deposit(text, bigint, text, text)'::pg_catalog.regprocedure, 'EXECUTE')
            OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                        WHERE r.oid = owner_oid::pg_catalog.oid AND r.rolname = owner_role
                          AND pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER')))
      INTO v_balance, v_held, v_may_act
      FROM compute_auction.token_accounts
     WHERE account_id = p_bidder_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_bidder_id USING ERRCODE = 'P0002';
    END IF;
    IF NOT v_may_act THEN
        RAISE EXCEPTION 'not allowed to act for account %', p_bidder_id USING ERRCODE = '42501';
    END IF;
    v_diff := p_max_price_tokens - v_old;
    IF v_diff > v_balance THEN
        RAISE EXCEPTION 'insufficient funds in account %: need %, have %', p_bidder_id, v_diff, v_balance
            USING ERRCODE = '23514';
    END IF;
    PERFORM v_held + v_diff; -- overflow raises 22003, as tokens::add does

    -- 4. the bid (new, or the bidder's own open bid replaced in place)
    IF v_live.id IS NULL THEN
        WITH b AS (
            INSERT INTO compute_auction.compute_auction_bids
                   (bidder_id, task_id, max_price_tokens, expected_value_usd, ttl_at)
            VALUES (p_bidder_id, p_task_id, p_max_price_tokens, p_expected_value_usd, v_ttl)
         RETURNING id
        ), c AS (
            INSERT INTO compute_auction.open_bid_count_deltas (delta) SELECT 1 FROM b
        )
        SELECT id INTO v_id FROM b;
        v_kind := 'escrow'; v_reason := 'bid placed';
    ELSE
        v_id := v_live.id;
        UPDATE compute_auction.compute_auction_bids
           SET max_price_tokens   = p_max_price_tokens,
               expected_value_usd = p_expected_value_usd,
               ttl_at             = v_ttl,
               placed_at          = CASE WHEN max_price_tokens = p_max_price_tokens THEN placed_at ELSE now() END,
               last_result        = NULL,
               updated_at         = now()
         WHERE id = v_id;
        IF v_diff > 0 THEN
            v_kind := 'escrow'; v_reason := 'bid raised';
        ELSE
            v_kind := 'release'; v_reason := 'bid lowered';
        END IF;
    END IF;

    -- 5. the wallet and its ledger row, in one statement
    IF v_diff <> 0 THEN
        WITH a AS (
            UPDATE compute_auction.token_accounts
               SET balance_tokens  = balance_tokens - v_diff,
                   held_tokens     = held_tokens + v_diff,
                   total_deposited = total_deposited + 0,
                   total_spent     = total_spent + 0,
                   total_withdrawn = total_withdrawn + 0,
                   updated_at      = now()
             WHERE account_id = p_bidder_id
         RETURNING balance_tokens, held_tokens
        ), l AS (
            INSERT INTO compute_auction.token_ledger
                   (account_id, delta_balance, delta_held, entry_kind, bid_id, slot_id, round_id, reason,
                    idempotency_key, balance_after, held_after)
            SELECT p_bidder_id, -v_diff, v_diff, v_kind, v_id, NULL, NULL, v_reason, NULL,
                   a.balance_tokens, a.held_tokens
              FROM a
        )
        SELECT a.balance_tokens, a.held_tokens INTO v_balance, v_held FROM a;
    END IF;
    RETURN v_id;
END
$fn$;
