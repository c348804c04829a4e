-- Public JSON-taking functions for quests. They validate and take the jsonb apart with
-- PostgreSQL's JSON functions (so any input, however malformed or deeply nested, gets a
-- documented SQLSTATE, never a crash) and call the array forms implemented in Rust.

CREATE FUNCTION compute_auction.submit_bids_for_tasks(
    quest_id       text,
    tasks          jsonb,
    tokens_per_usd double precision,
    bid_fraction   double precision DEFAULT 0.6,
    ttl_at         timestamptz DEFAULT NULL
) RETURNS TABLE (task_id text, bid_id bigint, max_price_tokens bigint, outcome text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, compute_auction, pg_temp
AS $fn$
DECLARE
    bad jsonb;
BEGIN
    IF tasks IS NULL THEN
        RAISE EXCEPTION 'tasks must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF pg_catalog.jsonb_typeof(tasks) <> 'array' THEN
        RAISE EXCEPTION 'tasks must be a JSON array of {"task_id", "expected_value_usd", "blocked"} objects'
            USING ERRCODE = '22023';
    END IF;
    SELECT e INTO bad
      FROM pg_catalog.jsonb_array_elements(tasks) AS e
     WHERE pg_catalog.jsonb_typeof(e) <> 'object'
        OR pg_catalog.jsonb_typeof(e -> 'task_id') IS DISTINCT FROM 'string'
        OR pg_catalog.jsonb_typeof(e -> 'expected_value_usd') IS DISTINCT FROM 'number'
        OR coalesce(pg_catalog.jsonb_typeof(e -> 'blocked'), 'null') NOT IN ('boolean', 'null')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'bad task entry: %', pg_catalog.left(bad::text, 200)
            USING ERRCODE = '22023',
                  HINT = 'Each entry needs "task_id" (string), "expected_value_usd" (number) and optionally "blocked" (boolean).';
    END IF;
    RETURN QUERY
    SELECT * FROM compute_auction.submit_bids_for_task_arrays(
        quest_id,
        ARRAY(SELECT e ->> 'task_id' FROM pg_catalog.jsonb_array_elements(tasks) WITH ORDINALITY AS x(e, i) ORDER BY i),
        ARRAY(SELECT (e ->> 'expected_value_usd')::double precision
                FROM pg_catalog.jsonb_array_elements(tasks) WITH ORDINALITY AS x(e, i) ORDER BY i),
        ARRAY(SELECT coalesce((e ->> 'blocked')::boolean, false)
                FROM pg_catalog.jsonb_array_elements(tasks) WITH ORDINALITY AS x(e, i) ORDER BY i),
        tokens_per_usd, bid_fraction, ttl_at);
END
$fn$;

CREATE FUNCTION compute_auction.allocate_proportional(
    day                 date,
    daily_budget_tokens bigint,
    quests              jsonb,
    source              text DEFAULT 'proportional'
) RETURNS TABLE (quest_id text, allocated_tokens bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, compute_auction, pg_temp
AS $fn$
DECLARE
    bad jsonb;
BEGIN
    IF quests IS NULL THEN
        RAISE EXCEPTION 'quests must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF pg_catalog.jsonb_typeof(quests) <> 'array' THEN
        RAISE EXCEPTION 'quests must be a JSON array of {"quest_id", "expected_value"} objects'
            USING ERRCODE = '22023';
    END IF;
    SELECT e INTO bad
      FROM pg_catalog.jsonb_array_elements(quests) AS e
     WHERE pg_catalog.jsonb_typeof(e) <> 'object'
        OR pg_catalog.jsonb_typeof(e -> 'quest_id') IS DISTINCT FROM 'string'
        OR pg_catalog.jsonb_typeof(e -> 'expected_value') IS DISTINCT FROM 'number'
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'bad quest entry: %', pg_catalog.left(bad::text, 200)
            USING ERRCODE = '22023',
                  HINT = 'Each entry needs "quest_id" (string) and "expected_value" (number).';
    END IF;
    RETURN QUERY
    SELECT * FROM compute_auction.allocate_proportional_arrays(
        day, daily_budget_tokens,
        ARRAY(SELECT e ->> 'quest_id' FROM pg_catalog.jsonb_array_elements(quests) WITH ORDINALITY AS x(e, i) ORDER BY i),
        ARRAY(SELECT (e ->> 'expected_value')::double precision
                FROM pg_catalog.jsonb_array_elements(quests) WITH ORDINALITY AS x(e, i) ORDER BY i),
        source);
END
$fn$;

-- The fallback when the auction fails: today's budget split over the quests in proportion to
-- their backlog's worth, the summed expected_value_usd of each quest account's open bids (the
-- weighting is the extension's, so every scheduler splits alike).
CREATE FUNCTION compute_auction.allocate_fallback(
    day                 date,
    daily_budget_tokens bigint,
    source              text DEFAULT 'fallback'
) RETURNS TABLE (quest_id text, allocated_tokens bigint)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, compute_auction, pg_temp
AS $fn$
    SELECT a.quest_id, a.allocated_tokens
      FROM compute_auction.allocate_proportional(day, daily_budget_tokens, (
               SELECT coalesce(pg_catalog.jsonb_agg(
                          pg_catalog.jsonb_build_object('quest_id', q.bidder_id, 'expected_value', q.ev)
                          ORDER BY q.bidder_id), '[]'::jsonb)
                 FROM (SELECT b.bidder_id, coalesce(sum(b.expected_value_usd), 0) AS ev
                         FROM compute_auction.compute_auction_bids AS b
                         JOIN compute_auction.token_accounts AS t ON t.account_id = b.bidder_id
                        WHERE b.status = 'open' AND t.kind = 'quest'
                        GROUP BY b.bidder_id) AS q), source) AS a
$fn$;

-- The array forms are internal: only these wrappers (running as the owner) call them; the
-- documented role grants (docs/roles.sql) never grant them.
