-- Privileges, applied after every function exists. The extension creates no roles: an
-- administrator creates the two documented group roles and grants them (docs/roles.sql,
-- docs/SECURITY.md). Until then only the owner (the installing superuser) can use the market.
REVOKE ALL ON SCHEMA compute_auction FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA compute_auction FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA compute_auction FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA compute_auction FROM PUBLIC;
