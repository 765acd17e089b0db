"""The offline check of the batch model's greedy choice (training/simulation/offline.py)."""

from __future__ import annotations

from training.settings import TrainerSettings
from training.simulation.offline import main, run_seed


def test_a_trained_model_chooses_far_better_than_chance_and_no_better_than_the_oracle() -> None:
    got = run_seed(
        4,
        {"small": TrainerSettings(num_trees=30), "stump": TrainerSettings(num_trees=1)},
        rows=6_000,
        contexts_per_seed=400,
        customers=3_000,
    )
    assert 0.2 < got["random"] < 0.6
    assert got["random"] + 0.2 < got["small"] <= 1.0
    assert got["small"] <= got["ceiling"] + 0.02 and got["ceiling"] <= 1.0
    # one tree of a model is barely a model: the trained one must be ahead of it
    assert got["stump"] < got["small"]


def test_variants_are_named_settings(capsys) -> None:  # type: ignore[no-untyped-def]
    main(
        [
            "--seeds",
            "5",
            "--rows",
            "3000",
            "--contexts",
            "200",
            "--customers",
            "2000",
            "--variant",
            "num_trees=20,lambda_l2=0.0",
        ]
    )
    out = capsys.readouterr().out
    assert "num_trees=20,lambda_l2=0.0: mean" in out and "minus the defaults by seed" in out
