"""Exploring policies: the logged probability is the probability the choice really had."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from arbiter.v1 import common_pb2, decision_pb2
from common.errors import ConfigurationError
from engine.core.arbitration import Exploration, arbitrate
from engine.core.catalog import parse_catalog
from feature_store.memory_store import MemoryStore
from tests.conftest import ServerThread
from training.simulation import exploring_catalog

PRIORITY = np.array([4.0, 10.0, 1.0, 6.0])
CATEGORIES = ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "exploration",
    [Exploration("epsilon", epsilon=0.2), Exploration("softmax", temperature=0.5)],
)
def test_first_slot_frequencies_match_the_logged_probabilities(exploration: Exploration) -> None:
    rng = np.random.default_rng(5)
    draws = 20_000
    seen: Counter[int] = Counter()
    logged: dict[int, float] = {}
    for _ in range(draws):
        first = arbitrate(PRIORITY, CATEGORIES, 2, exploration=exploration, rng=rng)[0]
        seen[first.index] += 1
        assert logged.setdefault(first.index, first.probability) == first.probability
    assert sum(logged.values()) == pytest.approx(1.0)
    for index, probability in logged.items():
        assert seen[index] / draws == pytest.approx(probability, abs=0.015)
    assert max(logged, key=logged.__getitem__) == 1  # the best priority stays the likeliest


def test_epsilon_probabilities_and_later_slots_are_conditional() -> None:
    rng = np.random.default_rng(1)
    exploration = Exploration("epsilon", epsilon=0.2)
    for _ in range(200):
        first, second = arbitrate(PRIORITY, CATEGORIES, 2, exploration=exploration, rng=rng)
        assert first.probability in (pytest.approx(0.8 + 0.05), pytest.approx(0.05))
        assert second.index != first.index
        # three candidates left for the second slot
        assert second.probability in (pytest.approx(0.8 + 0.2 / 3), pytest.approx(0.2 / 3))


def test_one_per_category_holds_while_exploring() -> None:
    rng = np.random.default_rng(2)
    for _ in range(100):
        ranked = arbitrate(
            np.array([5.0, 4.0, 3.0]),
            ["x", "x", "y"],
            3,
            exploration=Exploration("softmax", temperature=1.0),
            rng=rng,
        )
        assert len({["x", "x", "y"][r.index] for r in ranked}) == len(ranked) == 2


def test_greedy_is_deterministic_with_probability_one() -> None:
    ranked = arbitrate(PRIORITY, CATEGORIES, 3)
    assert [r.index for r in ranked] == [1, 3, 0]
    assert [r.probability for r in ranked] == [1.0, 1.0, 1.0]


def test_offers_still_showing_come_first_with_probability_one() -> None:
    # 2 and 0 are on screen: they keep the first slots (best first), whatever the policy.
    ranked = arbitrate(PRIORITY, CATEGORIES, 3, first={2, 0})
    assert [(r.index, r.probability) for r in ranked] == [(0, 1.0), (2, 1.0), (1, 1.0)]
    explored = arbitrate(
        PRIORITY,
        ["a", "b", "a", "d"],
        3,
        exploration=Exploration("epsilon", epsilon=0.5),
        rng=np.random.default_rng(1),
        first=[2],
    )
    assert explored[0].index == 2 and explored[0].probability == 1.0
    # The held offer took category a: offer 0 is never drawn for the slots left.
    assert {r.index for r in explored[1:]} == {1, 3}
    assert all(r.probability < 1.0 for r in explored[1:2])
    assert arbitrate(PRIORITY, CATEGORIES, 1, first=[2, 0])[0].index == 0


def test_exploration_is_configured_in_the_catalog() -> None:
    catalog = parse_catalog(
        '[exploration]\npolicy = "epsilon"\nepsilon = 0.05\noff_placements = ["agent_sidebar"]\n'
        '[[offer]]\nid = "x"\ncategory = "a"\nvalue = 1\n',
        frozenset(),
    )
    assert catalog.exploration.applies("web", "home_hero")
    assert not catalog.exploration.applies("call_center", "agent_sidebar")
    with pytest.raises(ConfigurationError, match="policy"):
        parse_catalog(
            '[exploration]\npolicy = "ucb"\n[[offer]]\nid = "x"\ncategory = "a"\nvalue = 1\n',
            frozenset(),
        )


def test_decide_logs_the_probability_of_each_action(
    server_factory: Callable[..., ServerThread], memory: MemoryStore, tmp_path: Path
) -> None:
    catalog = exploring_catalog(tmp_path / "catalog.toml", "epsilon", epsilon=0.5)
    server = server_factory(memory, catalog_path=catalog)
    probabilities = []
    for n in range(1, 41):
        response = server.decisions.Decide(
            decision_pb2.DecideRequest(
                customer_id=f"cust-{n:06d}", channel=common_pb2.CHANNEL_WEB, limit=2
            ),
            timeout=5,
        )
        probabilities += [a.probability for a in response.actions]
    server.flush_log()
    logged = [a["probability"] for d in server.read_decisions() for a in d["actions"]]
    assert sorted(logged) == sorted(probabilities)
    # Every choice was a draw: certain only when one candidate was left for the slot.
    assert all(0 < p <= 1 for p in probabilities)
    assert sum(p < 1 for p in probabilities) >= 0.8 * len(probabilities), probabilities
    assert len(set(probabilities)) > 2
