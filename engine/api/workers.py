"""`arbiter serve --workers N`: N server processes on one port, so that every core serves.

One Python process is held to about one core by the GIL. The supervisor (the process
that ran `arbiter serve`) starts N worker processes (spawned: nothing of grpc crosses a
fork), each a complete server (`serve`: its own gRPC server, health, reloader, decision
log writer and Redis clients) bound with SO_REUSEPORT, so the kernel spreads incoming
connections over them. A client's connection stays with one worker: clients with one
channel land on one process.

The supervisor first makes sure the port is free (a busy port fails, as with one
process; SO_REUSEPORT must not quietly share it with another program), creates the
decision-id secrets once (the workers would race to), then forwards SIGINT/SIGTERM (each
worker drains its calls and its decision log) and SIGHUP (reload), and restarts a worker
that dies, at most once a second each.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from common import logs
from common.errors import ConfigurationError
from engine.adapters import secret_file
from engine.service import metrics
from engine.service.learner_process import LearnerChild
from engine.settings import ServerSettings

log = logging.getLogger(__name__)

RESTART_SECONDS = 1.0


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_port_free(host: str, port: int) -> None:
    """Raises ConfigurationError when something listens on ``host:port`` already."""
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot listen on {host}:{port}: {exc.strerror} (another `arbiter serve`?);"
                    " choose --port or ARBITER_PORT"
                ) from exc


def _worker(settings: ServerSettings, redis_url: str, index: int, count: int) -> None:
    from engine.api.server import serve  # grpc is imported in the worker only

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logs.configure(logging.INFO, worker=f"{index + 1}/{count}")
    asyncio.run(serve(settings, redis_url, reuse_port=True))


class Supervisor:
    """Starts, watches and stops the workers (one instance per `arbiter serve`)."""

    def __init__(self, settings: ServerSettings, redis_url: str, count: int) -> None:
        self._settings, self._redis_url, self._count = settings, redis_url, count
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[BaseProcess] = []
        self._started: list[float] = []
        self.stopping = False
        self.reload = False

    def _start(self, index: int) -> BaseProcess:
        process = self._context.Process(
            target=_worker,
            args=(self._settings, self._redis_url, index, self._count),
            name=f"arbiter-worker-{index + 1}",
        )
        process.start()
        return process

    def _signal(self, sig: int) -> None:
        for process in self._workers:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, sig)

    def _restart_dead(self) -> None:
        for i, process in enumerate(self._workers):
            if process.is_alive() or time.monotonic() - self._started[i] < RESTART_SECONDS:
                continue
            if process.pid is not None:
                metrics.worker_exited(process.pid)
            log.error(
                "worker %d (pid %s) exited with %s; starting another",
                i + 1,
                process.pid,
                process.exitcode,
            )
            self._workers[i], self._started[i] = self._start(i), time.monotonic()

    def run(self) -> None:
        self._workers = [self._start(i) for i in range(self._count)]
        learner = LearnerChild(self._redis_url) if self._settings.learner == "process" else None
        self._started = [time.monotonic()] * self._count
        settings = self._settings
        log.info("supervising %d workers on %s:%d", self._count, settings.host, settings.port)
        try:
            while not self.stopping:
                time.sleep(0.1)
                if self.reload:
                    self.reload = False
                    self._signal(signal.SIGHUP)
                if not self.stopping:
                    self._restart_dead()
                    if learner is not None:
                        learner.check()
        finally:
            self._stop()
            if learner is not None:
                learner.stop()

    def _stop(self) -> None:
        """SIGTERM to every worker (each drains its calls and decision log), then waits
        the grace period and a margin before killing one that hangs."""
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + self._settings.grace_seconds + 5
        for process in self._workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker pid %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()


def run(settings: ServerSettings, redis_url: str, count: int) -> int:
    """Supervises ``count`` workers until SIGINT or SIGTERM; returns the exit status.
    The caller has checked what every worker would refuse at its start (`serve`:
    ``security_from``), so that it is refused once, not in a loop of worker restarts."""
    if settings.port == 0:
        raise ConfigurationError("--workers needs a fixed port: workers share one port")
    check_port_free(settings.host, settings.port)
    secret_file.load_or_create(settings.decision_secrets_path)
    # One /metrics for every worker: they write their values into this folder (the
    # variable is set before they start, so they import prometheus_client with it).
    folder = metrics.multiprocess_folder()
    if settings.metrics_port is not None:
        metrics.expose(
            settings.host,
            settings.metrics_port,
            workers_folder=folder,
            offer_health=metrics.offer_health_reader(redis_url),
            workers=count,
        )
    supervisor = Supervisor(settings, redis_url, count)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        supervisor.stopping = True

    def on_reload(signum: int, frame: FrameType | None) -> None:
        supervisor.reload = True

    handlers = {signal.SIGINT: on_stop, signal.SIGTERM: on_stop, signal.SIGHUP: on_reload}
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        supervisor.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        metrics.stop_exposing()
        shutil.rmtree(folder, ignore_errors=True)
    return 0
