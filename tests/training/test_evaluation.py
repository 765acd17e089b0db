"""Off-policy estimators against a world whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation import doubly_robust, ips, snips

TRUTH = np.array([0.1, 0.3, 0.6])  # reward probability of each action


def logged(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A uniformly random logging policy over three actions."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 3, n)
    rewards = (rng.random(n) < TRUTH[actions]).astype(float)
    return actions, rewards, np.full(n, 1 / 3)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_estimates_of_always_the_best_action_cover_its_true_value(seed: int) -> None:
    actions, rewards, logged_p = logged(30_000, seed)
    target = (actions == 2).astype(float)  # the target policy always takes action 2

    for estimate in (ips(rewards, logged_p, target), snips(rewards, logged_p, target)):
        assert estimate.low <= 0.6 <= estimate.high
        assert estimate.high - estimate.low < 0.04

    exact = doubly_robust(rewards, logged_p, target, TRUTH[actions], np.full(actions.size, 0.6))
    wrong = doubly_robust(
        rewards, logged_p, target, np.full(actions.size, 0.3), np.full(actions.size, 0.3)
    )
    assert exact.low <= 0.6 <= exact.high
    assert (
        exact.high - exact.low
        < ips(rewards, logged_p, target).high - ips(rewards, logged_p, target).low
    )
    assert wrong.low <= 0.6 <= wrong.high  # a wrong reward model is corrected by the weights


def test_the_uniform_target_is_the_mean() -> None:
    actions, rewards, logged_p = logged(30_000, 4)
    estimate = snips(rewards, logged_p, np.full(actions.size, 1 / 3))
    assert estimate.value == pytest.approx(rewards.mean())
    assert estimate.low <= TRUTH.mean() <= estimate.high


def test_no_overlap_gives_no_estimate() -> None:
    _, rewards, logged_p = logged(100, 5)
    assert np.isnan(snips(rewards, logged_p, np.zeros(100)).value)
    assert ips(rewards, logged_p, np.zeros(100)).value == 0.0
