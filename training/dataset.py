"""The training set: everything still relevant, streamed into one matrix.

Read oldest first:

1. the base rows: the data the first model learnt from (the demo's simulated logs),
   saved beside the models (``base-rows/<name>.parquet``) and carried from each model to
   the next (``training["base_rows"]``), so a retrain never forgets them;
2. the Parquet export (`arbiter export-logs`), decisions of the last
   ``training_window_days``;
3. the Redis logs, the same window.

A decision id is read once: the export and Redis overlap, and a write retried after a
lost reply can log a decision twice. Each logged action becomes a row once matured
(training/logs.py). Rows go straight into float64 chunks of the model's input; no row is
held as Python objects, so memory is the matrix (8 bytes x features a row), the outcome
index and the off-policy contexts of the latest decisions (at most ``OPE_MAX_DECISIONS``).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.reward import RewardWindows
from engine.core.catalog import Catalog
from engine.core.model_input import ServedInputs, Vocabulary, build_matrix, model_feature_names
from engine.core.schema import FeatureSchema
from training.evaluation import Context
from training.logs import JoinReport, Outcomes, matured
from training.rows import TrainingRows

# Off-policy estimates are made on at most this many of the latest logged decisions: their
# contexts are held in memory, and 50,000 already give intervals of a few percent.
OPE_MAX_DECISIONS = 50_000
CHUNK = 16_384
BASE_DIR = "base-rows"


@dataclass(frozen=True)
class TrainingSet:
    """Row-aligned arrays: base rows first, then logged rows in log order.

    ``decision_ts`` is the logged decision's time (NaN for a base row), ``contexts`` the
    first slots of the latest logged decisions whose first action matured (oldest first),
    for off-policy evaluation and promotion.
    """

    matrix: np.ndarray  # (rows, features) float64, as build_matrix makes it
    reward: np.ndarray  # int8
    decision_ts: np.ndarray  # float64
    contexts: tuple[Context, ...]
    context_ts: np.ndarray  # float64, one per context
    report: JoinReport

    @property
    def rows(self) -> int:
        return int(self.reward.shape[0])

    @property
    def logged(self) -> np.ndarray:
        """Per row: from the logs (not a base row)."""
        return np.asarray(~np.isnan(self.decision_ts))


class _Rows:
    """Grows the matrix a chunk at a time."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.chunks: list[np.ndarray] = []
        self.current = np.empty((CHUNK, width))
        self.filled = 0
        self.reward: list[int] = []
        self.ts: list[float] = []

    def add(self, row: np.ndarray, reward: int, ts: float) -> None:
        if self.filled == CHUNK:
            self.chunks.append(self.current)
            self.current = np.empty((CHUNK, self.width))
            self.filled = 0
        self.current[self.filled] = row
        self.filled += 1
        self.reward.append(reward)
        self.ts.append(ts)

    def matrix(self) -> np.ndarray:
        parts, self.chunks = [*self.chunks, self.current[: self.filled]], []
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()


def build(
    schema: FeatureSchema,
    catalog: Catalog,
    vocabulary: Vocabulary,
    windows: RewardWindows,
    *,
    now: float,
    base: TrainingRows | None,
    decisions: Iterable[Iterable[Mapping[str, Any]]],
    outcomes: Iterable[Mapping[str, Any]],
) -> TrainingSet:
    """The training set as of ``now``: ``base`` rows, then each of ``decisions`` (sources
    oldest first, each in log order), labelled by ``outcomes``. Rows of offers no longer
    in the catalog are left out (their offer inputs cannot be built)."""
    index = Outcomes.indexed(outcomes)
    out = _Rows(len(model_feature_names(schema)))
    report = JoinReport()
    if base is not None:
        for r in range(base.rows):
            offer = catalog.by_id.get(base.offer_ids[r])
            if offer is None:
                continue
            out.add(
                build_matrix(base.served[r], [offer], vocabulary)[0], int(base.reward[r]), np.nan
            )
            report.base_rows += 1
    contexts: collections.deque[tuple[float, Context]] = collections.deque(maxlen=OPE_MAX_DECISIONS)
    for d, served, labels in matured(_each(decisions), index, schema, windows, now, report):
        ts = float(d["ts"])
        for action, (reward, late) in zip(d["actions"], labels, strict=True):
            offer = catalog.by_id.get(action["offer_id"])
            if reward is None or offer is None:
                continue
            report.count(reward, late)
            out.add(build_matrix(served, [offer], vocabulary)[0], reward, ts)
        context = _context(d, served, labels[0][0], catalog)
        if context is not None:
            contexts.append((ts, context))
    return TrainingSet(
        matrix=out.matrix(),
        reward=np.array(out.reward, dtype=np.int8),
        decision_ts=np.array(out.ts, dtype=np.float64),
        contexts=tuple(c for _, c in contexts),
        context_ts=np.array([t for t, _ in contexts], dtype=np.float64),
        report=report,
    )


def _context(
    d: Mapping[str, Any], served: ServedInputs, reward: int | None, catalog: Catalog
) -> Context | None:
    """The decision's first slot, for off-policy evaluation: when its label is known and
    every candidate is still in the catalog."""
    candidates = tuple(c[0] for c in d["candidates"])
    if reward is None or not all(c in catalog.by_id for c in candidates):
        return None
    first = d["actions"][0]
    return Context(
        served=served,
        placement=d.get("placement", ""),
        candidates=candidates,
        action=first["offer_id"],
        probability=float(first["probability"]),
        reward=float(reward),
    )


def _each(sources: Iterable[Iterable[Mapping[str, Any]]]) -> Iterator[Mapping[str, Any]]:
    for source in sources:
        yield from source


def since(decisions: Iterable[Mapping[str, Any]], start: float) -> Iterator[Mapping[str, Any]]:
    """The decisions made at ``start`` or later."""
    return (d for d in decisions if float(d["ts"]) >= start)


# Base rows on disk: one Parquet file a set, the served inputs column by column.
_BASE_SCHEMA = pa.schema(
    [
        ("offer_id", pa.string()),
        ("probability", pa.float64()),
        ("reward", pa.int8()),
        ("channel", pa.string()),
        ("stage", pa.string()),
        ("features", pa.list_(pa.float64())),
        ("last_category", pa.string()),
        ("topic_counts", pa.string()),  # JSON: category -> events in 24 h
    ]
)


def save_base(model_dir: Path, name: str, rows: TrainingRows) -> Path:
    """Saves ``rows`` as the base set ``name`` (written whole, then renamed)."""
    folder = model_dir / BASE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.parquet"
    table = pa.table(
        {
            "offer_id": rows.offer_ids,
            "probability": rows.probability.astype(np.float64),
            "reward": rows.reward.astype(np.int8),
            "channel": [s.channel for s in rows.served],
            "stage": [s.stage for s in rows.served],
            "features": [s.features.tolist() for s in rows.served],
            "last_category": [s.last_category for s in rows.served],
            "topic_counts": [json.dumps(dict(s.topic_counts)) for s in rows.served],
        },
        schema=_BASE_SCHEMA,
    )
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary, compression="zstd")
    temporary.replace(path)
    return path


def load_base(model_dir: Path, name: str) -> TrainingRows | None:
    """The base set ``name``, or None when it is not there (a model from before base rows
    were kept, or a folder copied without them)."""
    path = model_dir / BASE_DIR / f"{name}.parquet"
    if not path.is_file():
        return None
    table = pq.read_table(path)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    served = [
        ServedInputs(np.array(f, dtype=np.float64), ch, st, lc, json.loads(tc))
        for f, ch, st, lc, tc in zip(
            columns["features"],
            columns["channel"],
            columns["stage"],
            columns["last_category"],
            columns["topic_counts"],
            strict=True,
        )
    ]
    return TrainingRows(
        served=served,
        offer_ids=columns["offer_id"],
        probability=np.array(columns["probability"], dtype=np.float64),
        reward=np.array(columns["reward"], dtype=np.int8),
    )
