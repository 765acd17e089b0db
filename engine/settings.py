"""Settings, one class per deployable, read from ``ARBITER_*`` environment variables:
the server, the loader, the command-line clients and the desk here; the trainer in
training/settings.py.

Built once at start-up (the CLI) and passed down; nothing else reads the environment
but the log format (``ARBITER_LOG_FORMAT``, common/logs.py, read before any settings).
``REDIS_URL`` is honoured as well as ``ARBITER_REDIS_URL``; with neither, the service
starts an embedded redis-server of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.core.catalog import Catalog, load_catalog
from engine.core.lifecycle import StageRules, load_stage_rules
from engine.core.schema import FeatureSchema, load_schema

DEFAULTS = Path(__file__).parent / "defaults"


def _off(value: object) -> object:
    """ "off" (or empty, "none", "no"): None."""
    if isinstance(value, str) and value.strip().lower() in ("", "off", "none", "no"):
        return None
    return value


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARBITER_", protected_namespaces=())

    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ARBITER_REDIS_URL", "REDIS_URL")
    )
    data_dir: Path = Path("var")
    # "local": models live in <data_dir>/models only; "redis": also in the Redis of
    # REDIS_URL, where every replica sees a promotion (engine/service/registry.py).
    model_registry: Literal["local", "redis"] = "local"
    features_path: Path = DEFAULTS / "features.toml"
    catalog_path: Path = DEFAULTS / "catalog.toml"
    lifecycle_path: Path = DEFAULTS / "lifecycle.toml"

    # Minutes each channel's decision waits for an answer before "no response" is its label
    # (JSON, e.g. ARBITER_REWARD_WINDOW_MINUTES='{"web": 15}'; channels left out keep the
    # defaults of common/reward.py: web and app 30, call center 60, email 3 days, SMS 2).
    reward_window_minutes: dict[str, float] = Field(default_factory=dict)
    # An answer counts for its decision when it comes within this many hours of it (late
    # answers, after the channel's window, relabel the decision at the next run).
    attribution_hours: float = 72.0

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def embedded_redis_dir(self) -> Path:
        return self.data_dir / "redis"


class ServerSettings(CommonSettings):
    host: str = "127.0.0.1"
    port: int = 50051
    # Prometheus exposition (/metrics) on the same host; "off" (or empty): none; 0: a free
    # port. With --workers, one view of every worker, served by the supervisor.
    metrics_port: int | None = 9464

    _metrics_off = field_validator("metrics_port", mode="before")(_off)

    # Budget for the one feature-store round trip of a Decide; past it, answer degraded.
    feature_timeout_ms: float = 30.0
    # A customer's events accepted a second (across replicas); past it RecordEvent answers
    # RESOURCE_EXHAUSTED: one customer's flood must not grow its state or slow others.
    events_per_customer_per_second: int = 20
    # Budget for recording a decision's contacts under the caps; past it, inbound answers
    # are flagged degraded and outbound ones send nothing.
    reserve_timeout_ms: float = 50.0
    # Socket timeout of every Redis call (writes included).
    redis_timeout_ms: float = 250.0
    # The decision path's read and reservation on multiplexed connections of their own
    # (feature_store/hot_redis.py; one per server or cluster primary; not over TLS)
    # instead of redis-py's pool.
    hot_client: bool = True
    # After a feature-store failure, answer degraded without trying Redis for a while: 50 ms
    # at first, doubled while it keeps failing, up to this (engine/service/breaker.py). The
    # service is whole again at most this long after Redis is.
    breaker_seconds: float = 0.5
    one_per_category: bool = True
    grace_seconds: float = 5.0
    # How often to look for a newly promoted model or a changed catalog (0: never).
    reload_seconds: float = 2.0
    log_queue_size: int = 10_000
    # Who writes the decision log to Redis: a process of its own ("process": compressing
    # and packing cost the serving process nothing) or the serving process ("inline").
    log_writer: Literal["process", "inline"] = "process"
    # At most this many decisions a decision-log write (a batch holds the event loop
    # while its entries are packed, ~0.1 ms each).
    log_batch_size: int = 64
    # Retention of the decision and outcome logs: at most this many entries each
    # (approximately), none older than this many days.
    log_max_entries: int = 1_000_000
    log_retention_days: float = 30.0
    # The online layer (engine/core/adaptive.py): "process", a learner process started and
    # watched by the server (one learns at a time across replicas), or "off" (the layer
    # still serves what another learner publishes). It ticks every learner_seconds; each
    # replica reads a new layer every layer_seconds. A customer weighs in at most
    # learner_customer_examples examples and learner_customer_positives positives a day.
    learner: Literal["process", "off"] = "process"
    learner_seconds: float = 1.0
    layer_seconds: float = 1.0
    # Volume limits over the whole customer base (the catalog's): each replica reads their
    # counters every volume_seconds, to choose the next best offer when one is reached
    # (the store's atomic claim holds the limit exactly either way).
    volume_seconds: float = 0.5
    # Event triggers (the catalog's [[trigger]]): each server process fires those due,
    # looking at every bucket of them at least every trigger_poll_seconds (0: this
    # replica fires none; its events still schedule them for the others).
    trigger_poll_seconds: float = 1.0
    # Always-on outbound (the catalog's [[outbound]]): how often each server process looks
    # for a run whose day's pass over the customer base is to do (one process makes it);
    # 0: this replica makes none.
    outbound_run_seconds: float = 10.0
    learner_customer_examples: float = 50.0
    learner_customer_positives: float = 3.0
    # `arbiter serve --demo`: generate, load and train the demo world when absent.
    demo: bool = False
    # `arbiter serve`: server processes sharing the port (0: one per core).
    workers: int = 0
    # Calls a server process works on at once; past it RESOURCE_EXHAUSTED at once (0: no
    # bound). ~64 is ~0.1 s of work for one process: later answers would miss deadlines.
    max_in_flight: int = 64
    # Secrets that sign decision ids (one per line, the first signs); default
    # <data_dir>/decision-secrets, created with a random one when absent.
    decision_secrets_file: Path | None = None

    @property
    def decision_secrets_path(self) -> Path:
        return self.decision_secrets_file or self.data_dir / "decision-secrets"

    # TLS: with a certificate and key (PEM) the port serves TLS only; with a client CA,
    # clients must present a certificate it signed (mTLS). Files reload when they change.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # API keys with roles (TOML, engine/api/auth.py); without one, no key is asked for.
    api_keys_file: Path | None = None
    reflection: bool = True
    # Listen on a non-loopback address without TLS and keys: only when this says so.
    insecure: bool = False


class LoaderSettings(CommonSettings):
    """`arbiter load`: profiles per pipelined batch."""

    batch_size: int = 2000


DEFAULT_TARGET = "127.0.0.1:50051"


class ClientSettings(BaseSettings):
    """The clients of the gRPC API (CLI calls, campaign, desk, simulation): the service
    they call, over TLS when a CA is given, with an API key when one is given."""

    model_config = SettingsConfigDict(env_prefix="ARBITER_")

    target: str = DEFAULT_TARGET
    # The CA that signed the server's certificate: set, the channel is TLS.
    tls_ca_file: Path | None = None
    # For a server that asks for client certificates (mTLS).
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    # Sent as `authorization: Bearer <key>`.
    api_key: str | None = None
    # Where `arbiter status` reads the service's /metrics: this port on the target's host
    # (the variable the server listens by; "off": none).
    metrics_port: int | None = 9464
    _metrics_off = field_validator("metrics_port", mode="before")(_off)


class DeskSettings(BaseSettings):
    """`arbiter desk`: where the agent desktop listens and the service it calls."""

    model_config = SettingsConfigDict(env_prefix="ARBITER_DESK_")

    host: str = "127.0.0.1"
    port: int = 8080
    target: str = DEFAULT_TARGET
    # The desk's own key for the service (a key with profile:read and decide roles).
    api_key: str | None = None
    # Agents and the sha256 of their secrets (TOML [[agent]] id, sha256); without one the
    # desk prints a one-time sign-in URL at start.
    agents_file: Path | None = None
    # Host names the desk answers to (a browser sends them; others are refused).
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Definitions:
    """The declarative inputs of a decision: feature schema, catalog, stage rules."""

    schema: FeatureSchema
    catalog: Catalog
    stage_rules: StageRules


def load_definitions(settings: CommonSettings) -> Definitions:
    schema = load_schema(settings.features_path)
    names = frozenset(schema.names)
    return Definitions(
        schema=schema,
        catalog=load_catalog(settings.catalog_path, names),
        stage_rules=load_stage_rules(settings.lifecycle_path, names),
    )
