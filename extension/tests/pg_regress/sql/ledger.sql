-- Wallets and the ledger: open_account, deposit, withdraw, balance, pending_balance,
-- apply_pending, set_account_owner, audit, unresolved_roles.
--
-- The suite is one story, told file by file in the order of the schedule (like
-- docs/SQL_API.md, whose examples are cut from these files' expected output): this first file
-- creates the extension, the clock and the helpers the others use.
--
-- The clock: every time the suite passes in is :'t0' plus an offset, and every time it prints
-- is shown as such an offset (regress_t, regress_pin), so the output is the same on every run.
-- t0 lies 10 minutes after the suite starts: a round cleared at t0 sees every bid placed so far
-- (placed_at is the real clock) and every bid placed with the default TTL (15 minutes) still
-- live. A time the suite did not pass in (placed_at, the available_at settle gives a slot, a
-- round cleared at the real now()) and a round's measured duration_ms are printed as
-- "<masked>", and nothing else is.
\set SHOW_CONTEXT never
\pset null NULL
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';
SET client_min_messages = warning;
-- roles the suite creates; a run that stopped half-way may have left some behind
DO $$
DECLARE r text;
BEGIN
    FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 'regress\_ca\_%' LOOP
        EXECUTE format('DROP ROLE %I', r);
    END LOOP;
END $$;
RESET client_min_messages;
CREATE EXTENSION compute_auction;
CREATE TABLE regress_clock AS SELECT date_trunc('minute', now()) + interval '10 minutes' AS t0;
-- a time as an offset from t0
CREATE FUNCTION regress_t(ts timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN ts >= c.t0 THEN 't0 + ' || (ts - c.t0)::text ELSE 't0 - ' || (c.t0 - ts)::text END
      FROM regress_clock AS c
$$;
-- JSON with every "*_at" time as an offset from t0, and the keys in `masked` shown as "<masked>"
-- (when not null)
CREATE FUNCTION regress_pin(j jsonb, masked text[] DEFAULT '{}') RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    k text;
    v jsonb;
    o jsonb := '{}';
BEGIN
    CASE jsonb_typeof(j)
    WHEN 'object' THEN
        FOR k, v IN SELECT * FROM jsonb_each(j) LOOP
            IF k = ANY (masked) AND v <> 'null' THEN
                o := o || jsonb_build_object(k, '<masked>');
            ELSIF k LIKE '%\_at' AND jsonb_typeof(v) = 'string' THEN
                o := o || jsonb_build_object(k, regress_t((v #>> '{}')::timestamptz));
            ELSE
                o := o || jsonb_build_object(k, regress_pin(v, masked));
            END IF;
        END LOOP;
        RETURN o;
    WHEN 'array' THEN
        RETURN coalesce((SELECT jsonb_agg(regress_pin(e, masked) ORDER BY n)
                           FROM jsonb_array_elements(j) WITH ORDINALITY AS a(e, n)), '[]');
    ELSE
        RETURN j;
    END CASE;
END $$;
SELECT t0 FROM regress_clock \gset

-- doc: open_account
SELECT compute_auction.open_account('alice', 'agent', 10000);
SELECT compute_auction.open_account('bob', initial_tokens => 10000);
SELECT compute_auction.open_account('carol', 'agent', 10000);
SELECT compute_auction.open_account('dave', 'agent', 10000);
SELECT compute_auction.open_account('quest-42', 'quest');
SELECT compute_auction.open_account('alice');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('erin', owner_role => 'regress_ca_agent_erin');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc
-- the other documented errors: an unknown kind, negative tokens, an empty or a too long id
SELECT compute_auction.open_account('erin', 'robot');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('erin', 'agent', -1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('', 'agent');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('erin', owner_role => '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account(repeat('x', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.open_account('erin', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- none of them opened an account, and the ledger holds exactly the opening entries
SELECT account_id, kind, balance_tokens, held_tokens, total_deposited, owner_role
  FROM compute_auction.token_accounts ORDER BY account_id;
SELECT account_id, entry_kind, delta_balance, delta_held, reason
  FROM compute_auction.token_ledger ORDER BY id;

-- doc: deposit
SELECT compute_auction.deposit('quest-42', 20000, 'daily refill');
SELECT compute_auction.deposit('alice', 500, 'merged PR #12', 'pr-12');
SELECT compute_auction.deposit('alice', 500, 'merged PR #12', 'pr-12');
-- /doc
SELECT compute_auction.deposit('alice', 700, 'merged PR #12', 'pr-12');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('alice', 0, 'nothing');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('alice', 1, 'key', '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('nobody', 1, 'unknown');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('alice', 9223372036854775807, 'overflow');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('alice', 1, 'key', repeat('k', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.deposit('alice', 1, NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT account_id, balance_tokens, total_deposited FROM compute_auction.token_accounts
 WHERE account_id IN ('alice', 'quest-42') ORDER BY account_id;

-- doc: withdraw
SELECT compute_auction.withdraw('alice', 300, 'payout');
SELECT compute_auction.withdraw('alice', 1000000, 'too much');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc
SELECT compute_auction.withdraw('alice', 300, 'payout', 'payout-1');
SELECT compute_auction.withdraw('alice', 300, 'payout', 'payout-1');
SELECT compute_auction.withdraw('alice', 400, 'payout', 'payout-1');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('alice', -5, 'negative');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('nobody', 5, 'unknown');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw(repeat('x', 257), 5, 'too long');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.withdraw('alice', NULL, 'null');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- the keyed withdraw moved tokens once; give them back so the story's balances stay round
SELECT compute_auction.deposit('alice', 300, 'payout returned');

-- doc: balance
SELECT * FROM compute_auction.balance('alice');
-- /doc
SELECT * FROM compute_auction.balance('nobody');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.balance('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.balance(repeat('x', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.balance(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- doc: pending_balance
SELECT * FROM compute_auction.pending_balance('alice');
-- /doc
SELECT * FROM compute_auction.pending_balance('nobody');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.pending_balance('');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.pending_balance(repeat('x', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM compute_auction.pending_balance(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- doc: apply_pending
SELECT compute_auction.apply_pending();
-- /doc

-- doc: set_account_owner
CREATE ROLE regress_ca_agent_dave;
SELECT compute_auction.set_account_owner('dave', 'regress_ca_agent_dave');
SELECT account_id, owner_role, owner_oid FROM compute_auction.token_accounts WHERE account_id = 'dave';
SELECT compute_auction.set_account_owner('dave', 'regress_ca_agent_dvae');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_account_owner('erin', 'regress_ca_agent_dave');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- /doc
SELECT compute_auction.set_account_owner('dave', '');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_account_owner('dave', repeat('r', 257));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT compute_auction.set_account_owner(NULL, 'regress_ca_agent_dave');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- the owner is cleared with NULL, and named again
SELECT compute_auction.set_account_owner('dave', NULL);
SELECT account_id, owner_role, owner_oid FROM compute_auction.token_accounts WHERE account_id = 'dave';
SELECT compute_auction.set_account_owner('dave', 'regress_ca_agent_dave');

-- doc: audit
SELECT * FROM compute_auction.audit();
-- /doc

-- doc: unresolved_roles
DROP ROLE regress_ca_agent_dave;
CREATE ROLE regress_ca_agent_dave;
SELECT object_kind, object_id, role_name, role_oid <> 'regress_ca_agent_dave'::regrole AS role_oid_is_the_old_one
  FROM compute_auction.unresolved_roles();
SELECT compute_auction.set_account_owner('dave', 'regress_ca_agent_dave');
SELECT * FROM compute_auction.unresolved_roles();
-- /doc
