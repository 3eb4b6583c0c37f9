"""Redirect benchmark: refguard's GET /r/{code} against a bare 302 and a naive INSERT tracker.

    .venv/bin/python -m bench.redirect            # wrk -t2 -c64 -d10s, 1 and 2 workers, both modes
    .venv/bin/python -m bench.redirect --quick    # ~3 s per case, a smoke run

For each worker count N and each connection mode (keep-alive, `Connection: close`), in one run on
one machine, wrk measures these servers, each with N processes on one port (SO_REUSEPORT):

  (a) bare          an aiohttp + uvloop app that only answers the same 302 (bench/apps.py)
  (b) refguard      `refguard serve --workers N`: the real redirect, journaled, flushed into
                    PostgreSQL; the flusher parses the user agent, no GeoIP databases
  (b) refguard+geo  the same with REFGUARD_GEOIP_DIR set: the flusher also looks every click up
                    in GeoLite2-City, GeoLite2-ASN and GeoIP2-Anonymous-IP databases that
                    bench/geodb.py writes into the temporary folder (a few thousand IPv4 and IPv6
                    networks each, 127.0.0.0/8 included so the loopback clicks get a country and
                    an ASN; wrk's clicks all come from 127.0.0.1, so after the first one the
                    lookup is served from refguard's geo cache)
  (c) naive         an aiohttp app that INSERTs each click (asyncpg pool) before answering
                    (bench/apps.py)

`--geoip off` measures only refguard, `on` only refguard+geo, `both` (the default) the two. All
servers share one embedded PostgreSQL (pgserver) started here in a temporary folder. Figures:
req/s, p50/p99 latency (wrk --latency), the ratios b/a and b/c against their targets (for each
refguard variant), and the count check: once refguard's flusher has drained, the rows in `clicks`
for the measured link must equal the redirects the workers answered (their
refguard_http_requests_total counter), and lie between wrk's answered requests and that plus the
requests in flight when wrk stopped (at most one per connection, plus any wrk socket errors). With
geo on, every one of those rows must also carry a country. The exit status is non-zero only when
that check fails (lost or duplicated clicks, clicks without geo) or the bench could not run at
all; never because of speed.

Because the machines are shared and noisy, each case also reports CPU microseconds per request
(the server's workers, and everything it needs: workers, refguard's flusher process, PostgreSQL)
and how busy the whole machine was (cores used by processes that are not ours, steal); `b/a by
cpu` is the ratio of those per-request CPU costs, which a neighbour's load hardly moves.
`--rounds R` measures every server R times in alternating order and reports medians.

CPU per click by stage: for each refguard case, the workers' CPU over the wrk window, the
flusher's by stage (read and parse the journal, enrich, store: sort, duplicate checks, COPY
encoding; from its refguard_flush_cpu_seconds_total, through the drain) and PostgreSQL's; and
before the servers start, bench/flush_stages.py runs synthetic journal segments through the
flusher's steps one at a time with its PostgreSQL backend's CPU read between them (the
duplicate probe, the COPY, the indexes' share of it, the replay path), `--stage-clicks` a shape.
The workers' own split (handler, aiohttp, journal write, metrics) is in the py-spy profile.

When b/a misses its target with 1 worker and keep-alive (or with --profile always), py-spy samples
one refguard worker and one bare worker under the same load (`--profile-mode close`: that case,
under `Connection: close` load); the summary shows where the event
loop and the redirect handler spend their time (folded stacks are kept next to the JSON).

Results are printed as a table and written to bench/results/redirect-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]

from bench.results import RESULTS, ROOT
from tracker.db import embedded_server

DEST = "https://shop.example.com/landing?ref=bench"
PROGRAM = "bench"
REFERRER = "bench-referrer"
SERVERS = ("bare", "refguard", "naive")  # with --geoip off; see servers_for()
REFGUARD_KINDS = ("refguard", "refguard+geo")
TARGET_B_OVER_A = 0.75
TARGET_B_OVER_C = {1: 3.0, 2: 6.0}
TARGET_P99_MS = 10.0
PROFILE_RATE = 200  # py-spy samples per second
METRICS_FOLD_S = 1.3  # refguard folds its redirect counters into Prometheus every second


# -- processes -----------------------------------------------------------------------------------


class Proc:
    """A server subprocess in its own session, so it and its children stop together."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.popen = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid = self.popen.pid
        LIVE.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 45.0) -> int | None:
        """SIGTERM to the leader (refguard drains its journal on it), then SIGKILL the group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  {self.name} (pid {self.pid}) did not stop in {timeout:.0f}s; killing it",
                      file=sys.stderr)
        # Whatever is left of the group (a worker orphaned by a killed leader) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        self._log.close()
        if self in LIVE:
            LIVE.remove(self)
        return self.popen.returncode


LIVE: list[Proc] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_request(port: int, method: str, path: str, body: Any = None, *,
                 headers: dict[str, str] | None = None,
                 timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Server:
    def __init__(self, kind: str, workers: int, proc: Proc, port: int,
                 data_dir: Path | None = None) -> None:
        self.kind = kind
        self.workers = workers
        self.proc = proc
        self.port = port
        self.data_dir = data_dir
        self.worker_pids: set[int] = set()

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Poll /healthz on fresh connections until every worker has answered once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError(f"{self.kind} exited during start-up:\n{self.proc.log_tail()}")
            try:
                status, body = http_request(self.port, "GET", "/healthz", timeout=2)
                if status == 200:
                    self.worker_pids.add(int(json.loads(body)["pid"]))
                    if len(self.worker_pids) >= self.workers:
                        return
            except (OSError, ValueError, KeyError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind}: {len(self.worker_pids)} of {self.workers} workers "
                           f"answered /healthz within {timeout:.0f}s:\n{self.proc.log_tail()}")

    def url(self, code: str) -> str:
        return f"http://127.0.0.1:{self.port}/r/{code}"


# -- wrk ----------------------------------------------------------------------------------------

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _to_ms(text: str) -> float | None:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    return float(m.group(1)) * _UNIT_MS[m.group(2)] if m else None


@dataclass
class WrkResult:
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    latency_avg_ms: float | None = None
    latency_max_ms: float | None = None
    percentiles_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(
        default_factory=lambda: {"connect": 0, "read": 0, "write": 0, "timeout": 0})
    non_2xx_3xx: int = 0
    wrk_cpu_s: float = 0.0

    @property
    def answered(self) -> int:
        """Complete 2xx/3xx responses wrk received."""
        return self.requests - self.non_2xx_3xx

    @property
    def socket_errors(self) -> int:
        return sum(self.errors.values())


def parse_wrk(text: str) -> WrkResult:
    r = WrkResult()
    m = re.search(r"(\d+) requests in ([\d.]+\w+)", text)
    if m is None:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    r.requests = int(m.group(1))
    r.seconds = (_to_ms(m.group(2)) or 0.0) / 1000
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r.rps = float(m.group(1)) if m else (r.requests / r.seconds if r.seconds else 0.0)
    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        r.latency_avg_ms, r.latency_max_ms = _to_ms(m.group(1)), _to_ms(m.group(3))
    for pct, value in re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", text, re.M):
        ms = _to_ms(value)
        if ms is not None:
            r.percentiles_ms[f"p{pct}"] = ms
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r.errors = dict(zip(("connect", "read", "write", "timeout"),
                            map(int, m.groups()), strict=True))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        r.non_2xx_3xx = int(m.group(1))
    return r


def wrk_argv(cfg: Config, url: str, seconds: int, close: bool) -> list[str]:
    argv = [cfg.wrk, f"-t{min(cfg.threads, cfg.connections)}", f"-c{cfg.connections}",
            f"-d{seconds}s", "--latency", f"--timeout={cfg.timeout}s"]
    if close:
        argv += ["-H", "Connection: close"]
    return [*argv, url]


def run_wrk(cfg: Config, url: str, seconds: int, close: bool) -> tuple[WrkResult, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(wrk_argv(cfg, url, seconds, close), capture_output=True, text=True,
                          timeout=seconds + cfg.timeout + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    result = parse_wrk(proc.stdout)
    result.wrk_cpu_s = round((after.ru_utime - before.ru_utime)
                             + (after.ru_stime - before.ru_stime), 2)
    return result, proc.stdout


# -- CPU accounting ----------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used by roles (server workers, their helpers, PostgreSQL) over a run."""

    def __init__(self, server: Server, pg_pid: int | None) -> None:
        self.psutil = psutil
        self.server = server
        self.pg_pid = pg_pid
        self.start = self._sample()

    def _cpu(self, procs: list[Any]) -> dict[int, float]:
        out: dict[int, float] = {}
        for p in procs:
            with contextlib.suppress(self.psutil.Error):
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
        return out

    def _sample(self) -> dict[str, dict[int, float]]:
        ps = self.psutil
        roles: dict[str, list[Any]] = {"workers": [], "other": [], "postgres": []}
        with contextlib.suppress(ps.Error):
            leader = ps.Process(self.server.proc.pid)
            for p in [leader, *leader.children(recursive=True)]:
                roles["workers" if p.pid in self.server.worker_pids else "other"].append(p)
        if self.pg_pid:
            with contextlib.suppress(ps.Error):
                pm = ps.Process(self.pg_pid)
                roles["postgres"] = [pm, *pm.children(recursive=True)]
        return {role: self._cpu(procs) for role, procs in roles.items()}

    def stop(self) -> dict[str, float]:
        end = self._sample()
        used: dict[str, float] = {}
        for role, now in end.items():
            was = self.start.get(role, {})
            used[role] = round(sum(v - was.get(pid, 0.0) for pid, v in now.items()), 2)
        return used


def _proc_stat() -> tuple[int, int, int]:
    """(busy, steal, all) jiffies of the whole machine."""
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (parts + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


class MachineMeter:
    """How busy the whole machine was, to tell our load from a noisy neighbour's."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        try:
            self.start: tuple[int, int, int] | None = _proc_stat()
        except (OSError, ValueError):
            self.start = None

    def stop(self, ours_s: float) -> dict[str, float]:
        seconds = time.monotonic() - self.t0
        if self.start is None or seconds <= 0:
            return {}
        try:
            busy, steal, total = (b - a for a, b in zip(self.start, _proc_stat(), strict=True))
        except (OSError, ValueError):
            return {}
        hz = os.sysconf("SC_CLK_TCK")
        busy_cores = busy / hz / seconds
        return {
            "busy_cores": round(busy_cores, 2),
            "steal_pct": round(100 * steal / total, 1) if total else 0.0,
            "foreign_cores": round(max(0.0, busy_cores - ours_s / seconds), 2),
        }


# -- PostgreSQL and refguard helpers -------------------------------------------------------------


def pg_fetchval(dsn: str, query: str, *args: Any) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def start_postgres(tmp: Path) -> tuple[Any, str]:
    server = embedded_server(tmp / "pg", stop_on_exit=True)
    return server, server.get_uri()


def dsn_for(server: Any, database: str) -> str:
    return str(server.get_uri(database=database))


def redirects_answered(port: int) -> int | None:
    """refguard_http_requests_total{route="redirect",status="302"} summed over the workers."""
    try:
        status, body = http_request(port, "GET", "/metrics", timeout=10)
    except (OSError, http.client.HTTPException):
        return None
    if status != 200:
        return None
    total = 0.0
    found = False
    for line in body.decode(errors="replace").splitlines():
        if (line.startswith("refguard_http_requests_total{") and 'route="redirect"' in line
                and 'status="302"' in line):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return int(total) if found else 0


def flush_cpu(port: int) -> dict[str, float]:
    """refguard_flush_cpu_seconds_total by stage (the flusher's own CPU, PostgreSQL's not in it)."""
    try:
        status, body = http_request(port, "GET", "/metrics", timeout=10)
    except (OSError, http.client.HTTPException):
        return {}
    out: dict[str, float] = {}
    for line in body.decode(errors="replace").splitlines() if status == 200 else []:
        m = re.match(r'refguard_flush_cpu_seconds_total\{stage="(\w+)"\} (\S+)$', line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def journal_backlog(data_dir: Path) -> int:
    """Clicks in journal segments not yet flushed (open segments of live workers included)."""
    lines = 0
    directory = data_dir / "journal"
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            if name.endswith((".open", ".sealed")):
                with contextlib.suppress(FileNotFoundError):
                    lines += (directory / name).read_bytes().count(b"\n")
    return lines


class Refguard:
    """The HTTP API calls the bench needs: program, referrer, links."""

    def __init__(self, token: str, dsn: str) -> None:
        self.token = token
        self.dsn = dsn
        self.program_ready = False

    def _call(self, port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, data = http_request(port, method, "/api/v1" + path, body,
                                    headers={"Authorization": f"Bearer {self.token}"})
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data.decode(errors="replace")

    def ensure_program(self, port: int) -> None:
        if self.program_ready:
            return
        status, out = self._call(port, "POST", "/programs", {
            "slug": PROGRAM, "name": "Redirect bench", "destination_domains": ["shop.example.com"],
        })
        if status not in (201, 409):
            raise RuntimeError(f"creating the program: {status} {out}")
        status, out = self._call(port, "POST", "/referrers",
                                 {"program": PROGRAM, "external_id": REFERRER})
        if status not in (200, 201):
            raise RuntimeError(f"creating the referrer: {status} {out}")
        self.program_ready = True

    def link(self, port: int, code: str) -> int:
        status, out = self._call(port, "POST", "/links", {
            "program": PROGRAM, "referrer": REFERRER, "destination": DEST, "code": code,
        })
        if status == 409:
            status, out = self._call(port, "GET", f"/links/{code}")
        if status not in (200, 201):
            raise RuntimeError(f"creating link {code}: {status} {out}")
        return int(out["id"])

    def rows(self, link_id: int) -> int:
        return int(pg_fetchval(self.dsn, "SELECT count(*) FROM clicks WHERE link_id = $1",
                               link_id))

    def geo_rows(self, link_id: int) -> int:
        """The link's clicks that the flusher gave a country (GeoIP enrichment)."""
        return int(pg_fetchval(
            self.dsn, "SELECT count(*) FROM clicks WHERE link_id = $1 AND country IS NOT NULL",
            link_id))


def refguard_cli() -> list[str]:
    exe = Path(sys.executable).parent / "refguard"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tracker"]


def refguard_env(data_dir: Path, dsn: str, geoip_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFGUARD_")}
    env.update(REFGUARD_DATA_DIR=str(data_dir), REFGUARD_DATABASE_URL=dsn,
               PYTHONUNBUFFERED="1")
    if geoip_dir is not None:
        env["REFGUARD_GEOIP_DIR"] = str(geoip_dir)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Config:
    duration: int
    warmup: int
    connections: int
    threads: int
    timeout: int
    workers: list[int]
    modes: list[str]
    rounds: int
    profile: str
    profile_seconds: int
    drain_timeout: float
    keep_tmp: bool
    wrk: str
    geoip: str = "both"  # off: refguard; on: refguard+geo; both: the two
    stage_clicks: int = 50_000  # bench.flush_stages' clicks per shape; 0: not measured
    profile_mode: str = "keepalive"  # the wrk connection mode py-spy samples under


def servers_for(cfg: Config) -> tuple[str, ...]:
    """The servers measured, in the order of an even round: bare, refguard variants, naive."""
    kinds = {"off": ("refguard",), "on": ("refguard+geo",), "both": REFGUARD_KINDS}[cfg.geoip]
    return ("bare", *kinds, "naive")


def refguard_kinds(cfg: Config) -> tuple[str, ...]:
    return tuple(k for k in servers_for(cfg) if k in REFGUARD_KINDS)


@dataclass
class Case:
    workers: int
    mode: str
    round: int
    server: str
    wrk: WrkResult
    cpu_s: dict[str, float]  # CPU seconds of the server's roles, PostgreSQL and wrk
    machine: dict[str, float]  # busy cores, steal, and CPU used by processes not ours
    # refguard: the flusher's CPU per stored click by stage (microseconds), through the drain
    flusher_us: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_us_per_request(self) -> dict[str, float | None]:
        """CPU microseconds per answered request: the workers alone, and everything the server
        needs (workers, helpers such as refguard's flusher, PostgreSQL), wrk excluded. Unlike
        req/s, this hardly moves when a neighbour takes CPU from the machine."""
        n = self.wrk.requests
        if not n:
            return {"workers": None, "total": None}
        total = sum(v for k, v in self.cpu_s.items() if k != "wrk")
        return {"workers": round(self.cpu_s.get("workers", 0.0) / n * 1e6, 1),
                "total": round(total / n * 1e6, 1)}


@dataclass
class CountCheck:
    workers: int
    mode: str
    round: int
    link_code: str
    wrk_requests: int
    wrk_answered: int
    wrk_non_2xx_3xx: int
    wrk_socket_errors: int
    server_answered: int | None
    rows: int
    rows_after_stop: int | None = None
    in_flight_allowance: int = 0
    drain_s: float | None = None
    lost: int = 0
    duplicated: int = 0
    ok: bool = False
    note: str = ""
    server: str = "refguard"
    geo_rows: int | None = None  # rows with a country (refguard+geo only; None: not checked)
    geo_missing: int = 0

    def judge(self) -> None:
        self.lost = max(0, self.wrk_answered - self.rows)
        over_wrk = self.rows - self.wrk_answered
        excess = max(0, over_wrk - self.in_flight_allowance)
        notes = []
        if self.server_answered is not None:
            if self.rows < self.server_answered:
                self.lost = max(self.lost, self.server_answered - self.rows)
            elif self.rows > self.server_answered:
                excess = max(excess, self.rows - self.server_answered)
        else:
            notes.append("server counter unavailable; checked against wrk only")
        if self.rows_after_stop is not None and self.rows_after_stop != self.rows:
            notes.append(f"rows changed after the server stopped: {self.rows_after_stop}")
            if self.rows_after_stop > self.rows:
                excess += self.rows_after_stop - self.rows
            else:
                self.lost += self.rows - self.rows_after_stop
        self.duplicated = excess
        if over_wrk > 0:
            notes.append(f"{over_wrk} answered while wrk was stopping (in flight, not counted "
                         "by wrk)")
        self.geo_missing = 0
        if self.geo_rows is not None and self.geo_rows != self.rows:
            self.geo_missing = self.rows - self.geo_rows
            notes.append(f"{self.geo_missing} row(s) without a country")
        self.ok = self.lost == 0 and self.duplicated == 0 and self.geo_missing == 0
        self.note = "; ".join(notes)


class Bench:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.tmp = Path(tempfile.mkdtemp(prefix="refguard-bench-"))
        self.pg: Any = None
        self.pg_pid: int | None = None
        self.refguard: Refguard | None = None
        self.cases: list[Case] = []
        self.checks: list[CountCheck] = []
        self.profile: dict[str, Any] | None = None
        self.started = datetime.now(UTC)
        self.machine: dict[str, Any] = {}
        self.geo_dir: Path | None = None
        self.geoip: dict[str, Any] | None = None  # the databases written, for the JSON
        self.stages: list[dict[str, Any]] = []  # bench.flush_stages, per traffic shape

    # setup ---------------------------------------------------------------------------------------

    def setup(self) -> None:
        say(f"temporary folder {self.tmp}")
        say("starting the embedded PostgreSQL (pgserver)")
        self.pg, admin_dsn = start_postgres(self.tmp)
        with contextlib.suppress(Exception):
            self.pg_pid = self.pg.get_pid()
        for db in ("refguard_bench", "naive_bench"):
            pg_fetchval(admin_dsn, f"CREATE DATABASE {db}")
        self.refguard_dsn = dsn_for(self.pg, "refguard_bench")
        self.naive_dsn = dsn_for(self.pg, "naive_bench")
        env = refguard_env(self.tmp / "refguard-setup", self.refguard_dsn)
        out = subprocess.run([*refguard_cli(), "migrate"], env=env, capture_output=True,
                             text=True, timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"refguard migrate failed: {out.stderr.strip()}")
        out = subprocess.run([*refguard_cli(), "token", "create", "--role", "admin",
                              "--name", "bench"], env=env, capture_output=True, text=True,
                             timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"refguard token create failed: {out.stderr.strip()}")
        self.refguard = Refguard(out.stdout.strip(), self.refguard_dsn)
        self.machine = machine_info(self.cfg, self.refguard_dsn)
        if "refguard+geo" in servers_for(self.cfg):
            self.write_geoip()
        if self.cfg.stage_clicks:
            from bench.flush_stages import measure

            say(f"flusher stages: {self.cfg.stage_clicks} synthetic clicks a shape"
                + (", with the GeoIP databases" if self.geo_dir else ""))
            self.stages = [asyncio.run(measure(self.refguard_dsn, shape, self.cfg.stage_clicks,
                                               link0, self.geo_dir))
                           for shape, link0 in (("wrk", 990_000_000), ("browsers", 990_000_100))]

    def write_geoip(self) -> None:
        from bench.geodb import check_databases, write_databases

        self.geo_dir = self.tmp / "geoip"
        self.geoip = write_databases(self.geo_dir)
        self.geoip["loopback"] = check_databases(self.geo_dir, self.geoip["samples"])
        files = self.geoip["files"]
        say(f"GeoIP databases for refguard+geo written in {self.geoip['write_s']}s: " + ", ".join(
            f"{name} {meta['networks']} networks ({meta['ipv4']} v4, {meta['ipv6']} v6, "
            f"{meta['bytes'] // 1024} KiB)" for name, meta in files.items()))
        loop = self.geoip["loopback"]
        say(f"  127.0.0.1 -> {loop['country']}/{loop['region']}/{loop['city']}, "
            f"AS{loop['asn']} {loop['as_org']}")

    def start_servers(self, n: int) -> dict[str, Server]:
        servers: dict[str, Server] = {}
        py = sys.executable
        for kind in ("bare", "naive"):
            port = free_port()
            argv = [py, "-m", "bench.apps", kind, "--port", str(port), "--workers", str(n)]
            if kind == "naive":
                argv += ["--dsn", self.naive_dsn]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            proc = Proc(f"{kind}-w{n}", argv, env, self.tmp / f"{kind}-w{n}.log")
            servers[kind] = Server(kind, n, proc, port)
        for kind in refguard_kinds(self.cfg):
            port = free_port()
            name = f"{kind.replace('+', '-')}-w{n}"
            data_dir = self.tmp / name
            geo_dir = self.geo_dir if kind == "refguard+geo" else None
            proc = Proc(name, [*refguard_cli(), "serve", "--workers", str(n), "--port", str(port)],
                        refguard_env(data_dir, self.refguard_dsn, geo_dir),
                        self.tmp / f"{name}.log")
            servers[kind] = Server(kind, n, proc, port, data_dir)
        for s in servers.values():
            s.wait_ready()
        say(f"servers up with {n} worker(s): " + ", ".join(
            f"{k} :{s.port} pids {sorted(s.worker_pids)}" for k, s in servers.items()))
        return servers

    # one case ------------------------------------------------------------------------------------

    def measure(self, server: Server, n: int, mode: str, rnd: int, *, code: str,
                warm_code: str, warm: bool = True) -> Case:
        close = mode == "close"
        if warm:
            self.warm_up(server, warm_code, close)
        meter = CpuMeter(server, self.pg_pid)
        machine = MachineMeter()
        result, _ = run_wrk(self.cfg, server.url(code), self.cfg.duration, close)
        cpu = meter.stop()
        cpu["wrk"] = result.wrk_cpu_s
        case = Case(n, mode, rnd, server.kind, result, cpu, machine.stop(sum(cpu.values())))
        self.cases.append(case)
        p = result.percentiles_ms
        say(f"  {server.kind:12s} {result.rps:>10,.0f} req/s  p50 {fmt_ms(p.get('p50'))}  "
            f"p99 {fmt_ms(p.get('p99'))}  errors {result.socket_errors}  "
            f"non-3xx {result.non_2xx_3xx}  cpu {fmt_cpu(cpu)}  {fmt_machine(case.machine)}")
        return case

    def warm_up(self, server: Server, code: str, close: bool) -> None:
        if self.cfg.warmup > 0:
            run_wrk(self.cfg, server.url(code), self.cfg.warmup, close)
        if server.data_dir is not None:
            # Let the warm-up clicks reach PostgreSQL and the counters fold before measuring.
            self.wait_journal_empty(server, time.monotonic())
            time.sleep(METRICS_FOLD_S)
        else:
            time.sleep(0.5)

    def wait_journal_empty(self, server: Server, since: float) -> float | None:
        """Seconds from `since` until every journaled click is committed (None: timed out).

        Segments are deleted only after their COPY commits, so an empty journal folder (seen
        twice, to step over a segment being renamed) means everything reached PostgreSQL.
        """
        assert server.data_dir is not None
        deadline = since + self.cfg.drain_timeout
        empty_seen = 0
        while time.monotonic() < deadline:
            empty_seen = empty_seen + 1 if journal_backlog(server.data_dir) == 0 else 0
            if empty_seen >= 2:
                return round(time.monotonic() - since, 2)
            time.sleep(0.05)
        say(f"  journal not drained within {self.cfg.drain_timeout:.0f}s")
        return None

    def settled_rows(self, link_id: int, expected: int | None) -> int:
        """The link's rows once they equal `expected` or stop changing for 3 s."""
        assert self.refguard is not None
        deadline = time.monotonic() + self.cfg.drain_timeout
        last, stable_since = -1, time.monotonic()
        while True:
            rows = self.refguard.rows(link_id)
            now = time.monotonic()
            if rows != last:
                last, stable_since = rows, now
            if rows == expected or now - stable_since >= 3.0 or now > deadline:
                return rows
            time.sleep(0.1)

    def count_check(self, server: Server, case: Case, *, code: str, link_id: int,
                    answered_before: int | None, t_end: float) -> CountCheck:
        n, mode, rnd = case.workers, case.mode, case.round
        drain_s = self.wait_journal_empty(server, t_end)
        time.sleep(max(0.0, METRICS_FOLD_S - (time.monotonic() - t_end)))
        after = redirects_answered(server.port)
        server_answered = (after - answered_before if after is not None
                           and answered_before is not None else None)
        rows = self.settled_rows(link_id, server_answered)
        # With geo on, the settled rows must all carry a country: one query, once they settled.
        geo_rows = (self.refguard.geo_rows(link_id) if server.kind == "refguard+geo"
                    and self.refguard is not None else None)
        w = case.wrk
        check = CountCheck(
            workers=n, mode=mode, round=rnd, link_code=code, wrk_requests=w.requests,
            wrk_answered=w.answered, wrk_non_2xx_3xx=w.non_2xx_3xx,
            wrk_socket_errors=w.socket_errors, server_answered=server_answered, rows=rows,
            in_flight_allowance=self.cfg.connections + w.socket_errors, drain_s=drain_s,
            server=server.kind, geo_rows=geo_rows,
        )
        check.judge()
        self.checks.append(check)
        geo = f", with a country {geo_rows}" if geo_rows is not None else ""
        say(f"  count check ({server.kind}): rows {rows}{geo}, refguard answered "
            f"{server_answered}, wrk answered {w.answered} -> {'OK' if check.ok else 'FAILED'} "
            f"(drained in {drain_s}s)")
        return check

    # the whole run -------------------------------------------------------------------------------

    def run(self) -> None:
        self.setup()
        assert self.refguard is not None
        for n in self.cfg.workers:
            servers = self.start_servers(n)
            refguard = servers[refguard_kinds(self.cfg)[0]]
            self.refguard.ensure_program(refguard.port)
            warm_code = f"warm-w{n}"
            self.refguard.link(refguard.port, warm_code)
            checks_this_n: list[tuple[CountCheck, int]] = []
            try:
                for mode in self.cfg.modes:
                    for rnd in range(self.cfg.rounds):
                        checks_this_n += self.run_round(servers, n, mode, rnd, warm_code)
                    if self.wants_profile(n, mode):
                        self.run_profile(servers, n)
            finally:
                for kind in (*refguard_kinds(self.cfg), "bare", "naive"):
                    servers[kind].proc.stop()
            for check, link_id in checks_this_n:
                check.rows_after_stop = self.refguard.rows(link_id)
                check.judge()
                if not check.ok:
                    say(f"  count check after stop FAILED for {check.link_code}: {check.note}")

    def run_round(self, servers: dict[str, Server], n: int, mode: str, rnd: int,
                  warm_code: str) -> list[tuple[CountCheck, int]]:
        """Every server once (in reverse order every other round, so drift favours no one);
        each refguard variant clicks its own link, so its count check counts only its clicks."""
        assert self.refguard is not None
        kinds = servers_for(self.cfg)
        links: dict[str, tuple[str, int]] = {}
        for kind in refguard_kinds(self.cfg):
            code = f"{'geo' if kind == 'refguard+geo' else 'bench'}-w{n}-{mode}-r{rnd}"
            links[kind] = code, self.refguard.link(servers[kind].port, code)
        plain_code = next(iter(links.values()))[0]  # bare and naive ignore the code
        rounds = f" round {rnd + 1}/{self.cfg.rounds}" if self.cfg.rounds > 1 else ""
        say(f"workers {n}, {mode}{rounds}: wrk -t{self.cfg.threads} -c{self.cfg.connections} "
            f"-d{self.cfg.duration}s")
        checks: list[tuple[CountCheck, int]] = []
        for kind in kinds if rnd % 2 == 0 else kinds[::-1]:
            server = servers[kind]
            if kind not in links:
                self.measure(server, n, mode, rnd, code=plain_code, warm_code=warm_code)
                continue
            code, link_id = links[kind]
            self.warm_up(server, warm_code, mode == "close")
            before = redirects_answered(server.port)
            cpu_before = flush_cpu(server.port)
            case = self.measure(server, n, mode, rnd, code=code, warm_code=warm_code, warm=False)
            t_end = time.monotonic()
            check = self.count_check(server, case, code=code, link_id=link_id,
                                     answered_before=before, t_end=t_end)
            checks.append((check, link_id))
            cpu_after = flush_cpu(server.port)
            if check.rows:
                case.flusher_us = {k: round((v - cpu_before.get(k, 0.0)) / check.rows * 1e6, 1)
                                   for k, v in cpu_after.items()}
        return checks

    def wants_profile(self, n: int, mode: str) -> bool:
        if self.profile is not None or n != 1 or mode != self.cfg.profile_mode:
            return False
        if self.cfg.profile == "never":
            return False
        if self.cfg.profile == "always":
            return True
        ratio = next((r["b_over_a"] for r in ratio_rows(self)
                      if r["workers"] == n and r["mode"] == mode), None)
        return ratio is not None and ratio < TARGET_B_OVER_A

    def run_profile(self, servers: dict[str, Server], n: int) -> None:
        """py-spy one worker of refguard, then of the bare app, each under keep-alive load."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            say("  py-spy is missing (.venv/bin/pip install py-spy); no profile")
            self.profile = {"skipped": "py-spy not installed"}
            return
        self.profile = {}
        for kind in (refguard_kinds(self.cfg)[0], "bare"):
            try:
                self.profile[kind] = self.profile_one(spy, servers[kind], n)
            except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                say(f"  profiling {kind} failed: {exc}")
                self.profile[kind] = {"skipped": str(exc)[:300]}

    def profile_one(self, spy: str, server: Server, n: int) -> dict[str, Any]:
        assert self.refguard is not None
        pid = min(server.worker_pids)
        code = f"profile-w{n}"
        if server.kind in REFGUARD_KINDS:
            self.refguard.link(server.port, code)
        seconds = self.cfg.profile_seconds
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        out = RESULTS / f"redirect-{stamp}-profile-{server.kind}.folded"
        mode = self.cfg.profile_mode
        say(f"  profiling {server.kind} worker {pid} with py-spy for {seconds}s under {mode} load")
        wrk = subprocess.Popen(wrk_argv(self.cfg, server.url(code), seconds + 2,
                                        close=mode == "close"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(1.0)
            spy_out = subprocess.run(
                [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--format",
                 "raw", "--threads", "--rate", str(PROFILE_RATE), "-o", str(out)],
                capture_output=True, text=True, timeout=seconds + 60, check=False)
            wrk_text, _ = wrk.communicate(timeout=seconds + 60)
        finally:
            if wrk.poll() is None:
                wrk.kill()
                wrk.wait()
        if server.data_dir is not None:
            self.wait_journal_empty(server, time.monotonic())
        if spy_out.returncode != 0 or not out.exists():
            raise RuntimeError(f"py-spy failed: {(spy_out.stderr or spy_out.stdout).strip()}")
        summary = summarize_folded(out.read_text(), rate=PROFILE_RATE, seconds=seconds)
        with contextlib.suppress(RuntimeError):
            summary["wrk_rps_while_profiling"] = parse_wrk(wrk_text).rps
        summary["folded_file"] = str(out.relative_to(ROOT))
        summary["mode"] = mode
        summary["worker_pid"] = pid
        return summary

    def close(self) -> None:
        for proc in list(LIVE):
            proc.stop()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.cleanup()
            self.pg = None
        if self.cfg.keep_tmp:
            say(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# -- profile summary -----------------------------------------------------------------------------

_SITE = re.compile(r"^.*?/(?:site|dist)-packages/")
# aiohttp's handler, the fast path, and the fast path's answers once their journal group is written
_REDIRECT_FRAME = re.compile(
    r"(?:^|\.)(?:redirect|fast|answer_group) \(tracker/clicks/redirect\.py:\d+\)$")


def _short(frame: str) -> str:
    """`func (path:line)` with the path shortened to the project or the package."""
    frame = frame.replace(str(ROOT) + "/", "")
    m = re.match(r"^(.*) \((.*)\)$", frame)
    if not m:
        return frame
    name, where = m.groups()
    where = _SITE.sub("", where)
    where = re.sub(r"^.*/lib/python3\.\d+/", "", where)
    return f"{name} ({where})"


def _function(frame: str) -> str:
    return re.sub(r":\d+\)$", ")", frame)


def summarize_folded(text: str, *, rate: int, seconds: int, top: int = 12) -> dict[str, Any]:
    """Self and inclusive time per function of the event-loop thread, and where the redirect
    handler spends its time; other threads (executors: fdatasync, segment close) apart.

    `text` is py-spy's raw output with --threads: `thread (tid): name;f (file:line);... N`.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    in_redirect: Counter[str] = Counter()
    other_threads: Counter[str] = Counter()
    total = redirect_total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        parts = stack.split(";")
        thread = parts[0] if parts[0].startswith("thread (") else ""
        frames = [_short(f) for f in parts[1 if thread else 0:]
                  if f and not f.startswith("process ")]
        if not frames:
            continue
        funcs = [_function(f) for f in frames]
        if thread and not thread.endswith("MainThread"):
            other_threads[funcs[-1]] += n
            continue
        total += n
        own[funcs[-1]] += n
        for f in set(funcs):
            inclusive[f] += n
        for i, f in enumerate(frames):
            if _REDIRECT_FRAME.search(f):
                redirect_total += n
                if i + 1 < len(frames):
                    in_redirect[f"calls {funcs[i + 1]}"] += n
                else:
                    lineno = f.rsplit(":", 1)[1].rstrip(")")
                    in_redirect[f"own code, line {lineno}"] += n
                break

    def pct(c: Counter[str], of: int) -> list[tuple[str, float]]:
        return [(k, round(100 * v / of, 1)) for k, v in c.most_common(top)] if of else []

    expected = rate * seconds
    return {
        "main_thread_samples": total,
        "main_thread_busy": round(total / expected, 2) if expected else None,
        "redirect_handler_pct": round(100 * redirect_total / total, 1) if total else 0.0,
        "top_self_pct": pct(own, total),
        "top_inclusive_pct": pct(inclusive, total),
        "redirect_breakdown_pct_of_handler": pct(in_redirect, redirect_total),
        "other_threads_busy": round(sum(other_threads.values()) / expected, 2) if expected
        else None,
        "other_threads_top_pct": pct(other_threads, sum(other_threads.values())),
    }


# -- reporting -----------------------------------------------------------------------------------


def say(msg: str) -> None:
    print(msg, flush=True)


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "   -   "
    return f"{v * 1000:5.0f}us" if v < 1 else f"{v:6.2f}ms"


def fmt_cpu(cpu: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.1f}s" for k, v in cpu.items() if v)


def machine_info(cfg: Config, dsn: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    for pkg in ("aiohttp", "uvloop", "asyncpg", "pgserver", "maxminddb", "refguard"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[pkg] = metadata.version(pkg)
    with contextlib.suppress(Exception):
        info["postgres"] = pg_fetchval(dsn, "SHOW server_version")
    out = subprocess.run([cfg.wrk, "-v"], capture_output=True, text=True, check=False)
    info["wrk"] = (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) \
        else "?"
    return info


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summary_rows(bench: Bench) -> list[dict[str, Any]]:
    """One row per (workers, mode, server): medians over the rounds."""
    rows = []
    for n in bench.cfg.workers:
        for mode in bench.cfg.modes:
            for kind in servers_for(bench.cfg):
                got = [c for c in bench.cases
                       if c.workers == n and c.mode == mode and c.server == kind]
                if not got:
                    continue

                def med(key: str, cases: list[Case] = got) -> float | None:
                    vals = [c.wrk.percentiles_ms[key] for c in cases
                            if key in c.wrk.percentiles_ms]
                    return round(_median(vals), 3) if vals else None

                cpu_w = [c.cpu_us_per_request["workers"] for c in got]
                cpu_t = [c.cpu_us_per_request["total"] for c in got]
                rows.append({
                    "workers": n, "mode": mode, "server": kind, "rounds": len(got),
                    "rps": round(_median([c.wrk.rps for c in got]), 1),
                    "cpu_us_per_req_workers": _median([v for v in cpu_w if v is not None])
                    if any(v is not None for v in cpu_w) else None,
                    "cpu_us_per_req_total": _median([v for v in cpu_t if v is not None])
                    if any(v is not None for v in cpu_t) else None,
                    "p50_ms": med("p50"), "p99_ms": med("p99"),
                    "socket_errors": sum(c.wrk.socket_errors for c in got),
                    "non_2xx_3xx": sum(c.wrk.non_2xx_3xx for c in got),
                })
    return rows


def _ratios(n: int, a: dict[str, Any], b: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    """b/a and b/c of one refguard variant b against bare a and naive c (summary rows)."""
    b_a = b["rps"] / a["rps"] if a["rps"] else 0.0
    b_c = b["rps"] / c["rps"] if c["rps"] else 0.0
    target_bc = TARGET_B_OVER_C.get(n, TARGET_B_OVER_C[2])
    p99 = b["p99_ms"]
    cpu_a, cpu_b, cpu_c = (r["cpu_us_per_req_total"] for r in (a, b, c))
    return {
        "b_over_a": round(b_a, 3),
        "b_over_a_target": TARGET_B_OVER_A, "b_over_a_met": b_a >= TARGET_B_OVER_A,
        "b_over_c": round(b_c, 2), "b_over_c_target": target_bc,
        "b_over_c_met": b_c >= target_bc, "refguard_p99_ms": p99,
        "p99_target_ms": TARGET_P99_MS,
        "p99_met": p99 is not None and p99 < TARGET_P99_MS,
        "bare_p99_ms": a["p99_ms"],
        # What b/a would be if both were CPU-bound on an otherwise idle machine.
        "b_over_a_by_cpu": round(cpu_a / cpu_b, 3) if cpu_a and cpu_b else None,
        "b_over_c_by_cpu": round(cpu_c / cpu_b, 2) if cpu_c and cpu_b else None,
    }


def ratio_rows(bench: Bench) -> list[dict[str, Any]]:
    """One row per (workers, mode). Its top-level b/a, b/c fields are those of `b_server` (refguard,
    or refguard+geo with --geoip on), as before --geoip existed; `by_server` has them for each
    refguard variant measured, and `geo_vs_refguard` what geo enrichment costs when both were."""
    summary = summary_rows(bench)
    rows = []
    for n in bench.cfg.workers:
        for mode in bench.cfg.modes:
            got = {r["server"]: r for r in summary if r["workers"] == n and r["mode"] == mode}
            kinds = [k for k in refguard_kinds(bench.cfg) if k in got]
            if "bare" not in got or "naive" not in got or not kinds:
                continue
            by_server = {k: _ratios(n, got["bare"], got[k], got["naive"]) for k in kinds}
            row: dict[str, Any] = {"workers": n, "mode": mode, **by_server[kinds[0]],
                                   "b_server": kinds[0], "by_server": by_server}
            if len(kinds) == 2:
                ref, geo = got["refguard"], got["refguard+geo"]
                cpu_ref, cpu_geo = ref["cpu_us_per_req_total"], geo["cpu_us_per_req_total"]
                row["geo_vs_refguard"] = {
                    "rps": round(geo["rps"] / ref["rps"], 3) if ref["rps"] else None,
                    "cpu_us_per_req_total": round(cpu_geo / cpu_ref, 3)
                    if cpu_ref and cpu_geo else None,
                    "cpu_us_per_req_total_extra": round(cpu_geo - cpu_ref, 1)
                    if cpu_ref is not None and cpu_geo is not None else None,
                }
            rows.append(row)
    return rows


def print_report(bench: Bench, json_path: Path | None) -> None:
    cfg = bench.cfg
    if not bench.cases:
        say("no case was measured")
        return
    say("")
    say(f"Redirect benchmark  wrk -t{cfg.threads} -c{cfg.connections} -d{cfg.duration}s "
        f"(warm-up {cfg.warmup}s, {cfg.rounds} round(s))  on {bench.machine.get('cpus')} CPU(s), "
        f"{bench.machine.get('cpu_model', '?')}")
    say("")
    say(f"{'workers':>7} {'mode':<9} {'rnd':>3} {'server':<12} {'req/s':>9} {'p50':>8} "
        f"{'p99':>8} {'max':>8} {'err':>4} {'!3xx':>4} {'cpu us/req':>11}  "
        "cpu seconds | machine")
    for c in bench.cases:
        p = c.wrk.percentiles_ms
        us = c.cpu_us_per_request
        say(f"{c.workers:>7} {c.mode:<9} {c.round + 1:>3} {c.server:<12} {c.wrk.rps:>9,.0f} "
            f"{fmt_ms(p.get('p50')):>8} {fmt_ms(p.get('p99')):>8} "
            f"{fmt_ms(c.wrk.latency_max_ms):>8} {c.wrk.socket_errors:>4} "
            f"{c.wrk.non_2xx_3xx:>4} {fmt_opt(us['workers']):>5}/{fmt_opt(us['total']):<5}  "
            f"{fmt_cpu(c.cpu_s)} | {fmt_machine(c.machine)}")
    say("  (cpu us/req: the server's workers / everything it needs incl. PostgreSQL, per request)")
    if cfg.rounds > 1:
        say("")
        say("medians over the rounds")
        say(f"{'workers':>7} {'mode':<9} {'':>3} {'server':<12} {'req/s':>9} {'p50':>8} "
            f"{'p99':>8} {'cpu us/req':>11}")
        for r in summary_rows(bench):
            say(f"{r['workers']:>7} {r['mode']:<9} {'':>3} {r['server']:<12} {r['rps']:>9,.0f} "
                f"{fmt_ms(r['p50_ms']):>8} {fmt_ms(r['p99_ms']):>8} "
                f"{fmt_opt(r['cpu_us_per_req_workers']):>5}/"
                f"{fmt_opt(r['cpu_us_per_req_total']):<5}")
    say("")
    say(f"{'workers':>7} {'mode':<9} {'b':<12} {'b/a':>6} {'target':>9} {'b/c':>6} {'target':>8} "
        f"{'b p99':>8} {'target':>10}   (bare p99)  by cpu: b/a  b/c")
    for r in ratio_rows(bench):
        for kind, q in r["by_server"].items():
            say(f"{r['workers']:>7} {r['mode']:<9} {kind:<12} {q['b_over_a']:>6.2f} "
                f"{'>=' + str(q['b_over_a_target']):>6} {mark(q['b_over_a_met'])} "
                f"{q['b_over_c']:>6.1f} {'>=' + format(q['b_over_c_target'], 'g'):>5} "
                f"{mark(q['b_over_c_met'])} {fmt_ms(q['refguard_p99_ms']):>8} "
                f"{'<' + format(q['p99_target_ms'], 'g') + 'ms':>7} {mark(q['p99_met'])}"
                f"   ({fmt_ms(q['bare_p99_ms']).strip()})  {fmt_opt(q['b_over_a_by_cpu']):>10} "
                f"{fmt_opt(q['b_over_c_by_cpu']):>4}")
        g = r.get("geo_vs_refguard")
        if g:
            say(f"{'':>7} {'':<9} geo on/off: req/s x{fmt_opt(g['rps'])}, cpu us/req (total) "
                f"x{fmt_opt(g['cpu_us_per_req_total'])} "
                f"({'+' if (g['cpu_us_per_req_total_extra'] or 0) >= 0 else ''}"
                f"{fmt_opt(g['cpu_us_per_req_total_extra'])} us)")
    say("")
    say("count check (rows in clicks for the measured link once the flusher drained; "
        "refguard+geo: and how many of them have a country)")
    say(f"{'workers':>7} {'mode':<9} {'rnd':>3} {'server':<12} {'wrk answ.':>10} {'srv answ.':>10} "
        f"{'rows':>10} {'after stop':>10} {'geo rows':>10} {'lost':>5} {'dup':>5} {'drain':>6}"
        "  verdict")
    for k in bench.checks:
        say(f"{k.workers:>7} {k.mode:<9} {k.round + 1:>3} {k.server:<12} {k.wrk_answered:>10} "
            f"{fmt_opt(k.server_answered):>10} {k.rows:>10} {fmt_opt(k.rows_after_stop):>10} "
            f"{fmt_opt(k.geo_rows):>10} {k.lost:>5} {k.duplicated:>5} {fmt_opt(k.drain_s):>5}s  "
            f"{'OK' if k.ok else 'FAILED'}" + (f"  ({k.note})" if k.note else ""))
    print_stages(bench)
    print_profile(bench.profile)
    if json_path is not None:
        say("")
        say(f"results: {json_path.relative_to(ROOT)}")


def print_stages(bench: Bench) -> None:
    """CPU per click by stage: the flusher's (live, from its metric, through the drain), with
    the workers' and PostgreSQL's over the measured window; then bench.flush_stages."""
    live = [c for c in bench.cases if c.flusher_us]
    if live:
        say("")
        say("CPU per click by stage, live (us): workers over the wrk window; flusher stages "
            "through the drain; postgres over the wrk window")
        stages = sorted({k for c in live for k in c.flusher_us})
        say(f"{'workers':>7} {'mode':<9} {'rnd':>3} {'server':<12} {'workers':>8} "
            + " ".join(f"{s:>7}" for s in stages) + f" {'flusher':>8} {'postgres':>8}")
        for c in live:
            n = c.wrk.requests or 1
            say(f"{c.workers:>7} {c.mode:<9} {c.round + 1:>3} {c.server:<12} "
                f"{c.cpu_s.get('workers', 0.0) / n * 1e6:>8.1f} "
                + " ".join(f"{c.flusher_us.get(s, 0.0):>7.1f}" for s in stages)
                + f" {sum(c.flusher_us.values()):>8.1f} "
                f"{c.cpu_s.get('postgres', 0.0) / n * 1e6:>8.1f}")
    if bench.stages:
        from bench.flush_stages import report

        say("")
        for line in report(bench.stages):
            say(line)


def print_profile(profile: dict[str, Any] | None) -> None:
    if not profile:
        return
    say("")
    if "skipped" in profile:
        say(f"profile: skipped ({profile['skipped']})")
        return
    for kind, prof in profile.items():
        if "skipped" in prof:
            say(f"profile of {kind}: skipped ({prof['skipped']})")
            continue
        say(f"profile of the {kind} worker (pid {prof['worker_pid']}, {prof.get('mode')}, "
            "1 worker, "
            f"{prof.get('wrk_rps_while_profiling', 0):,.0f} req/s while sampled): event loop "
            f"busy {prof['main_thread_busy']}, other threads {prof['other_threads_busy']}"
            + (f", redirect handler {prof['redirect_handler_pct']}% of the loop's samples"
               if kind in REFGUARD_KINDS else ""))
        say("  top self:      " + "; ".join(f"{p}% {f}" for f, p in prof["top_self_pct"][:8]))
        if kind in REFGUARD_KINDS:
            say("  inside the handler (% of its samples): " + "; ".join(
                f"{p}% {f}" for f, p in prof["redirect_breakdown_pct_of_handler"][:10]))
            say("  other threads: " + "; ".join(
                f"{p}% {f}" for f, p in prof["other_threads_top_pct"][:4]))
        say(f"  folded stacks: {prof['folded_file']}")


def mark(ok: bool) -> str:
    return "ok" if ok else "--"


def fmt_opt(v: Any) -> str:
    return "-" if v is None else str(v)


def fmt_machine(m: dict[str, float]) -> str:
    if not m:
        return ""
    return (f"busy {m['busy_cores']:.1f} cores, others {m['foreign_cores']:.1f}, "
            f"steal {m['steal_pct']:.0f}%")


def write_json(bench: Bench) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"redirect-{bench.started.strftime('%Y%m%dT%H%M%SZ')}.json"
    doc = {
        "benchmark": "redirect",
        "started_at": bench.started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "config": asdict(bench.cfg),
        "machine": bench.machine,
        "cases": [
            {**{k: v for k, v in asdict(c).items() if k != "wrk"},
             "cpu_us_per_request": c.cpu_us_per_request,
             "wrk": {**asdict(c.wrk), "answered": c.wrk.answered}}
            for c in bench.cases
        ],
        "summary": summary_rows(bench),
        "ratios": ratio_rows(bench),
        "count_checks": [asdict(k) for k in bench.checks],
        "count_check_ok": all(k.ok for k in bench.checks),
        "profile": bench.profile,
        "servers": list(servers_for(bench.cfg)),
        "geoip": bench.geoip,
        "flusher_stages": bench.stages,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


# -- main ----------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,2; got {text!r}") from None
    if not values or any(not 1 <= v <= 64 for v in values):
        raise argparse.ArgumentTypeError("worker counts must be between 1 and 64")
    return values


def _modes(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values or any(v not in ("keepalive", "close") for v in values):
        raise argparse.ArgumentTypeError("modes are keepalive and/or close")
    return values


def parse_args(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(prog="python -m bench.redirect",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=int, help="seconds per measured case (default 10; 3 with "
                   "--quick)")
    p.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    p.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    p.add_argument("--timeout", type=int, default=2, help="wrk --timeout in seconds (default 2)")
    p.add_argument("--workers", type=_int_list, default=[1, 2],
                   help="worker counts, comma-separated (default 1,2)")
    p.add_argument("--modes", type=_modes, default=["keepalive", "close"],
                   help="keepalive,close (default both)")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure a, b, c this many times (alternating order) and report medians; "
                        "helps on a noisy shared machine (default 1)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up seconds per server (default 1)")
    p.add_argument("--quick", action="store_true", help="smoke run: ~3 s per case")
    p.add_argument("--profile", choices=["auto", "always", "never"], default="auto",
                   help="py-spy the refguard worker under keep-alive load with 1 worker: when b/a "
                        "misses its target (auto, default), always, or never")
    p.add_argument("--profile-mode", choices=["keepalive", "close"], default="keepalive",
                   help="the connection mode the profile is taken under (default keepalive)")
    p.add_argument("--profile-seconds", type=int,
                   help="py-spy sampling seconds (default 5; 3 with --quick)")
    p.add_argument("--drain-timeout", type=float, default=120.0,
                   help="seconds to wait for the flusher to drain after a case")
    p.add_argument("--stage-clicks", type=int,
                   help="synthetic clicks a traffic shape for the flusher's stage costs "
                        "(bench/flush_stages.py; default 50000, 20000 with --quick; 0: skip)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (logs)")
    p.add_argument("--geoip", choices=["on", "off", "both"], default="both",
                   help="refguard with GeoIP databases (on: refguard+geo), without (off: "
                        "refguard), or both, side by side (default both)")
    args = p.parse_args(argv)
    duration = args.duration or (3 if args.quick else 10)
    if min(duration, args.connections, args.threads, args.rounds) < 1:
        p.error("--duration, --connections, --threads and --rounds must be positive")
    if args.stage_clicks is not None and 0 < args.stage_clicks < 5000:
        p.error("--stage-clicks must be 0 or at least 5000 (one journal segment)")
    wrk = shutil.which("wrk")
    if wrk is None:
        say("wrk is missing; installing it with apt-get")
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
        wrk = shutil.which("wrk")
        if wrk is None:
            subprocess.run(["apt-get", "update", "-qq"], check=False)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
            wrk = shutil.which("wrk")
        if wrk is None:
            p.error("wrk is not installed and apt-get could not install it")
    return Config(
        duration=duration, warmup=args.warmup, connections=args.connections,
        threads=args.threads, timeout=args.timeout, workers=args.workers, modes=args.modes,
        rounds=args.rounds, profile=args.profile, profile_mode=args.profile_mode,
        profile_seconds=max(1, args.profile_seconds or (3 if args.quick else 5)),
        drain_timeout=args.drain_timeout, keep_tmp=args.keep_tmp, wrk=wrk, geoip=args.geoip,
        stage_clicks=(args.stage_clicks if args.stage_clicks is not None
                      else 20_000 if args.quick else 50_000),
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    bench = Bench(cfg)
    status = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        say("interrupted; stopping the servers and PostgreSQL")
        status = 130
    except Exception as exc:
        say(f"bench failed: {type(exc).__name__}: {exc}")
        status = 2
    finally:
        bench.close()
    json_path = write_json(bench) if bench.cases else None
    print_report(bench, json_path)
    if status:
        return status
    if any(not k.ok for k in bench.checks):
        say("COUNT CHECK FAILED: lost or duplicated clicks, or clicks without geo")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
