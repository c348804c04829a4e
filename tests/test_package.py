"""The Debian packages of scripts/package.sh (scripts/test.sh builds them into target/dist/ first).

The extension package is tested without touching /usr: PostgreSQL's installation
(/usr/lib/postgresql/<major>, /usr/share/postgresql/<major>) is copied into a scratch prefix
under target/, in the same relative layout, so that the copied server finds the copied share
and lib directories (PostgreSQL locates them relative to its binary); every compute_auction
file is removed from the copy, the package is unpacked into it with `dpkg-deb -x`, and a cluster
of the copied binaries (as the postgres OS user, on a port of its own) runs a market and the
upgrade of a database created at 0.1.0. So the package alone must carry everything a database
needs. The driver package: its control data and files, its systemd unit (systemd-analyze verify
where that works here, and its keys), its environment file, and its binary's --version.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import tomllib
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent
with open(ROOT / "Cargo.toml", "rb") as _f:
    VERSION = tomllib.load(_f)["workspace"]["package"]["version"]
with open(ROOT / "pgrx.toml", "rb") as _f:
    _PGRX = tomllib.load(_f)
PG_MAJOR = _PGRX["postgres"]["major"]
RUNAS = os.environ.get("CA_PG_RUNAS", _PGRX["postgres"]["run_as"])
DIST = ROOT / "target" / "dist"
EXT_PKG = f"postgresql-{PG_MAJOR}-compute-auction"
DRV_PKG = "compute-auction-driver"
EXT_DEB = DIST / f"{EXT_PKG}_{VERSION}_amd64.deb"
DRV_DEB = DIST / f"{DRV_PKG}_{VERSION}_amd64.deb"
LIBDIR = f"usr/lib/postgresql/{PG_MAJOR}"
SHAREDIR = f"usr/share/postgresql/{PG_MAJOR}"
# The earlier releases a database may still be at (scripts/lib.sh CA_OLD_RELEASES), each with its
# library: 0.1.0's is unversioned, and its install script needs its secondary control file.
OLD_RELEASES = {"0.1.0": "compute_auction.so"}
# Ports of this test's own server (28880-28889 are free for private servers of the tests).
PORTS = range(28880, 28890)


def run(*cmd: str | Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


def deb_fields(deb: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in run("dpkg-deb", "-f", deb).stdout.splitlines():
        if line and not line[0].isspace():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def deb_files(deb: Path) -> dict[str, str]:
    """Every entry that is not a directory, by path (without the leading "."), with its mode."""
    files = {}
    for line in run("dpkg-deb", "-c", deb).stdout.splitlines():
        mode, *_, path = line.split(None, 5)
        if not mode.startswith("d"):
            files[path.removeprefix(".")] = mode
    return files


def deb_control_members(deb: Path) -> set[str]:
    ctrl = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], check=True, capture_output=True)
    listing = subprocess.run(["tar", "-t"], input=ctrl.stdout, check=True, capture_output=True)
    return {n.removeprefix("./") for n in listing.stdout.decode().split() if n not in ("./", ".")}


def need(deb: Path) -> None:
    assert deb.exists(), f"{deb} missing: scripts/package.sh builds it (scripts/test.sh runs it first)"


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {PORTS}")


class PackagedServer:
    """A cluster of a private copy of PostgreSQL with only the package's compute_auction files."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.bindir = prefix / LIBDIR / "bin"
        self.data = prefix / "data"
        self.port = free_port()

    def as_pg(self, *cmd: str | Path) -> None:
        run("sudo", "-u", RUNAS, "--", *cmd)

    def start(self) -> None:
        self.data.mkdir(mode=0o700)
        shutil.chown(self.data, RUNAS)
        self.as_pg(self.bindir / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.data}'\n")
            f.write("fsync = off\n")
        self.as_pg(self.bindir / "pg_ctl", "-D", self.data, "-l", self.data / "server.log", "-w", "-t", "60", "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [
                    "sudo",
                    "-u",
                    RUNAS,
                    "--",
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ],
                check=False,
                capture_output=True,
            )

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@pytest.fixture(scope="module")
def packaged_server():
    need(EXT_DEB)
    # under target/ (which scripts/test.sh makes reachable for the postgres OS user), not /tmp
    prefix = Path(tempfile.mkdtemp(prefix="pkgtest-", dir=ROOT / "target"))
    prefix.chmod(0o755)
    server = PackagedServer(prefix)
    try:
        shutil.copytree(f"/{LIBDIR}", prefix / LIBDIR, symlinks=True)
        shutil.copytree(f"/{SHAREDIR}", prefix / SHAREDIR, symlinks=True)
        for d in (prefix / LIBDIR, prefix / "usr"):
            while d != prefix:
                d.chmod(0o755)
                d = d.parent
        # only the package's compute_auction files: none of what scripts/test.sh installed
        for f in [
            *(prefix / LIBDIR / "lib").glob("compute_auction*"),
            *(prefix / SHAREDIR / "extension").glob("compute_auction*"),
        ]:
            f.unlink()
        pg_config = prefix / LIBDIR / "bin" / "pg_config"
        assert run(pg_config, "--sharedir").stdout.strip() == str(prefix / SHAREDIR)
        assert run(pg_config, "--pkglibdir").stdout.strip() == str(prefix / LIBDIR / "lib")
        run("dpkg-deb", "-x", EXT_DEB, prefix)
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(prefix, ignore_errors=True)


def expected_extension_files() -> set[str]:
    ext = f"/{SHAREDIR}/extension"
    files = {
        f"/{LIBDIR}/lib/compute_auction-{VERSION}.so",
        f"{ext}/compute_auction.control",
        f"{ext}/compute_auction--{VERSION}.sql",
        f"/usr/share/doc/{EXT_PKG}/copyright",
    }
    files |= {f"{ext}/{p.name}" for p in (ROOT / "sql").glob("compute_auction--*--*.sql")}
    for version, library in OLD_RELEASES.items():
        files |= {f"/{LIBDIR}/lib/{library}", f"{ext}/compute_auction--{version}.sql"}
        files.add(f"{ext}/compute_auction--{version}.control")
    return files


def test_extension_package_control():
    need(EXT_DEB)
    fields = deb_fields(EXT_DEB)
    assert fields["Package"] == EXT_PKG
    assert fields["Version"] == VERSION
    assert fields["Architecture"] == "amd64"
    assert fields["Depends"] == f"postgresql-{PG_MAJOR}"
    # nothing runs at install time
    assert deb_control_members(EXT_DEB) == {"control"}


def test_extension_package_files():
    need(EXT_DEB)
    files = deb_files(EXT_DEB)
    assert set(files) == expected_extension_files()
    assert all(mode == "-rw-r--r--" for mode in files.values()), files


# the libraries the extension's C functions are in
# (without "$libdir/": 0.2.0's install script names its library bare, 0.1.0's MODULE_PATHNAME)
LIBRARIES = """SELECT DISTINCT regexp_replace(probin, '^[$]libdir/', '') FROM pg_proc
                WHERE pronamespace = 'compute_auction'::regnamespace AND probin IS NOT NULL"""


def test_extension_copyright(packaged_server: PackagedServer):
    text = (packaged_server.prefix / f"usr/share/doc/{EXT_PKG}/copyright").read_text()
    assert "License: PostgreSQL" in text


def test_market_on_the_packaged_server(packaged_server: PackagedServer):
    url = packaged_server.new_database("pkg_market")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION compute_auction")
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'compute_auction'").fetchone() == (
            VERSION,
        )
        assert conn.execute(LIBRARIES).fetchall() == [(f"compute_auction-{VERSION}",)]
        q = "compute_auction."
        assert conn.execute(f"SELECT {q}open_account('agent-7', 'agent', 50000)").fetchone() == (50000,)
        conn.execute(f"SELECT {q}open_account('agent-8', 'agent', 50000)")
        conn.execute(f"SELECT {q}offer_slot('gpu-01', now() - interval '1 minute', 0)")
        bid = conn.execute(f"SELECT {q}place_bid('agent-7', 'task-1', 3000)").fetchone()[0]
        conn.execute(f"SELECT {q}place_bid('agent-8', 'task-2', 1000)")
        won = conn.execute(f"SELECT slot_id, bid_id, clearing_price_tokens FROM {q}clear_round()").fetchall()
        assert won == [("gpu-01", bid, 1000)]
        assert conn.execute(f"SELECT bid_id FROM {q}claim_slot('gpu-01')").fetchall() == [(bid,)]
        assert conn.execute(f"SELECT {q}settle('gpu-01', 900, 0.8)").fetchone()[0] >= 0
        assert conn.execute(f"SELECT count(*) FROM {q}audit()").fetchone() == (0,)
        # a function that is new in 0.2.0 runs: compute_auction-0.2.0.so is 0.2.0's build, not
        # an earlier release's (lib.sh, build_old_release, says how that could happen)
        pending = conn.execute(f"SELECT * FROM {q}pending_balance('agent-8')").fetchall()
        assert pending == conn.execute(f"SELECT * FROM {q}balance('agent-8')").fetchall() == [(49000, 1000)]


@pytest.mark.parametrize("old_version", sorted(OLD_RELEASES))
def test_old_release_then_update_on_the_packaged_server(packaged_server: PackagedServer, old_version: str):
    url = packaged_server.new_database("pkg_from_" + old_version.replace(".", "_"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE EXTENSION compute_auction VERSION '{old_version}'")
        old_library = OLD_RELEASES[old_version].removesuffix(".so")
        assert conn.execute(LIBRARIES).fetchall() == [(old_library,)]
        assert conn.execute("SELECT compute_auction.open_account('agent-1', 'agent', 100)").fetchone() == (100,)
        conn.execute("ALTER EXTENSION compute_auction UPDATE")
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'compute_auction'").fetchone() == (
            VERSION,
        )
        assert conn.execute(LIBRARIES).fetchall() == [(f"compute_auction-{VERSION}",)]
        assert conn.execute("SELECT balance_tokens FROM compute_auction.balance('agent-1')").fetchone() == (100,)
        assert conn.execute("SELECT count(*) FROM compute_auction.audit()").fetchone() == (0,)


DRIVER_FILES = {
    "/usr/bin/compute-auction-driver": "-rwxr-xr-x",
    "/lib/systemd/system/compute-auction-driver.service": "-rw-r--r--",
    "/etc/default/compute-auction-driver": "-rw-r--r--",
    f"/usr/share/doc/{DRV_PKG}/copyright": "-rw-r--r--",
}


def test_driver_package_control_and_files():
    need(DRV_DEB)
    fields = deb_fields(DRV_DEB)
    assert fields["Package"] == DRV_PKG
    assert fields["Version"] == VERSION
    assert fields["Architecture"] == "amd64"
    assert fields["Depends"].startswith("libc6 (>= ")
    assert deb_files(DRV_DEB) == DRIVER_FILES
    # the environment file is a conffile; no maintainer scripts: the package never enables or
    # starts the service
    assert deb_control_members(DRV_DEB) == {"control", "conffiles"}
    conffiles = subprocess.run(
        ["dpkg-deb", "-I", str(DRV_DEB), "conffiles"], check=True, capture_output=True, text=True
    )
    assert conffiles.stdout.split() == ["/etc/default/compute-auction-driver"]


@pytest.fixture(scope="module")
def driver_tree(tmp_path_factory) -> Path:
    need(DRV_DEB)
    root = tmp_path_factory.mktemp("driver-deb")
    run("dpkg-deb", "-x", DRV_DEB, root)
    return root


def unit_sections(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            assert current is not None, line
            current[key.strip()] = value.strip()
    return sections


def systemd_analyze_works(tmp: Path) -> bool:
    """systemd-analyze verify exists and verifies a known-good unit here (in some containers it
    cannot: then the unit's keys are all that is checked)."""
    if shutil.which("systemd-analyze") is None:
        return False
    probe = tmp / "probe"
    probe.mkdir()
    (probe / "ca-probe.service").write_text(
        "[Unit]\nDescription=probe\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
    )
    r = subprocess.run(["systemd-analyze", "verify", str(probe / "ca-probe.service")], capture_output=True, text=True)
    return r.returncode == 0 and not r.stderr.strip()


def test_driver_unit(driver_tree: Path, tmp_path: Path):
    text = (driver_tree / "lib/systemd/system/compute-auction-driver.service").read_text()
    unit = unit_sections(text)
    assert unit["Unit"]["Description"]
    assert re.fullmatch(r"/usr/bin/compute-auction-driver serve( \$\w+)?", unit["Service"]["ExecStart"])
    assert unit["Service"]["EnvironmentFile"] == "/etc/default/compute-auction-driver"
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Service"]["DynamicUser"] == "yes" or unit["Service"].get("User") not in (None, "root")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    if systemd_analyze_works(tmp_path):
        # verify checks ExecStart's binary exists: point it at the extracted one
        checked = tmp_path / "unit"
        checked.mkdir()
        binary = driver_tree / "usr/bin/compute-auction-driver"
        (checked / "compute-auction-driver.service").write_text(
            text.replace("/usr/bin/compute-auction-driver", str(binary))
        )
        r = subprocess.run(
            ["systemd-analyze", "verify", str(checked / "compute-auction-driver.service")],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_driver_environment_file(driver_tree: Path):
    lines = (driver_tree / "etc/default/compute-auction-driver").read_text().splitlines()
    # shipped commented out: nothing is set until the operator sets it
    assert all(not line.strip() or line.startswith("#") for line in lines), lines
    assert any(re.match(r"#DATABASE_URL=postgres(ql)?://", line) for line in lines), lines


def test_driver_binary_version(driver_tree: Path):
    out = run(driver_tree / "usr/bin/compute-auction-driver", "--version").stdout.strip()
    assert out == f"compute-auction-driver {VERSION}"
