#!/usr/bin/env bash
# Installs what building and testing compute_auction needs, idempotently: Debian packages
# (PostgreSQL server headers, clang, sudo, pg_cron, chromium), cargo-pgrx =0.18.1,
# `cargo pgrx init` against the pg_config named in pgrx.toml, and the Python test virtualenv.
# scripts/run.sh and scripts/test.sh call the same steps themselves.
source "$(dirname "$0")/lib.sh"
ensure_all chromium
log "setup complete"
