"""`arbiter serve`: Redis (``REDIS_URL``, or an embedded redis-server of our own), then the
gRPC server (one process per core by default, engine/api/workers.py) until SIGINT or
SIGTERM. With ``--demo``, a preparation step (the demo world
and a first model, from training/cli.py) runs before serving."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from common.errors import ConfigurationError
from engine.clients.cli.command import Command
from engine.settings import DEFAULT_TARGET, ServerSettings
from feature_store.embedded import EmbeddedRedis

TRY = """serving on {host}:{port} ({count} worker processes). Try, in another terminal:
  .venv/bin/arbiter decide cust-000042 --channel web{target}
  .venv/bin/arbiter decide cust-000042 --channel call-center{target}
  .venv/bin/arbiter event cust-000042 --type page_view --attr category=fibre{target}
  .venv/bin/arbiter profile cust-000042{target}
Ctrl-C stops."""


def _reachable(host: str) -> str:
    """Where a client on this machine reaches a server listening on ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def hint(host: str, port: int, count: int) -> str:
    """What to try, with ``--target`` where the service is not at the clients' default."""
    address = f"{_reachable(host)}:{port}"
    target = "" if address == DEFAULT_TARGET else f" --target {address}"
    return TRY.format(host=host, port=port, count=count, target=target)


def _announce_when_listening(host: str, port: int, text: str, *, seconds: float = 300) -> None:
    """Prints ``text`` once the port takes connections (a worker listens), from a thread
    of its own: the workers start in other processes."""

    def wait() -> None:
        address = _reachable(host)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((address, port), 0.5):
                print(text, flush=True)
                return
            time.sleep(0.1)

    threading.Thread(target=wait, name="announce", daemon=True).start()


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true", help="generate, load and train the demo world")
    p.add_argument("--port", type=int, help="gRPC port (default 50051, ARBITER_PORT)")
    p.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port (ARBITER_WORKERS; default one per core)",
    )


def command(prepare: Callable[[str], None] | None) -> Command:
    """The serve command; ``prepare(redis_url)`` is the `--demo` bootstrap."""

    def run(args: argparse.Namespace) -> int:
        from engine.api import workers
        from engine.api.server import security_from, serve  # grpc, the service: serve only

        overrides: dict[str, Any] = {"demo": True} if args.demo else {}
        if args.port is not None:
            overrides["port"] = args.port
        if args.workers is not None:
            overrides["workers"] = args.workers
        settings = ServerSettings(**overrides)
        count = settings.workers or workers.default_workers()
        # Before any preparation (the demo's takes a minute), and once for all workers:
        # what the server would refuse (an unguarded public address, unreadable TLS
        # files, a busy port).
        security_from(settings)
        if count > 1:
            workers.check_port_free(settings.host, settings.port)
        if settings.demo and prepare is None:
            raise ConfigurationError("--demo needs the training package's `arbiter` command")
        embedded = None
        redis_url = settings.redis_url
        if redis_url is None:
            embedded = EmbeddedRedis(settings.embedded_redis_dir).start()
            embedded.watch()  # a death logged, and the server started again where it was
            redis_url = embedded.url
            print(f"embedded redis-server on {redis_url} (data in {settings.embedded_redis_dir})")
        try:
            if settings.demo and prepare is not None:
                prepare(redis_url)
            _announce_when_listening(
                settings.host, settings.port, hint(settings.host, settings.port, count)
            )
            if count > 1:
                return workers.run(settings, redis_url, count)
            asyncio.run(serve(settings, redis_url))
        finally:
            if embedded is not None:
                embedded.stop()
        return 0

    return Command("serve", "start the gRPC service", _arguments, run)
