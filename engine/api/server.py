"""The gRPC server: Arbiter's two services, health and reflection, graceful shutdown.

``grpc.aio``: one event loop serves every call, and the Redis client is asyncio too, so
a slow Redis never holds a thread. Shutdown flips health to NOT_SERVING first (load
balancers stop sending), then lets in-flight calls finish within the grace period, then
flushes the decision log.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from arbiter.v1 import decision_pb2, decision_pb2_grpc, profile_pb2, profile_pb2_grpc
from common.errors import ConfigurationError
from engine.adapters import secret_file
from engine.api.interceptor import ErrorInterceptor
from engine.api.servicer import DecisionServicer, ProfileServicer
from engine.core.decision_id import DecisionIds
from engine.service.application import Application, Store
from engine.service.decision_log import DecisionLogWriter
from engine.service.reloader import Reloader, build_cores
from engine.settings import ServerSettings, load_definitions
from feature_store import redis_client, redis_store

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICES = (
    decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name,
    profile_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name,
)


@dataclass
class RunningServer:
    """A started server; ``port`` is the bound port (useful with port 0)."""

    server: aio.Server
    interceptor: ErrorInterceptor
    health: health_aio.HealthServicer
    application: Application
    port: int
    grace: float
    reloading: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        if self.reloading is not None:
            self.reloading.cancel()
            await asyncio.gather(self.reloading, return_exceptions=True)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace)
        await self.application.writer.close(timeout=self.grace)
        await self.application.store.aclose()


async def start_server(
    application: Application,
    host: str,
    port: int,
    grace: float = 5.0,
    reloader: Reloader | None = None,
    reload_seconds: float = 0.0,
) -> RunningServer:
    interceptor = ErrorInterceptor()
    # No SO_REUSEPORT: a second server on a busy port must fail, not share it by accident.
    server = aio.server(interceptors=[interceptor], options=[("grpc.so_reuseport", 0)])
    decision_pb2_grpc.add_DecisionServiceServicer_to_server(DecisionServicer(application), server)
    profile_pb2_grpc.add_ProfileServiceServicer_to_server(ProfileServicer(application), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *SERVICES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: the address is in use or not this machine's"
            " (another `arbiter serve`?); choose --port or ARBITER_PORT"
        ) from exc
    await server.start()
    application.writer.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("", *SERVICES):
        await health_servicer.set(name, serving)
    reloading = None
    if reloader is not None and reload_seconds > 0:
        reloading = asyncio.get_running_loop().create_task(reloader.run(reload_seconds))
    return RunningServer(server, interceptor, health_servicer, application, bound, grace, reloading)


def build_application(settings: ServerSettings, store: Store) -> Application:
    """Loads definitions and the model and wires the service to ``store``."""
    definitions = load_definitions(settings)
    champion, challenger = build_cores(definitions, settings, starting=True)
    writer = DecisionLogWriter(
        store, definitions.schema, max_queue=settings.log_queue_size, batch=settings.log_batch_size
    )
    application = Application(
        champion,
        store,
        writer,
        ids=DecisionIds(secret_file.load_or_create(settings.decision_secrets_path)),
        feature_timeout=settings.feature_timeout_ms / 1000,
        reserve_timeout=settings.reserve_timeout_ms / 1000,
        breaker_seconds=settings.breaker_seconds,
    )
    application.challenger = challenger
    return application


def redis_store_for(settings: ServerSettings, redis_url: str) -> redis_store.RedisFeatureStore:
    """The Redis store the server runs on: a fail-fast client, contacts kept as long as
    the catalog's longest cap looks back."""
    definitions = load_definitions(settings)
    catalog = definitions.catalog
    return redis_store.RedisFeatureStore(
        redis_client.connect(redis_url, timeout_seconds=settings.redis_timeout_ms / 1000),
        definitions.schema,
        contact_horizon_seconds=catalog.contact_policy.horizon_seconds(
            o.policy for o in catalog.offers
        ),
    )


async def launch(settings: ServerSettings, store: Store) -> tuple[RunningServer, Reloader]:
    """Builds the service on ``store`` and starts it with its reloader."""
    application = build_application(settings, store)
    reloader = Reloader(application, settings)
    running = await start_server(
        application,
        settings.host,
        settings.port,
        settings.grace_seconds,
        reloader,
        settings.reload_seconds,
    )
    return running, reloader


async def serve(settings: ServerSettings, redis_url: str) -> None:
    """Serves until SIGINT or SIGTERM, then shuts down gracefully."""
    running, reloader = await launch(settings, redis_store_for(settings, redis_url))
    application = running.application
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reloader.check()))
    log.info(
        "arbiter serving on %s:%d (model %s, catalog %s)",
        settings.host,
        running.port,
        application.core.scorer.version,
        application.core.catalog.version,
    )
    await stop.wait()
    log.info("shutting down")
    await running.stop()


class BackgroundServer:
    """A complete Arbiter gRPC server on 127.0.0.1 (port 0: a free one) in a thread of its
    own with its own event loop, driven from synchronous code: tests and the simulation."""

    def __init__(self, settings: ServerSettings, backend: str | Store) -> None:
        """``backend``: a Redis URL, or a store of its own (a MemoryStore in tests)."""
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self.running: RunningServer = self.run(self._start(settings, backend))
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            raise
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.running.port}")
        self.decisions = decision_pb2_grpc.DecisionServiceStub(self.channel)
        self.profiles = profile_pb2_grpc.ProfileServiceStub(self.channel)

    async def _start(self, settings: ServerSettings, backend: str | Store) -> RunningServer:
        local = settings.model_copy(update={"host": "127.0.0.1", "grace_seconds": 1.0})
        store = redis_store_for(local, backend) if isinstance(backend, str) else backend
        running, self.reloader = await launch(local, store)
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
        self.channel.close()
        self.run(self.running.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
