#!/usr/bin/env bash
# Shared helpers for scripts/run.sh, scripts/test.sh and friends. Source it; don't run it.
# Everything here is idempotent: running it on a machine that already has the tools is quick.
set -euo pipefail

CA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CA_ROOT
CARGO_PGRX_VERSION="0.18.1"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# conf SECTION.KEY -> value from pgrx.toml (the one place that names the Postgres target).
conf() {
  python3 - "$CA_ROOT/pgrx.toml" "$1" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    data = tomllib.load(f)
node = data
for part in sys.argv[2].split("."):
    node = node[part]
print(node)
PY
}

PG_MAJOR="$(conf postgres.major)"
PG_CONFIG="$(conf postgres.pg_config)"
PG_BINDIR="$(dirname "$PG_CONFIG")"
PG_RUNAS="$(conf postgres.run_as)"
export PG_MAJOR PG_CONFIG PG_BINDIR PG_RUNAS
export PATH="$HOME/.cargo/bin:$PATH"

ensure_debian_packages() {
  local wanted=("$(conf postgres.dev_package)" "$(conf postgres.cron_package)" "$(conf postgres.auto_failover_package)"
    libclang-dev clang sudo python3-venv "$@")
  local missing=()
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    [ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_cargo_pgrx() {
  if ! cargo pgrx --version 2>/dev/null | grep -q "cargo-pgrx ${CARGO_PGRX_VERSION}\$"; then
    log "installing cargo-pgrx ${CARGO_PGRX_VERSION} (about 10 minutes, once per machine)"
    cargo install cargo-pgrx --version "=${CARGO_PGRX_VERSION}" --locked --force >/dev/null
  fi
  local cfg="$HOME/.pgrx/config.toml"
  if ! grep -qs "pg${PG_MAJOR} = \"${PG_CONFIG}\"" "$cfg"; then
    log "cargo pgrx init --pg${PG_MAJOR} ${PG_CONFIG}"
    cargo pgrx init "--pg${PG_MAJOR}" "$PG_CONFIG" >/dev/null
  fi
}

# Python virtual environment for the integration tests and examples: target/venv.
ensure_venv() {
  local venv="$CA_ROOT/target/venv"
  local req="$CA_ROOT/tests/requirements.txt"
  local stamp="$venv/.requirements.sha256"
  local want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "preparing Python virtualenv (target/venv)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >/dev/null
    "$venv/bin/pip" install -q -r "$req"
    echo "$want" >"$stamp"
  fi
  export CA_VENV="$venv"
}

ensure_all() {
  ensure_debian_packages "$@"
  ensure_cargo_pgrx
  ensure_venv
}

# quietly CMD...: runs CMD with its output in target/logs/; shows the log's tail if it fails.
quietly() {
  mkdir -p "$CA_ROOT/target/logs"
  local logf="$CA_ROOT/target/logs/$(basename "$1")-$$.log"
  if ! "$@" >"$logf" 2>&1; then
    tail -n 60 "$logf" >&2
    die "failed: $* (full log: $logf)"
  fi
}

# Build and install the extension (release) into the server named by pgrx.toml: the primary
# control file compute_auction.control, the versioned library compute_auction-<version>.so, the
# install script compute_auction--<version>.sql and the upgrade scripts sql/compute_auction--A--B.sql.
# Other releases' libraries have other names, so they stay installed beside it.
install_extension() {
  log "building and installing the compute_auction extension (release)"
  (cd "$CA_ROOT/extension" && quietly cargo pgrx install --release --pg-config "$PG_CONFIG")
}

# The earlier releases the upgrade test starts from (tests/test_upgrade.py): "VERSION COMMIT".
CA_OLD_RELEASES=("0.1.0 0a1e601")

# install_file SRC DEST: copies SRC to DEST unless DEST already has the same bytes. A changed
# file is written beside DEST and renamed over it, so a backend that has the old library mapped
# keeps its (unlinked) copy instead of seeing it change under it.
install_file() {
  local src="$1" dest="$2"
  cmp -s "$src" "$dest" && return 0
  cp "$src" "$dest.tmp.$$"
  chmod 644 "$dest.tmp.$$"
  mv -f "$dest.tmp.$$" "$dest"
}

# build_old_release VERSION COMMIT: builds release VERSION of the extension from COMMIT, once
# (cached in target/releases/VERSION-<sha>/, keyed by the commit), and sets OLD_RELEASE_CACHE to
# that directory: lib/ holds its library (compute_auction.so for 0.1.0,
# compute_auction-VERSION.so from 0.2.0 on), extension/ its install script
# compute_auction--VERSION.sql; not its primary control file (which would change the default
# version) nor the upgrade scripts it shipped. Its secondary control file, when it needs one, is
# sql/compute_auction--VERSION.control of the current tree. install_old_release and
# scripts/package.sh both take VERSION from this cache. The build is a detached git worktree under
# target/worktrees/ that shares the workspace's CARGO_TARGET_DIR, so the dependencies are reused;
# `cargo pgrx package` writes into the cache, not into PostgreSQL's directories.
build_old_release() {
  local version="$1" commit="$2" sha
  sha="$(git -C "$CA_ROOT" rev-parse -q --verify "${commit}^{commit}" 2>/dev/null)" ||
    die "commit $commit (compute_auction $version) is not in this clone; the upgrade test and the package build it: clone with full history (git fetch --unshallow)"
  local cache="$CA_ROOT/target/releases/$version-$sha"
  if [ ! -f "$cache/complete" ]; then
    log "building compute_auction $version from ${sha:0:7} (once: cached in ${cache#"$CA_ROOT"/})"
    local wt="$CA_ROOT/target/worktrees/$version-$sha" out="$cache.partial"
    local pkglibdir extdir
    pkglibdir="$("$PG_CONFIG" --pkglibdir)"
    extdir="$("$PG_CONFIG" --sharedir)/extension"
    git -C "$CA_ROOT" worktree remove --force "$wt" >/dev/null 2>&1 || true
    rm -rf "$wt" "$out"
    git -C "$CA_ROOT" worktree prune
    git -C "$CA_ROOT" worktree add --detach -q "$wt" "$sha"
    (cd "$wt/extension" && CARGO_TARGET_DIR="$CA_ROOT/target" \
      quietly cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$out")
    rm -rf "$cache"
    mkdir -p "$cache/lib" "$cache/extension"
    cp "$out$pkglibdir"/compute_auction*.so "$cache/lib/"
    cp "$out$extdir/compute_auction--$version.sql" "$cache/extension/"
    rm -rf "$out"
    git -C "$CA_ROOT" worktree remove --force "$wt"
    # cargo names a cdylib without a hash (target/release/deps/libcompute_auction.so), so this
    # build has just overwritten the current tree's library there, and cargo, comparing mtimes,
    # would take the current tree's build as fresh and `cargo pgrx install` (or package) would
    # ship VERSION's code as compute_auction-<current>.so. Without the file, the next build
    # relinks it. (VERSION itself always rebuilds: its worktree's files are newer than any
    # earlier output.)
    rm -f "$CA_ROOT/target/release/deps/libcompute_auction.so" "$CA_ROOT/target/release/libcompute_auction.so"
    touch "$cache/complete"
  fi
  OLD_RELEASE_CACHE="$cache"
}

# install_old_release VERSION COMMIT: installs VERSION's library and install script (from
# build_old_release's cache) next to the current release's, with its secondary control file
# sql/compute_auction--VERSION.control when there is one (0.1.0 needs it: its install script
# says MODULE_PATHNAME); never its primary control file, which would change the default version.
install_old_release() {
  local version="$1" commit="$2"
  build_old_release "$version" "$commit"
  local cache="$OLD_RELEASE_CACHE" pkglibdir extdir
  pkglibdir="$("$PG_CONFIG" --pkglibdir)"
  extdir="$("$PG_CONFIG" --sharedir)/extension"
  log "installing compute_auction $version beside the current release (library, install script, secondary control file)"
  local f
  for f in "$cache"/lib/*.so; do install_file "$f" "$pkglibdir/$(basename "$f")"; done
  install_file "$cache/extension/compute_auction--$version.sql" "$extdir/compute_auction--$version.sql"
  if [ -f "$CA_ROOT/sql/compute_auction--$version.control" ]; then
    install_file "$CA_ROOT/sql/compute_auction--$version.control" "$extdir/compute_auction--$version.control"
  fi
}

install_old_releases() {
  local r
  for r in "${CA_OLD_RELEASES[@]}"; do
    # shellcheck disable=SC2086 # "VERSION COMMIT" splits into two arguments
    install_old_release $r
  done
}

build_driver() {
  log "building the driver (release)"
  (cd "$CA_ROOT" && cargo build --release -q -p compute-auction-driver)
  export CA_DRIVER_BIN="$CA_ROOT/target/release/compute-auction-driver"
}

as_pg() { sudo -u "$PG_RUNAS" -- "$@"; }

# cluster_start DATA_DIR PORT [extra postgresql.conf lines...]
# Creates (if needed) and starts a private cluster owned by the postgres OS user, trust auth on
# loopback only, sockets in the data directory.
cluster_start() {
  local dir="$1" port="$2"; shift 2
  mkdir -p "$(dirname "$dir")"
  if [ ! -f "$dir/PG_VERSION" ]; then
    mkdir -p "$dir"; chown "$PG_RUNAS" "$dir"; chmod 700 "$dir"
    as_pg "$PG_BINDIR/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    {
      echo "listen_addresses = '127.0.0.1'"
      echo "port = $port"
      echo "unix_socket_directories = '$dir'"
      echo "max_connections = 200"
      echo "fsync = on"
      echo "log_min_messages = warning"
      for line in "$@"; do echo "$line"; done
    } >>"$dir/postgresql.conf"
  fi
  if ! as_pg "$PG_BINDIR/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    as_pg "$PG_BINDIR/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null
  fi
}

cluster_stop() {
  local dir="$1"
  if [ -f "$dir/PG_VERSION" ] && as_pg "$PG_BINDIR/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    as_pg "$PG_BINDIR/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
  fi
}

# The postgres OS user must be able to reach data directories under the repo.
ensure_target_dir() {
  mkdir -p "$CA_ROOT/target"
  chmod o+rx "$CA_ROOT/target" 2>/dev/null || true
  local d="$CA_ROOT"
  while [ "$d" != "/" ]; do chmod o+x "$d" 2>/dev/null || true; d="$(dirname "$d")"; done
}
