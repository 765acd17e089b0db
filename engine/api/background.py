"""A whole server in a thread of this process, driven from synchronous code: what the
tests and the simulation (training/simulation/) serve from. Not a way to deploy."""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import traceback
from collections.abc import Coroutine
from typing import Any, TypeVar

from arbiter.v1 import decision_pb2_grpc, profile_pb2_grpc
from engine.api.channel import open_channel
from engine.api.server import RunningServer, launch, redis_store_for
from engine.service import metrics
from engine.service.application import Application
from engine.service.guard import Store
from engine.settings import ClientSettings, ServerSettings, load_definitions

T = TypeVar("T")


class BackgroundServer:
    """A complete Arbiter gRPC server on 127.0.0.1 (port 0: a free one) in a thread of its
    own with its own event loop, driven from synchronous code: tests and the simulation."""

    def __init__(
        self,
        settings: ServerSettings,
        backend: str | Store,
        client: ClientSettings | None = None,
    ) -> None:
        """``backend``: a Redis URL, or a store of its own (a MemoryStore in tests);
        ``client``: how ``channel`` reaches the server (TLS, key), plaintext by default."""
        self.settings = settings
        self.metrics_port: int | None = None  # bound when settings.metrics_port was given
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self.running: RunningServer = self.run(self._start(settings, backend))
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            raise
        target = f"127.0.0.1:{self.running.port}"
        self.channel = open_channel(client or ClientSettings(), target)
        self.decisions = decision_pb2_grpc.DecisionServiceStub(self.channel)
        self.profiles = profile_pb2_grpc.ProfileServiceStub(self.channel)

    async def _start(self, settings: ServerSettings, backend: str | Store) -> RunningServer:
        local = settings.model_copy(update={"host": "127.0.0.1", "grace_seconds": 1.0})
        if isinstance(backend, str):
            local = local.model_copy(update={"redis_url": backend})
        definitions = load_definitions(local)
        if isinstance(backend, str):
            store: Store = redis_store_for(local, backend, definitions)
        else:
            store = backend
        running, self.reloader = await launch(local, store, definitions)
        # /metrics only when asked for (tests, the simulation): not on the default port.
        if "metrics_port" in settings.model_fields_set and settings.metrics_port is not None:
            self.metrics_port = metrics.expose(
                local.host,
                settings.metrics_port,
                offer_health=(
                    metrics.offer_health_reader(backend) if isinstance(backend, str) else None
                ),
            )
        return running

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs a coroutine on the server's loop and waits for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    @property
    def application(self) -> Application:
        return self.running.application

    def read_decisions(self) -> list[Any]:
        """The decision log, oldest first (flush first to see the latest)."""
        return self.run(self.application.store.read_decisions())

    def read_outcomes(self) -> list[Any]:
        return self.run(self.application.store.read_outcomes())

    def flush_log(self) -> None:
        if not self.run(self.application.writer.flush(5.0)):
            raise TimeoutError("the decision log did not drain")

    def stop(self) -> None:
        """Graceful shutdown; a second call does nothing. Its steps are bounded by the
        grace (calls in flight, the log's flush, the store's close: ~3 x 5 s); on a busy
        machine it may take longer than a call, so it is given a minute, and what the
        server's thread is doing is written out if it takes more than half of it."""
        if self.loop.is_closed():
            return
        self.channel.close()
        stopping = asyncio.run_coroutine_threadsafe(self.running.stop(), self.loop)
        try:
            stopping.result(timeout=30)
        except TimeoutError:
            frame = sys._current_frames().get(self._thread.ident or 0)
            where = "".join(traceback.format_stack(frame)) if frame else "(no frame)"
            for task in list(asyncio.all_tasks(self.loop)):  # diagnosis only: racy is fine
                stack = io.StringIO()
                task.print_stack(file=stack)
                where += f"\n{stack.getvalue()}"
            print(f"server stop still running after 30 s; its thread:\n{where}", file=sys.stderr)
            stopping.result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
