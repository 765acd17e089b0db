"""Bulk loading of batch profiles from a JSON Lines file.

Each line: ``{"customer_id": "...", "features": {name: number}, "attributes": {...}}``.
A profile is one Redis hash written by one HSET, so a reader sees either the old profile
or the new one, never half of it. Lines go to Redis in pipelined batches.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson
from tqdm import tqdm

from common.errors import InvalidArgument
from feature_store import keys
from feature_store.redis_client import SyncClient, translated
from feature_store.schema import FeatureSchema


@dataclass(frozen=True, slots=True)
class LoadReport:
    rows: int
    seconds: float
    source_sha256: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


def profile_fields(
    schema: FeatureSchema, features: Mapping[str, float], attributes: Mapping[str, str], now: float
) -> dict[bytes, bytes]:
    """The stored hash of one profile (see docs/redis-keys.md)."""
    return {
        keys.FIELD_VECTOR: schema.encode_batch(features),
        keys.FIELD_SCHEMA: schema.fingerprint.encode(),
        keys.FIELD_ATTRIBUTES: orjson.dumps(dict(attributes)),
        keys.FIELD_UPDATED: str(int(now)).encode(),
    }


MAX_ATTRIBUTE_LENGTH = 1000
_NUMBERS = frozenset({int, float})  # exact types: bool, an int subclass, is no number here


def _profile(
    row: object, schema: FeatureSchema, where: str
) -> tuple[str, dict[str, float], dict[str, str]]:
    """One line's profile, checked: InvalidArgument names the line and the field."""
    if not isinstance(row, dict):
        raise InvalidArgument(where, "not a JSON object")
    cid = row.get("customer_id")
    if not isinstance(cid, str):
        raise InvalidArgument(f"{where}: customer_id", "must be a string")
    problem = keys.customer_id_problem(cid)
    if problem:
        raise InvalidArgument(f"{where}: customer_id", problem)
    features, attributes = row.get("features", {}), row.get("attributes", {})
    if not isinstance(features, dict):
        raise InvalidArgument(f"{where}: features", "must be an object of numbers")
    if not isinstance(attributes, dict):
        raise InvalidArgument(f"{where}: attributes", "must be an object of strings")
    _check_features(features, schema.batch_names, where)
    _check_attributes(attributes, where)
    return cid, features, attributes


def _check_features(features: dict[str, object], batch: frozenset[str], where: str) -> None:
    values = features.values()
    # The common case in C: known names, plain numbers (by exact type: not bool), and a
    # finite sum, so every value is finite. Otherwise find the culprit and name it.
    if (
        features.keys() <= batch
        and set(map(type, values)) <= _NUMBERS
        and math.isfinite(math.fsum(values))  # type: ignore[arg-type]
    ):
        return
    for name, value in features.items():
        if name not in batch:
            raise InvalidArgument(f"{where}: features.{name}", "not a batch feature of the schema")
        if type(value) not in _NUMBERS or not math.isfinite(value):  # type: ignore[arg-type]
            raise InvalidArgument(f"{where}: features.{name}", f"must be a number, not {value!r}")


def _check_attributes(attributes: dict[str, object], where: str) -> None:
    if set(map(type, attributes.values())) <= {str} and all(
        len(text) <= MAX_ATTRIBUTE_LENGTH  # type: ignore[arg-type]
        for text in attributes.values()
    ):
        return
    for name, text in attributes.items():
        if not isinstance(text, str):
            raise InvalidArgument(f"{where}: attributes.{name}", f"must be a string, not {text!r}")
        if len(text) > MAX_ATTRIBUTE_LENGTH:
            raise InvalidArgument(
                f"{where}: attributes.{name}", f"longer than {MAX_ATTRIBUTE_LENGTH} characters"
            )


def read_profiles(
    path: Path, schema: FeatureSchema
) -> Iterator[tuple[str, dict[str, float], dict[str, str]]]:
    """The profiles of a JSON Lines file, each checked against ``schema``."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidArgument(f"{path}:{number}", f"not JSON: {exc}") from exc
            yield _profile(row, schema, f"{path}:{number}")


def load_profiles(
    client: SyncClient,
    schema: FeatureSchema,
    rows: Iterable[tuple[str, Mapping[str, float], Mapping[str, str]]],
    *,
    batch_size: int = 2000,
    progress: bool = False,
    total: int | None = None,
) -> int:
    """Writes profiles in pipelined batches; returns the number written."""
    now = time.time()
    count = 0
    pipe = client.pipeline(transaction=False)
    with tqdm(total=total, unit="profiles", disable=not progress) as bar:
        for cid, features, attributes in rows:
            key = keys.customer_key(cid, keys.PROFILE)
            pipe.hset(key, mapping=profile_fields(schema, features, attributes, now))  # type: ignore[arg-type]
            count += 1
            if count % batch_size == 0:
                with translated("profile load"):
                    pipe.execute()
                bar.update(batch_size)
        with translated("profile load"):
            pipe.execute()
        bar.update(count % batch_size)
    return count


def load_file(
    client: SyncClient,
    schema: FeatureSchema,
    path: Path,
    *,
    batch_size: int = 2000,
    progress: bool = False,
) -> LoadReport:
    """Loads a JSON Lines profile file and records what was loaded under LOAD_META."""
    started = time.perf_counter()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    # Every line is checked before any is written: a bad line loads nothing.
    total = sum(1 for _ in read_profiles(path, schema))
    rows = load_profiles(
        client,
        schema,
        read_profiles(path, schema),
        batch_size=batch_size,
        progress=progress,
        total=total,
    )
    with translated("profile load"):
        client.hset(
            keys.LOAD_META,
            mapping={"source_sha256": digest, "rows": rows, "schema": schema.fingerprint},
        )
    return LoadReport(rows, time.perf_counter() - started, digest)
