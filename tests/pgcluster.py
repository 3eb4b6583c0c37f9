"""Real PostgreSQL clusters for tests: a primary and streaming standbys, built with the embedded
server's own binaries (the `pgserver` package ships initdb, pg_ctl, pg_basebackup, postgres).

    with pg_cluster(tmp_path / "pg") as cluster:
        primary = cluster.start_primary()
        standby = cluster.add_standby(synchronous=True)  # pg_basebackup -R, streaming
        dsn = cluster.dsn("postgres")                   # postgresql://h1,h2/...read-write
        cluster.kill(primary)                           # kill -9 of the postmaster
        cluster.promote(standby)                        # pg_ctl promote, waits until writable

Every node listens on 127.0.0.1 (a port of its own, no unix socket) and trusts every local
connection, replication included, as the embedded server does. Commits are not fsynced (a
kill -9 of a process keeps the operating system's page cache; only a machine crash would need
it). A synchronous standby is named in the primary's `synchronous_standby_names`, so a commit
the primary acknowledged is on the standby; a standby names none itself, so once promoted it
takes writes without waiting for anybody. The methods block (they run pg_ctl): from a running
event loop, call the slow ones (`add_standby`, `promote`, `stop`) through `asyncio.to_thread`.
`teardown` (run by `pg_cluster` even when the test fails) ends every process a node started,
the children of a killed postmaster too, and removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from tests.helpers import free_port

SUPERUSER = "postgres"
# Root may not run postgres: pgserver runs it as this system user, and so does this module.
SYSTEM_USER = "pgserver" if os.geteuid() == 0 else None


def bin_dir() -> Path:
    """The embedded server's binaries (initdb, pg_ctl, pg_basebackup, postgres, psql...)."""
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


@dataclass
class Node:
    name: str
    pgdata: Path
    port: int
    log: Path
    pids: set[int] = field(default_factory=set)  # every process of it seen, for teardown

    def dsn(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        """This node alone."""
        return f"postgresql://{quote(user, safe='')}@127.0.0.1:{self.port}/{database}"

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid (None when it is not running)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _running(pid) else None

    def remember_processes(self) -> None:
        pid = self.postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            self.pids |= {pid, *(child.pid for child in proc.children(recursive=True))}


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[Node] = []

    # -- building --------------------------------------------------------------------------

    def start_primary(self, name: str = "primary", **settings: str | int) -> Node:
        """initdb and start a primary ready to stream (wal_level replica, wal senders, trust
        for replication from 127.0.0.1). `settings` go into its postgresql.conf."""
        self._prepare_root()
        node = self._node(name)
        _run(bin_dir() / "initdb", "-D", node.pgdata, "-U", SUPERUSER, "--auth=trust",
             "--encoding=utf8", "--no-sync")
        self._configure(node, {
            "listen_addresses": "127.0.0.1", "unix_socket_directories": "",
            "wal_level": "replica", "max_wal_senders": 8, "wal_keep_size": "256MB",
            "hot_standby": "on", "fsync": "off", "max_connections": 100,
            "shared_buffers": "32MB", **settings})
        self.start(node)
        return node

    def add_standby(self, name: str = "standby", *, synchronous: bool = True,
                    source: Node | None = None, timeout: float = 30.0) -> Node:
        """A streaming standby of the primary (pg_basebackup -R), hot (it answers reads).
        A synchronous one is named in the primary's synchronous_standby_names; this returns
        once the primary reports it streaming (and `sync` when synchronous)."""
        primary = source or self.primary()
        node = self._node(name)
        _run(bin_dir() / "pg_basebackup", "-D", node.pgdata, "-h", "127.0.0.1",
             "-p", primary.port, "-U", SUPERUSER, "-R", "-X", "stream", "-c", "fast",
             "--no-sync")
        # pg_basebackup copied the primary's configuration: this node's own port, its name
        # (the walreceiver's application_name) and no synchronous standby of its own.
        self._configure(node, {"port": node.port, "cluster_name": name,
                               "synchronous_standby_names": ""})
        self.start(node)
        if synchronous:
            names = [n.name for n in self.nodes
                     if n is not primary and n.name in self._sync_names(primary)] + [name]
            self.set_config(primary, synchronous_standby_names=",".join(names))
        want = "sync" if synchronous else None
        self._wait(lambda: self._replication_state(primary, name) in
                   ({want} if want else {"async", "sync", "potential", "quorum"}),
                   timeout, f"{name} streaming from {primary.name}")
        return node

    # -- operations ------------------------------------------------------------------------

    def start(self, node: Node) -> None:
        _run(bin_dir() / "pg_ctl", "-D", node.pgdata, "-l", node.log, "-w", "-t", "30",
             "-o", f"-p {node.port}", "start")
        node.remember_processes()

    def stop(self, node: Node, mode: str = "fast") -> None:
        """pg_ctl stop (`fast`, or `immediate`: a crash without kill)."""
        node.remember_processes()
        if node.postmaster_pid() is not None:
            _run(bin_dir() / "pg_ctl", "-D", node.pgdata, "-m", mode, "-w", "-t", "30", "stop")

    def kill(self, node: Node) -> int:
        """kill -9 of the node's postmaster alone (its backends notice and exit by
        themselves, as in a crash); returns the pid killed."""
        node.remember_processes()
        pid = node.postmaster_pid()
        assert pid is not None, f"{node.name} is not running"
        os.kill(pid, signal.SIGKILL)
        self._wait(lambda: not _running(pid), 10, f"{node.name}'s postmaster to die")
        return pid

    def promote(self, node: Node, timeout: float = 30.0) -> None:
        """pg_ctl promote, returning once the node takes writes."""
        _run(bin_dir() / "pg_ctl", "-D", node.pgdata, "-w", "-t", str(int(timeout)), "promote")
        self._wait(lambda: self._sql(node, "SELECT pg_is_in_recovery()") == "f", timeout,
                   f"{node.name} promoted")
        node.remember_processes()

    def set_config(self, node: Node, **settings: str | int) -> None:
        """ALTER SYSTEM SET ... and a reload (settings that need no restart)."""
        for key, value in settings.items():
            self._sql(node, f"ALTER SYSTEM SET {key} = {_literal(value)}")
        self._sql(node, "SELECT pg_reload_conf()")

    def primary(self) -> Node:
        """The running node that takes writes."""
        for node in self.nodes:
            if node.postmaster_pid() is not None and \
                    self._sql(node, "SELECT pg_is_in_recovery()") == "f":
                return node
        raise AssertionError("no primary is running")

    def dsn(self, database: str = "postgres", user: str = SUPERUSER,
            nodes: list[Node] | None = None, attrs: str = "read-write") -> str:
        """A multi-host DSN naming `nodes` (default: all), with target_session_attrs: the
        client connects to whichever of them is primary (`read-write`), or `prefer-standby`,
        `any`..."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in (nodes or self.nodes))
        return (f"postgresql://{quote(user, safe='')}@{hosts}/{database}"
                f"?target_session_attrs={attrs}")

    def sql(self, node: Node, query: str, database: str = "postgres") -> str:
        """One query through psql as the superuser; its output unaligned, without headers."""
        return self._sql(node, query, database)

    def replay_lsn(self, node: Node) -> str:
        """The standby's replay position (`pg_last_wal_replay_lsn`)."""
        return self._sql(node, "SELECT pg_last_wal_replay_lsn()")

    def wait_replayed(self, standby: Node, timeout: float = 30.0) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        target = self._sql(self.primary(), "SELECT pg_current_wal_lsn()")
        self._wait(lambda: self._sql(
            standby, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") == "t",
            timeout, f"{standby.name} replayed up to {target}")

    def teardown(self) -> None:
        """Stop every node (immediately), end every process any of them ever ran, remove the
        directory. Safe to call twice and after any failure."""
        for node in self.nodes:
            node.remember_processes()
            if node.postmaster_pid() is not None:
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    _run(bin_dir() / "pg_ctl", "-D", node.pgdata, "-m", "immediate", "-w",
                         "-t", "10", "stop")
        alive: list[psutil.Process] = []
        for node in self.nodes:
            for pid in node.pids:
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(pid)
                    if str(node.pgdata) in " ".join(proc.cmdline()) or \
                            proc.name() == "postgres":
                        proc.kill()
                        alive.append(proc)
        psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def leftovers(self) -> list[int]:
        """Processes of any node still running (zombies waiting for their reaper are not):
        after `teardown`, none."""
        return sorted(pid for node in self.nodes for pid in node.pids if _running(pid))

    # -- internals -------------------------------------------------------------------------

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if SYSTEM_USER is not None:
            import pwd

            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(SYSTEM_USER)
            ensure_prefix_permissions(self.root)
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _node(self, name: str) -> Node:
        assert all(n.name != name for n in self.nodes), f"two nodes named {name}"
        node = Node(name, self.root / name, free_port(), self.root / f"{name}.log")
        self.nodes.append(node)
        return node

    def _configure(self, node: Node, settings: dict[str, Any]) -> None:
        with (node.pgdata / "postgresql.auto.conf").open("a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = {_literal(value)}\n")

    def _sync_names(self, primary: Node) -> list[str]:
        current = self._sql(primary, "SHOW synchronous_standby_names")
        return [n.strip() for n in current.split(",") if n.strip()]

    def _replication_state(self, primary: Node, name: str) -> str | None:
        state = self._sql(primary, "SELECT sync_state FROM pg_stat_replication "
                          f"WHERE application_name = {_literal(name)} AND state = 'streaming'")
        return state or None

    def _sql(self, node: Node, query: str, database: str = "postgres") -> str:
        return _run(bin_dir() / "psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                    "-h", "127.0.0.1", "-p", node.port, "-U", SUPERUSER, "-d", database,
                    "-c", query).strip()

    @staticmethod
    def _wait(done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(subprocess.CalledProcessError):
                if done():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)


@contextlib.contextmanager
def pg_cluster(root: Path) -> Iterator[Cluster]:
    """A cluster under `root`, torn down (every process ended, `root` removed) on exit."""
    cluster = Cluster(root)
    try:
        yield cluster
    finally:
        cluster.teardown()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _literal(value: str | int) -> str:
    return str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"


def _run(*args: str | int | Path) -> str:
    """Run a binary (as SYSTEM_USER under root); its stdout. Output goes through files, not
    pipes: a postmaster started by pg_ctl would inherit a pipe and hold it open."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        done = subprocess.run([str(a) for a in args], check=False, stdout=out, stderr=err,
                              text=True, timeout=60, user=SYSTEM_USER, cwd="/",
                              stdin=subprocess.DEVNULL)
        out.seek(0)
        err.seek(0)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, out.read(),
                                                err.read())
        return out.read()
