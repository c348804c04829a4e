#!/usr/bin/env bash
# Runs the isolation specs (tests/isolation/specs/*.spec) with PostgreSQL's isolation tester
# against a running server that has the compute_auction extension installed, and compares each
# spec's output with tests/isolation/expected/<name>.out.
#
#   tests/isolation/run.sh                 # every spec
#   tests/isolation/run.sh cancel-vs-clear # just these specs (names without .spec)
#
# Environment (defaults in brackets):
#   CA_TEST_HOST [127.0.0.1]  CA_TEST_PORT [28826]  CA_TEST_USER [postgres]  (a superuser:
#       every permutation creates and drops the extension)
#   CA_ISOLATION_DB [isolation_regression]  the database pg_isolation_regress drops and creates;
#       dropped again at the end unless CA_ISOLATION_KEEP_DB=1
#   CA_ISOLATION_OUTDIR [target/isolation]  results/, regression.diffs and regression.out
#   CA_PG_CONFIG [/usr/lib/postgresql/15/bin/pg_config]
#   PGISOLATIONTIMEOUT [60]  seconds before the tester cancels a step that never finishes
# Exit status 0 when every spec matched its expected output; on a mismatch the diffs are in
# $CA_ISOLATION_OUTDIR/regression.diffs (also printed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

pg_config="${CA_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
[ -x "$pg_config" ] || { echo "pg_config not found: $pg_config (set CA_PG_CONFIG)" >&2; exit 2; }
regress="$("$pg_config" --pkglibdir)/pgxs/src/test/isolation/pg_isolation_regress"
[ -x "$regress" ] || {
  echo "pg_isolation_regress not found at $regress (Debian package postgresql-server-dev-15)" >&2
  exit 2
}

host="${CA_TEST_HOST:-127.0.0.1}"
port="${CA_TEST_PORT:-28826}"
user="${CA_TEST_USER:-postgres}"
db="${CA_ISOLATION_DB:-isolation_regression}"
outdir="${CA_ISOLATION_OUTDIR:-$root/target/isolation}"
export PGISOLATIONTIMEOUT="${PGISOLATIONTIMEOUT:-60}"
# the specs' output must not depend on the caller's environment
unset PGDATABASE PGOPTIONS PGSERVICE
export PGAPPNAME=pg_isolation_regress

if [ "$#" -gt 0 ]; then
  specs=("$@")
else
  specs=()
  for f in "$here"/specs/*.spec; do
    specs+=("$(basename "$f" .spec)")
  done
fi
[ "${#specs[@]}" -gt 0 ] || { echo "no specs in $here/specs" >&2; exit 2; }

rm -rf "$outdir/results" "$outdir/regression.diffs" "$outdir/regression.out"
mkdir -p "$outdir"

# Without --use-existing, pg_isolation_regress drops and re-creates $db on the server (it never
# starts a server of its own unless given --temp-instance). Each spec's setup creates the
# extension and its data; its teardown drops them, so every permutation starts from scratch.
bindir="$("$pg_config" --bindir)"
drop_db() {
  [ "${CA_ISOLATION_KEEP_DB:-0}" = 1 ] && return 0
  "$bindir/psql" -X -q -h "$host" -p "$port" -U "$user" -d postgres \
    -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
}
trap drop_db EXIT

status=0
"$regress" \
  --bindir="$bindir" \
  --host="$host" --port="$port" --user="$user" \
  --dbname="$db" \
  --inputdir="$here" --outputdir="$outdir" \
  "${specs[@]}" || status=$?

if [ "$status" -ne 0 ] && [ -s "$outdir/regression.diffs" ]; then
  echo "---- $outdir/regression.diffs ----" >&2
  cat "$outdir/regression.diffs" >&2
fi
exit "$status"
