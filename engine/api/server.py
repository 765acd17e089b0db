"""The gRPC server: Arbiter's two services, health and reflection, graceful shutdown.

``grpc.aio``: one event loop serves every call, and the Redis client is asyncio too, so
a slow Redis never holds a thread. Shutdown flips health to NOT_SERVING first (load
balancers stop sending), then lets in-flight calls finish within the grace period, then
flushes the decision log.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from arbiter.v1 import decision_pb2, decision_pb2_grpc, profile_pb2, profile_pb2_grpc
from common import waits
from common.errors import ArbiterError, ConfigurationError
from engine.adapters import secret_file
from engine.api import shutdown, tls
from engine.api.auth import AuthInterceptor, KeyRing
from engine.api.interceptor import ErrorInterceptor
from engine.api.servicer import DecisionServicer, ProfileServicer
from engine.core.decision_id import DecisionIds
from engine.service import metrics
from engine.service.application import Application
from engine.service.decision_log import DecisionLogWriter, LogWriter
from engine.service.guard import Store
from engine.service.layer_watch import LayerWatch
from engine.service.learner_process import LearnerChild
from engine.service.log_process import LogProcess
from engine.service.outbound_runs import OutboundRuns
from engine.service.registry import shared_models
from engine.service.reloader import Reloader, build_cores
from engine.service.trigger_scheduler import TriggerScheduler
from engine.service.volume_watch import VolumeWatch
from engine.settings import Definitions, ServerSettings, load_definitions
from feature_store import hot_redis, redis_client, redis_store
from feature_store.outbound_runs import RunStore
from feature_store.triggers import TriggerQueue

log = logging.getLogger(__name__)
PREPARE_SECONDS = 5.0  # at start, for the store to connect and load its scripts
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
    watching: asyncio.Task[None] | None = None  # the online layer's (layer_watch.py)
    layer_watch: LayerWatch | None = None
    volume_watching: asyncio.Task[None] | None = None  # volume limits' (volume_watch.py)
    triggering: asyncio.Task[None] | None = None  # event triggers' (trigger_scheduler.py)
    running_outbound: asyncio.Task[None] | None = None  # outbound runs' (outbound_runs.py)

    async def stop(self) -> None:
        """Every step bounded: one that hangs (a store on a dead socket, gRPC's own stop,
        grpc/grpc#28999) is logged by name and the stop goes on."""
        running = (
            self.reloading,
            self.watching,
            self.volume_watching,
            self.triggering,
            self.running_outbound,
        )
        tasks = [t for t in running if t is not None]
        for task in tasks:
            task.cancel()
        steps: tuple[tuple[str, Callable[[], Awaitable[Any]], float], ...] = (
            ("the watches' end", lambda: shutdown.ended(tasks, self.grace + 5.0), self.grace + 6.0),
            ("the health service's NOT_SERVING", self.health.enter_graceful_shutdown, 5.0),
            ("the gRPC server's stop", lambda: self.server.stop(self.grace), self.grace + 5.0),
            (
                "the decision log's flush",
                lambda: self.application.writer.close(timeout=self.grace),
                self.grace + 5.0,
            ),
            ("the store's close", self.application.store.aclose, self.grace),
        )
        await shutdown.in_steps(steps)
        self.application.guard.stopped()


@dataclass(frozen=True)
class Security:
    """How the port is guarded: TLS credentials (None: plaintext), API keys (None: no key
    asked for), and whether reflection is served."""

    credentials: grpc.ServerCredentials | None = None
    keys: KeyRing | None = None
    reflection: bool = True


def security_from(settings: ServerSettings) -> Security:
    """The port's guard from the settings; refuses to expose an unguarded port beyond
    this machine unless ``insecure`` says so."""
    credentials = None
    if settings.tls_cert_file or settings.tls_key_file:
        if not (settings.tls_cert_file and settings.tls_key_file):
            raise ConfigurationError(
                "TLS needs both ARBITER_TLS_CERT_FILE and ARBITER_TLS_KEY_FILE"
            )
        credentials = tls.server_credentials(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
        )
    elif settings.tls_client_ca_file:
        raise ConfigurationError("ARBITER_TLS_CLIENT_CA_FILE needs a server certificate too")
    keys = KeyRing(settings.api_keys_file) if settings.api_keys_file else None
    if not _loopback(settings.host) and (credentials is None or keys is None):
        if not settings.insecure:
            raise ConfigurationError(
                f"refusing to listen on {settings.host} without TLS and API keys: set"
                " ARBITER_TLS_CERT_FILE, ARBITER_TLS_KEY_FILE and ARBITER_API_KEYS_FILE, or"
                " ARBITER_INSECURE=true to do it anyway"
            )
        log.warning("INSECURE: serving %s without TLS and API keys", settings.host)
    return Security(credentials, keys, settings.reflection)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def start_server(
    application: Application,
    host: str,
    port: int,
    grace: float = 5.0,
    reloader: Reloader | None = None,
    reload_seconds: float = 0.0,
    security: Security = Security(),
    reuse_port: bool = False,
    max_in_flight: int | None = None,
) -> RunningServer:
    interceptor = ErrorInterceptor()
    interceptors: list[Any] = [interceptor]
    if security.keys is not None:
        interceptors.insert(0, AuthInterceptor(security.keys))  # before any work is done
    # SO_REUSEPORT only for the workers of one `serve --workers` (workers.py checked the
    # port was free): otherwise a second server on a busy port must fail, not share it.
    options = [("grpc.so_reuseport", 1 if reuse_port else 0)]
    # Past max_in_flight calls, gRPC answers RESOURCE_EXHAUSTED at once: a caller retries
    # elsewhere or later instead of joining a queue in which every call turns late.
    server = aio.server(
        interceptors=interceptors, options=options, maximum_concurrent_rpcs=max_in_flight
    )
    decision_pb2_grpc.add_DecisionServiceServicer_to_server(DecisionServicer(application), server)
    profile_pb2_grpc.add_ProfileServiceServicer_to_server(ProfileServicer(application), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if security.reflection:
        reflection.enable_server_reflection(
            (
                *SERVICES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
    address = f"{host}:{port}"
    try:
        if security.credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, security.credentials)
    except RuntimeError as exc:
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: the address is in use or not this machine's"
            " (another `arbiter serve`?); choose --port or ARBITER_PORT"
        ) from exc
    application.writer.start()
    await application.writer.ready()
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("", *SERVICES):
        await health_servicer.set(name, serving)
    reloading = None
    if reloader is not None and reload_seconds > 0:
        reloading = asyncio.get_running_loop().create_task(reloader.run(reload_seconds))
    return RunningServer(server, interceptor, health_servicer, application, bound, grace, reloading)


def build_application(
    settings: ServerSettings, store: Store, definitions: Definitions
) -> Application:
    """Loads the model and wires the service to ``store``."""
    champion, challenger = build_cores(definitions, settings, starting=True)
    writer: LogWriter
    if (
        settings.log_writer == "process"
        and isinstance(store, redis_store.RedisFeatureStore)
        and settings.redis_url
    ):
        writer = LogProcess(
            settings.redis_url,
            definitions.schema.names,
            max_queue=settings.log_queue_size,
            batch=settings.log_batch_size,
            log_max_entries=settings.log_max_entries,
            log_retention_seconds=settings.log_retention_days * 86400,
        )
    else:
        writer = DecisionLogWriter(
            store,
            definitions.schema.names,
            max_queue=settings.log_queue_size,
            batch=settings.log_batch_size,
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


def redis_store_for(
    settings: ServerSettings, redis_url: str, definitions: Definitions
) -> redis_store.RedisFeatureStore:
    """The Redis store the server runs on: a fail-fast client, contacts kept as long as
    the catalog's longest cap looks back."""
    catalog = definitions.catalog
    timeout = settings.redis_timeout_ms / 1000
    client = redis_client.connect(redis_url, timeout_seconds=timeout)
    hot = None
    if settings.hot_client:
        plain, cluster = redis_client.cluster_mode(redis_url)
        hot = hot_redis.connect_hot(plain, cluster=cluster, timeout_seconds=timeout)
    return redis_store.RedisFeatureStore(
        client,
        definitions.schema,
        contact_horizon_seconds=catalog.contact_policy.horizon_seconds(
            o.policy for o in catalog.offers
        ),
        events_per_second=settings.events_per_customer_per_second,
        log_max_entries=settings.log_max_entries,
        log_retention_seconds=settings.log_retention_days * 86400,
        log_client=redis_client.connect(redis_url, timeout_seconds=5.0, max_connections=4),
        hot=hot,
    )


async def launch(
    settings: ServerSettings, store: Store, definitions: Definitions, *, reuse_port: bool = False
) -> tuple[RunningServer, Reloader]:
    """Builds the service on ``store`` and starts it with its reloader; with a shared
    model registry, the model folder is brought in step with it first."""
    security = security_from(settings)  # before anything is built: a refusal leaks nothing
    shared = shared_models(settings, settings.redis_url)
    if shared is not None:
        await asyncio.to_thread(shared.sync)
    application = build_application(settings, store, definitions)
    metrics.known_series(definitions.schema.event_types)
    # Connected and the scripts loaded before the first call, which would otherwise pay
    # for it within its read budget (a cluster: the layout, and the scripts on every
    # primary). A store that cannot be reached now is not fatal: decisions degrade and
    # each call tries again.
    try:
        await asyncio.wait_for(store.prepare(), PREPARE_SECONDS)
    except (ArbiterError, TimeoutError, *redis_client.REDIS_ERRORS) as exc:
        log.warning("feature store not ready at start (%r); decisions degrade until it is", exc)
    reloader = Reloader(application, settings, shared)
    watch = None
    if isinstance(store, redis_store.RedisFeatureStore):
        watch = LayerWatch(application, store.client)
        try:  # the layer published now serves from the first call
            await asyncio.wait_for(watch.check(), PREPARE_SECONDS)
        except (TimeoutError, *redis_client.REDIS_ERRORS) as exc:
            log.warning("online layer not read at start (%r); serving the models' priors", exc)
    running = await start_server(
        application,
        settings.host,
        settings.port,
        settings.grace_seconds,
        reloader,
        settings.reload_seconds,
        security,
        reuse_port,
        settings.max_in_flight or None,
    )
    if watch is not None and settings.layer_seconds > 0:
        running.watching = asyncio.get_running_loop().create_task(
            watch.run(settings.layer_seconds), name="layer-watch"
        )
    running.layer_watch = watch
    volume = VolumeWatch(application)
    try:  # limits reached already are known from the first call
        await asyncio.wait_for(volume.check(), PREPARE_SECONDS)
    except (ArbiterError, TimeoutError) as exc:
        log.warning("volume limits not read at start (%r); the store's claim holds them", exc)
    if settings.volume_seconds > 0:
        running.volume_watching = asyncio.get_running_loop().create_task(
            volume.run(settings.volume_seconds), name="volume-watch"
        )
    if isinstance(store, redis_store.RedisFeatureStore):
        application.triggers = TriggerQueue(store.client)
        runs = RunStore(store.client)
        scheduler = TriggerScheduler(application, application.triggers, runs=runs)
        if settings.trigger_poll_seconds > 0:
            application.scheduled = scheduler.wake
            running.triggering = asyncio.get_running_loop().create_task(
                scheduler.run(settings.trigger_poll_seconds), name="triggers"
            )
        if settings.outbound_run_seconds > 0:
            passes = OutboundRuns(
                application, application.triggers, runs, scheduled=application.scheduled
            )
            running.running_outbound = asyncio.get_running_loop().create_task(
                passes.run(settings.outbound_run_seconds), name="outbound-runs"
            )
    return running, reloader


async def serve(settings: ServerSettings, redis_url: str, *, reuse_port: bool = False) -> None:
    """Serves until SIGINT or SIGTERM, then shuts down gracefully; ``reuse_port``: as one
    of the workers sharing the port (workers.py)."""
    settings = settings.model_copy(update={"redis_url": redis_url})  # the embedded one too
    definitions = load_definitions(settings)  # parsed once: the store and the cores share it
    store = redis_store_for(settings, redis_url, definitions)
    running, reloader = await launch(settings, store, definitions, reuse_port=reuse_port)
    if settings.metrics_port is not None and not reuse_port:  # workers: the supervisor's
        metrics.expose(
            settings.host,
            settings.metrics_port,
            offer_health=metrics.offer_health_reader(redis_url),
        )
    # What start-up built (schema, catalog, model, grpc) lives as long as the process:
    # out of the collector's sight, full collections no longer walk it (measured: 20-40 ms
    # pauses of the event loop without this).
    gc.collect()
    gc.freeze()
    drain = metrics.watch_collections()
    # The learner: one per server (a supervisor of workers starts its own, workers.py).
    learner = LearnerChild(redis_url) if settings.learner == "process" and not reuse_port else None
    application = running.application
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reloader.check()))
    log.info(
        "arbiter serving on %s:%d (%s, %s; model %s, catalog %s)",
        settings.host,
        running.port,
        "TLS" if settings.tls_cert_file else "plaintext",
        "API keys" if settings.api_keys_file else "no keys",
        application.core.scorer.version,
        application.core.catalog.version,
    )
    try:
        while not stop.is_set():  # every second: the collections' timings, the learner
            if learner is not None:
                learner.check()
            await waits.until_set(stop, 1.0)
            drain()
        log.info("shutting down")
        shutdown.watchdog(loop, 2 * running.grace + shutdown.STOP_SECONDS)
        await running.stop()
    finally:
        if learner is not None:
            await asyncio.to_thread(learner.stop)
