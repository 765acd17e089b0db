"""Training promotes only a better model; every version stays, and rollback is one command."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.adapters import artifact
from training.cli import main
from training.job import train_demo
from training.settings import TrainerSettings


def settings(data: Path, **overrides: object) -> TrainerSettings:
    base = {"data_dir": data, "demo_customers": 2000, "train_rows": 6000, "num_trees": 30}
    return TrainerSettings(**{**base, **overrides})  # type: ignore[arg-type]


def test_promotion_only_when_better_and_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = train_demo(settings(tmp_path), progress=False)
    assert first.promoted and first.champion is None

    # An impossible margin: the challenger is saved, compared on the same rows, not promoted.
    second = train_demo(settings(tmp_path, promote_margin=1.0), progress=False)
    assert not second.promoted
    assert second.champion == first.model.version
    assert set(second.champion_metrics) == {"auc", "log_loss", "calibration_error"}
    assert "margin 1" in second.why
    assert artifact.current_version(tmp_path / "models") == first.model.version

    # Even a worse-is-fine margin does not promote on a holdout too small to tell.
    tiny = train_demo(settings(tmp_path, train_rows=600, promote_margin=-1.0), progress=False)
    assert not tiny.promoted and "holdout too small to tell" in tiny.why

    forced = train_demo(settings(tmp_path, promote_margin=1.0), progress=False, force=True)
    assert forced.promoted
    assert artifact.current_version(tmp_path / "models") == forced.model.version
    assert forced.model.training["simulation_seed"] != first.model.training["simulation_seed"]

    monkeypatch.setenv("ARBITER_DATA_DIR", str(tmp_path))
    assert main(["models"]) == 0
    versions, _, offers = capsys.readouterr().out.partition("\n\n")
    listed = versions.splitlines()
    assert len(listed) == 5  # header and four versions, oldest first
    assert offers.startswith("each offer's model")  # then each offer's, from Redis
    assert listed[4].startswith(f"* {forced.model.version}")
    assert main(["models", "promote", first.model.version]) == 0  # rollback
    assert artifact.current_version(tmp_path / "models") == first.model.version
    assert main(["models", "promote", "no-such-version"]) == 2
