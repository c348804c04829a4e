#!/usr/bin/env bash
# The main job (the README's first command): builds and installs the extension, starts a private
# PostgreSQL cluster (or uses $DATABASE_URL), creates the extension, seeds a lively demo market,
# and runs the driver (clearing every second + the dashboard) with a workload generator.
# Ctrl-C stops the driver, the generator and the private cluster.
#
# Environment: DATABASE_URL   use this server instead of a private cluster (the extension
#                             must be installable there: run this on the server's host)
#              CA_LISTEN      driver listen address (default from pgrx.toml [driver].listen)
#              CA_NO_SIMULATE set to 1 to skip the workload generator
source "$(dirname "$0")/lib.sh"

ensure_debian_packages
ensure_cargo_pgrx
ensure_target_dir
install_extension
build_driver

listen="${CA_LISTEN:-$(conf driver.listen)}"
if [ -n "${DATABASE_URL:-}" ]; then
  db_url="$DATABASE_URL"
  log "using the server at \$DATABASE_URL"
else
  data="$CA_ROOT/$(conf cluster.demo_data_dir)"
  port="$(conf cluster.demo_port)"
  log "starting the private demo cluster on port $port (data in ${data#"$CA_ROOT"/})"
  cluster_start "$data" "$port"
  if ! as_pg "$PG_BINDIR/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
       "SELECT 1 FROM pg_database WHERE datname = 'compute_auction_demo'" | grep -q 1; then
    as_pg "$PG_BINDIR/createdb" -h 127.0.0.1 -p "$port" -U postgres compute_auction_demo
  fi
  db_url="postgresql://postgres@127.0.0.1:${port}/compute_auction_demo"
fi

log "creating (or updating) the extension"
psql "$db_url" -v ON_ERROR_STOP=1 -qc "CREATE EXTENSION IF NOT EXISTS compute_auction" \
  -c "ALTER EXTENSION compute_auction UPDATE" >/dev/null

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -z "${DATABASE_URL:-}" ]; then
    log "stopping the private demo cluster"
    cluster_stop "$data"
  fi
}
trap cleanup EXIT INT TERM

"$CA_DRIVER_BIN" serve --database-url "$db_url" --interval 1s --listen "$listen" &
pids+=($!)
if [ "${CA_NO_SIMULATE:-0}" != 1 ]; then
  "$CA_DRIVER_BIN" simulate --database-url "$db_url" --agents 40 --quests 8 --slots 6 &
  pids+=($!)
fi
sleep 1
log "dashboard: http://${listen}/resources   (order book: http://${listen}/api/compute-auction/order-book)"
log "press Ctrl-C to stop"
wait -n "${pids[@]}"
