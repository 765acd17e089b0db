"""The head-to-head: Vowpal Wabbit's contextual bandit and the fixed baselines choosing
among the same candidates as the served policy, in the simulated world, over seeds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.core.model_input import ServedInputs
from engine.settings import load_definitions
from training import simulation
from training.settings import TrainerSettings
from training.simulation import compare
from training.simulation.peers import CeilingPolicy, Choice, VWPolicy
from training.world import INTEREST_VIEW_SHARE, TOPICS, TRAVELLER_SHARE, generate, true_propensity


def test_compared_over_seeds_vw_learns_and_beats_random(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = simulation.compare_seeds(
        tmp_path / "cmp",
        policies=["arbiter", "vw", "ceiling", "value", "random"],
        seeds=[1, 2],
        days=2,
        customers_per_day=150,
        world_size=1000,
        epsilon=0.2,
        first_rows=6000,
    )

    assert len(runs) == 2 and all(len(days) == 2 for days in runs)
    for days in runs:
        for day in days:
            assert set(day.peers) == {"vw", "ceiling", "value", "random"}
            assert day.oracle >= max(day.policy, *(p.value for p in day.peers.values()))
            assert 0 <= day.peers["vw"].acceptance <= 1
        vw = np.mean([d.peers["vw"].value for d in days])
        random = np.mean([d.peers["random"].value for d in days])
        assert vw > 1.5 * random  # it learned: untrained, it chooses as randomly
        assert np.mean([d.policy for d in days]) > 1.5 * random
        # knowing the response model, it serves more than a learner at epsilon 0.2
        assert np.mean([d.peers["ceiling"].value for d in days]) > np.mean([d.policy for d in days])
    printed = capsys.readouterr().out
    assert "per day and policy, mean [95% interval] over seeds 1, 2:" in printed
    assert "arbiter - vw, value / oracle by day (points):" in printed
    lines = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    assert lines[0] == "seed,day,policy,value,oracle,value_over_oracle,acceptance,regret"
    assert len(lines) == 1 + 2 * 2 * 5
    # The two seeds are two worlds: not the same figures twice.
    assert runs[0][0].oracle != runs[1][0].oracle


def test_vw_prefers_what_was_accepted() -> None:
    definitions = load_definitions(TrainerSettings())
    names = definitions.schema.names
    offers = [o.offer_id for o in definitions.catalog.offers[:3]]
    vw = VWPolicy(definitions.catalog, names, args="--cb_explore_adf --epsilon 0.1 --quiet")
    served = ServedInputs(np.ones(len(names)), "web", "consideration")
    rng = np.random.default_rng(0)
    liked = offers[1]
    for _ in range(400):
        choice = vw.choose(served, offers, rng)
        vw.learn(served, offers, choice, 100.0 if choice.offer_id == liked else 0.0)
    picks = [vw.choose(served, offers, rng).offer_id for _ in range(200)]
    vw.close()
    assert picks.count(liked) > 150  # 1 - epsilon of them, less the draws' noise
    assert isinstance(choice, Choice) and 0 < choice.probability <= 1


def test_intervals_over_seeds() -> None:
    one = compare.Interval.of([0.5])
    assert (one.low, one.mean, one.high) == (0.5, 0.5, 0.5)
    three = compare.Interval.of([1.0, 2.0, 3.0])
    # t(0.975, 2 df) = 4.3027; the standard error is 1 / sqrt(3)
    assert three.mean == 2.0
    assert three.high - three.mean == pytest.approx(4.3027 / np.sqrt(3), rel=1e-4)
    assert three.format(100, 1, "%") == "200.0% [-48.4, 448.4]"


def test_an_unknown_policy_is_refused_before_any_work() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training.cli", "simulate", "--compare", "arbiter,vvw"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--compare: unknown policy vvw" in result.stderr
    assert "first model" not in result.stdout


def test_the_ceiling_expects_what_customers_who_browsed_so_do() -> None:
    """Its expectation over the hidden traits, given one view of travel today, against
    the mean over many simulated customers (traits drawn, product views drawn as the
    traffic draws them) who viewed exactly that: equal within the sampling error. A
    ceiling that ignored the views would be 0.05 lower for the roaming pack."""
    definitions = load_definitions(TrainerSettings())
    names = definitions.schema.names
    world = generate(1, seed=5)
    _, features, _ = world.profile(0)
    served = ServedInputs(
        np.array([features.get(n, 0.0) for n in names]),
        "web",
        "consideration",
        last_category="travel",
        topic_counts={"travel": 1.0},
    )
    ceiling = CeilingPolicy(definitions.catalog, names, world)
    offers = ["roaming_pack", "data_boost", "family_plan"]
    expected = ceiling.expected(served, offers)

    rng = np.random.default_rng(11)
    n = 400_000
    interest = rng.integers(0, len(TOPICS), n)
    views = rng.poisson(1.5, n)
    of_interest = rng.random(n) < INTEREST_VIEW_SHARE
    topic = np.where(of_interest, interest, rng.integers(0, len(TOPICS), n))
    alike = (views == 1) & (topic == TOPICS.index("travel"))
    m = int(alike.sum())
    hidden = {
        "interest": interest[alike],
        "traveller": (rng.random(m) < TRAVELLER_SHARE).astype(float),
        "price_sensitivity": rng.random(m),
    }
    named = {n_: np.full(m, v) for n_, v in zip(names, served.features.tolist(), strict=True)}
    for offer_id in offers:
        offer = definitions.catalog.by_id[offer_id]
        p = true_propensity(
            offer_id,
            offer.value,
            offer.topics,
            "web",
            named,
            hidden,
            np.full(m, float("travel" in offer.topics)),
            np.full(m, float("travel" in offer.topics)),
        )
        error = 4 * p.std() / np.sqrt(m)
        assert expected[offer_id] / offer.value == pytest.approx(p.mean(), abs=error)
