"""`arbiter export-logs`: the decision and outcome logs, from Redis to a Parquet dataset
partitioned by day, incrementally; and reading that dataset back for training.

Layout under the destination folder::

    decisions/day=2026-11-26/<shard>-<first entry id>.parquet
    outcomes/day=2026-11-26/<shard>-<first entry id>.parquet
    _export_state.json        the last entry id exported, per stream

Each run continues after the last entry id of each stream (a shard, or a legacy single
stream), a page of entries at a time: a page becomes one file per day it spans, written
to a temporary name and renamed, and only then is the page's last id saved in the state
(also written and renamed). A run that stops between the two is repeated from the same
id and writes the same file names again, so no row is exported twice. Entries trimmed
from Redis before an export reached them are not in the dataset: run the export more
often than the retention (``ARBITER_LOG_RETENTION_DAYS``, 30) lets them go.

Columns: ``id`` (the stream entry id), ``shard`` (the stream's place among the log's 16
shards; 16: the legacy stream), ``ts`` (unix seconds: the decision's time, or the
outcome's), ``customer_id``, ``decision_id``, the columns of the kind below, and
``entry``: the logged JSON whole, exactly as the stream held it (decompressed), so
training reads the dataset as it reads Redis.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from feature_store import keys
from feature_store.log_reader import entry_order, log_order
from feature_store.redis_client import SyncClient, translated

STATE_FILE = "_export_state.json"
PAGE = 20_000  # entries read and written at a time, per stream


@dataclass(frozen=True)
class Kind:
    name: str  # the dataset's folder
    streams: Sequence[str]
    columns: Sequence[str]  # typed columns besides id, ts, customer_id, decision_id, entry
    ts_field: str


DECISIONS = Kind("decisions", keys.decision_logs(), ("model_version", "channel", "degraded"), "ts")
OUTCOMES = Kind(
    "outcomes",
    keys.outcome_logs(),
    ("offer_id", "outcome", "idempotency_key"),
    "occurred_at",
)
KINDS = (DECISIONS, OUTCOMES)


@dataclass(frozen=True)
class ExportReport:
    rows: Mapping[str, int]  # per kind
    files: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return sum(self.rows.values()) / self.seconds if self.seconds > 0 else 0.0


def _raw_entry(fields: Mapping[bytes, bytes]) -> bytes:
    """The JSON of a decision or outcome entry, decompressed."""
    packed = fields.get(keys.DECISION_FIELD_COMPRESSED)
    if packed is not None:
        return zlib.decompress(packed)
    return fields.get(keys.DECISION_FIELD) or fields[keys.OUTCOME_FIELD]


def _schema(kind: Kind) -> pa.Schema:
    text = [(name, pa.string()) for name in ("id", "customer_id", "decision_id", *kind.columns)]
    # shard: the stream's place among the log's streams (the legacy stream last); with
    # the id it orders the rows as the readers of Redis merge them (log_reader.py).
    numbers = [("shard", pa.int16()), ("ts", pa.float64())]
    return pa.schema([*text, *numbers, ("entry", pa.string())])


def _day(entry_id: bytes) -> str:
    ms, _ = entry_order(entry_id)
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _tables(
    kind: Kind, shard: int, page: list[tuple[bytes, dict[bytes, bytes]]]
) -> dict[str, pa.Table]:
    """The page's rows as one table per day (of the entry id: when it was logged)."""
    by_day: dict[str, dict[str, list[Any]]] = {}
    names = _schema(kind).names
    for entry_id, fields in page:
        raw = _raw_entry(fields)
        entry = orjson.loads(raw)
        columns = by_day.setdefault(_day(entry_id), {name: [] for name in names})
        columns["id"].append(entry_id.decode())
        columns["shard"].append(shard)
        columns["ts"].append(float(entry.get(kind.ts_field) or 0.0))
        columns["entry"].append(raw.decode())
        for name in ("customer_id", "decision_id", *kind.columns):
            value = entry.get(name)
            columns[name].append(None if value is None else str(value))
    return {day: pa.table(cols, schema=_schema(kind)) for day, cols in by_day.items()}


def _write_atomically(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def _load_state(dest: Path) -> dict[str, dict[str, str]]:
    try:
        state: dict[str, dict[str, str]] = json.loads((dest / STATE_FILE).read_text())
    except FileNotFoundError:
        state = {}
    return {kind.name: dict(state.get(kind.name, {})) for kind in KINDS}


def _save_state(dest: Path, state: Mapping[str, Mapping[str, str]]) -> None:
    text = json.dumps(state, indent=1, sort_keys=True)
    _write_atomically(dest / STATE_FILE, lambda path: path.write_text(text))


def _stream_label(stream: str) -> str:
    """A file-name-safe name of a stream: its shard number, or ``legacy``."""
    if stream.endswith("}"):
        return stream.rsplit("{", 1)[1].rstrip("}")
    return "legacy"


def export_logs(client: SyncClient, dest: Path, *, page: int = PAGE) -> ExportReport:
    """Exports what the logs hold after the last export; see the module's docstring."""
    started = time.perf_counter()
    state = _load_state(dest)
    rows = {kind.name: 0 for kind in KINDS}
    files = 0
    for kind in KINDS:
        for shard, stream in enumerate(kind.streams):
            after = state[kind.name].get(stream, "")
            while True:
                with translated(f"reading {stream}"):
                    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
                        stream, min=f"({after}" if after else "-", max="+", count=page
                    )
                if not entries:
                    break
                first = entries[0][0].decode()
                name = f"{_stream_label(stream)}-{first}.parquet"
                for day, table in _tables(kind, shard, entries).items():
                    path = dest / kind.name / f"day={day}" / name
                    _write_atomically(
                        path, lambda p, t=table: pq.write_table(t, p, compression="zstd")
                    )
                    files += 1
                rows[kind.name] += len(entries)
                after = entries[-1][0].decode()
                state[kind.name][stream] = after
                _save_state(dest, state)
                if len(entries) < page:
                    break
    return ExportReport(rows, files, time.perf_counter() - started)


def _dataset(dest: Path, kind: Kind) -> ds.Dataset | None:
    folder = dest / kind.name
    if not folder.is_dir():
        return None
    return ds.dataset(folder, format="parquet", partitioning="hive", exclude_invalid_files=True)


def exported_outcomes(dest: Path) -> list[dict[str, Any]]:
    """Every exported outcome, in the fields training reads (decisions are joined with
    outcomes in memory: outcomes are the smaller log)."""
    dataset = _dataset(dest, OUTCOMES)
    if dataset is None:
        return []
    table = dataset.to_table(
        columns=["decision_id", "offer_id", "outcome", "ts", "idempotency_key"]
    )
    return [
        {
            "decision_id": d,
            "offer_id": o,
            "outcome": kind,
            "occurred_at": ts,
            "idempotency_key": key,
        }
        for d, o, kind, ts, key in zip(
            *(table.column(c).to_pylist() for c in table.column_names), strict=True
        )
    ]


def exported_stamps(dest: Path) -> np.ndarray:
    """The ``ts`` of every exported decision (8 bytes each), sorted."""
    dataset = _dataset(dest, DECISIONS)
    if dataset is None:
        return np.empty(0)
    return np.sort(dataset.to_table(columns=["ts"]).column("ts").to_numpy())


def exported_decisions(dest: Path, *, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Every exported decision (logged at ``since`` or later), oldest first, one day of
    the dataset in memory at a time (sorted by entry id within it)."""
    folders = sorted(p for p in (dest / DECISIONS.name).glob("day=*") if p.is_dir())
    for folder in folders:
        if since is not None:
            day_start = datetime.strptime(folder.name[4:], "%Y-%m-%d").replace(tzinfo=UTC)
            if day_start.timestamp() + 86400 <= since:
                continue
        table = ds.dataset(folder, format="parquet", exclude_invalid_files=True).to_table(
            columns=["id", "shard", "ts", "entry"]
        )
        ids, shards = table.column("id").to_pylist(), table.column("shard").to_pylist()
        stamps = table.column("ts").to_pylist()
        # As the Redis readers merge (log_order): by entry id, within a millisecond by the
        # entry's time; then by shard (ids repeat across shards)
        order = sorted(
            range(len(ids)),
            key=lambda i: (*log_order(ids[i], {"ts": stamps[i]}), shards[i]),
        )
        entries = table.column("entry")
        for i in order:
            if since is not None and stamps[i] < since:
                continue
            yield orjson.loads(entries[i].as_py())
