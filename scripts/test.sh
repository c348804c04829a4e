#!/usr/bin/env bash
# The whole test suite (the README's test command; .ci/run calls exactly this).
#   1. installs what is missing (Debian packages, cargo-pgrx, pgrx init, Python venv)
#   1b. the gate, failing fast: cargo fmt --check, cargo clippy -D warnings, ruff check/format
#   2. pure Rust tests: the market rules' unit and property tests, the driver's unit tests
#   3. #[pg_test] unit tests of the extension (cargo pgrx test, its own throw-away cluster)
#   4. builds and installs the release extension and driver, and the earlier releases the
#      upgrade test starts from (0.1.0, built from its commit once and cached under target/)
#   4b. builds the Debian packages (scripts/package.sh, into target/dist/; `cargo pgrx package`
#      reuses step 4's release build), which tests/test_package.py unpacks into a private copy
#      of PostgreSQL with a server of its own
#   5. starts a fresh private cluster and runs the Python integration suite (tests/) against it;
#      tests/ha/ builds its own pg_auto_failover formation (monitor, primary, synchronous
#      standby) on free ports under target/ha-<pid>/ and kills its primary three times
# Extra arguments are passed to pytest (e.g. scripts/test.sh -k ledger -x).
source "$(dirname "$0")/lib.sh"

ensure_all chromium
ensure_target_dir
cd "$CA_ROOT"

log "gate: cargo fmt --check, cargo clippy -D warnings, ruff"
cargo fmt --all --check
# clippy shares the build's target directory; --all-targets lints the tests and #[pg_test]s too.
cargo clippy -q --workspace --all-targets -- -D warnings
"$CA_VENV/bin/ruff" check tests bench examples
"$CA_VENV/bin/ruff" format --check tests bench examples

log "pure Rust tests (clearing rule, token arithmetic, driver)"
cargo test -q -p compute_auction_core -p compute-auction-driver

log "#[pg_test] unit tests (cargo pgrx test)"
pgrx_data="$CA_ROOT/$(conf cluster.pgrx_test_data_dir)"
rm -rf "$pgrx_data"; mkdir -p "$pgrx_data"; chown "$PG_RUNAS" "$pgrx_data"
(cd extension && cargo pgrx test "pg${PG_MAJOR}" --runas "$PG_RUNAS" --pgdata "$pgrx_data")
rm -rf "$pgrx_data"

install_extension
# 0.1.0 beside it, for the upgrade test (tests/test_upgrade.py); built once, then cached
install_old_releases
build_driver
# the .deb packages for tests/test_package.py (it never touches /usr: it unpacks them into a
# scratch copy of PostgreSQL under target/); shares step 4's release builds and 0.1.0's cache
log "building the Debian packages (scripts/package.sh)"
"$CA_ROOT/scripts/package.sh"

test_data="$CA_ROOT/$(conf cluster.test_data_dir)"
test_port="$(conf cluster.test_port)"
cluster_stop "$test_data"
rm -rf "$test_data"
trap 'cluster_stop "$test_data"' EXIT
log "starting a private test cluster on port $test_port"
# fsync off: the suite tests behaviour, not disk durability, and CREATE DATABASE per test is
# much faster without it. Fast shutdowns (the restart tests) still flush everything.
cluster_start "$test_data" "$test_port" "fsync = off" "full_page_writes = off"

export CA_TEST_DATA_DIR="$test_data" CA_TEST_PORT="$test_port" CA_PG_BINDIR="$PG_BINDIR" CA_PG_RUNAS="$PG_RUNAS"
export CA_ADMIN_URL="postgresql://postgres@127.0.0.1:${test_port}/postgres"
log "Python integration tests (pytest)"
"$CA_VENV/bin/python" -m pytest -p no:cacheprovider tests "$@"
