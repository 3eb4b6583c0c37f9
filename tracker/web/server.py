"""`refguard serve`: N HTTP workers on one port (SO_REUSEPORT) and one background process.

The supervisor (this process) starts the embedded database if needed, applies migrations, then
spawns the workers and the background process (flusher + jobs) and restarts any that dies. On
SIGTERM/SIGINT it stops the workers first (each seals its journal segment), then the background
process (which drains the journal into PostgreSQL), then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import shutil
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from tracker import logs
from tracker.settings import Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0


def _setup_child_logging(settings: Settings) -> None:
    logs.setup(settings.log_format)


def worker_main(settings: Settings, index: int) -> None:
    """One HTTP worker: the redirect and the API, no flusher, no jobs."""
    _setup_child_logging(settings)
    import uvloop

    from tracker.web import protocol
    from tracker.web.app import create_app

    app = create_app(settings, background=False)
    uvloop.run(protocol.serve(app, settings.host, settings.port, shutdown_timeout=10))


def background_main(settings: Settings) -> None:
    """The flusher and the jobs, until SIGTERM; then the journal is drained."""
    _setup_child_logging(settings)
    import uvloop

    from tracker.web.app import background

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with background(settings, settings.database_url or "", drain_s=STOP_TIMEOUT_S - 5):
            await stop.wait()

    uvloop.run(run())


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ctx = mp.get_context("spawn")
        self.workers: dict[int, BaseProcess] = {}
        self.background: BaseProcess | None = None
        self.stopping = False
        self._restarts: dict[str, list[float]] = {}

    def _spawn_worker(self, index: int) -> None:
        proc = self.ctx.Process(target=worker_main, args=(self.settings, index),
                                name=f"refguard-worker-{index}", daemon=False)
        proc.start()
        self.workers[index] = proc

    def _spawn_background(self) -> None:
        proc = self.ctx.Process(target=background_main, args=(self.settings,),
                                name="refguard-background", daemon=False)
        proc.start()
        self.background = proc

    def _backoff(self, name: str) -> float:
        now = time.monotonic()
        recent = [t for t in self._restarts.get(name, []) if now - t < 60]
        recent.append(now)
        self._restarts[name] = recent
        return min(0.1 * 2 ** (len(recent) - 1), 10.0) if len(recent) > 1 else 0.0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        from tracker.metrics import mark_process_dead

        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self._spawn_background()
        for i in range(self.settings.workers):
            self._spawn_worker(i)
        while not self.stopping:
            time.sleep(0.2)
            for index, proc in list(self.workers.items()):
                if not proc.is_alive() and not self.stopping:
                    log.warning("worker %d (pid %s) exited with %s; restarting", index, proc.pid,
                                proc.exitcode)
                    if proc.pid:
                        mark_process_dead(proc.pid)
                    time.sleep(self._backoff(f"worker-{index}"))
                    self._spawn_worker(index)
            bg = self.background
            if bg is not None and not bg.is_alive() and not self.stopping:
                log.warning("background process exited with %s; restarting", bg.exitcode)
                if bg.pid:
                    mark_process_dead(bg.pid)
                time.sleep(self._backoff("background"))
                self._spawn_background()
        return self.shutdown()

    def shutdown(self) -> int:
        log.info("stopping: workers first, then the flusher drains the journal")
        _terminate([*self.workers.values()])
        if self.background is not None:
            _terminate([self.background])
        return 0


def _terminate(procs: list[BaseProcess]) -> None:
    for proc in procs:
        if proc.is_alive() and proc.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            log.error("%s did not stop in time; killing it (its journal replays at start)",
                      proc.name)
            proc.kill()
            proc.join(5)


def prepare_metrics_dir(settings: Settings) -> None:
    """Multiprocess metrics live in files; a fresh folder per supervisor start."""
    path = settings.data_dir / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def serve(settings: Settings) -> int:
    logs.setup(settings.log_format)
    prepare_metrics_dir(settings)
    return Supervisor(settings).run()
