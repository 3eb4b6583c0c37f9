"""Drive a fresh refguard through its public interfaces only: the `refguard` command line and
the HTTP API of a `refguard serve --no-jobs` started here (and stopped at the end).

A fresh embedded database per run: REFGUARD_DATA_DIR is a new folder and REFGUARD_DATABASE_URL
is left unset.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.results import ROOT

REFGUARD = [sys.executable, "-m", "tracker"]
if (ROOT / ".venv" / "bin" / "refguard").exists():
    REFGUARD = [str(ROOT / ".venv" / "bin" / "refguard")]


class DriveError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Refguard:
    """One refguard: a data dir, a server, an admin token."""

    def __init__(self, workdir: Path, geo_dir: Path | None) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.geo_dir = geo_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.timings: dict[str, float] = {}
        self.outputs: dict[str, str] = {}
        self._local = __import__("threading").local()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("REFGUARD_")}
        env["REFGUARD_DATA_DIR"] = str(self.data)
        env["REFGUARD_LOG_FORMAT"] = "text"
        if self.geo_dir is not None:
            env["REFGUARD_GEOIP_DIR"] = str(self.geo_dir)
        return env

    def cli(self, *args: str, ok: tuple[int, ...] = (0,), timeout: float = 1800) -> str:
        t0 = time.monotonic()
        done = subprocess.run([*REFGUARD, *args], env=self.env(), capture_output=True,
                              timeout=timeout, check=False, cwd=self.workdir)
        name = " ".join(args[:2])
        self.timings[name] = round(self.timings.get(name, 0) + time.monotonic() - t0, 2)
        out = done.stdout.decode(errors="replace")
        err = done.stderr.decode(errors="replace")
        self.outputs[name] = (out + err)[-4000:]
        if done.returncode not in ok:
            raise DriveError(f"refguard {' '.join(args)} exited {done.returncode}: "
                             f"{(err or out).strip()[-600:]}")
        return out

    # -- server -------------------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cli("migrate")
        self.token = self.cli("token", "create", "--role", "admin",
                              "--name", "redteam2").strip().splitlines()[-1]
        log = (self.workdir / "serve.log").open("wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [*REFGUARD, "serve", "--no-jobs", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
            start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DriveError(f"refguard serve exited {self.proc.returncode}: "
                                 + (self.workdir / "serve.log").read_text()[-600:])
            try:
                if requests.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    self.timings["serve start"] = round(time.monotonic() - t0, 2)
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise DriveError("refguard serve did not answer /healthz within 90 s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)  # the server we started, and its workers
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    # -- API ----------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        s = getattr(self._local, "s", None)
        if s is None:
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {self.token}"
            self._local.s = s
        return s

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        for attempt in range(5):
            try:
                r = self.session().request(method, f"{self.base}{path}", json=body,
                                           params=params, timeout=120)
            except requests.ConnectionError:
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
                continue
            if r.status_code == 429 and attempt < 4:
                time.sleep(1.0 * (attempt + 1))
                continue
            if r.status_code not in ok:
                raise DriveError(f"{method} {path} -> {r.status_code}: {r.text[:400]}")
            return r.json()
        raise DriveError(f"{method} {path}: gave up")

    def pages(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            q = dict(params, limit=1000)
            if cursor:
                q["cursor"] = cursor
            page = self.call("GET", path, params=q)
            items += page["items"]
            cursor = page.get("next")
            if not cursor:
                return items

    def setup_program(self, slug: str, referrers: list[dict[str, Any]]) -> None:
        t0 = time.monotonic()
        self.call("POST", "/api/v1/programs", {
            "slug": slug, "name": f"Red team {slug}", "destination_domains": ["shop.example.com"],
            "settings": {
                "attribution_model": "last_touch", "attribution_window_days": 30,
                "hold_days": 0,
                "reward": {"currency": "USD", "rules": [
                    {"beneficiary": "referrer", "on": "purchase", "flat": 1000}]},
            }})

        def one(ref: dict[str, Any]) -> None:
            self.call("POST", "/api/v1/referrers", {"program": slug,
                                                    "external_id": ref["external_id"],
                                                    "email": ref["email"]})
            self.call("POST", "/api/v1/links", {"program": slug, "referrer": ref["external_id"],
                                                "code": ref["code"],
                                                "destination": "https://shop.example.com/"})

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, referrers))
        self.timings["api setup"] = round(time.monotonic() - t0, 2)

    def run_pipeline(self, clicks: Path, conversions: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        imported = self.cli("import", "--clicks", str(clicks), "--conversions",
                            str(conversions), ok=(0, 2))
        out["import"] = [ln for ln in imported.splitlines() if ln.startswith(("clicks:",
                                                                             "conversions:"))]
        out["attribution"] = self.cli("attribution", "run").strip().splitlines()[-1:]
        scan = self.cli("fraud", "scan", "--json").strip()
        try:
            out["scan"] = json.loads(scan.splitlines()[-1])
        except (ValueError, IndexError):
            out["scan"] = scan[-2000:]
        out["release"] = self.cli("rewards", "release").strip().splitlines()[-1:]
        return out

    def results(self, slug: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        t0 = time.monotonic()
        rewards = self.pages("/api/v1/rewards", {"program": slug})
        flags = self.pages("/api/v1/fraud/flags", {"program": slug})
        self.timings["api results"] = round(time.monotonic() - t0, 2)
        return rewards, flags


def write_ndjson(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")))
            f.write("\n")
