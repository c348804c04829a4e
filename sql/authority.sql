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
