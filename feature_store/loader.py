"""Bulk loading of batch profiles from a JSON Lines file.

Each line: ``{"customer_id": "...", "features": {name: number}, "attributes": {...}}``.
A profile is one Redis hash written by one HSET, so a reader sees either the old profile
or the new one, never half of it. Lines go to Redis in pipelined batches.

A file loads in parallel on one server: each of a few forked processes parses and checks
its part of the file once, keeping its HSETs packed (hiredis) in memory; only when every
part is good do they send them, each on its own connection. So a bad line still loads
nothing, and each line is parsed once (measured: x2.2-2.8 the profiles a second of one
process that parsed every line twice; docs/performance.md). A part larger than
``KEEP_BYTES`` packed is parsed again when it is written instead of kept. On a cluster, or
where forking is unsafe (threads running), one process checks and then writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import hiredis
import orjson
import redis
from tqdm import tqdm

from common.errors import FeatureStoreUnavailable, InvalidArgument
from engine.core.schema import FeatureSchema
from feature_store import keys
from feature_store.redis_client import REDIS_ERRORS, SyncClient, translated

PARALLEL_FROM_BYTES = 4 << 20  # smaller files: one process (forking costs more)
KEEP_BYTES = 512 << 20  # per process: packed HSETs kept from the check to the write
SEND_BYTES = 1 << 20  # written in pieces of about this much


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
        yield from _parse(path, schema, lines, 1)


def _parse(
    path: Path, schema: FeatureSchema, lines: Iterable[bytes], first: int
) -> Iterator[tuple[str, dict[str, float], dict[str, str]]]:
    for number, line in enumerate(lines, start=first):
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
    processes: int | None = None,
) -> LoadReport:
    """Loads a JSON Lines profile file and records what was loaded under LOAD_META.
    ``processes``: how many parse and write (default: one per core when no other thread
    runs here; 1: this one)."""
    started = time.perf_counter()
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    count = processes or os.cpu_count() or 1
    parallel = (
        count > 1
        and len(data) >= PARALLEL_FROM_BYTES
        and (processes is not None or _alone())
        and "fork" in multiprocessing.get_all_start_methods()
    )
    parts = _parts(data, count) if parallel and isinstance(client, redis.Redis) else None
    del data  # the parts are read again by the processes that parse them
    if parts is not None and isinstance(client, redis.Redis):
        rows = _load_parallel(client, schema, path, parts)
    else:
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


def _alone() -> bool:
    """No thread runs here but this one (and tqdm's monitor, which only sleeps and
    updates bars): forking is safe."""
    return all(
        t is threading.main_thread() or t.name == "tqdm_monitor" for t in threading.enumerate()
    )


def _parts(data: bytes, count: int) -> list[tuple[int, int, int]]:
    """(start, end, number of its first line) of ``count`` parts of the file's ``data``,
    cut after a newline."""
    cuts = [0]
    for i in range(1, count):
        at = data.find(b"\n", max(cuts[-1], len(data) * i // count))
        cuts.append(len(data) if at < 0 else at + 1)
    cuts.append(len(data))
    out, line = [], 1
    for start, end in itertools.pairwise(cuts):
        if end > start:
            out.append((start, end, line))
            line += data.count(b"\n", start, end)
    return out


def _packed(
    path: Path, schema: FeatureSchema, part: tuple[int, int, int], now: float
) -> Iterator[bytes]:
    """The HSET of each profile of a part of the file, packed."""
    start, end, first = part
    with path.open("rb") as f:
        f.seek(start)
        lines = f.read(end - start).splitlines()
    # profile_fields, with what every row shares encoded once
    fingerprint, updated = schema.fingerprint.encode(), str(int(now)).encode()
    for cid, features, attributes in _parse(path, schema, lines, first):
        hset = (
            "HSET",
            keys.customer_key(cid, keys.PROFILE),
            keys.FIELD_VECTOR,
            schema.encode_batch(features),
            keys.FIELD_SCHEMA,
            fingerprint,
            keys.FIELD_ATTRIBUTES,
            orjson.dumps(attributes),
            keys.FIELD_UPDATED,
            updated,
        )
        yield hiredis.pack_command(hset)  # type: ignore[arg-type]  # its stub: one element


def _send(client: redis.Redis, commands: Iterable[bytes]) -> int:
    """Writes packed commands in pieces of about SEND_BYTES on one connection, each piece
    and then its replies; the number written."""
    connection = client.connection_pool.get_connection()
    written = 0
    try:
        piece: list[bytes] = []
        size = 0
        for command in (*commands, b""):
            if command:
                piece.append(command)
                size += len(command)
            if piece and (size >= SEND_BYTES or not command):
                connection.send_packed_command([b"".join(piece)])  # type: ignore[no-untyped-call]
                for _ in piece:
                    reply = connection.read_response()
                    if isinstance(reply, redis.ResponseError):
                        raise reply
                written += len(piece)
                piece, size = [], 0
    finally:
        client.connection_pool.release(connection)
    return written


def _part_worker(
    client: redis.Redis,
    schema: FeatureSchema,
    path: Path,
    part: tuple[int, int, int],
    now: float,
    pipe: Connection,
) -> None:
    """Checks its part (keeping the packed HSETs if they fit), reports, and writes them
    when told to."""
    try:
        kept: list[bytes] | None = []
        size, rows = 0, 0
        for command in _packed(path, schema, part, now):
            rows += 1
            if kept is not None:
                kept.append(command)
                size += len(command)
                if size > KEEP_BYTES:
                    kept = None  # parsed again when written
        pipe.send(("checked", rows))
    except InvalidArgument as exc:
        pipe.send(("invalid", (exc.field, exc.problem)))
        return
    if pipe.recv() != "write":
        return
    try:
        written = _send(client, kept if kept is not None else _packed(path, schema, part, now))
        pipe.send(("written", written))
    except REDIS_ERRORS as exc:
        pipe.send(("failed", type(exc).__name__))


def _load_parallel(
    client: redis.Redis, schema: FeatureSchema, path: Path, parts: list[tuple[int, int, int]]
) -> int:
    context = multiprocessing.get_context("fork")  # the schema and client, as they are
    now = time.time()
    workers = []
    for part in parts:
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_part_worker, args=(client, schema, path, part, now, theirs), daemon=True
        )
        process.start()
        theirs.close()  # the child's end: its exit is then an end of file here
        workers.append((process, ours))
    try:
        reports = [ours.recv() for _, ours in workers]
        invalid = [detail for kind, detail in reports if kind == "invalid"]
        if invalid:
            # Only those that checked their part wait for word: one that found a bad
            # line has left, and a write to its end of the pipe is a broken pipe.
            for (_, ours), (kind, _) in zip(workers, reports, strict=True):
                if kind == "checked":
                    with contextlib.suppress(OSError):  # died since
                        ours.send("stop")
            field, problem = min(invalid, key=lambda d: _line_of(d[0]))
            raise InvalidArgument(field, problem)
        for _, ours in workers:
            ours.send("write")
        done = [ours.recv() for _, ours in workers]
        failed = [detail for kind, detail in done if kind == "failed"]
        if failed:
            raise FeatureStoreUnavailable(f"profile load failed: {failed[0]}")
        return sum(int(detail) for _, detail in done)
    except EOFError as exc:
        raise FeatureStoreUnavailable("profile load: a loading process died") from exc
    finally:
        for process, ours in workers:
            process.join(timeout=30)
            ours.close()


def _line_of(where: str) -> int:
    """The line number of a ``<path>:<line>[: field]`` location (the first bad line is
    reported, as one process would)."""
    head = where.split(": ", 1)[0]
    number = head.rsplit(":", 1)[-1]
    return int(number) if number.isdigit() else 0
