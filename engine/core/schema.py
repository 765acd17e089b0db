"""The declared feature schema: the one source the loader, the engine and training read.

A schema lists every customer feature a decision sees, in a fixed order:

- batch features come from bulk loads and are stored as one packed float32 vector;
- real-time features are derived from what ``RecordEvent`` and outcomes maintain, by
  ``scope``:
  - ``lifetime`` (default): the real-time hash, counters ``n:<event_type>``,
    ``c:<channel>``, ``o:<outcome>``, stamps ``ts:last_seen``, ``ts:<event_type>``;
    ``count`` reads a counter, ``age_seconds`` turns a stamp into "seconds ago";
  - ``1h``, ``24h``, ``7d``: sliding-window counts of ``e:<event_type>``, ``c:<channel>``,
    ``k:<category>``, ``e:<event_type>:<category>`` or ``o:<outcome>``;
  - ``session``: counts in the current session (``e:<event_type>``, ``k:<category>``).
  An absent value takes the feature's default.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from common.errors import ConfigurationError, InvalidArgument, ProfileSchemaMismatch
from engine.core.customer import EVENT_COUNT, OTHER, WINDOW_SCOPES, CustomerRecord

Kind = Literal["float", "int", "bool"]
Source = Literal["batch", "realtime"]
Transform = Literal["count", "age_seconds"]
SCOPES = ("lifetime", "session", *WINDOW_SCOPES)

BATCH_DTYPE = np.dtype("<f4")


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    kind: Kind
    source: Source
    default: float
    description: str = ""
    field: str = ""  # real-time only: the counter or stamp read
    transform: Transform = "count"
    scope: str = "lifetime"  # real-time only: lifetime, session, 1h, 24h or 7d
    explain: str = ""  # sentence for explanations; $value, $yesno, $ago are filled in


@dataclass(frozen=True)
class FeatureSchema:
    features: tuple[Feature, ...]
    attributes: tuple[str, ...] = ()
    realtime_ttl_seconds: int = 30 * 86400
    recent_events: int = 50  # events kept per customer for the single customer view
    # The event types and categories counted by name; anything else counts as "other", so
    # no caller can grow a customer's real-time state with new names. None: any name
    # (unbounded; only for a schema that trusts every caller).
    event_types: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    batch: tuple[Feature, ...] = field(init=False)
    realtime: tuple[Feature, ...] = field(init=False)
    names: tuple[str, ...] = field(init=False)
    batch_names: frozenset[str] = field(init=False)
    fingerprint: str = field(init=False)
    _batch_defaults: np.ndarray = field(init=False, repr=False)
    _batch_index: dict[str, int] = field(init=False, repr=False)
    # feature names in a row's order -> their positions (encode_batch), a few orders
    _positions: dict[tuple[str, ...], np.ndarray] = field(
        init=False, repr=False, default_factory=dict, compare=False
    )

    def __post_init__(self) -> None:
        names = tuple(f.name for f in self.features)
        if len(set(names)) != len(names):
            raise ConfigurationError(f"feature schema: duplicate feature names in {names}")
        batch = tuple(f for f in self.features if f.source == "batch")
        realtime = tuple(f for f in self.features if f.source == "realtime")
        for f in realtime:
            if not f.field:
                raise ConfigurationError(f"feature {f.name}: a real-time feature needs a field")
        # Order matters: realtime features follow batch ones in every customer vector.
        set_ = object.__setattr__
        set_(self, "features", batch + realtime)
        set_(self, "batch", batch)
        set_(self, "realtime", realtime)
        set_(self, "names", tuple(f.name for f in batch + realtime))
        set_(self, "batch_names", frozenset(f.name for f in batch))
        digest = hashlib.sha256(";".join(f"{f.name}:{f.kind}" for f in batch).encode())
        set_(self, "fingerprint", digest.hexdigest()[:12])
        set_(self, "_batch_defaults", np.array([f.default for f in batch], dtype=BATCH_DTYPE))
        set_(self, "_batch_index", {f.name: i for i, f in enumerate(batch)})

    @property
    def counts_type_category_pairs(self) -> bool:
        """Whether a feature reads an ``e:<event_type>:<category>`` window: only then are
        the pairs counted (they multiply a customer's window fields)."""
        prefix = EVENT_COUNT
        return any(
            f.field.startswith(prefix) and ":" in f.field[len(prefix) :] for f in self.realtime
        )

    def counted_event_type(self, event_type: str) -> str:
        """The name ``event_type`` is counted under: itself, or "other"."""
        known = self.event_types is None or event_type in self.event_types
        return event_type if known else OTHER

    def counted_category(self, category: str) -> str:
        """The name ``category`` is counted under: itself, "other", or "" for none."""
        if not category or self.categories is None or category in self.categories:
            return category
        return OTHER

    def encode_batch(self, values: Mapping[str, float]) -> bytes:
        """Packs batch feature values (missing ones take their default) as float32 LE.

        Raises InvalidArgument naming an unknown or non-numeric feature.
        """
        vector = self._batch_defaults.copy()
        names = tuple(values)
        where = self._positions.get(names)
        if where is None and set(names) <= self._batch_index.keys() and len(self._positions) < 64:
            # Rows of a load usually name the same features in the same order: their
            # positions are looked up once, then each row is one assignment in C.
            where = self._positions[names] = np.array(
                [self._batch_index[n] for n in names], dtype=np.intp
            )
        if where is not None:
            try:
                vector[where] = np.fromiter(values.values(), np.float32, len(names))
                return vector.tobytes()
            except (TypeError, ValueError):
                pass  # name the culprit below
        for name, value in values.items():
            index = self._batch_index.get(name)
            if index is None:
                raise InvalidArgument(f"features.{name}", "not a batch feature of the schema")
            try:
                vector[index] = float(value)
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(f"features.{name}", f"not a number: {value!r}") from exc
        return vector.tobytes()

    def decode_batch(self, blob: bytes | None) -> np.ndarray:
        """The batch vector of a stored profile, or the defaults when there is none."""
        if blob is None:
            return self._batch_defaults
        if len(blob) != len(self.batch) * BATCH_DTYPE.itemsize:
            raise ProfileSchemaMismatch(
                f"a stored profile vector has {len(blob)} bytes, the schema's"
                f" {len(self.batch) * BATCH_DTYPE.itemsize}: reload profiles"
            )
        return np.frombuffer(blob, dtype=BATCH_DTYPE)

    def customer_vector(self, record: CustomerRecord, now: float) -> np.ndarray:
        """All features in schema order (float64): batch values, then real-time ones."""
        out = np.empty(len(self.features), dtype=np.float64)
        nb = len(self.batch)
        out[:nb] = record.batch
        for i, f in enumerate(self.realtime, start=nb):
            raw: str | float | None
            if f.scope == "lifetime":
                raw = record.realtime.get(f.field)
            elif f.scope == "session":
                raw = record.session.get(f.field)
            else:
                counts = record.windows.get(f.field)
                raw = None if counts is None else counts[WINDOW_SCOPES.index(f.scope)]
            if raw is None:
                out[i] = f.default
            elif f.transform == "count":
                out[i] = float(raw)
            else:
                out[i] = max(0.0, now - float(raw))
        return out


def _feature(raw: Mapping[str, object]) -> Feature:
    try:
        return Feature(
            name=str(raw["name"]),
            kind=raw.get("type", "float"),  # type: ignore[arg-type]
            source=raw.get("source", "batch"),  # type: ignore[arg-type]
            default=float(raw.get("default", 0.0)),  # type: ignore[arg-type]
            description=str(raw.get("description", "")),
            field=str(raw.get("field", "")),
            transform=raw.get("transform", "count"),  # type: ignore[arg-type]
            scope=str(raw.get("scope", "lifetime")),
            explain=str(raw.get("explain", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"feature schema entry {dict(raw)!r}: {exc}") from exc


def load_schema(path: Path) -> FeatureSchema:
    """Reads a schema TOML file (see engine/defaults/features.toml)."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read feature schema {path}: {exc}") from exc
    features = tuple(_feature(f) for f in doc.get("feature", []))
    for f in features:
        if f.kind not in ("float", "int", "bool") or f.source not in ("batch", "realtime"):
            raise ConfigurationError(
                f"feature {f.name}: bad type {f.kind!r} or source {f.source!r}"
            )
        if f.transform not in ("count", "age_seconds"):
            raise ConfigurationError(f"feature {f.name}: bad transform {f.transform!r}")
        if f.scope not in SCOPES or (f.scope != "lifetime" and f.transform != "count"):
            raise ConfigurationError(
                f"feature {f.name}: scope {f.scope!r} must be one of {SCOPES}"
                " (only lifetime features may use age_seconds)"
            )
    return FeatureSchema(
        features=features,
        attributes=tuple(doc.get("attributes", ())),
        realtime_ttl_seconds=int(doc.get("realtime_ttl_days", 30)) * 86400,
        recent_events=int(doc.get("recent_events", 50)),
        event_types=_vocabulary(doc, "event_types"),
        categories=_vocabulary(doc, "categories"),
    )


def _vocabulary(doc: Mapping[str, object], name: str) -> frozenset[str] | None:
    vocabulary = doc.get("vocabulary", {})
    if not isinstance(vocabulary, dict) or name not in vocabulary:
        return None
    values = vocabulary[name]
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise ConfigurationError(f"vocabulary.{name}: a list of names")
    return frozenset(values)
