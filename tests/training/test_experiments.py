"""Champion / challenger experiments: salted assignment, and the report from the logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.core import experiments as assignment
from training import experiments

IDS = [f"cust-{i:06d}" for i in range(1, 20_001)]


def test_an_arm_is_stable_within_an_experiment_and_independent_across() -> None:
    first = [assignment.in_treatment("challenge:v1", c, 0.3) for c in IDS]
    again = [assignment.in_treatment("challenge:v1", c, 0.3) for c in IDS]
    other = [assignment.in_treatment("challenge:v2", c, 0.3) for c in IDS]
    assert first == again
    n = len(IDS)
    sigma = np.sqrt(0.3 * 0.7 / n)
    assert abs(np.mean(first) - 0.3) < 4 * sigma
    assert abs(np.mean(other) - 0.3) < 4 * sigma
    # Independent: in both arms as often as 0.3 x 0.3; one unsalted hash would give 0.3.
    both = np.mean(np.array(first) & np.array(other))
    assert abs(both - 0.09) < 4 * np.sqrt(0.09 * 0.91 / n)
    # The buckets are uniform: a larger share takes in the smaller one's customers.
    wider = [assignment.in_treatment("challenge:v1", c, 0.5) for c in IDS]
    assert all(w for f, w in zip(first, wider, strict=True) if f)


def logs(
    rng: np.random.Generator, arms: dict[str, tuple[int, float]], start: float = 1000.0
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Decisions (one per customer) per model version, and their accepts at a rate."""
    decisions: list[dict[str, object]] = []
    outcomes: list[dict[str, object]] = []
    n = 0
    for version, (customers, rate) in arms.items():
        for _ in range(customers):
            n += 1
            decision_id = f"d{n}"
            decisions.append(
                {
                    "decision_id": decision_id,
                    "customer_id": f"cust-{n:06d}",
                    "ts": start + rng.random() * 100,
                    "model_version": version,
                    "actions": [{"offer_id": "fibre_broadband"}],
                }
            )
            outcomes.append({"decision_id": decision_id, "outcome": "impression"})
            if rng.random() < rate:
                outcomes.append({"decision_id": decision_id, "outcome": "accept", "value": 40.0})
    return decisions, outcomes


def test_the_report_finds_a_real_uplift_and_its_interval_covers_it() -> None:
    rng = np.random.default_rng(3)
    decisions, outcomes = logs(rng, {"champ": (6000, 0.10), "chall": (6000, 0.13)})
    # Before the challenge: not in either arm.
    decisions.append(
        {"decision_id": "old", "customer_id": "c", "ts": 1.0, "model_version": "champ",
         "actions": [{"offer_id": "x"}]}
    )  # fmt: skip
    r = experiments.report(decisions, outcomes, "chall", 0.5)

    assert r.champion.decisions == 6000 and r.challenger.decisions == 6000
    a = r.acceptance_uplift
    assert a.low < 0.03 < a.high and a.low > 0  # covers the truth, and excludes none
    assert a.p_value < 0.001
    assert r.value_uplift.low < 0.03 * 40 < r.value_uplift.high
    assert not r.sample_ratio_mismatch
    text = experiments.text(r)
    assert "(significant at 5%)" in text and "no mismatch" in text


def test_no_uplift_is_not_significant_and_a_lopsided_split_is_a_mismatch() -> None:
    rng = np.random.default_rng(4)
    decisions, outcomes = logs(rng, {"champ": (5000, 0.1), "chall": (5000, 0.1)})
    fair = experiments.report(decisions, outcomes, "chall", 0.5)
    assert fair.acceptance_uplift.low < 0 < fair.acceptance_uplift.high
    # 5000 of 10000 customers in an arm set to 10%: the assignment is broken.
    lopsided = experiments.report(decisions, outcomes, "chall", 0.1)
    assert lopsided.sample_ratio_mismatch and lopsided.srm_p_value < 1e-100
    assert "SAMPLE RATIO MISMATCH" in experiments.text(lopsided)
    with pytest.raises(ValueError, match="no decision in the logs was served by nope"):
        experiments.report(decisions, outcomes, "nope", 0.5)


def test_an_outcome_without_a_value_is_worth_its_offer() -> None:
    rng = np.random.default_rng(5)
    decisions, outcomes = logs(rng, {"champ": (300, 0.2), "chall": (300, 0.2)})
    for o in outcomes:
        o.pop("value", None)
        o["offer_id"] = "fibre_broadband"
    r = experiments.report(decisions, outcomes, "chall", 0.5, {"fibre_broadband": 400.0})
    assert r.challenger.value == 400.0 * r.challenger.acceptance > 0
    assert experiments.report(decisions, outcomes, "chall", 0.5).challenger.value == 0.0


def test_the_command_without_a_running_challenge_says_what_to_give(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    result = subprocess.run(
        [sys.executable, "-m", "training.cli", "experiments", "report"],
        env={**env, "ARBITER_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no challenge is running; name one with --challenger" in result.stderr
