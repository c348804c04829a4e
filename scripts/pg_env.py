#!/usr/bin/env python3
"""Turns a libpq connection string into the libpq environment variables that name the same
connection, so scripts/run.sh can hand it to psql without putting it on psql's command line
(where `ps` shows it to every user of the machine, password and all).

The connection string is read from the environment variable PG_ENV_URL, never from argv.
Prints NUL-separated KEY=VALUE pairs (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
PGSSLMODE, ...). With --redact, prints the connection string with its password replaced by ***.
Accepts postgres:// and postgresql:// URIs (several hosts too) and the key=value form.
"""

from __future__ import annotations

import os
import re
import sys
from urllib.parse import parse_qsl, unquote

URI = re.compile(r"postgres(?:ql)?://")
# key = value or key = 'quoted value' with \\ and \' escapes
KEYVALUE = re.compile(r"\s*(\w+)\s*=\s*('((?:[^'\\]|\\.)*)'|\S*)")
SPECIAL = {"dbname": "PGDATABASE", "application_name": "PGAPPNAME", "hostaddr": "PGHOSTADDR"}


def parse_uri(url: str) -> dict[str, str]:
    params: dict[str, str] = {}
    rest = url.split("://", 1)[1]
    netloc, _, tail = rest.partition("/")
    if "?" in netloc:  # postgresql://host?dbname=x
        netloc, _, query = netloc.partition("?")
        path = ""
    else:
        path, _, query = tail.partition("?")
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, sep, password = auth.partition(":")
        if user:
            params["user"] = unquote(user)
        if sep:
            params["password"] = unquote(password)
    hosts, ports = [], []
    for hp in netloc.split(",") if netloc else []:
        if hp.startswith("["):  # [::1]:5432
            h, _, p = hp[1:].partition("]")
            p = p[1:]
        else:
            h, _, p = hp.partition(":")
        hosts.append(unquote(h))
        ports.append(p)
    if any(hosts):
        params["host"] = ",".join(hosts)
    if any(ports):
        params["port"] = ",".join(ports)
    if path:
        params["dbname"] = unquote(path)
    params.update(parse_qsl(query, keep_blank_values=True))
    return params


def parse_keyvalue(conninfo: str) -> dict[str, str]:
    params = {}
    for m in KEYVALUE.finditer(conninfo):
        key, raw, quoted = m.group(1), m.group(2), m.group(3)
        params[key] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else raw
    return params


def parse(conninfo: str) -> dict[str, str]:
    return parse_uri(conninfo) if URI.match(conninfo) else parse_keyvalue(conninfo)


def redact(conninfo: str) -> str:
    if URI.match(conninfo):
        return re.sub(r"^(postgres(?:ql)?://[^:@/]*):[^@/]*@", r"\1:***@", conninfo)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", r"\1***", conninfo)


def main() -> int:
    conninfo = os.environ.get("PG_ENV_URL", "")
    if not conninfo:
        print("pg_env.py: PG_ENV_URL is not set", file=sys.stderr)
        return 2
    if sys.argv[1:] == ["--redact"]:
        print(redact(conninfo))
        return 0
    for key, value in parse(conninfo).items():
        sys.stdout.write(f"{SPECIAL.get(key, 'PG' + key.upper().replace('_', ''))}={value}\0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
