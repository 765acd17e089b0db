"""Compiled trees: made once per model, checked before they serve, and never wrong: a
server scores exactly as LightGBM does, compiled or not, and falls back when the
compiled form does not fit."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from arbiter.v1 import common_pb2, decision_pb2
from engine.adapters import artifact, compiled
from engine.adapters.lightgbm_scorer import LightGBMScorer
from feature_store.memory_store import MemoryStore
from tests.conftest import ServerThread


def _propensities(server: ServerThread) -> dict[str, float]:
    out = {}
    for n in range(1, 6):
        answer = server.decisions.Decide(
            decision_pb2.DecideRequest(
                customer_id=f"cust-{n:06d}", channel=common_pb2.CHANNEL_WEB, limit=3
            ),
            timeout=5,
        )
        out.update({f"{n}/{a.offer_id}": a.propensity for a in answer.actions})
    return out


def test_a_server_scores_the_same_compiled_or_not(
    server_factory: Callable[..., ServerThread],
    memory: MemoryStore,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    plain = tmp_path / "models"
    shutil.copytree(model_dir, plain)
    version = artifact.current_version(plain)
    assert version is not None
    (plain / version / compiled.OBJECT).unlink()
    (plain / version / compiled.META).unlink()

    fast = server_factory(memory)  # the test model, compiled
    slow = server_factory(memory, data_dir=tmp_path)
    assert fast.application.core.scorer.engine.startswith("compiled trees")  # type: ignore[attr-defined]
    assert slow.application.core.scorer.engine.startswith("not compiled")  # type: ignore[attr-defined]
    a, b = _propensities(fast), _propensities(slow)
    assert a.keys() == b.keys() and len(a) >= 10
    assert max(abs(a[k] - b[k]) for k in a) <= 1e-6


def test_compiled_predictions_equal_lightgbm_on_rows_it_never_saw(model_dir: Path) -> None:
    model = artifact.load(model_dir)
    fast, slow = LightGBMScorer(model), LightGBMScorer(model, use_compiled=False)
    assert fast.engine.startswith("compiled trees") and slow.engine == "LightGBM"
    assert model.check_rows is not None
    rng = np.random.default_rng(4)
    rows = model.check_rows[rng.integers(0, len(model.check_rows), 300)].copy()
    rows[:, :10] += rng.normal(0, 3, (300, 10))  # moved off the training rows
    assert np.max(np.abs(fast.predict(rows) - slow.predict(rows))) <= 1e-9


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("other_cpu", "compiled for another CPU"),
        ("no_check_rows", "no check rows"),
        ("other_model", "disagrees with LightGBM"),
        ("corrupt", "does not match its checksum"),
    ],
)
def test_a_compiled_form_that_does_not_fit_is_not_served(
    model_dir: Path, tmp_path: Path, damage: str, why: str
) -> None:
    models = tmp_path / "models"
    shutil.copytree(model_dir, models)
    model = artifact.load(models)
    folder = model.folder
    assert folder is not None
    meta = json.loads((folder / compiled.META).read_text())
    if damage == "other_cpu":
        meta["cpu_features"] = "+sse2"
    elif damage == "no_check_rows":
        (folder / artifact.CHECK_ROWS).unlink()
    elif damage == "other_model":  # another model's machine code under this version
        other = np.asarray(model.check_rows)
        rebuilt = artifact.ModelArtifact(
            **{**model.__dict__, "version": "other", "model_text": _another_model(other)}
        )
        other_folder = artifact.save(models, rebuilt, promote=False)
        compiled.compile_artifact(artifact.load(models, "other"))
        shutil.copy(other_folder / compiled.OBJECT, folder / compiled.OBJECT)
        meta["sha256"] = json.loads((other_folder / compiled.META).read_text())["sha256"]
    elif damage == "corrupt":  # LLVM would abort the process on these bytes
        (folder / compiled.OBJECT).write_bytes(b"\x7fELF" + b"\0" * 64)
    (folder / compiled.META).write_text(json.dumps(meta))
    scorer = LightGBMScorer(artifact.load(models))
    assert why in scorer.engine
    reference = LightGBMScorer(artifact.load(models), use_compiled=False)
    rows = np.asarray(model.check_rows)[:20]
    assert np.array_equal(scorer.predict(rows), reference.predict(rows))  # LightGBM serves


def _another_model(rows: np.ndarray) -> str:
    import lightgbm as lgb

    labels = (rows[:, 0] > np.median(rows[:, 0])).astype(float)
    params = {"objective": "binary", "verbosity": -1, "min_data_in_leaf": 5}
    booster = lgb.train(params, lgb.Dataset(rows, labels), num_boost_round=5)
    return str(booster.model_to_string())
