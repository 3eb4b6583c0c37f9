"""`refguard demo` as a command: the server it builds on (one started for it when none answers
on the local port), the report it prints, and the started server kept serving until the user
stops it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from tracker.demo.build import demo
from tracker.demo.client import DemoError, answers, one_line
from tracker.demo.geodb import demo_geo
from tracker.demo.report import print_report
from tracker.formats import SLUG_RE
from tracker.settings import Settings

DEMO_LOG = "demo-server.log"


def server_url(settings: Settings, url: str | None, program: str) -> str:
    """The base URL of the server to build on: `url`, or the local port's. ValueError (bad
    usage) for a URL that is no server's base URL or a program that is no slug."""
    if url is None:
        host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host  # noqa: S104
        url = f"http://{host}:{settings.port}"
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
            or parts.path.strip("/") or parts.query or parts.fragment):
        raise ValueError(f"--url {url!r}: give the server's base URL, like "
                         "http://127.0.0.1:8080")
    if not SLUG_RE.fullmatch(program):
        raise ValueError(f"--program {program!r}: a slug is 1 to 63 lowercase letters, digits, "
                         "'-' and '_'")
    return url


def run(settings: Settings, url: str, *, program: str, seed: int, own_server: bool) -> int:
    """The demo built on the server at `url` and its report printed; the exit status. With
    `own_server` (no --url) and nothing answering there, a server is started for it, and
    served until it is stopped."""
    server = None
    serving = False
    try:
        geo_dir = None
        if own_server and not asyncio.run(answers(url)):
            # The server started here reads the demo's geo databases (unless the user has some).
            settings, geo_dir = demo_geo(settings)
            server = _serve_for_demo(settings, url)
        result = asyncio.run(demo(settings, url, program=program, seed=seed))
        if server is not None:
            result.geo_dir, result.geo_served = geo_dir, True
        print_report(result, sys.stdout)
        if server is not None:
            print(f"\nrefguard serves the demo at {url} until you stop it (Ctrl-C); its log is "
                  f"{settings.data_dir / DEMO_LOG}", flush=True)
            serving = True
            code = server.wait()
            print(f"refguard: the demo's server stopped (exit {code}); see "
                  f"{settings.data_dir / DEMO_LOG}", file=sys.stderr)
            return 1
    except DemoError as exc:
        print(f"refguard: {one_line(str(exc), 1000)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0 if serving else 130  # stopping the served demo is its normal end
    finally:
        if server is not None:
            _stop(server)
    return 0


def _serve_for_demo(settings: Settings, url: str) -> subprocess.Popen[bytes]:
    """`refguard serve` in a child process, for a demo with no server to talk to; waits until
    it answers. Behind no proxy, it believes X-Forwarded-For from this machine only, so the
    demo's live clicks carry their visitors' addresses."""
    env = dict(os.environ)
    env.setdefault("REFGUARD_TRUSTED_PROXIES", "127.0.0.1/32,::1/128")
    if settings.geoip_dir is not None:
        env["REFGUARD_GEOIP_DIR"] = str(settings.geoip_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / DEMO_LOG
    print(f"no server answers at {url}: starting one (refguard serve; log {log_path})",
          file=sys.stderr, flush=True)
    with log_path.open("ab") as log:
        start = log.tell()  # the log may hold earlier runs: quote only this one
        server = subprocess.Popen([sys.executable, "-m", "tracker", "serve"], env=env,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    # A plain `kill` of this command stops the server too (Ctrl-C reaches both already).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _until_it_answers(server, url, log_path, start)
    except BaseException:  # a kill or Ctrl-C while it starts must not leave it behind
        _stop(server)
        raise
    return server


def _until_it_answers(server: subprocess.Popen[bytes], url: str, log_path: Path,
                      start: int) -> None:
    deadline = time.monotonic() + 120  # a first start creates the embedded database
    while time.monotonic() < deadline:
        if server.poll() is not None:
            with log_path.open("rb") as log:
                log.seek(start)
                tail = log.read().decode(errors="replace").strip().splitlines()[-1:]
            raise DemoError(f"the server stopped at start ({tail[0] if tail else 'no output'})")
        if asyncio.run(answers(url)):
            return
        time.sleep(0.5)
    raise DemoError(f"the server started for the demo did not answer at {url} within 2 minutes")


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the server drains its journal), then SIGKILL if it hangs."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(90)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
