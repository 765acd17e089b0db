"""Model artifacts: versioned, promoted atomically, refused when they do not fit."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.errors import ArtifactMismatch, ConfigurationError
from engine.adapters import artifact
from engine.adapters.lightgbm_scorer import LightGBMScorer
from engine.core.model_input import model_feature_names
from engine.service.reloader import load_scorer
from engine.settings import Definitions


def test_saved_artifact_round_trips_and_scores(model_dir: Path, definitions: Definitions) -> None:
    model = artifact.load(model_dir)
    assert model.version == artifact.current_version(model_dir)
    assert model.features == model_feature_names(definitions.schema)
    assert model.schema_fingerprint == definitions.schema.fingerprint
    assert {"auc", "log_loss", "train_rows"} <= set(model.metrics)
    scorer = load_scorer(model_dir, definitions.schema)
    assert isinstance(scorer, LightGBMScorer)
    rows = np.zeros((4, len(model.features)))
    p = scorer.predict(rows)
    assert p.shape == (4,) and np.all((p > 0) & (p < 1))


def test_a_model_for_other_features_is_refused(
    model_dir: Path, definitions: Definitions, tmp_path: Path
) -> None:
    model = artifact.load(model_dir)
    features = list(model.features)
    features[1] = "shoe_size"
    other = dataclasses.replace(model, version="v-other", features=tuple(features))
    artifact.save(tmp_path, other)
    with pytest.raises(
        ArtifactMismatch, match="missing \\['tenure_months'\\], unexpected \\['shoe_size'\\]"
    ):
        load_scorer(tmp_path, definitions.schema)


def test_no_model_serves_the_value_only_baseline(tmp_path: Path, definitions: Definitions) -> None:
    assert load_scorer(tmp_path, definitions.schema).version == "value-only"


def test_promotion_switches_current_and_rejects_unknown_versions(
    model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "models"
    shutil.copytree(model_dir, folder)
    first = artifact.current_version(folder)
    assert first is not None
    second = dataclasses.replace(artifact.load(folder), version="v-second")
    artifact.save(folder, second, promote=False)
    assert artifact.current_version(folder) == first
    artifact.set_current(folder, "v-second")
    assert artifact.load(folder).version == "v-second"
    with pytest.raises(ConfigurationError, match="no model version"):
        artifact.set_current(folder, "v-missing")


def test_saving_the_same_model_twice_keeps_one_version(model_dir: Path, tmp_path: Path) -> None:
    model = artifact.load(model_dir)
    registry = tmp_path / "models"
    artifact.save(registry, model, promote=False)
    again = dataclasses.replace(model, metrics={"auc": 0.0})
    assert artifact.save(registry, again) == registry / model.version
    assert artifact.current_version(registry) == model.version
    assert artifact.load(registry).metrics == model.metrics  # the first one is kept
    other = dataclasses.replace(model, model_text=model.model_text + "\n")
    with pytest.raises(ConfigurationError, match="exists with another model"):
        artifact.save(registry, other)
