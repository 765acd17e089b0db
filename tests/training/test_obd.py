"""The Open Bandit Dataset sample: real logs, real propensities (needs the obp wheel from
PyPI once; cached in var/cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.obd import ITEMS, evaluate_obd, fetch, load

CACHE = Path(__file__).resolve().parents[2] / "var" / "cache"


# one worker builds the module's fixture once (make test runs pytest-xdist)
pytestmark = pytest.mark.xdist_group("obd")


@pytest.fixture(scope="module")
def wheel() -> Path:
    try:
        return fetch(CACHE)
    except OSError as exc:
        pytest.skip(f"no package registry reachable to fetch obp==0.4.1: {exc}")


def test_the_sample_loads_as_logged(wheel: Path) -> None:
    logs = load(wheel, "random")
    assert logs.item.shape == (10_000,)
    assert set(np.unique(logs.item).tolist()) == set(range(ITEMS))
    assert set(np.unique(logs.position).tolist()) == {0, 1, 2}
    assert np.allclose(logs.propensity, 1 / ITEMS)  # uniformly random over the 80 items
    assert logs.affinity.shape == (10_000, ITEMS)


def test_learned_policy_against_the_logged_ones(wheel: Path) -> None:
    report = evaluate_obd(wheel)

    assert report.rows == 10_000
    assert report.random.value == pytest.approx(0.0038)  # the published sample CTRs
    assert report.bts.value == pytest.approx(0.0042)
    for estimate in report.learned.values():
        assert estimate.low <= estimate.value <= estimate.high
        assert estimate.high - estimate.low < 0.1
