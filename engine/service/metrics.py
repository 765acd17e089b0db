"""Prometheus metrics (prometheus_client): what an operator needs to see a replica that
degrades, a breaker that opens, a log that backs up, a model that changed, a trigger that
does not fire. (Over 400 lines: every metric the service exposes is defined here, beside
the multiprocess plumbing that serves them.)

Exposed on ``ARBITER_METRICS_PORT`` (9464, ``/metrics``) by `arbiter serve`; with
``--workers`` the supervisor serves one view of every worker (prometheus_client's
multiprocess mode: the workers write their values to files in a folder the supervisor
reads, ``PROMETHEUS_MULTIPROC_DIR``). Every label has a bounded set of values: methods,
status codes, stages, reason kinds, counted event types, outcomes, the catalog's triggers,
the sender groups reading the delivery streams.

Measured: the seven stage laps and the call's own observation cost ~11 us a Decide in
one process, ~20 us under ``--workers`` (values in shared files), ~1% of a decision.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    start_http_server,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common import vocabulary
from common.errors import ArbiterError
from engine.core.timing import StageTimer
from feature_store import keys, redis_client

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Latency buckets for the 15-50 ms deadlines callers set, with resolution below 5 ms.
_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    1.0,
)

RPC_SECONDS = Histogram(
    "arbiter_rpc_seconds",
    "gRPC calls by method and status code",
    ["method", "code"],
    buckets=_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "arbiter_stage_seconds", "Time of each stage of a decision", ["stage"], buckets=_BUCKETS
)
GC_PAUSE = Histogram(
    "arbiter_gc_pause_seconds",
    "Garbage collections of a serving process: how long each held it, by generation",
    ["generation"],
    buckets=_BUCKETS,
)
DEGRADED = Counter(
    "arbiter_degraded_answers", "Degraded decisions, by the kind of reason", ["reason"]
)
BREAKER_OPENED = Counter("arbiter_breaker_opened", "Times the feature-store breaker opened")
BREAKER_OPEN = Gauge(
    "arbiter_breaker_open",
    "1 while the feature-store breaker is open (any worker)",
    multiprocess_mode="max",
)
LOG_QUEUE = Gauge(
    "arbiter_decision_log_queue",
    "Decisions waiting to be written to the decision log",
    multiprocess_mode="livesum",
)
LOG_WRITTEN = Counter("arbiter_decision_log_written", "Decisions written to the decision log")
LOG_DROPPED = Counter("arbiter_decision_log_dropped", "Decisions dropped from the decision log")
CAP_REJECTIONS = Counter(
    "arbiter_cap_rejections",
    "Offers taken out of an answer because a concurrent decision took the cap first",
)
HOLDS = Counter("arbiter_holds", "Offers held by a decision until their impression is reported")
MODEL = Gauge(
    "arbiter_model_info",
    "The model and catalog versions served (1), by role (champion or challenger)",
    ["role", "model", "catalog"],
    multiprocess_mode="liveall",
)
LAYER_VERSION = Gauge(
    "arbiter_adaptive_layer_version",
    "The online layer's publication served (0: none yet, the models' priors)",
    multiprocess_mode="max",
)
LAYER_AGE = Gauge(
    "arbiter_adaptive_layer_age_seconds",
    "Seconds since the learner last published the online layer",
    multiprocess_mode="min",
)
LEARNER_UP = Gauge(
    "arbiter_adaptive_learner_up",
    "1 while the learner publishes (0: serving keeps the last posteriors)",
    multiprocess_mode="max",
)
VOLUME_USED = Gauge(
    "arbiter_volume_used",
    "Contacts counted so far this period under each volume limit, over the whole customer"
    " base (limit: offer:<id> or channel:<name>, then the period in seconds)",
    ["limit"],
    multiprocess_mode="max",
)
TRIGGERS = Counter(
    "arbiter_triggers",
    "Event triggers by what happened to them: scheduled, already_pending, not_reeligible,"
    " cancelled, fired, deferred (quiet hours), paused (by an operator), suppressed (the"
    " policy chose nothing: the reason's kind in arbiter_triggers_suppressed), removed (no"
    " longer in the catalog)",
    ["trigger", "outcome"],
)
TRIGGERS_SUPPRESSED = Counter(
    "arbiter_triggers_suppressed", "Due triggers sent nothing, by reason", ["trigger", "reason"]
)
_DUE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TRIGGER_DELAY = Histogram(
    "arbiter_trigger_delay_seconds", "From a trigger due to its message out", buckets=_DUE_BUCKETS
)
TRIGGERS_WAITING = Gauge(
    "arbiter_triggers_waiting", "Triggers scheduled, not yet done", multiprocess_mode="max"
)
OUTBOUND = Counter("arbiter_outbound_messages", "Messages put on the streams", ["channel"])
OUTBOUND_READERS = Gauge(
    "arbiter_outbound_readers",
    "Per stream and sender group: messages handed out and not acknowledged"
    " (state=unacknowledged), not yet read (state=unread; Redis 7+)",
    ["channel", "group", "state"],
    multiprocess_mode="max",
)
VOLUME_MAX = Gauge(
    "arbiter_volume_max",
    "Each volume limit's contacts a period (limit: as arbiter_volume_used's)",
    ["limit"],
    multiprocess_mode="max",
)
EVENTS = Counter("arbiter_events_recorded", "Events recorded, by counted type", ["event_type"])
OUTCOMES = Counter("arbiter_outcomes", "Outcomes reported (first reports), by type", ["outcome"])

# degraded_reason prefixes -> the label they count under (anything else: "other")
_REASONS = (
    ("feature store unavailable", "store_unavailable"),
    ("feature store skipped", "no_time_for_store"),
    ("ranked by value only: the caller's deadline", "no_time_for_model"),
    ("ranked by value only: the model was too slow", "model_too_slow"),
    ("model failed", "model_failed"),
    ("contacts not reserved", "reservation_failed"),
    ("contact policy unavailable", "reservation_failed"),
)


def degraded(reason: str) -> None:
    for prefix, label in _REASONS:
        if reason.startswith(prefix):
            DEGRADED.labels(label).inc()
            return
    DEGRADED.labels("other").inc()


def known_series(event_types: Collection[str] | None) -> None:
    """Every labelled counter's series with a known label, at 0 from the start: an alert
    on ``rate(arbiter_degraded_answers[5m])`` then has a series before the first one
    (Prometheus's "avoid missing metrics")."""
    for _, label in _REASONS:
        DEGRADED.labels(label)
    DEGRADED.labels("other")
    for outcome in vocabulary.OUTCOMES:
        OUTCOMES.labels(outcome)
    for event_type in (*sorted(event_types or ()), keys.OTHER):
        EVENTS.labels(event_type)


class MetricsTimer(StageTimer):
    """A stage timer whose laps go to ``arbiter_stage_seconds`` (one per call)."""

    _stages: ClassVar[dict[str, Histogram]] = {}  # the labelled children, shared

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        child = self._stages.get(stage)
        if child is None:
            child = self._stages[stage] = STAGE_SECONDS.labels(stage)
        child.observe(now - self._last)
        self._last = now


_served: dict[str, tuple[str, str]] = {}  # role -> (model, catalog) labelled 1 now


def serving(roles: Mapping[str, tuple[str, str] | None]) -> None:
    """The versions each role serves now (None: no challenger)."""
    for role, versions in roles.items():
        before = _served.pop(role, None)
        if before is not None and before != versions:
            MODEL.labels(role, *before).set(0)
        if versions is not None:
            MODEL.labels(role, *versions).set(1)
            _served[role] = versions


def multiprocess_folder() -> Path:
    """A fresh folder for the workers' metric files (the supervisor, before it starts
    them: the environment variable must be set before a worker imports this module)."""
    folder = Path(tempfile.mkdtemp(prefix="arbiter-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def worker_exited(pid: int) -> None:
    """Drops a dead worker's live gauges from the view."""
    if os.environ.get(MULTIPROC_ENV):
        prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def watch_collections() -> Callable[[], None]:
    """Times every garbage collection of this process for GC_PAUSE (a full collection
    holds every call in flight: the tail latency's usual suspect). Returns what moves the
    timings into the histogram: call it now and then (the server, every second). The
    collector's callback only appends to a deque: observing there could run inside
    another observation's lock, which a collection can interrupt (a deadlock)."""
    started = [0.0]
    timed: deque[tuple[int, float]] = deque(maxlen=10_000)
    pauses = [GC_PAUSE.labels(str(g)) for g in range(3)]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            timed.append((info["generation"], time.perf_counter() - started[0]))

    def drain() -> None:
        while timed:
            generation, seconds = timed.popleft()
            pauses[generation].observe(seconds)

    gc.callbacks.append(callback)
    return drain


class OfferHealth(Collector):
    """Each offer's model, as the latest training run published it (training/monitor.py,
    ``arb:models:offers``): per offer and channel, its evidence, success rate, AUC,
    calibration error and drift flag over the run's window. Labels are the catalog's
    offers and the five channels. Read from Redis at most every ``every`` seconds (a
    scrape never waits more than the client's timeout; a failed read keeps the last)."""

    def __init__(self, read: Callable[[], bytes | None], every: float = 15.0) -> None:
        self._read = read
        self._every = every
        self._at = -math.inf
        self._report: dict[str, Any] | None = None

    def read_with(self, read: Callable[[], bytes | None]) -> None:
        self._read, self._at = read, -math.inf

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        if now - self._at >= self._every:
            self._at = now
            try:
                raw = self._read()
                self._report = None if raw is None else json.loads(raw)
            except (ArbiterError, ValueError) as exc:
                log.warning("offers' health not read for /metrics: %s", exc)
        report = self._report or {"offers": [], "computed_at": 0.0}
        computed = GaugeMetricFamily(
            "arbiter_offer_health_computed_timestamp_seconds",
            "When the offers' health was last computed (0: never)",
        )
        computed.add_metric([], float(report["computed_at"]))
        yield computed
        for field, name, text in _OFFER_SERIES:
            family = GaugeMetricFamily(name, text, labels=["offer", "channel"])
            for o in report["offers"]:
                value = float(bool(o["drift"])) if field == "drift" else float(o[field])
                family.add_metric([o["offer_id"], o["channel"]], value)
            yield family


def offer_health_reader(redis_url: str) -> Callable[[], bytes | None]:
    """Reads the published offers' health from the Redis at ``redis_url`` (0.5 s timeout)."""
    client = redis_client.connect_sync(redis_url, timeout_seconds=0.5)

    def read() -> bytes | None:
        with redis_client.translated("reading the offers' health", quiet=True):
            raw = client.get(keys.OFFER_HEALTH)
        return raw  # type: ignore[return-value]

    return read


_OFFER_SERIES = (
    ("answered", "arbiter_offer_answered_decisions", "Decisions answered, or past their window"),
    ("positives", "arbiter_offer_positive_answers", "Accepted or converted"),
    ("success_rate", "arbiter_offer_success_ratio", "Positive answers / answered decisions"),
    ("auc", "arbiter_offer_auc", "AUC of the served propensities against the answers"),
    ("calibration_error", "arbiter_offer_calibration_error", "Predicted against realised"),
    ("drift", "arbiter_offer_drift", "1 when flagged for drift (calibration or AUC)"),
)


def expose(
    host: str,
    port: int,
    *,
    workers_folder: Path | None = None,
    offer_health: Callable[[], bytes | None] | None = None,
    workers: int = 1,
) -> int | None:
    """Serves ``/metrics`` on ``host:port`` in a thread; returns the bound port (``port``
    0: a free one). ``workers_folder``: the view of every worker's files;
    ``offer_health``: reads the published offers' health (``OfferHealth``). A busy port is
    logged, not fatal: the decisions matter more than their metrics (None)."""
    registry = None
    if workers_folder is not None:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=str(workers_folder))  # type: ignore[no-untyped-call]
    _served_by.workers = workers
    target = REGISTRY if registry is None else registry
    with contextlib.suppress(ValueError):  # registered already (tests start many)
        target.register(_served_by)
    if offer_health is not None and registry is not None:
        registry.register(OfferHealth(offer_health))
    elif offer_health is not None:  # the process's registry: one collector, the latest reader
        global _offer_health
        if _offer_health is None:
            _offer_health = OfferHealth(offer_health)
            REGISTRY.register(_offer_health)
        else:
            _offer_health.read_with(offer_health)
    try:
        if registry is None:
            server, _thread = start_http_server(port, addr=host)
        else:
            server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.error(
            "metrics NOT served: cannot listen on %s:%d (%s); set ARBITER_METRICS_PORT",
            host,
            port,
            exc.strerror,
        )
        return None
    bound = int(server.server_port)
    log.info("metrics on http://%s:%d/metrics", host, bound)
    _servers.append(server)
    return bound


class ServedBy(Collector):
    """``arbiter_workers``: how many serving processes this server runs."""

    def __init__(self) -> None:
        self.workers = 1

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "arbiter_workers", "Serving processes of this server (workers sharing its port)"
        )
        family.add_metric([], float(self.workers))
        yield family


_served_by = ServedBy()
_servers: list[WSGIServer] = []
_offer_health: OfferHealth | None = None


def stop_exposing() -> None:
    while _servers:
        server = _servers.pop()
        server.shutdown()
        server.server_close()
