"""Helpers of tests/test_upgrade.py: a text description of the extension's schema (the upgrade
parity check and the schema gate compare these), and row snapshots of every table.

describe_schema() reads the catalog only, with search_path = pg_catalog so every name in it is
schema-qualified. It yields one line per object and property, sorted, so a difference names
exactly what differs. Grants are described for PUBLIC and the owner only: the grants an
administrator adds (docs/roles.sql) are not part of the extension.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = "compute_auction"
SCHEMA = "compute_auction"
SNAPSHOT_DIR = ROOT / "tests" / "schema"
# CA_REFRESH_SCHEMA_SNAPSHOT=1 makes the schema gate write the snapshot instead of comparing.
REFRESH_ENV = "CA_REFRESH_SCHEMA_SNAPSHOT"

# Grants of an ACL to PUBLIC and to the object's owner, as "PUBLIC:EXECUTE,owner:EXECUTE".
# acl is the ACL column, owner the owner column, kind acldefault()'s object type (an expression).
_ACL = """(SELECT pg_catalog.string_agg(
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE 'owner' END || ':' || a.privilege_type
                 || CASE WHEN a.is_grantable THEN '*' ELSE '' END, ',' ORDER BY 1)
             FROM pg_catalog.aclexplode(coalesce({acl}, pg_catalog.acldefault({kind}, {owner}))) a
            WHERE a.grantee = 0 OR a.grantee = {owner})"""


_REL_KIND = "CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::pg_catalog.\"char\""


def _acl(acl: str, owner: str, kind: str) -> str:
    return _ACL.format(acl=acl, owner=owner, kind=kind)


# Each query returns (object, property, value) rows; %(schema)s and %(ext)s are parameters.
_QUERIES = {
    "extension": """
        SELECT 'extension ' || e.extname, p.k, p.v
          FROM pg_catalog.pg_extension e
          CROSS JOIN LATERAL (VALUES
                ('version', e.extversion),
                ('schema', e.extnamespace::pg_catalog.regnamespace::text),
                ('relocatable', e.extrelocatable::text)) AS p(k, v)
         WHERE e.extname = %(ext)s""",
    "members": """
        SELECT 'extension ' || e.extname, 'member',
               pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
          FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
         WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.deptype = 'e' AND e.extname = %(ext)s""",
    "config_dump": """
        SELECT 'extension ' || e.extname, 'pg_extension_config_dump',
               u.cfg::pg_catalog.regclass::text || ' WHERE ' || pg_catalog.quote_literal(u.cond)
          FROM pg_catalog.pg_extension e
          CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(e.extconfig),
                                        pg_catalog.unnest(e.extcondition)) AS u(cfg, cond)
         WHERE e.extname = %(ext)s""",
    "schema": f"""
        SELECT 'schema ' || n.nspname, p.k, p.v
          FROM pg_catalog.pg_namespace n
          CROSS JOIN LATERAL (VALUES
                ('comment', pg_catalog.obj_description(n.oid, 'pg_namespace')),
                ('acl', {_acl("n.nspacl", "n.nspowner", "'n'")})) AS p(k, v)
         WHERE n.nspname = %(schema)s""",
    "relations": f"""
        SELECT CASE c.relkind WHEN 'r' THEN 'table ' WHEN 'p' THEN 'table ' WHEN 'i' THEN 'index '
                    WHEN 'S' THEN 'sequence ' WHEN 'v' THEN 'view ' WHEN 'm' THEN 'matview '
                    WHEN 'c' THEN 'type ' ELSE 'relation(' || c.relkind::text || ') ' END
               || c.oid::pg_catalog.regclass::text, p.k, p.v
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN LATERAL (VALUES
                ('persistence', c.relpersistence::text),
                ('options', (SELECT pg_catalog.array_agg(o ORDER BY o)::text
                               FROM pg_catalog.unnest(c.reloptions) o)),
                ('row security', c.relrowsecurity::text || '/' || c.relforcerowsecurity::text),
                ('comment', pg_catalog.obj_description(c.oid, 'pg_class')),
                ('acl', CASE WHEN c.relkind IN ('r', 'p', 'v', 'm', 'S')
                             THEN {_acl("c.relacl", "c.relowner", _REL_KIND)} END),
                ('definition', CASE WHEN c.relkind = 'i' THEN pg_catalog.pg_get_indexdef(c.oid)
                                    WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid)
                               END)) AS p(k, v)
         WHERE n.nspname = %(schema)s AND c.relkind <> 't'""",
    "columns": """
        SELECT 'column ' || c.oid::pg_catalog.regclass::text || '.' || pg_catalog.quote_ident(a.attname),
               p.k, p.v
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
          LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          CROSS JOIN LATERAL (VALUES
                -- the position among the live columns (an upgrade's dropped columns leave gaps)
                ('position', (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute b
                               WHERE b.attrelid = a.attrelid AND b.attnum > 0
                                 AND NOT b.attisdropped AND b.attnum <= a.attnum)::text),
                ('type', pg_catalog.format_type(a.atttypid, a.atttypmod)),
                ('not null', a.attnotnull::text),
                ('default', pg_catalog.pg_get_expr(d.adbin, d.adrelid)),
                ('identity', NULLIF(a.attidentity, '')::text),
                ('generated', NULLIF(a.attgenerated, '')::text),
                ('collation', CASE WHEN a.attcollation <> t.typcollation
                                   THEN a.attcollation::pg_catalog.regcollation::text END),
                -- sorted; without the per-column pg_attver=<n> this server build stamps on each
                ('options', (SELECT pg_catalog.array_agg(o ORDER BY o)::text
                               FROM pg_catalog.unnest(a.attoptions) o WHERE o NOT LIKE 'pg\\_attver=%%')),
                ('comment', pg_catalog.col_description(c.oid, a.attnum)),
                ('acl', (SELECT pg_catalog.string_agg('PUBLIC:' || x.privilege_type, ',' ORDER BY 1)
                           FROM pg_catalog.aclexplode(a.attacl) x WHERE x.grantee = 0))) AS p(k, v)
         WHERE n.nspname = %(schema)s AND a.attnum > 0 AND NOT a.attisdropped
           AND c.relkind IN ('r', 'p', 'v', 'm', 'c', 'f')""",
    "constraints": """
        SELECT 'constraint ' || coalesce(con.conrelid::pg_catalog.regclass::text,
                                         con.contypid::pg_catalog.regtype::text)
               || ' ' || pg_catalog.quote_ident(con.conname), p.k, p.v
          FROM pg_catalog.pg_constraint con
          JOIN pg_catalog.pg_namespace n ON n.oid = con.connamespace
          CROSS JOIN LATERAL (VALUES
                ('definition', pg_catalog.pg_get_constraintdef(con.oid)),
                ('validated', con.convalidated::text),
                ('comment', pg_catalog.obj_description(con.oid, 'pg_constraint'))) AS p(k, v)
         WHERE n.nspname = %(schema)s""",
    "sequences": """
        SELECT 'sequence ' || s.seqrelid::pg_catalog.regclass::text, p.k, p.v
          FROM pg_catalog.pg_sequence s
          JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN LATERAL (VALUES
                ('parameters', pg_catalog.format('%%s start %%s increment %%s min %%s max %%s cache %%s cycle %%s',
                    pg_catalog.format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
                    s.seqmin, s.seqmax, s.seqcache, s.seqcycle)),
                ('owned by', (SELECT d.refobjid::pg_catalog.regclass::text || '.'
                                     || pg_catalog.quote_ident(att.attname)
                                FROM pg_catalog.pg_depend d
                                JOIN pg_catalog.pg_attribute att
                                  ON att.attrelid = d.refobjid AND att.attnum = d.refobjsubid
                               WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                 AND d.objid = s.seqrelid AND d.deptype IN ('a', 'i')
                                 AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass))
                ) AS p(k, v)
         WHERE n.nspname = %(schema)s""",
    "types": f"""
        SELECT 'type ' || t.oid::pg_catalog.regtype::text, p.k, p.v
          FROM pg_catalog.pg_type t
          JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
          LEFT JOIN pg_catalog.pg_class rel ON rel.oid = t.typrelid
          CROSS JOIN LATERAL (VALUES
                ('kind', t.typtype::text),
                ('base', CASE WHEN t.typtype = 'd'
                              THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END),
                ('not null', CASE WHEN t.typtype = 'd' THEN t.typnotnull::text END),
                ('default', t.typdefault),
                ('labels', (SELECT pg_catalog.string_agg(pg_catalog.quote_literal(e.enumlabel), ','
                                                         ORDER BY e.enumsortorder)
                              FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid)),
                ('comment', pg_catalog.obj_description(t.oid, 'pg_type')),
                ('acl', {_acl("t.typacl", "t.typowner", "'T'")})) AS p(k, v)
         WHERE n.nspname = %(schema)s
           -- not the row types of tables, not the array types PostgreSQL makes for each type
           AND (rel.oid IS NULL OR rel.relkind = 'c')
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e
                            WHERE e.oid = t.typelem AND e.typarray = t.oid)""",
    "functions": f"""
        SELECT CASE pr.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate '
                               ELSE 'function ' END || pr.oid::pg_catalog.regprocedure::text,
               p.k, p.v
          FROM pg_catalog.pg_proc pr
          JOIN pg_catalog.pg_namespace n ON n.oid = pr.pronamespace
          JOIN pg_catalog.pg_language l ON l.oid = pr.prolang
          CROSS JOIN LATERAL (VALUES
                ('arguments', pg_catalog.pg_get_function_arguments(pr.oid)),
                ('returns', pg_catalog.pg_get_function_result(pr.oid)),
                ('language', l.lanname::text),
                ('volatility', pr.provolatile::text),
                ('parallel', pr.proparallel::text),
                ('security definer', pr.prosecdef::text),
                ('leakproof', pr.proleakproof::text),
                ('strict', pr.proisstrict::text),
                ('cost', pr.procost::text),
                ('rows', pr.prorows::text),
                ('config', pr.proconfig::text),
                ('library', pr.probin),
                ('source', pr.prosrc),
                ('comment', pg_catalog.obj_description(pr.oid, 'pg_proc')),
                ('acl', {_acl("pr.proacl", "pr.proowner", "'f'")})) AS p(k, v)
         WHERE n.nspname = %(schema)s""",
    "triggers": """
        SELECT 'trigger ' || tg.tgrelid::pg_catalog.regclass::text || ' ' || pg_catalog.quote_ident(tg.tgname),
               'definition', pg_catalog.pg_get_triggerdef(tg.oid) || ' enabled=' || tg.tgenabled::text
          FROM pg_catalog.pg_trigger tg
          JOIN pg_catalog.pg_class c ON c.oid = tg.tgrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = %(schema)s AND NOT tg.tgisinternal""",
    "policies": """
        SELECT 'policy ' || pol.schemaname || '.' || pol.tablename || ' ' || pol.policyname,
               'definition', pg_catalog.format('%%s %%s to %%s using (%%s) check (%%s)', pol.permissive,
                                               pol.cmd, pol.roles, pol.qual, pol.with_check)
          FROM pg_catalog.pg_policies pol
         WHERE pol.schemaname = %(schema)s""",
}


def describe_schema(url: str) -> list[str]:
    """The extension's schema as sorted 'object :: property = value' lines (values JSON-quoted,
    so multi-line function bodies stay on one line). NULL properties are left out."""
    lines = []
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SET search_path = pg_catalog")
        for query in _QUERIES.values():
            for obj, prop, value in c.execute(query, {"schema": SCHEMA, "ext": EXTENSION}):
                if value is not None:
                    lines.append(f"{obj} :: {prop} = {json.dumps(value)}")
    return sorted(lines)


def snapshot_path(version: str) -> Path:
    return SNAPSHOT_DIR / f"{EXTENSION}--{version}.schema"


SNAPSHOT_HEADER = f"""\
# The schema of a fresh install of this version of {EXTENSION}, as tests/upgrade_helpers.py
# describes it. tests/test_upgrade.py compares a fresh install with this file (the schema gate).
# A change to the install scripts must come with the same change in the upgrade script
# sql/{EXTENSION}--<previous>--<this>.sql; then refresh this file with
#   {REFRESH_ENV}=1 pytest tests/test_upgrade.py -k schema_gate
"""


def read_snapshot(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def write_snapshot(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SNAPSHOT_HEADER + "".join(line + "\n" for line in lines))


def diff(a: list[str], b: list[str], a_name: str, b_name: str, limit: int = 80) -> str:
    """The lines only in a (-) and only in b (+), at most limit of them."""
    sa, sb = set(a), set(b)
    out = [f"- {line}" for line in a if line not in sb] + [f"+ {line}" for line in b if line not in sa]
    head = f"--- {a_name}\n+++ {b_name}\n"
    more = f"\n... and {len(out) - limit} more" if len(out) > limit else ""
    return head + "\n".join(out[:limit]) + more


def table_names(conn: psycopg.Connection) -> list[str]:
    """Every table of the extension's schema, from the catalog."""
    rows = conn.execute(
        """SELECT c.relname FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1""",
        (SCHEMA,),
    ).fetchall()
    return [r[0] for r in rows]


def rows_of(conn: psycopg.Connection, table: str) -> list[dict]:
    """Every row of a table of the extension, as JSON objects, in a stable order."""
    query = sql.SQL("SELECT to_jsonb(x) FROM {}.{} x").format(sql.Identifier(SCHEMA), sql.Identifier(table))
    rows = [r[0] for r in conn.execute(query)]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def sequence_positions(conn: psycopg.Connection) -> dict[str, tuple]:
    names = conn.execute(
        """SELECT c.relname FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind = 'S' ORDER BY 1""",
        (SCHEMA,),
    ).fetchall()
    out = {}
    for (name,) in names:
        query = sql.SQL("SELECT last_value, is_called FROM {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(name))
        out[name] = conn.execute(query).fetchone()
    return out


def privileges_of(conn: psycopg.Connection, role: str) -> dict[str, bool]:
    """What a role may do with each of the extension's functions and tables (EXECUTE; SELECT,
    INSERT, UPDATE, DELETE), keyed by the object and privilege."""
    rows = conn.execute(
        """SELECT 'function ' || p.oid::pg_catalog.regprocedure::text,
                  pg_catalog.has_function_privilege(%(role)s, p.oid, 'EXECUTE')
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = %(schema)s
           UNION ALL
           SELECT 'table ' || c.oid::pg_catalog.regclass::text || ' ' || priv,
                  pg_catalog.has_table_privilege(%(role)s, c.oid, priv)
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            CROSS JOIN pg_catalog.unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS priv
            WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p')
           UNION ALL
           SELECT 'schema usage', pg_catalog.has_schema_privilege(%(role)s, %(schema)s, 'USAGE')""",
        {"role": role, "schema": SCHEMA},
    ).fetchall()
    return dict(rows)


def git_show(commit: str, path: str) -> str:
    """A file as it was at a commit (the test command's clone has the history)."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:{path}"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"git show {commit}:{path} failed (a clone without history?): {out.stderr}"
    return out.stdout
