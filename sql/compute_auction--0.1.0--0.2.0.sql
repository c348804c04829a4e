-- compute_auction 0.1.0 -> 0.2.0: run by ALTER EXTENSION compute_auction UPDATE TO '0.2.0',
-- in one transaction (any error leaves the database at 0.1.0, untouched).
--
-- Every schema change of the 0.2.0 round goes into this one file, in the numbered sections
-- below; tests/test_upgrade.py checks that the result equals a fresh 0.2.0 install, and the
-- schema gate (tests/schema/) fails any change to the install scripts made without it.
-- PostgreSQL does not substitute MODULE_PATHNAME here (0.2.0's control file has none): name the
-- library, 'compute_auction-0.2.0', in every CREATE FUNCTION ... LANGUAGE c of this file.
-- Everything is schema-qualified; the script runs with search_path = compute_auction.
\echo Use "ALTER EXTENSION compute_auction UPDATE TO '0.2.0'" to load this file. \quit

---------------------------------------------------------------------------------------------
-- 1. Re-point every C function from 0.1.0's library ($libdir/compute_auction.so) to 0.2.0's
--    (compute_auction-0.2.0.so, found through dynamic_library_path like a fresh install's).
--    Each function is re-created by CREATE OR REPLACE FUNCTION from its own definition as
--    pg_get_functiondef prints it, with only the library literal changed: the signature,
--    defaults, volatility, SECURITY DEFINER, SET search_path, the symbol and, because the
--    function keeps its OID, its owner, grants, comment and extension membership all stay.
--    PostgreSQL checks that each symbol exists in the new library, so a missing one fails the
--    upgrade here rather than at the first call. Functions that later sections create with
--    their 0.2.0 definitions already name the new library and are not touched.
---------------------------------------------------------------------------------------------
DO $repoint$
DECLARE
    old_as constant text := E'\nAS ''$libdir/compute_auction'', ';
    new_as constant text := E'\nAS ''compute_auction-0.2.0'', ';
    fn     pg_catalog.oid;
    def    text;
BEGIN
    FOR fn IN
        SELECT p.oid
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_proc p ON p.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e
                              WHERE e.extname = 'compute_auction')
           AND d.deptype = 'e'
           AND p.probin = '$libdir/compute_auction'
         ORDER BY p.oid
    LOOP
        def := pg_catalog.pg_get_functiondef(fn);
        IF pg_catalog.strpos(def, old_as) = 0 THEN
            RAISE EXCEPTION 'compute_auction upgrade: unexpected definition of %', fn::pg_catalog.regprocedure;
        END IF;
        EXECUTE pg_catalog.replace(def, old_as, new_as);
    END LOOP;
END
$repoint$;

-- First the clearing lock (compute_auction_core::limits::locks: CLASS 0x43415543, CLEARING 1),
-- so that no round clears while the schema changes: a clear_round already running finishes
-- first (it would otherwise wait for this script's table locks while the summaries' rebuild
-- below waited for its clearing lock: a deadlock), and one that starts waits for the commit.
SELECT pg_catalog.pg_advisory_xact_lock(1128355139, 1);

---------------------------------------------------------------------------------------------
-- 2. Schema changes of the 0.2.0 round, one subsection per issue, in the order they land.
--    - A new column goes at the END of its CREATE TABLE in schema.sql, as ALTER TABLE ADD
--      COLUMN puts it there (the parity check compares column order), with the default that
--      existing rows get; list it in NEW_COLUMNS in tests/test_upgrade.py.
--    - A new table, sequence or function: also its REVOKE ... FROM PUBLIC (finalize.sql does
--      that for a fresh install) and its pg_extension_config_dump for data tables.
--    - A new Rust function: CREATE FUNCTION ... AS 'compute_auction-0.2.0', '<name>_wrapper',
--      as in the generated install script (cargo pgrx schema, or the installed
--      compute_auction--0.2.0.sql).
--    - A function that is dropped and re-created here loses its grants: re-grant them here (to
--      the documented roles, when they exist) or say in README "Upgrading" what to re-run.
---------------------------------------------------------------------------------------------

-- 2.1 Issue 13, liveness: a round skips the bids it cannot lock and records them.
CREATE TABLE compute_auction.round_skips (
    round_id bigint NOT NULL REFERENCES compute_auction.compute_auction_rounds (round_id),
    bid_id   bigint NOT NULL,
    PRIMARY KEY (round_id, bid_id)
);
CREATE INDEX round_skips_bid_id_idx ON compute_auction.round_skips (bid_id);
SELECT pg_catalog.pg_extension_config_dump('compute_auction.round_skips', '');
REVOKE ALL ON compute_auction.round_skips FROM PUBLIC;
-- docs/roles.sql grants the documented roles SELECT on every table; give them the new one too
DO $grant$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_operator') THEN
        GRANT SELECT ON compute_auction.round_skips TO compute_auction_operator;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_agent') THEN
        GRANT SELECT ON compute_auction.round_skips TO compute_auction_agent;
    END IF;
END
$grant$;
-- The participants' functions wait at most 1 s for a lock (as sql/finalize.sql sets them).
ALTER FUNCTION compute_auction.place_bid(text, text, bigint, double precision, timestamptz) SET lock_timeout = '1s';
ALTER FUNCTION compute_auction.cancel_bid(bigint) SET lock_timeout = '1s';
ALTER FUNCTION compute_auction.claim_slot(text) SET lock_timeout = '1s';
ALTER FUNCTION compute_auction.submit_bids_for_tasks(text, jsonb, double precision, double precision, timestamptz)
    SET lock_timeout = '1s';
ALTER FUNCTION compute_auction.settle(text, bigint, double precision) SET lock_timeout = '1s';
ALTER FUNCTION compute_auction.abort_slot(text, text) SET lock_timeout = '1s';

-- 2.2 Issue 14, settlement never waits on the winner's wallet: pending wallet entries.
CREATE TABLE compute_auction.pending_entries (
    entry_id      bigserial   PRIMARY KEY,
    account_id    text        NOT NULL,
    bid_id        bigint      NOT NULL,
    slot_id       text        NOT NULL,
    round_id      bigint      NOT NULL,
    entry_kind    text        NOT NULL CHECK (entry_kind IN ('charge', 'premium', 'refund')),
    delta_balance bigint      NOT NULL,
    delta_held    bigint      NOT NULL,
    reason        text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_entries_account_idx ON compute_auction.pending_entries (account_id, entry_id);
SELECT pg_catalog.pg_extension_config_dump('compute_auction.pending_entries', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.pending_entries_entry_id_seq', '');
REVOKE ALL ON compute_auction.pending_entries FROM PUBLIC;
REVOKE ALL ON SEQUENCE compute_auction.pending_entries_entry_id_seq FROM PUBLIC;

CREATE FUNCTION compute_auction."apply_pending"() RETURNS bigint /* i64 */
STRICT SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'apply_pending_sql_wrapper';
REVOKE ALL ON FUNCTION compute_auction.apply_pending() FROM PUBLIC;

CREATE FUNCTION compute_auction."pending_balance"(
	"account_id" TEXT /* Option < & str > */
) RETURNS TABLE (
	"balance_tokens" bigint,  /* i64 */
	"held_tokens" bigint  /* i64 */
)
SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'pending_balance_wrapper';
REVOKE ALL ON FUNCTION compute_auction.pending_balance(text) FROM PUBLIC;

-- what docs/roles.sql grants, for the documented roles when they exist
DO $grant$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_operator') THEN
        GRANT SELECT ON compute_auction.pending_entries TO compute_auction_operator;
        GRANT EXECUTE ON FUNCTION compute_auction.apply_pending() TO compute_auction_operator;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_agent') THEN
        GRANT SELECT ON compute_auction.pending_entries TO compute_auction_agent;
        GRANT EXECUTE ON FUNCTION compute_auction.pending_balance(text) TO compute_auction_agent;
    END IF;
END
$grant$;

-- 2.3 Issue 15, bounded calls: stats() keeps at most max_rounds rounds. The new trailing
--     argument changes the signature, so the old function is dropped (with its grants) and
--     the new one created as the generated install script defines it.
DROP FUNCTION compute_auction.stats(timestamptz, boolean);
CREATE FUNCTION compute_auction."stats"(
	"since" timestamp with time zone DEFAULT now() - interval '24 hours', /* Option < TimestampWithTimeZone > */
	"include_rounds" bool DEFAULT true, /* Option < bool > */
	"max_rounds" INT DEFAULT 1000 /* Option < i32 > */
) RETURNS jsonb /* pgrx :: JsonB */
SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'stats_wrapper';
REVOKE ALL ON FUNCTION compute_auction.stats(timestamptz, boolean, integer) FROM PUBLIC;
-- what docs/roles.sql grants, for the documented roles when they exist
DO $grant$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_agent') THEN
        GRANT EXECUTE ON FUNCTION compute_auction.stats(timestamptz, boolean, integer) TO compute_auction_agent;
    END IF;
END
$grant$;

-- 2.4 Issue 16, authority fails closed. Owners (and the new slot runners) are stored as the
--     role's OID beside its name; an existing owner_role is resolved by name now, and one that
--     names no role stays unresolved (operators-only, listed by unresolved_roles()). Accounts
--     without an owner are operators-only from now on: README "Upgrading" has the SQL that
--     assigns owners.
ALTER TABLE compute_auction.token_accounts ADD COLUMN owner_oid regrole NULL;
UPDATE compute_auction.token_accounts a
   SET owner_oid = r.oid::pg_catalog.regrole
  FROM pg_catalog.pg_roles r
 WHERE r.rolname = a.owner_role;
ALTER TABLE compute_auction.compute_slots ADD COLUMN runner_role text NULL;
ALTER TABLE compute_auction.compute_slots ADD COLUMN runner_oid regrole NULL;

-- offer_slot gains a trailing runner_role: dropped and re-created, and whoever could EXECUTE
-- the old one (its grants, read before the drop) may EXECUTE the new one.
CREATE TEMP TABLE offer_slot_grantees ON COMMIT DROP AS
SELECT a.grantee::pg_catalog.regrole AS grantee
  FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
 WHERE p.oid = 'compute_auction.offer_slot(text, timestamptz, bigint)'::pg_catalog.regprocedure
   AND a.privilege_type = 'EXECUTE'
   AND a.grantee <> 0
   AND a.grantee <> p.proowner;
DROP FUNCTION compute_auction.offer_slot(text, timestamptz, bigint);
CREATE FUNCTION compute_auction."offer_slot"(
	"slot_id" TEXT, /* Option < & str > */
	"available_at" timestamp with time zone DEFAULT now(), /* Option < TimestampWithTimeZone > */
	"reserve_price_tokens" bigint DEFAULT 0, /* Option < i64 > */
	"runner_role" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS void
SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'offer_slot_wrapper';
REVOKE ALL ON FUNCTION compute_auction.offer_slot(text, timestamptz, bigint, text) FROM PUBLIC;
DO $grant$
DECLARE
    g pg_catalog.regrole;
BEGIN
    FOR g IN SELECT grantee FROM offer_slot_grantees LOOP
        EXECUTE pg_catalog.format(
            'GRANT EXECUTE ON FUNCTION compute_auction.offer_slot(text, timestamptz, bigint, text) TO %s', g);
    END LOOP;
END
$grant$;
DROP TABLE offer_slot_grantees;

CREATE FUNCTION compute_auction."set_slot_runner"(
	"slot_id" TEXT, /* Option < & str > */
	"runner_role" TEXT /* Option < & str > */
) RETURNS void
SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'set_slot_runner_wrapper';
REVOKE ALL ON FUNCTION compute_auction.set_slot_runner(text, text) FROM PUBLIC;

-- The owners and runners whose stored role no longer resolves: the OID names no role, or a
-- role whose name is no longer the stored one (dropped, or renamed). Their wallets and slots
-- are operators-only until an operator names the owner again (set_account_owner,
-- set_slot_runner). docs/SECURITY.md.
CREATE FUNCTION compute_auction.unresolved_roles()
RETURNS TABLE (object_kind text, object_id text, role_name text, role_oid oid)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT 'account', a.account_id, a.owner_role, a.owner_oid::oid
      FROM compute_auction.token_accounts a
     WHERE a.owner_role IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                        WHERE r.oid = a.owner_oid::oid AND r.rolname = a.owner_role)
    UNION ALL
    SELECT 'slot', s.slot_id, s.runner_role, s.runner_oid::oid
      FROM compute_auction.compute_slots s
     WHERE s.runner_role IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                        WHERE r.oid = s.runner_oid::oid AND r.rolname = s.runner_role)
     ORDER BY 1, 2
$fn$;
REVOKE ALL ON FUNCTION compute_auction.unresolved_roles() FROM PUBLIC;

-- what docs/roles.sql grants, for the documented roles when they exist. claim_slot is now the
-- runners' (compute_auction_runner, created by re-running docs/roles.sql), no longer agents'.
DO $grant$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_operator') THEN
        GRANT EXECUTE ON FUNCTION compute_auction.set_slot_runner(text, text),
                                  compute_auction.unresolved_roles()
           TO compute_auction_operator;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_agent') THEN
        REVOKE EXECUTE ON FUNCTION compute_auction.claim_slot(text) FROM compute_auction_agent;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_runner') THEN
        GRANT USAGE ON SCHEMA compute_auction TO compute_auction_runner;
        GRANT EXECUTE ON FUNCTION compute_auction.claim_slot(text),
                                  compute_auction.settle(text, bigint, double precision),
                                  compute_auction.abort_slot(text, text),
                                  compute_auction.bid_status(bigint),
                                  compute_auction.last_round()
           TO compute_auction_runner;
    END IF;
END
$grant$;

-- 2.5 Issue 17, hardening: every function's pinned search_path puts pg_catalog first, so
--     nothing created in the extension's schema can shadow a built-in operator or function
--     that a SECURITY DEFINER function uses.
DO $pin$
DECLARE
    fn pg_catalog.oid;
BEGIN
    FOR fn IN
        SELECT p.oid
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_proc p ON p.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
           AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e
                              WHERE e.extname = 'compute_auction')
           AND d.deptype = 'e'
           AND 'search_path=compute_auction, pg_catalog, pg_temp' = ANY (p.proconfig)
         ORDER BY p.oid
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, compute_auction, pg_temp',
                                  fn::pg_catalog.regprocedure);
    END LOOP;
END
$pin$;

-- Every error hint is a whole sentence: the JSON-taking PL/pgSQL functions as sql/quests.sql
-- defines them now (same signatures: grants and comments stay).
CREATE OR REPLACE FUNCTION compute_auction.submit_bids_for_tasks(
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

CREATE OR REPLACE FUNCTION compute_auction.allocate_proportional(
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

-- The array forms are internal: only these wrappers (running as the owner) call them; the
-- documented role grants (docs/roles.sql) never grant them.

-- CREATE OR REPLACE resets a function's SET clauses to its definition's: the lock bound again
ALTER FUNCTION compute_auction.submit_bids_for_tasks(text, jsonb, double precision, double precision, timestamptz)
    SET lock_timeout = '1s';

---------------------------------------------------------------------------------------------
-- 2.6 Issue 18, one home for each rule: the tokens-refunded counter beside the open-bid count
--     (market_summary's tokens_refunded_total), clear_round_summary (a round and its winners in
--     one call), and allocate_fallback (the fallback's per-quest weighting, moved out of the
--     driver).
---------------------------------------------------------------------------------------------
ALTER TABLE compute_auction.open_bid_count ADD COLUMN tokens_refunded bigint NOT NULL DEFAULT 0;
ALTER TABLE compute_auction.open_bid_count_deltas ADD COLUMN tokens_refunded bigint NOT NULL DEFAULT 0;
-- the refunds made before the counter existed: into the base row, or, before the first round
-- has created it, as one delta that round folds
WITH r AS (
    SELECT coalesce(sum(delta_balance), 0)::bigint AS t
      FROM compute_auction.token_ledger WHERE entry_kind = 'refund'
), base AS (
    UPDATE compute_auction.open_bid_count SET tokens_refunded = r.t FROM r WHERE id = 1 RETURNING 1
)
INSERT INTO compute_auction.open_bid_count_deltas (delta, tokens_refunded)
SELECT 0, r.t FROM r WHERE r.t <> 0 AND NOT EXISTS (SELECT 1 FROM base);

CREATE FUNCTION compute_auction."clear_round_summary"(
	"now" timestamp with time zone DEFAULT now() /* Option < TimestampWithTimeZone > */
) RETURNS jsonb /* pgrx :: JsonB */
SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'clear_round_summary_wrapper';
REVOKE ALL ON FUNCTION compute_auction.clear_round_summary(timestamptz) FROM PUBLIC;

-- as sql/quests.sql defines it
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
REVOKE ALL ON FUNCTION compute_auction.allocate_fallback(date, bigint, text) FROM PUBLIC;

-- what docs/roles.sql grants, for the documented roles when they exist
DO $grant$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_operator') THEN
        GRANT EXECUTE ON FUNCTION compute_auction.clear_round_summary(timestamptz),
                                  compute_auction.allocate_fallback(date, bigint, text)
           TO compute_auction_operator;
    END IF;
END
$grant$;

---------------------------------------------------------------------------------------------
-- 2.7 Issue 21, clearing independent of vacuum: each counter delta carries its transaction's
--     ID and the base row the ID below which every delta is folded; the fold and the readers
--     read only the deltas at or above it, through the new index. The deltas already there
--     get the upgrading transaction's ID, above the base row's 0: still counted, folded by the
--     next round.
---------------------------------------------------------------------------------------------
ALTER TABLE compute_auction.open_bid_count ADD COLUMN folded_below xid8 NOT NULL DEFAULT '0';
ALTER TABLE compute_auction.open_bid_count_deltas
    ADD COLUMN xid xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id();
CREATE INDEX open_bid_count_deltas_xid_idx ON compute_auction.open_bid_count_deltas (xid);

---------------------------------------------------------------------------------------------
-- 2.8 Issue 21, reports whose cost does not grow with history: the rounds' summaries that
--     clear_round keeps (per-minute and per-quarter-hour totals, the last 24 hours' clearing prices; as schema.sql
--     explains), the index the window's top winners start from, and rebuild_round_summaries(),
--     which computes the summaries of the rounds already there.
---------------------------------------------------------------------------------------------
CREATE INDEX compute_auction_clears_price_idx
    ON compute_auction.compute_auction_clears (max_price_tokens DESC, bid_id);
CREATE TABLE compute_auction.round_minutes (
    minute        bigint  PRIMARY KEY,
    rounds        bigint  NOT NULL CHECK (rounds > 0),
    priced_rounds bigint  NOT NULL CHECK (priced_rounds BETWEEN 0 AND rounds),
    price_sum     numeric NOT NULL,
    price_min     bigint  NULL,
    price_max     bigint  NULL,
    slots_offered bigint  NOT NULL,
    slots_filled  bigint  NOT NULL
);
CREATE TABLE compute_auction.round_quarters (
    quarter       bigint  PRIMARY KEY,
    rounds        bigint  NOT NULL CHECK (rounds > 0),
    priced_rounds bigint  NOT NULL CHECK (priced_rounds BETWEEN 0 AND rounds),
    price_sum     numeric NOT NULL,
    price_min     bigint  NULL,
    price_max     bigint  NULL,
    slots_offered bigint  NOT NULL,
    slots_filled  bigint  NOT NULL
);
CREATE TABLE compute_auction.recent_prices (
    clearing_price_tokens bigint PRIMARY KEY,
    rounds                bigint NOT NULL CHECK (rounds > 0)
);
CREATE TABLE compute_auction.recent_prices_since (
    id    int         PRIMARY KEY CHECK (id = 1),
    since timestamptz NOT NULL,
    -- the newest round the summaries are known to count: a round below the next one's id but
    -- above this was written by someone else (a 0.1.0 call that outlived the upgrade, SQL by
    -- hand), and the next round rebuilds the summaries from the rounds
    through_round_id bigint NOT NULL DEFAULT 0
);
ALTER TABLE compute_auction.round_minutes
    SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
ALTER TABLE compute_auction.round_quarters
    SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
ALTER TABLE compute_auction.recent_prices
    SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
ALTER TABLE compute_auction.recent_prices_since
    SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200);
SELECT pg_catalog.pg_extension_config_dump('compute_auction.round_minutes', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.round_quarters', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.recent_prices', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.recent_prices_since', '');
REVOKE ALL ON compute_auction.round_minutes, compute_auction.round_quarters, compute_auction.recent_prices,
              compute_auction.recent_prices_since FROM PUBLIC;

CREATE FUNCTION compute_auction."rebuild_round_summaries"() RETURNS jsonb /* pgrx :: JsonB */
STRICT SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'rebuild_round_summaries_wrapper';
REVOKE ALL ON FUNCTION compute_auction.rebuild_round_summaries() FROM PUBLIC;

-- what docs/roles.sql grants, for the documented roles when they exist
DO $grant$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_operator') THEN
        GRANT EXECUTE ON FUNCTION compute_auction.rebuild_round_summaries() TO compute_auction_operator;
        GRANT SELECT ON compute_auction.round_minutes, compute_auction.round_quarters, compute_auction.recent_prices,
                        compute_auction.recent_prices_since TO compute_auction_operator;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_agent') THEN
        GRANT SELECT ON compute_auction.round_minutes, compute_auction.round_quarters, compute_auction.recent_prices,
                        compute_auction.recent_prices_since TO compute_auction_agent;
    END IF;
END
$grant$;

-- (the summaries of the rounds cleared before the upgrade are computed at the end of 2.10,
-- once every summary table exists)

---------------------------------------------------------------------------------------------
-- 2.9 Issue 24, retention: prune_history (with its pg_cron registration), the ledger's new
--     checkpoint entry kind, the idempotency keys kept past compaction, the compacted refunds
--     audit() still counts, and the finished-bids index the prune reads.
---------------------------------------------------------------------------------------------
ALTER TABLE compute_auction.token_ledger DROP CONSTRAINT token_ledger_entry_kind_check;
ALTER TABLE compute_auction.token_ledger ADD CONSTRAINT token_ledger_entry_kind_check CHECK (entry_kind IN (
    'open', 'deposit', 'withdraw', 'escrow', 'release', 'refund', 'charge', 'premium', 'checkpoint'));
COMMENT ON TABLE compute_auction.token_ledger IS
    'Journal of every wallet change, appended to by each change: for every account, balance_tokens = sum(delta_balance) and held_tokens = sum(delta_held). prune_history is the only other writer: it replaces the oldest entries of an account, those before its horizon up to the account''s first entry of a live bid or of a bid with pending entries, by one checkpoint entry with their summed deltas and the id, at, balance_after and held_after of the newest entry it replaces, so every sum, the id order and every later entry (balance_after included) stay as they were.';
CREATE INDEX compute_auction_bids_finished_idx
    ON compute_auction.compute_auction_bids (updated_at, id) WHERE status IN ('settled', 'expired', 'cancelled', 'aborted');

CREATE TABLE compute_auction.idempotency_keys (
    account_id      text        NOT NULL,
    entry_kind      text        NOT NULL CHECK (entry_kind IN ('deposit', 'withdraw')),
    idempotency_key text        NOT NULL,
    delta_balance   bigint      NOT NULL,
    balance_after   bigint      NOT NULL,
    at              timestamptz NOT NULL,
    PRIMARY KEY (account_id, entry_kind, idempotency_key)
);
CREATE INDEX idempotency_keys_at_idx ON compute_auction.idempotency_keys (at);
CREATE TABLE compute_auction.compacted_totals (
    id              int    PRIMARY KEY CHECK (id = 1),
    tokens_refunded bigint NOT NULL DEFAULT 0,
    entries         bigint NOT NULL DEFAULT 0
);
SELECT pg_catalog.pg_extension_config_dump('compute_auction.idempotency_keys', '');
SELECT pg_catalog.pg_extension_config_dump('compute_auction.compacted_totals', '');
REVOKE ALL ON compute_auction.idempotency_keys FROM PUBLIC;
REVOKE ALL ON compute_auction.compacted_totals FROM PUBLIC;

CREATE FUNCTION compute_auction."prune_history"(
	"older_than" interval /* Option < Interval > */
) RETURNS TABLE (
	"table_name" TEXT,  /* String */
	"rows_removed" bigint,  /* i64 */
	"more" bool  /* bool */
)
SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'prune_history_wrapper';
REVOKE ALL ON FUNCTION compute_auction.prune_history(interval) FROM PUBLIC;

CREATE FUNCTION compute_auction."schedule_pruning"(
	"older_than" interval, /* Option < Interval > */
	"schedule" TEXT DEFAULT '0 * * * *' /* Option < & str > */
) RETURNS bigint /* i64 */
SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'schedule_pruning_wrapper';
REVOKE ALL ON FUNCTION compute_auction.schedule_pruning(interval, text) FROM PUBLIC;

CREATE FUNCTION compute_auction."unschedule_pruning"() RETURNS bool /* bool */
STRICT SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'unschedule_pruning_wrapper';
REVOKE ALL ON FUNCTION compute_auction.unschedule_pruning() FROM PUBLIC;

-- what docs/roles.sql grants, for the documented roles when they exist
DO $grant$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_operator') THEN
        GRANT SELECT ON compute_auction.idempotency_keys, compute_auction.compacted_totals TO compute_auction_operator;
        GRANT EXECUTE ON FUNCTION compute_auction.prune_history(interval),
                                  compute_auction.schedule_pruning(interval, text),
                                  compute_auction.unschedule_pruning()
           TO compute_auction_operator;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_agent') THEN
        GRANT SELECT ON compute_auction.idempotency_keys, compute_auction.compacted_totals TO compute_auction_agent;
    END IF;
END
$grant$;

---------------------------------------------------------------------------------------------
-- 2.10 Issue 25, agents understand the market: the rounds' O(1) facts that bid_status derives
--      a bid's story from (the rounds cleared before the upgrade get their last winner from
--      their clears; the lowest unfilled reserve was not recorded and stays NULL), the
--      clearing prices per quarter-hour behind price_to_win's price_window, and price_to_win's
--      two trailing arguments.
---------------------------------------------------------------------------------------------
ALTER TABLE compute_auction.compute_auction_rounds
    ADD COLUMN unfilled_reserve_min bigint NULL,
    ADD COLUMN last_winner_bid_id bigint NULL,
    ADD COLUMN last_winner_price_tokens bigint NULL,
    ADD COLUMN last_winner_placed_at timestamptz NULL;
-- the last winner is the round's winner last in the book order (price, then time priority)
UPDATE compute_auction.compute_auction_rounds AS r
   SET last_winner_bid_id = w.bid_id, last_winner_price_tokens = w.max_price_tokens,
       last_winner_placed_at = w.placed_at
  FROM (SELECT DISTINCT ON (c.round_id) c.round_id, c.bid_id, c.max_price_tokens, b.placed_at
          FROM compute_auction.compute_auction_clears AS c
          JOIN compute_auction.compute_auction_bids AS b ON b.id = c.bid_id
         ORDER BY c.round_id, c.max_price_tokens, b.placed_at DESC, c.bid_id DESC) AS w
 WHERE w.round_id = r.round_id;

CREATE TABLE compute_auction.round_quarter_prices (
    quarter               bigint NOT NULL,
    clearing_price_tokens bigint NOT NULL,
    rounds                bigint NOT NULL CHECK (rounds > 0),
    PRIMARY KEY (quarter, clearing_price_tokens)
);
ALTER TABLE compute_auction.round_quarter_prices
    SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
SELECT pg_catalog.pg_extension_config_dump('compute_auction.round_quarter_prices', '');
REVOKE ALL ON compute_auction.round_quarter_prices FROM PUBLIC;

-- price_to_win gains slots_free and price_window: dropped and re-created, and whoever could
-- EXECUTE the old one (its grants, read before the drop) may EXECUTE the new one.
CREATE TEMP TABLE price_to_win_grantees ON COMMIT DROP AS
SELECT a.grantee::pg_catalog.regrole AS grantee
  FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
 WHERE p.oid = 'compute_auction.price_to_win()'::pg_catalog.regprocedure
   AND a.privilege_type = 'EXECUTE'
   AND a.grantee <> 0
   AND a.grantee <> p.proowner;
DROP FUNCTION compute_auction.price_to_win();
CREATE FUNCTION compute_auction."price_to_win"(
	"slots_free" INT DEFAULT NULL, /* Option < i32 > */
	"price_window" interval DEFAULT '24 hours' /* Option < Interval > */
) RETURNS jsonb /* pgrx :: JsonB */
SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'price_to_win_wrapper';
REVOKE ALL ON FUNCTION compute_auction.price_to_win(integer, interval) FROM PUBLIC;
DO $grant$
DECLARE
    g pg_catalog.regrole;
BEGIN
    FOR g IN SELECT grantee FROM price_to_win_grantees LOOP
        EXECUTE pg_catalog.format(
            'GRANT EXECUTE ON FUNCTION compute_auction.price_to_win(integer, interval) TO %s', g);
    END LOOP;
    -- what docs/roles.sql grants, for the documented roles when they exist
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_operator') THEN
        GRANT SELECT ON compute_auction.round_quarter_prices TO compute_auction_operator;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_agent') THEN
        GRANT SELECT ON compute_auction.round_quarter_prices TO compute_auction_agent;
    END IF;
END
$grant$;
DROP TABLE price_to_win_grantees;

-- the summaries of the rounds cleared before the upgrade (2.8 and this section's tables)
SELECT compute_auction.rebuild_round_summaries();

---------------------------------------------------------------------------------------------
-- 2.11 Issue 26, agents understand the market, part 2: the wallets' low-balance thresholds
--      (set_low_balance_threshold; none is set by the upgrade), the index task_status reads a
--      task's bids through, and the dashboard's lookups (wallet, task_status).
---------------------------------------------------------------------------------------------
ALTER TABLE compute_auction.token_accounts
    ADD COLUMN low_balance_threshold bigint NULL CHECK (low_balance_threshold > 0);
CREATE INDEX compute_auction_bids_task_idx ON compute_auction.compute_auction_bids (task_id, id);

CREATE FUNCTION compute_auction."set_low_balance_threshold"(
	"account_id" TEXT, /* Option < & str > */
	"tokens" bigint /* Option < i64 > */
) RETURNS bigint /* Option < i64 > */
SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'set_low_balance_threshold_wrapper';
CREATE FUNCTION compute_auction."wallet"(
	"account_id" TEXT /* Option < & str > */
) RETURNS jsonb /* pgrx :: JsonB */
SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'wallet_wrapper';
CREATE FUNCTION compute_auction."task_status"(
	"task_id" TEXT /* Option < & str > */
) RETURNS jsonb /* pgrx :: JsonB */
SECURITY DEFINER
SET search_path TO pg_catalog, compute_auction, pg_temp
LANGUAGE c /* Rust */
AS 'compute_auction-0.2.0', 'task_status_wrapper';
REVOKE ALL ON FUNCTION compute_auction.set_low_balance_threshold(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION compute_auction.wallet(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION compute_auction.task_status(text) FROM PUBLIC;
DO $grant$
BEGIN
    -- what docs/roles.sql grants, for the documented roles when they exist
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_runner') THEN
        GRANT EXECUTE ON FUNCTION compute_auction.task_status(text) TO compute_auction_runner;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_agent') THEN
        GRANT EXECUTE ON FUNCTION compute_auction.wallet(text), compute_auction.task_status(text)
            TO compute_auction_agent;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'compute_auction_operator') THEN
        GRANT EXECUTE ON FUNCTION compute_auction.set_low_balance_threshold(text, bigint)
            TO compute_auction_operator;
    END IF;
END
$grant$;

---------------------------------------------------------------------------------------------
-- 2b. Issue 20: every function's COMMENT (what psql's \df+ shows), the first paragraph of its
--     section in docs/SQL_API.md. Generated, identical to finalize.sql's block; it stays after
--     section 2, so a function that a later subsection adds gets its comment here too.
---------------------------------------------------------------------------------------------
-- BEGIN function comments (generated by tests/doc_sync.py from docs/SQL_API.md: do not edit)
COMMENT ON FUNCTION compute_auction.abort_slot(text, text) IS
    'Use this when the run never happened. The winner gets its whole escrow (max_price_tokens) back as a refund entry, and the call returns the tokens refunded. Like settle, it never waits on the winner''s account: the refund is applied at once when the account is free, else it stays in pending_entries until apply_pending() (see settle). See docs/SQL_API.md#abort_slot.';
COMMENT ON FUNCTION compute_auction.abort_stale(interval, timestamp with time zone) IS
    'Aborts, with full refunds, every assigned clear whose slot_started_at < now - older_than (strictly older, so older_than => ''0'' never aborts an assignment made at now itself). It locks every stale slot, then their clears, then their bids, before aborting any, and never waits: a stale slot whose slot, clear or bid row another transaction holds is left for a later call. It does not need the winner''s account: a stale slot whose winner holds its own wallet is aborted all the same, its refund pending until apply_pending() can lock the account. slot_started_at is the now of the round that made the assignment. This way a runner that died cannot hold a slot and an escrow forever. Each abort works like abort_slot with the reason stale: not settled in time. A run settled in the meantime is left alone. Returns how many runs were aborted. See docs/SQL_API.md#abort_stale.';
COMMENT ON FUNCTION compute_auction.allocate_fallback(date, bigint, text) IS
    'The fallback when the auction fails. It calls allocate_proportional(day, daily_budget_tokens, quests, source), where quests holds each quest account with open bids, in quest_id order, weighted by the sum of expected_value_usd over its open bids (a NULL EV counts as 0). See docs/SQL_API.md#allocate_fallback.';
COMMENT ON FUNCTION compute_auction.allocate_proportional(date, bigint, jsonb, text) IS
    'The old central plan, kept as a fallback for when the auction cannot clear. It splits daily_budget_tokens over quests, a JSON array of {"quest_id": string, "expected_value": number}, in proportion to expected value. See docs/SQL_API.md#allocate_proportional.';
COMMENT ON FUNCTION compute_auction.allocate_proportional_arrays(date, bigint, text[], double precision[], text) IS
    'Internal: the array form of allocate_proportional, which calls it after validating its JSON. EXECUTE is revoked from PUBLIC; call allocate_proportional.';
COMMENT ON FUNCTION compute_auction.apply_pending() IS
    'Applies the pending wallet entries of every account it can lock without waiting (FOR UPDATE SKIP LOCKED; an account another transaction holds is applied by a later call), each account''s in entry_id order, writing each entry''s token_ledger row in this transaction as it changes the wallet, and deletes them. Returns how many entries it applied. run_cycle and the driver''s cycle call it; an operator may call it any time. Granted to compute_auction_operator. See docs/SQL_API.md#apply_pending.';
COMMENT ON FUNCTION compute_auction.audit() IS
    'Checks that the books are consistent. No rows means everything is consistent. See docs/SQL_API.md#audit.';
COMMENT ON FUNCTION compute_auction.balance(text) IS
    'Returns one row with the account''s spendable balance (balance_tokens) and escrow (held_tokens). See docs/SQL_API.md#balance.';
COMMENT ON FUNCTION compute_auction.bid_status(bigint) IS
    'Returns any bid as JSON: the bid, where it stands in the book, the rounds it took part in with the reason it did not win each, and the one reason code that sums it up. See docs/SQL_API.md#bid_status.';
COMMENT ON FUNCTION compute_auction.cancel_bid(bigint) IS
    'Cancels an open bid. The bid becomes cancelled with last_result = ''cancelled'', and its whole escrow goes back to the bidder''s spendable balance as a release ledger row. Returns the tokens released. See docs/SQL_API.md#cancel_bid.';
COMMENT ON FUNCTION compute_auction.claim_slot(text) IS
    'An agent runner calls this before it asks for other work. It returns the task that the slot won: one row from the slot''s assigned clear, or zero rows when the slot has nothing assigned. See docs/SQL_API.md#claim_slot.';
COMMENT ON FUNCTION compute_auction.clear_round(timestamp with time zone) IS
    'Runs one round of uniform-price clearing at time now and returns one row per filled slot, in slot order. now may be any finite timestamp within 100 years of the transaction''s now() (see Times), and it need not increase from one call to the next. See docs/SQL_API.md#clear_round.';
COMMENT ON FUNCTION compute_auction.clear_round_summary(timestamp with time zone) IS
    'Clears one round exactly as clear_round does (the same rule, locks, writes, NOTIFY and SQLSTATEs) and returns it as JSON. A scheduler learns the round it cleared without a second read. See docs/SQL_API.md#clear_round_summary.';
COMMENT ON FUNCTION compute_auction.deposit(text, bigint, text, text) IS
    'Credits amount to the spendable balance. Returns the new spendable balance. See docs/SQL_API.md#deposit.';
COMMENT ON FUNCTION compute_auction.last_round() IS
    'Returns the latest compute_auction_rounds row as JSON, with round_id, cleared_at, slots_offered, bids_eligible, slots_filled, clearing_price_tokens and duration_ms. Before the first round it returns JSON null. See docs/SQL_API.md#last_round.';
COMMENT ON FUNCTION compute_auction.market_summary() IS
    'Cheap counters for dashboards and metrics. See docs/SQL_API.md#market_summary.';
COMMENT ON FUNCTION compute_auction.offer_slot(text, timestamp with time zone, bigint, text) IS
    'Registers a slot, or offers an existing slot again with a new available_at and reserve_price_tokens. Returns nothing. See docs/SQL_API.md#offer_slot.';
COMMENT ON FUNCTION compute_auction.open_account(text, text, bigint, text) IS
    'Creates a wallet and returns its spendable balance, which is initial_tokens. See docs/SQL_API.md#open_account.';
COMMENT ON FUNCTION compute_auction.order_book(integer) IS
    'Returns {"bids": [...], "asks": [...]}, with at most depth entries on each side. See docs/SQL_API.md#order_book.';
COMMENT ON FUNCTION compute_auction.pending_balance(text) IS
    'Like balance, with the account''s pending entries (settlements and aborts recorded while the account was held, see settle) applied: what balance will say once apply_pending has run. With nothing pending the two agree. See docs/SQL_API.md#pending_balance.';
COMMENT ON FUNCTION compute_auction.place_bid(text, text, bigint, double precision, timestamp with time zone) IS
    'Places a bid for the next slot on behalf of task_id and returns the bid id. See docs/SQL_API.md#place_bid.';
COMMENT ON FUNCTION compute_auction.price_history(timestamp with time zone, integer) IS
    'Groups the rounds since since into about buckets time buckets, so a dashboard never has to fetch every round. See docs/SQL_API.md#price_history.';
COMMENT ON FUNCTION compute_auction.price_to_win(integer, interval) IS
    'Bid advice: how many slots are free now and the smallest bid that would win one now; the smallest bid that would win one of the next slots_free slots to be free, and when the next one is expected; and the clearing prices over price_window. See docs/SQL_API.md#price_to_win.';
COMMENT ON FUNCTION compute_auction.prune_history(interval) IS
    'Removes the market''s finished history older than now() - older_than and compacts the ledger before that horizon, then returns one row per table: how many rows it removed, and whether it stopped at its budget with more to remove (more: call it again). See docs/SQL_API.md#prune_history.';
COMMENT ON FUNCTION compute_auction.rebuild_round_summaries() IS
    'Recomputes the rounds'' summaries from compute_auction_rounds and returns {"minutes": n, "quarters": n, "quarter_prices": n, "prices": n}, the rows each summary now has. clear_round keeps them in each round''s own transaction, so the reports over a window cost what the window''s quarter-hours or distinct prices cost, not what its rounds cost; run this after deleting rounds by hand (the upgrade to 0.2.0 runs it for the rounds already there, prune_history keeps them itself, and a round written by anyone else, by hand or by a 0.1.0 clear_round that outlived the upgrade, is noticed by the next round, which rebuilds them). audit() reports any difference between the summaries and the rounds as summary_mismatch. See docs/SQL_API.md#rebuild_round_summaries.';
COMMENT ON FUNCTION compute_auction.refund_unfilled(timestamp with time zone) IS
    'Every open bid with ttl_at <= now becomes expired, with last_result = ''expired unfilled''. Its escrow goes back as a refund ledger row with the reason bid expired unfilled. Returns one row: how many bids expired, and the tokens refunded. What one call refunds always fits in a bigint: expired bids past that stay open, and the next call refunds them (so huge escrows never make it, or run_cycle, fail). The function reads only the expired part of the book, through the ttl_at index. It never waits: an expired bid, or its bidder''s account, that another transaction holds (the bidder''s own open transaction) is left open and refunded by a later call. See docs/SQL_API.md#refund_unfilled.';
COMMENT ON FUNCTION compute_auction.retire_slot(text) IS
    'Takes the slot out of later rounds. Returns nothing. See docs/SQL_API.md#retire_slot.';
COMMENT ON FUNCTION compute_auction.run_cycle(interval) IS
    'Runs one full market cycle at the transaction''s now(), in the caller''s transaction. See docs/SQL_API.md#run_cycle.';
COMMENT ON FUNCTION compute_auction.schedule_clearing(text) IS
    'Schedules run_cycle() for this database with pg_cron and returns the job id. See docs/SQL_API.md#schedule_clearing.';
COMMENT ON FUNCTION compute_auction.schedule_pruning(interval, text) IS
    'Schedules prune_history(older_than) for this database with pg_cron and returns the job id. See docs/SQL_API.md#schedule_pruning.';
COMMENT ON FUNCTION compute_auction.set_account_owner(text, text) IS
    'Sets the account''s owner, or clears it when owner_role is NULL. Returns nothing. See docs/SQL_API.md#set_account_owner.';
COMMENT ON FUNCTION compute_auction.set_low_balance_threshold(text, bigint) IS
    'Sets the balance below which the account is warned on the channel compute_auction_low_balance, or clears it with NULL tokens, and returns the threshold it replaced (NULL when there was none). From then on, every wallet change that takes the account''s spendable balance (balance_tokens) from at or above the threshold to below it sends one notice, in the transaction of the change (see Notifications). A balance already below the new threshold is announced at once. The threshold is token_accounts.low_balance_threshold. Operators only: an agent cannot silence or raise its own alert. The call waits for the account row, like deposit. See docs/SQL_API.md#set_low_balance_threshold.';
COMMENT ON FUNCTION compute_auction.set_slot_runner(text, text) IS
    'Sets the slot''s runner, or clears it when runner_role is NULL. Returns nothing. See docs/SQL_API.md#set_slot_runner.';
COMMENT ON FUNCTION compute_auction.settle(text, bigint, double precision) IS
    'Settles the slot''s assigned run. Returns the tokens charged, which is the clearing price, not the bid. See docs/SQL_API.md#settle.';
COMMENT ON FUNCTION compute_auction.stats(timestamp with time zone, boolean, integer) IS
    'Returns statistics for the rounds with cleared_at >= since. See docs/SQL_API.md#stats.';
COMMENT ON FUNCTION compute_auction.submit_bids_for_task_arrays(text, text[], double precision[], boolean[], double precision, double precision, timestamp with time zone) IS
    'Internal: the array form of submit_bids_for_tasks, which calls it after validating its JSON. EXECUTE is revoked from PUBLIC; call submit_bids_for_tasks.';
COMMENT ON FUNCTION compute_auction.submit_bids_for_tasks(text, jsonb, double precision, double precision, timestamp with time zone) IS
    'Bids on behalf of a quest (the quest_id account) for its backlog, all in one call and one transaction. See docs/SQL_API.md#submit_bids_for_tasks.';
COMMENT ON FUNCTION compute_auction.task_status(text) IS
    'Returns a task''s bids and the story of its newest, as JSON: what the dashboard''s bid lookup shows for a task id. The keys are task_id; bids, the task''s newest 100 bids, newest first, each with bid_id and status; bids_truncated, true when it has more; and bid, the newest bid''s bid_status. A task has at most one live (open or won) bid at a time, so the newest bid is the live one when there is one. It reads the task''s bids through the index on (task_id, id) and waits on no lock. See docs/SQL_API.md#task_status.';
COMMENT ON FUNCTION compute_auction.unresolved_roles() IS
    'Lists the accounts and slots whose stored role no longer resolves: its stored OID names no role, or names a role whose current name is not the stored one. That happens when the role was dropped, renamed, or dropped and created again under the same name (which gives it a new OID). Such an account or slot is operators-only until an operator names the role again with set_account_owner or set_slot_runner. See docs/SQL_API.md#unresolved_roles.';
COMMENT ON FUNCTION compute_auction.unschedule_clearing() IS
    'Removes this database''s compute_auction_clearing:<database> job. Returns true if it removed a job and false if there was none. When pg_cron is not installed in this database, it raises 55000 with the hint SELECT cron.unschedule(''compute_auction_clearing:<this database>'');. See docs/SQL_API.md#unschedule_clearing.';
COMMENT ON FUNCTION compute_auction.unschedule_pruning() IS
    'Removes this database''s compute_auction_pruning:<database> job. Returns true if it removed a job and false if there was none. See docs/SQL_API.md#unschedule_pruning.';
COMMENT ON FUNCTION compute_auction.wallet(text) IS
    'Returns one wallet at a glance as JSON: what the dashboard''s wallet view shows. It only reads, and waits on no lock. See docs/SQL_API.md#wallet.';
COMMENT ON FUNCTION compute_auction.withdraw(text, bigint, text, text) IS
    'Debits amount of spendable tokens out of the market. Returns the new spendable balance. See docs/SQL_API.md#withdraw.';
-- END function comments

---------------------------------------------------------------------------------------------
-- 3. Checks, last: no function of the extension is left on another release's library.
---------------------------------------------------------------------------------------------
DO $check$
DECLARE
    stale text;
BEGIN
    SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::text, ', ') INTO stale
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_proc p ON p.oid = d.objid
     WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
       AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
       AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e
                          WHERE e.extname = 'compute_auction')
       AND d.deptype = 'e'
       AND p.probin IS NOT NULL
       AND p.probin <> 'compute_auction-0.2.0';
    IF stale IS NOT NULL THEN
        RAISE EXCEPTION 'compute_auction upgrade: functions still on another library: %', stale;
    END IF;
END
$check$;
