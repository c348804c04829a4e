"""A pg_auto_failover formation built from nothing for the HA test: a monitor, a primary and a
synchronous secondary on local ports, every server process run as the postgres OS user, with
the tuned timeouts of ../shared/notes/ha-recipe.md (failover in about 10 s instead of about 50).

pg_autoctl keeps its configuration, state and pid files under $HOME, $XDG_CONFIG_HOME,
$XDG_DATA_HOME and $XDG_RUNTIME_DIR: every pg_autoctl call here points them into the scratch
directory, so nothing lands in the postgres user's home or the temp directory and two
formations never share state.

The first data node is initdb'ed here (so pg_cron is preloaded from its first start) and then
handed to `pg_autoctl create postgres`, which registers the existing cluster; the second is
cloned from it by pg_autoctl (pg_basebackup), postgresql.conf included, so both data nodes
preload pg_cron. Ports are on pg_autoctl's command line (its own postgresql-auto-failover.conf),
never in a file that pg_basebackup or pg_rewind copy from one node to the other.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

PG_BINDIR = os.environ.get("CA_PG_BINDIR", "/usr/lib/postgresql/15/bin")
RUNAS = os.environ.get("CA_PG_RUNAS", "postgres")
PG_AUTOCTL = shutil.which("pg_autoctl") or "/usr/bin/pg_autoctl"

# Monitor settings (all reload without a restart): the recipe's tuned failover timeouts.
MONITOR_TIMEOUTS = {
    "pgautofailover.health_check_period": 1000,
    "pgautofailover.health_check_timeout": 1000,
    "pgautofailover.health_check_max_retries": 1,
    "pgautofailover.health_check_retry_delay": 500,
    "pgautofailover.node_considered_unhealthy_timeout": 3000,
    "pgautofailover.primary_demote_timeout": 6000,
}
# On each data node (keeper setting, seconds): below primary_demote_timeout.
NETWORK_PARTITION_TIMEOUT = 4

PRIMARY_STATES = ("single", "wait_primary", "primary")


def wait_for(fn, timeout: float, what: str, interval: float = 0.2):
    """Polls fn() until it returns something truthy; the timeout only detects a hang."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - polled while servers start and stop
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last error: {last!r})")
        time.sleep(interval)


@dataclass
class Node:
    name: str
    port: int
    pgdata: Path
    log: Path
    proc: subprocess.Popen | None = None


class Formation:
    def __init__(self, base: Path, ports: tuple[int, int, int], dbname: str) -> None:
        self.base = base
        self.dbname = dbname
        self.monitor_port = ports[0]
        self.monitor_pgdata = base / "monitor"
        self.monitor_proc: subprocess.Popen | None = None
        self.nodes = {
            f"node{i}": Node(f"node{i}", ports[i], base / f"node{i}", base / "logs" / f"node{i}.log") for i in (1, 2)
        }
        self.home = base / "home"
        self.run_dir = base / "run"
        self.events: list[str] = []

    # ------------------------------------------------------------------ plumbing --

    def env(self) -> list[str]:
        return [
            f"HOME={self.home}",
            f"XDG_CONFIG_HOME={self.home}/.config",
            f"XDG_DATA_HOME={self.home}/.local/share",
            f"XDG_RUNTIME_DIR={self.run_dir}",
            f"PATH={PG_BINDIR}:/usr/bin:/bin",
            "PG_AUTOCTL_DEBUG=0",
        ]

    def asp(self, *cmd: str) -> list[str]:
        """A command line run as the postgres OS user with the scratch HOME/XDG directories."""
        return ["sudo", "-u", RUNAS, "--", "env", *self.env(), *cmd]

    def run(self, *cmd: str, timeout: float = 120) -> str:
        p = subprocess.run(self.asp(*cmd), capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p.stdout

    def spawn(self, log: Path, *cmd: str) -> subprocess.Popen:
        with open(log, "ab") as f:  # the child keeps its own descriptor
            f.write(f"\n===== {' '.join(cmd)} at {time.strftime('%H:%M:%S')} =====\n".encode())
            f.flush()
            return subprocess.Popen(
                self.asp(*cmd), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def monitor_url(self, user: str = "autoctl_node", db: str = "pg_auto_failover") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.monitor_port}/{db}?sslmode=disable&connect_timeout=2"

    def node_url(self, node: Node, user: str = "postgres", db: str | None = None) -> str:
        return f"postgresql://{user}@127.0.0.1:{node.port}/{db or self.dbname}?connect_timeout=2"

    def uri(self, user: str) -> str:
        """The formation's multi-host URI (as `pg_autoctl show uri` gives it) for `user`."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes.values())
        return f"postgresql://{user}@{hosts}/{self.dbname}?target_session_attrs=read-write&connect_timeout=2"

    def show_uri(self) -> str:
        return self.run(PG_AUTOCTL, "show", "uri", "--pgdata", str(self.monitor_pgdata), "--formation", "default")

    def states(self) -> dict[str, tuple[str, str]]:
        """node name -> (reported state, goal state), from the monitor."""
        with psycopg.connect(self.monitor_url(), autocommit=True) as c:
            rows = c.execute(
                "SELECT nodename, reportedstate::text, goalstate::text FROM pgautofailover.node ORDER BY nodeid"
            ).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def primary(self) -> Node | None:
        """The node the monitor has as (settled) primary: reported == goal in a primary state."""
        for name, (rep, goal) in self.states().items():
            if rep == goal and rep in PRIMARY_STATES:
                return self.nodes[name]
        return None

    def healthy(self) -> tuple[Node, Node] | None:
        """(primary, secondary) when the formation is back to a primary and a synchronous secondary."""
        st = self.states()
        prim = [n for n, s in st.items() if s == ("primary", "primary")]
        sec = [n for n, s in st.items() if s == ("secondary", "secondary")]
        if len(st) == 2 and len(prim) == 1 and len(sec) == 1:
            return self.nodes[prim[0]], self.nodes[sec[0]]
        return None

    def wait_healthy(self, timeout: float = 120) -> tuple[Node, Node]:
        return wait_for(self.healthy, timeout, f"primary + secondary (states: {self._states_text()})")

    def _states_text(self) -> str:
        try:
            return str(self.states())
        except Exception as e:  # noqa: BLE001 - only for a message
            return f"monitor unreachable: {e}"

    # ------------------------------------------------------------------ build --

    def build(self, node_conf: list[str]) -> None:
        """Monitor, then node1 (a cluster initdb'ed here with node_conf, registered as single),
        then node2 (cloned by pg_autoctl); returns once they are primary + secondary."""
        for d in (self.home, self.run_dir, self.base / "logs"):
            d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", f"{RUNAS}:{RUNAS}", str(self.base)], check=True)
        os.chmod(self.run_dir, 0o700)
        t0 = time.monotonic()
        mon = str(self.monitor_pgdata)
        self.run(
            PG_AUTOCTL, "create", "monitor", "--pgdata", mon, "--pgport", str(self.monitor_port),
            "--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl", "--pgctl", f"{PG_BINDIR}/pg_ctl",
        )  # fmt: skip
        self.run(PG_AUTOCTL, "config", "set", "--pgdata", mon, "postgresql.listen_addresses", "127.0.0.1")
        self.monitor_proc = self.spawn(self.base / "logs" / "monitor.log", PG_AUTOCTL, "run", "--pgdata", mon)
        wait_for(lambda: self.states() is not None, 60, "the monitor to accept connections")
        with psycopg.connect(self.monitor_url(user="postgres"), autocommit=True) as c:
            for k, v in MONITOR_TIMEOUTS.items():
                c.execute(f"ALTER SYSTEM SET {k} = {int(v)}")  # names and values are constants above
            c.execute("SELECT pg_reload_conf()")
        self.events.append(f"monitor up after {time.monotonic() - t0:.1f} s")

        n1 = self.nodes["node1"]
        n1.pgdata.mkdir()
        subprocess.run(["chown", f"{RUNAS}:{RUNAS}", str(n1.pgdata)], check=True)
        os.chmod(n1.pgdata, 0o700)
        self.run(f"{PG_BINDIR}/initdb", "-D", str(n1.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--locale=C.UTF-8")  # fmt: skip
        with open(n1.pgdata / "postgresql.conf", "a") as f:
            f.write("\n# compute_auction HA test (before pg_autoctl's include, which sets the port)\n")
            for line in node_conf:
                f.write(line + "\n")
        self.create_node(n1)
        want = {"node1": ("single", "single")}
        wait_for(lambda: self.states() == want, 120, "node1 to be single")
        # pg_autoctl clones node2 with pg_basebackup, which waits for a spread checkpoint: with
        # the buffers already clean that checkpoint has nothing to write (else: ~90 s here)
        with psycopg.connect(self.node_url(n1, db="postgres"), autocommit=True) as c:
            c.execute("CHECKPOINT")
        self.create_node(self.nodes["node2"])
        self.wait_healthy()
        for node in self.nodes.values():
            self.run(PG_AUTOCTL, "config", "set", "--pgdata", str(node.pgdata),
                     "timeout.network_partition_timeout", str(NETWORK_PARTITION_TIMEOUT))  # fmt: skip
            self.run(PG_AUTOCTL, "reload", "--pgdata", str(node.pgdata))
        self.events.append(f"formation healthy after {time.monotonic() - t0:.1f} s")

    def create_node(self, node: Node) -> None:
        node.proc = self.spawn(
            node.log, PG_AUTOCTL, "create", "postgres", "--pgdata", str(node.pgdata), "--pgport", str(node.port),
            "--hostname", "127.0.0.1", "--name", node.name, "--listen", "127.0.0.1", "--auth", "trust", "--no-ssl",
            "--dbname", self.dbname, "--pgctl", f"{PG_BINDIR}/pg_ctl", "--monitor", self.monitor_url(), "--run",
        )  # fmt: skip

    # ------------------------------------------------------------------ faults --

    def pidfile(self, pgdata: Path) -> Path:
        return self.run_dir / "pg_autoctl" / str(pgdata).lstrip("/") / "pg_autoctl.pid"

    def node_pids(self, node: Node) -> list[int]:
        """The pg_autoctl supervisor and its children (its pid file) and the postmaster."""
        pids: list[int] = []
        with contextlib.suppress(OSError):
            lines = self.pidfile(node.pgdata).read_text().splitlines()
            # line 1: the supervisor; then its data directory, versions, a semaphore id; then one
            # "<pid> <service>" line per child service (postgres, node-active)
            if lines and lines[0].strip().isdigit():
                pids.append(int(lines[0]))
            pids += [int(m.group(1)) for line in lines[1:] if (m := re.fullmatch(r"(\d+) [a-z][a-z-]*", line.strip()))]
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.append(int((node.pgdata / "postmaster.pid").read_text().splitlines()[0]))
        # a stale pid file may name a pid that another process has now: only ours
        return [p for p in pids if self._is_ours(p, node.pgdata)]

    def _is_ours(self, pid: int, pgdata: Path) -> bool:
        """Whether pid is a pg_autoctl or postgres process of this formation: its command line
        names the data directory, or (pg_autoctl's children rename themselves) its environment
        has this formation's XDG_RUNTIME_DIR."""
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        if b"pg_autoctl" not in cmd and b"postgres" not in cmd:
            return False
        return str(pgdata).encode() in cmd or f"XDG_RUNTIME_DIR={self.run_dir}".encode() in env

    def kill_node(self, node: Node) -> list[int]:
        """SIGKILL of the whole node at once: keeper processes and postmaster (its backends die
        with it: they find their postmaster gone and exit)."""
        pids = self.node_pids(node)
        assert pids, f"no pids found for {node.name}"
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        # the postmaster's children notice it is gone; wait until the port refuses connections
        wait_for(lambda: not _port_open(node.port), 30, f"{node.name}'s port to close")
        if node.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(10)
        return pids

    def restart_node(self, node: Node) -> None:
        """Starts the keeper of a killed node again: it rejoins as secondary by itself."""
        node.proc = self.spawn(node.log, PG_AUTOCTL, "run", "--pgdata", str(node.pgdata))

    # ------------------------------------------------------------------ teardown --

    def teardown(self) -> None:
        """Stops everything, however far build() got; never raises."""
        for pgdata in [n.pgdata for n in self.nodes.values()] + [self.monitor_pgdata]:
            if pgdata.exists():
                with contextlib.suppress(Exception):
                    subprocess.run(
                        self.asp(PG_AUTOCTL, "stop", "--pgdata", str(pgdata)), capture_output=True, timeout=30
                    )
        procs = [n.proc for n in self.nodes.values()] + [self.monitor_proc]
        for p in procs:
            if p is not None:
                with contextlib.suppress(Exception):
                    p.wait(15)
        # whatever is still running (a stop that failed): SIGKILL by pid file, then postmasters
        for pgdata in [n.pgdata for n in self.nodes.values()] + [self.monitor_pgdata]:
            node = Node("x", 0, pgdata, Path("/dev/null"))
            for pid in self.node_pids(node):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for p in procs:
            if p is not None and p.poll() is None:
                with contextlib.suppress(Exception):
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(10)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
