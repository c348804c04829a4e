#!/usr/bin/env bash
# Builds the Debian packages of this release into target/dist/:
#   postgresql-<major>-compute-auction_<version>_amd64.deb  the extension, in the directories of
#       Debian's PostgreSQL <major> (pg_config of pgrx.toml): this release's library, install
#       script, upgrade scripts and primary control file, and every earlier release a database
#       may still be at (CA_OLD_RELEASES of lib.sh: its library, install script and secondary
#       control file), so `ALTER EXTENSION compute_auction UPDATE` works after installing it
#   compute-auction-driver_<version>_amd64.deb  the release driver at /usr/bin, its systemd unit
#       (installed, not enabled or started) and its environment file /etc/default/... (a conffile)
# The version is the workspace's (Cargo.toml). Nothing is written outside target/.
# Needs the build tools of scripts/setup.sh (cargo-pgrx, pgrx init); installs them if missing.
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

ensure_debian_packages
ensure_cargo_pgrx
cd "$CA_ROOT"

VERSION="$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "compute_auction"))')"
ARCH="$(dpkg --print-architecture)"
[ "$ARCH" = amd64 ] || die "packages are built for amd64, this machine is $ARCH"
EXT_PKG="postgresql-${PG_MAJOR}-compute-auction"
DRV_PKG="compute-auction-driver"
DIST="$CA_ROOT/target/dist"
WORK="$CA_ROOT/target/package"
MAINTAINER="compute_auction maintainers <compute-auction@localhost>"
PKGLIBDIR="$("$PG_CONFIG" --pkglibdir)"
EXTDIR="$("$PG_CONFIG" --sharedir)/extension"
case "$PKGLIBDIR:$EXTDIR" in
  "/usr/lib/postgresql/$PG_MAJOR/lib:/usr/share/postgresql/$PG_MAJOR/extension") ;;
  *) die "$PG_CONFIG is not Debian's PostgreSQL $PG_MAJOR (pkglibdir $PKGLIBDIR, extension dir $EXTDIR)" ;;
esac
rm -rf "$WORK"
mkdir -p "$DIST" "$WORK"

# write_copyright FILE: the machine-readable Debian copyright file, PostgreSQL License.
write_copyright() {
  mkdir -p "$(dirname "$1")"
  cat >"$1" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: compute_auction
Source: the compute_auction repository

Files: *
Copyright: 2026 The compute_auction developers
License: PostgreSQL

License: PostgreSQL
 Permission to use, copy, modify, and distribute this software and its
 documentation for any purpose, without fee, and without a written agreement
 is hereby granted, provided that the above copyright notice and this
 paragraph and the following two paragraphs appear in all copies.
 .
 IN NO EVENT SHALL THE AUTHORS BE LIABLE TO ANY PARTY FOR DIRECT, INDIRECT,
 SPECIAL, INCIDENTAL, OR CONSEQUENTIAL DAMAGES, INCLUDING LOST PROFITS,
 ARISING OUT OF THE USE OF THIS SOFTWARE AND ITS DOCUMENTATION, EVEN IF THE
 AUTHORS HAVE BEEN ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
 .
 THE AUTHORS SPECIFICALLY DISCLAIM ANY WARRANTIES, INCLUDING, BUT NOT LIMITED
 TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR
 PURPOSE. THE SOFTWARE PROVIDED HEREUNDER IS ON AN "AS IS" BASIS, AND THE
 AUTHORS HAVE NO OBLIGATIONS TO PROVIDE MAINTENANCE, SUPPORT, UPDATES,
 ENHANCEMENTS, OR MODIFICATIONS.
EOF
}

# build_deb ROOT PACKAGE DEPENDS DESCRIPTION: writes ROOT/DEBIAN/control and packs ROOT.
build_deb() {
  local root="$1" pkg="$2" depends="$3" description="$4"
  local deb="$DIST/${pkg}_${VERSION}_${ARCH}.deb"
  find "$root" -type d -exec chmod 755 {} +
  mkdir -p "$root/DEBIAN"
  cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Section: database
Priority: optional
Description: $description
EOF
  rm -f "$deb"
  quietly dpkg-deb --build --root-owner-group "$root" "$deb"
  log "built ${deb#"$CA_ROOT"/}"
}

# --- the extension -------------------------------------------------------------------------
# Earlier releases first: building one overwrites target/release's library of the current tree
# and removes it (lib.sh says why), so the current release is packaged after them.
ext_root="$WORK/$EXT_PKG"
mkdir -p "$ext_root$PKGLIBDIR" "$ext_root$EXTDIR"
for r in "${CA_OLD_RELEASES[@]}"; do
  # shellcheck disable=SC2086 # "VERSION COMMIT" splits into two arguments
  build_old_release $r
  old_version="${r%% *}"
  log "adding compute_auction $old_version (library, install script, secondary control file)"
  install -m 644 "$OLD_RELEASE_CACHE"/lib/*.so "$ext_root$PKGLIBDIR/"
  install -m 644 "$OLD_RELEASE_CACHE/extension/compute_auction--$old_version.sql" "$ext_root$EXTDIR/"
  if [ -f "sql/compute_auction--$old_version.control" ]; then
    install -m 644 "sql/compute_auction--$old_version.control" "$ext_root$EXTDIR/"
  fi
done

log "cargo pgrx package (release; shares target/release with install_extension)"
pgrx_out="$WORK/pgrx-out"
(cd extension && quietly cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$pgrx_out")
[ -f "$pgrx_out$PKGLIBDIR/compute_auction-$VERSION.so" ] ||
  die "cargo pgrx package made no compute_auction-$VERSION.so (is module_pathname back in extension/compute_auction.control?)"
for f in "$pgrx_out$PKGLIBDIR"/* "$pgrx_out$EXTDIR"/*; do
  dest="$ext_root${f#"$pgrx_out"}"
  [ ! -e "$dest" ] || die "$(basename "$f") is both in this release and in an earlier one"
  install -m 644 "$f" "$dest"
done
# PostgreSQL loads the library with dlopen; it needs no symbols for debugging in the package
strip --strip-unneeded "$ext_root$PKGLIBDIR"/*.so
write_copyright "$ext_root/usr/share/doc/$EXT_PKG/copyright"
build_deb "$ext_root" "$EXT_PKG" "postgresql-$PG_MAJOR" \
  "compute_auction: a uniform-price auction for AI-agent compute, inside PostgreSQL $PG_MAJOR
 The compute_auction extension (CREATE EXTENSION compute_auction) at version $VERSION,
 and every earlier release a database may still be at, so that
 ALTER EXTENSION compute_auction UPDATE works."

# --- the driver ----------------------------------------------------------------------------
log "building the driver (release)"
cargo build --release -q -p compute-auction-driver
drv_root="$WORK/$DRV_PKG"
install -D -m 755 target/release/compute-auction-driver "$drv_root/usr/bin/compute-auction-driver"
strip --strip-unneeded "$drv_root/usr/bin/compute-auction-driver"
install -D -m 644 /dev/stdin "$drv_root/lib/systemd/system/compute-auction-driver.service" <<'EOF'
# compute-auction-driver: clears compute_auction rounds on a schedule and serves its JSON API,
# /healthz, /metrics and the /resources dashboard. Installed, not enabled: set DATABASE_URL in
# /etc/default/compute-auction-driver, then `systemctl enable --now compute-auction-driver`.
[Unit]
Description=compute_auction market driver (clearing rounds, JSON API, dashboard)
After=network-online.target postgresql.service
Wants=network-online.target

[Service]
Type=exec
EnvironmentFile=/etc/default/compute-auction-driver
# $COMPUTE_AUCTION_DRIVER_ARGS: serve's flags (compute-auction-driver serve --help), from the
# environment file; unset, it adds nothing
ExecStart=/usr/bin/compute-auction-driver serve $COMPUTE_AUCTION_DRIVER_ARGS
Restart=on-failure
RestartSec=5s
DynamicUser=yes
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes

[Install]
WantedBy=multi-user.target
EOF
install -D -m 644 /dev/stdin "$drv_root/etc/default/compute-auction-driver" <<'EOF'
# Settings of compute-auction-driver.service (read with EnvironmentFile=; KEY=value lines).
# After editing: systemctl restart compute-auction-driver

# The database with the compute_auction extension (0.2.0 or later), as an operator login that
# is not a superuser (README, "Running against an existing server"). Required.
#DATABASE_URL=postgresql://auction_driver:secret@db.example.com:5432/mydb

# Every option of `serve` has its variable (compute-auction-driver serve --help), e.g.
#COMPUTE_AUCTION_INTERVAL=10s
#COMPUTE_AUCTION_LISTEN=127.0.0.1:8080
#COMPUTE_AUCTION_DAILY_BUDGET_TOKENS=1000000
# reads (order book, bid status, stats, price advice, dashboard) from a streaming standby:
#COMPUTE_AUCTION_READ_DATABASE_URL=postgresql://auction_driver:secret@standby.example.com:5432/mydb
# or pass flags of `serve` as they are:
#COMPUTE_AUCTION_DRIVER_ARGS=--interval 10s --listen 127.0.0.1:8080

# Log filter (tracing's RUST_LOG syntax); default info.
#RUST_LOG=info
EOF
mkdir -p "$drv_root/DEBIAN"
echo /etc/default/compute-auction-driver >"$drv_root/DEBIAN/conffiles"
write_copyright "$drv_root/usr/share/doc/$DRV_PKG/copyright"
glibc="$(objdump -T "$drv_root/usr/bin/compute-auction-driver" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)"
[ -n "$glibc" ] || die "could not read the glibc version the driver needs"
build_deb "$drv_root" "$DRV_PKG" "libc6 (>= $glibc), libgcc-s1" \
  "compute_auction market driver: clearing rounds, JSON API, dashboard
 Runs compute_auction clearing rounds on a schedule (with leader election
 among several drivers) and serves the market's JSON API and the /resources
 dashboard. Ships a systemd unit, compute-auction-driver.service, that is
 not enabled: set DATABASE_URL in /etc/default/compute-auction-driver first."
