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
SET search_path TO compute_auction, pg_catalog, pg_temp
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
SET search_path TO compute_auction, pg_catalog, pg_temp
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
SET search_path TO compute_auction, pg_catalog, pg_temp
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
