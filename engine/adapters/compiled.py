"""Compiled trees: a model's forest as machine code (lleaves, LLVM), 4-6x faster than
``Booster.predict`` on request-sized matrices and equal to it within 1e-12.

Compiling takes 10-60 s, so it happens once per model version, when training promotes it
(or ``arbiter compile``), never on the request path or at start. The object file is kept
beside the artifact with what it was built for::

    <model_dir>/<version>/model.o        machine code for the host's CPU
    <model_dir>/<version>/compiled.json  host CPU name and features, library versions,
                                         and the agreement measured on the check rows

Serving uses it only when the CPU and libraries match and it agrees with
``Booster.predict`` on the artifact's check rows (held-out training rows) to within
``TOLERANCE``; otherwise it says why and the scorer stays on ``Booster.predict``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from common.errors import ConfigurationError
from engine.adapters.artifact import ModelArtifact

OBJECT = "model.o"
META = "compiled.json"
TOLERANCE = 1e-6

Predict = Callable[[np.ndarray], np.ndarray]


def host() -> dict[str, str]:
    """What an object file is only valid for: this CPU and these library versions."""
    import llvmlite.binding as llvm

    return {
        "cpu": llvm.get_host_cpu_name(),
        "cpu_features": llvm.get_host_cpu_features().flatten(),
        "lleaves": metadata.version("lleaves"),
        "llvmlite": metadata.version("llvmlite"),
    }


@dataclass(frozen=True, slots=True)
class Compiled:
    seconds: float
    max_abs_diff: float
    rows: int


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model(folder: Path) -> Any:
    import lleaves

    return lleaves.Model(model_file=str(folder / "model.txt"))


def _agreement(predict: Predict, booster: lgb.Booster, rows: np.ndarray) -> float:
    expected = np.asarray(booster.predict(rows, num_threads=1), dtype=np.float64)
    return float(np.max(np.abs(predict(rows) - expected)))


def compile_artifact(artifact: ModelArtifact) -> Compiled:
    """Compiles the artifact's trees for this host into its folder (atomically: a reader
    sees the previous state or the finished pair of files), after checking agreement."""
    folder = artifact.folder
    if folder is None:
        raise ConfigurationError(f"model {artifact.version} was not loaded from a folder")
    rows = artifact.check_rows
    if rows is None or not len(rows):
        raise ConfigurationError(
            f"model {artifact.version} has no check rows to verify a compiled form against"
            " (trained before compiled trees): retrain it with `arbiter train`"
        )
    started = time.perf_counter()
    staging = folder / f".{OBJECT}.{os.getpid()}.tmp"
    staging.unlink(missing_ok=True)
    model = _model(folder)
    # One row at a time is not our shape: blocks of 34 trees suit request-sized matrices.
    model.compile(cache=str(staging))
    booster = lgb.Booster(model_str=artifact.model_text)
    diff = _agreement(lambda m: model.predict(m, n_jobs=1), booster, rows)
    seconds = time.perf_counter() - started
    meta = {
        **host(),
        "sha256": digest(staging),
        "version": artifact.version,
        "compiled_in_seconds": round(seconds, 2),
        "check_rows": len(rows),
        "max_abs_diff": diff,
    }
    if not diff <= TOLERANCE:
        staging.unlink(missing_ok=True)
        raise ConfigurationError(
            f"compiled model {artifact.version} disagrees with LightGBM by {diff:.3g}"
        )
    os.replace(staging, folder / OBJECT)
    tmp = folder / f".{META}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, folder / META)
    return Compiled(seconds, diff, len(rows))


def load(artifact: ModelArtifact, booster: lgb.Booster) -> tuple[Predict | None, str]:
    """The compiled predict function for ``artifact`` if it may serve, else None; and why
    (a sentence for the log)."""
    folder = artifact.folder
    if folder is None or not (folder / OBJECT).is_file():
        return None, "not compiled (`arbiter compile` compiles it)"
    try:
        meta = json.loads((folder / META).read_text())
        here = host()
    except (OSError, ValueError, ImportError) as exc:
        return None, f"compiled form unreadable: {exc!r}"
    if any(meta.get(k) != v for k, v in here.items()) or meta.get("version") != artifact.version:
        return None, "compiled for another CPU or library version (`arbiter compile` redoes it)"
    # LLVM aborts the whole process on a damaged object file: only an intact one is loaded.
    if meta.get("sha256") != digest(folder / OBJECT):
        return None, "compiled form does not match its checksum (`arbiter compile` redoes it)"
    try:
        model = _model(folder)
        model.compile(cache=str(folder / OBJECT))
    except Exception as exc:  # a corrupt object file must not stop serving
        return None, f"compiled form failed to load: {exc!r}"

    def predict(matrix: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(matrix, n_jobs=1), dtype=np.float64)

    rows = artifact.check_rows
    if rows is None or not len(rows):
        return None, "no check rows to verify the compiled form against"
    try:
        diff = _agreement(predict, booster, rows)
    except Exception as exc:  # e.g. rows of another shape: LightGBM serves
        return None, f"compiled form could not be checked: {exc!r}"
    if not diff <= TOLERANCE:
        return None, f"compiled form disagrees with LightGBM by {diff:.3g}"
    return predict, f"compiled trees (agree to {diff:.1g} on {len(rows)} check rows)"
