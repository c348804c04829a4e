#!/usr/bin/env bash
# The main job (the README's first command): builds and installs the extension, starts a private
# PostgreSQL cluster (or uses $DATABASE_URL), creates the extension, seeds a lively demo market,
# and runs the driver (clearing every second + the dashboard) with a workload generator (on
# another server only when asked). Ctrl-C stops the driver, the generator and the private cluster.
#
# Usage: scripts/run.sh [--simulate | --no-simulate]
#
# Environment: DATABASE_URL     use this server instead of a private cluster (the extension
#                               must be installable there: run this on the server's host). The
#                               URL reaches psql and the driver through their environment, never
#                               their command line (where ps shows it, password and all).
#              CA_LISTEN        driver listen address (default from pgrx.toml [driver].listen)
#              CA_DEMO_WORKLOAD 1: run the workload generator (made-up wallets, slots, bids), 0:
#                               don't. Default 1 on the private cluster, 0 with DATABASE_URL: an
#                               existing server gets the demo's wallets and bids only when asked.
#                               --simulate / --no-simulate say the same; CA_NO_SIMULATE=1 means 0.
source "$(dirname "$0")/lib.sh"

demo_workload="${CA_DEMO_WORKLOAD:-}"
[ "${CA_NO_SIMULATE:-0}" = 1 ] && demo_workload=0
for arg in "$@"; do
  case "$arg" in
    --simulate) demo_workload=1 ;;
    --no-simulate) demo_workload=0 ;;
    *) die "unknown argument $arg (usage: scripts/run.sh [--simulate | --no-simulate])" ;;
  esac
done
case "$demo_workload" in
  '') if [ -n "${DATABASE_URL:-}" ]; then demo_workload=0; else demo_workload=1; fi ;;
  0 | 1) ;;
  *) die "CA_DEMO_WORKLOAD must be 0 or 1, not $demo_workload" ;;
esac

# db_psql ARGS...: psql against $db_url, which scripts/pg_env.py turns into libpq's PG*
# environment variables: the URL is on no command line.
db_psql() {
  local env=() kv
  while IFS= read -r -d '' kv; do env+=("$kv"); done < <(PG_ENV_URL="$db_url" python3 "$CA_ROOT/scripts/pg_env.py")
  [ "${#env[@]}" -gt 0 ] || die "cannot read the connection string"
  # export is a builtin (env(1) would show them in its argv)
  (for kv in "${env[@]}"; do export "${kv?}"; done; exec psql -X "$@")
}
redacted_url() { PG_ENV_URL="$db_url" python3 "$CA_ROOT/scripts/pg_env.py" --redact; }

ensure_debian_packages
ensure_cargo_pgrx
ensure_target_dir
install_extension
build_driver

listen="${CA_LISTEN:-$(conf driver.listen)}"
private=
if [ -n "${DATABASE_URL:-}" ]; then
  db_url="$DATABASE_URL"
  log "using the server at \$DATABASE_URL ($(redacted_url))"
else
  data="$CA_ROOT/$(conf cluster.demo_data_dir)"
  port="$(conf cluster.demo_port)"
  log "starting the private demo cluster on port $port (data in ${data#"$CA_ROOT"/})"
  cluster_start "$data" "$port"
  private=1
  if ! as_pg "$PG_BINDIR/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
       "SELECT 1 FROM pg_database WHERE datname = 'compute_auction_demo'" | grep -q 1; then
    as_pg "$PG_BINDIR/createdb" -h 127.0.0.1 -p "$port" -U postgres compute_auction_demo
  fi
  db_url="postgresql://postgres@127.0.0.1:${port}/compute_auction_demo"
fi

log "creating (or updating) the extension"
db_psql -v ON_ERROR_STOP=1 -qc "CREATE EXTENSION IF NOT EXISTS compute_auction" \
  -c "ALTER EXTENSION compute_auction UPDATE" >/dev/null

pids=()
status_pid=
cleanup() {
  trap - EXIT INT TERM # once: a signal's cleanup is not repeated at exit
  for p in "${pids[@]}" $status_pid; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$private" ]; then
    log "stopping the private demo cluster"
    cluster_stop "$data"
  fi
}
trap cleanup EXIT INT TERM

# the driver reads DATABASE_URL from its environment: no URL on its command line
export DATABASE_URL="$db_url"
"$CA_DRIVER_BIN" serve --interval 1s --listen "$listen" &
pids+=($!)
if [ "$demo_workload" = 1 ]; then
  "$CA_DRIVER_BIN" simulate --agents 40 --quests 8 --slots 6 &
  pids+=($!)
else
  log "no demo workload (CA_DEMO_WORKLOAD=1 or --simulate generates one)"
fi
sleep 1
# Where to look: printed now and every 60 s, as the driver's log lines scroll it away.
status() {
  log "dashboard: http://${listen}/resources   (order book: http://${listen}/api/compute-auction/order-book)"
  if [ -n "$private" ]; then
    log "database: compute_auction_demo   connect: psql $db_url"
  else
    log "database: $(redacted_url)"
  fi
  log "press Ctrl-C to stop"
}
status
(
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  while :; do sleep 60 & s=$!; wait "$s"; status; done
) &
status_pid=$!
wait -n "${pids[@]}"
