"""The online layer in the core: its posterior update, its sanity bounds, and Thompson
sampling whose logged probabilities are the ones the choices had. No Redis, no gRPC."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engine.core import adaptive
from engine.core.arbitration import Exploration, slot_probabilities
from engine.core.customer import CustomerRecord
from engine.core.decision import DecisionCore, DecisionRequest
from engine.core.scoring import ValueOnlyScorer
from engine.settings import Definitions

NOW = 1_780_000_000.0


def test_the_posterior_finds_a_shift_the_model_missed() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(-2.0, 1.0, 4000)
    truth = 0.7 + 0.3 * (z - adaptive.CENTRE)
    reward = (rng.random(z.size) < 1 / (1 + np.exp(-(z + truth)))).astype(float)
    cell = adaptive.prior(None)
    for batch in np.array_split(np.arange(z.size), 40):  # as the learner's ticks see it
        cell = adaptive.learn(cell, z[batch], reward[batch], np.ones(batch.size))
    assert cell.mean[0] == pytest.approx(0.7, abs=0.2)
    assert cell.mean[1] == pytest.approx(0.3, abs=0.2)
    assert cell.examples == z.size and cell.positives == reward.sum()
    # bounded: never narrower than MIN_SD, so it keeps following a change
    assert cell.precision[0] == pytest.approx(adaptive.MAX_PRECISION[0])


def test_weightless_examples_change_nothing() -> None:
    cell = adaptive.prior(adaptive.Evidence(1000, 100))
    same = adaptive.learn(cell, np.zeros(5), np.ones(5), np.zeros(5))
    assert same == cell


def test_a_published_cell_is_held_within_the_sanity_bounds() -> None:
    wild = adaptive.Cell.from_json([float("nan"), 1e9, -5.0, float("inf"), 10.0, 2.0])
    assert wild.mean == (0.0, adaptive.MAX_SHIFT)
    assert wild.precision[0] == pytest.approx(1 / adaptive.NEW_SD[0] ** 2)
    assert wild.precision[1] == pytest.approx(adaptive.MAX_PRECISION[1])


def test_a_model_s_evidence_sets_how_sure_the_prior_is() -> None:
    new = adaptive.prior(None, context=1)
    known = adaptive.prior(adaptive.Evidence(50_000, 5_000), context=1)
    assert new.precision[0] == pytest.approx(1 / adaptive.NEW_SD[0] ** 2)
    assert known.precision == pytest.approx(adaptive.MAX_PRECISION)
    few = adaptive.prior(adaptive.Evidence(40, 4), context=1)  # 40 rows: 40 x 0.09 = 3.6
    # the slope and the context weights held 4x closer, never wider than a new offer's
    assert few.precision == pytest.approx((3.6, 16.0, 25.0))


def test_a_new_offer_starts_at_its_category_s_level_and_is_ramped_in() -> None:
    ramp = adaptive.Ramp(start_share=0.1, mature_positives=50.0)
    evidence = {"a": adaptive.Evidence(5000, 500), "b": adaptive.Evidence(5000, 500)}
    cells = {
        "a": adaptive.Cell((0.4, 0.0), (60.0, 60.0), 100, 10),
        "b": adaptive.Cell((0.8, 0.0), (60.0, 60.0), 100, 10),
        "n2": adaptive.Cell((0.1, 0.0), (5.0, 5.0), 40, 20),
    }
    layer = adaptive.Layer(3, NOW, {"m": cells})
    view = adaptive.View(["a", "b", "n1", "n2"], ["x", "x", "x", "y"], "m", evidence, layer, ramp)
    assert view.mean[2, 0] == pytest.approx(0.6)  # the mean of its category's levels
    assert list(view.share) == pytest.approx([1.0, 1.0, 0.1, 0.1 + 0.9 * 20 / 50])
    unlike = adaptive.View(
        ["a", "n1"], ["x", "x"], "m", evidence, layer, replace(ramp, similar=False)
    )
    assert unlike.mean[1, 0] == 0.0


def _core(definitions: Definitions, exploration: Exploration) -> DecisionCore:
    catalog = replace(definitions.catalog, exploration=exploration)
    return DecisionCore(
        definitions.schema,
        catalog,
        definitions.stage_rules,
        ValueOnlyScorer(),
        rng=np.random.default_rng(11),
    )


def _record(definitions: Definitions) -> CustomerRecord:
    schema = definitions.schema
    batch = schema.decode_batch(
        schema.encode_batch({"is_customer": 1, "tenure_months": 40, "device_age_months": 30})
    )
    return CustomerRecord("c1", True, batch, {"first_name": "Ana"}, {})


def test_thompson_sampling_logs_the_probabilities_its_choices_had(
    definitions: Definitions,
) -> None:
    """Decided again and again in the same situation, each offer is chosen as often as
    the probabilities logged for it say (what off-policy evaluation relies on): with
    uncertain posteriors, a new offer held back by its ramp, and the floor."""
    core = _core(definitions, Exploration("thompson", draws=16, floor=0.05))
    record = _record(definitions)
    request = DecisionRequest("c1", "web", "home_hero", limit=2)
    offers = [o.offer_id for o in core.catalog.offers]
    cells = {o: adaptive.Cell((0.0, 0.0), (3.0, 3.0), 100, 100) for o in offers[1:]}
    cells[offers[0]] = adaptive.Cell((2.0, 0.0), (3.0, 3.0), 5, 2)  # new: ramped
    core.adaptive = core.layer_view(adaptive.Layer(1, NOW, {"value-only": cells}))
    weights: dict[str, list[float]] = {}  # first slot: 1 / probability, where chosen
    lowest, runs = 1.0, 3000
    for _ in range(runs):
        decision = core.decide(request, record, NOW)
        floor = 0.05 / len(decision.candidates)
        first = decision.actions[0]
        weights.setdefault(first.offer_id, []).append(1 / first.probability)
        lowest = min(lowest, *(a.probability / floor for a in decision.actions))
    assert len(weights) > 4  # it explores
    # Inverse-propensity weighting counts each offer's decisions back: sum(1/p) over the
    # decisions where it was chosen estimates all of them, for every offer. Probabilities
    # that were not the choices' (the sampled one's without the floor, the greedy one's)
    # miss it by far more than the margin.
    for offer, inverse in weights.items():
        if len(inverse) < 100:
            continue
        ratio = sum(inverse) / runs
        spread = (sum(w * w for w in inverse) / runs - ratio**2) ** 0.5
        assert abs(ratio - 1) <= 4 * spread / runs**0.5 + 0.02, (offer, ratio, len(inverse))
    assert lowest >= 1 - 1e-9  # the floor
    assert len(weights.get(offers[0], ())) / runs < 0.2  # the ramp holds the new offer back


def test_an_agent_s_script_is_not_an_experiment(definitions: Definitions) -> None:
    core = _core(
        definitions,
        Exploration("thompson", off_placements=frozenset({"agent_sidebar"})),
    )
    offers = [o.offer_id for o in core.catalog.offers]
    cells = {o: adaptive.Cell((0.0, 0.0), (1.0, 1.0), 100, 100) for o in offers}
    core.adaptive = core.layer_view(adaptive.Layer(1, NOW, {"value-only": cells}))
    request = DecisionRequest("c1", "call_center", "agent_sidebar", limit=1)
    firsts = {core.decide(request, _record(definitions), NOW).actions[0] for _ in range(50)}
    assert {a.offer_id for a in firsts} == {next(iter(firsts)).offer_id}
    assert {a.probability for a in firsts} == {1.0}


def test_the_layer_moves_the_served_propensity(definitions: Definitions) -> None:
    core = _core(definitions, Exploration())
    request = DecisionRequest("c1", "web", "home_hero", limit=20)
    before = core.decide(request, _record(definitions), NOW)
    target = before.actions[-1].offer_id
    cells = {target: adaptive.Cell((2.5, 0.0), (60.0, 60.0), 500, 300)}
    core.adaptive = core.layer_view(adaptive.Layer(7, NOW, {"value-only": cells}))
    after = core.decide(request, _record(definitions), NOW)
    served = {a.offer_id: a.propensity for a in after.actions}
    was = {a.offer_id: a.propensity for a in before.actions}
    assert served[target] > 5 * was[target]
    assert after.layer_version == 7
    # the log keeps the model's own propensity for each candidate
    base = dict(zip(after.candidates.offer_ids, after.candidates.propensity.tolist(), strict=True))
    assert base[target] == pytest.approx(was[target])


def test_every_candidate_keeps_the_floor() -> None:
    draws = np.array([[3.0, 1.0, 2.0, -np.inf]] * 8 + [[1.0, 2.0, 0.0, 0.5]] * 8)
    exploration = Exploration("thompson", floor=0.08)
    p = slot_probabilities(np.array([3.0, 2.0, 1.0, 0.5]), exploration, draws)
    assert p == pytest.approx([0.92 * 0.5 + 0.02, 0.92 * 0.5 + 0.02, 0.02, 0.02])
    # a sample that ramps every candidate out goes to the best mean
    out = np.full((4, 2), -np.inf)
    assert slot_probabilities(np.array([1.0, 2.0]), exploration, out) == pytest.approx([0.04, 0.96])


def test_the_layer_learns_whom_an_offer_suits() -> None:
    """A new offer the model scores alike for everyone suits customers with a high first
    context feature: the context weight learns it, and serving ranks them apart."""
    rng = np.random.default_rng(8)
    context = adaptive.Context(("a", "b"), (0, 1), np.zeros(2), np.ones(2))
    x = rng.normal(size=(3000, 2))
    z = np.full(3000, -2.0)
    reward = (rng.random(3000) < 1 / (1 + np.exp(-(z + 1.2 * x[:, 0])))).astype(float)
    cell = adaptive.prior(None, context=2)
    for batch in np.array_split(np.arange(3000), 30):
        cell = adaptive.learn(cell, z[batch], reward[batch], np.ones(batch.size), x[batch])
    assert cell.mean[2] == pytest.approx(1.2, abs=0.25) and abs(cell.mean[3]) < 0.25
    view = adaptive.View(
        ["new"], ["c"], "m", {}, adaptive.Layer(1, NOW, {"m": {"new": cell}}), context=context
    )
    p = [view.adjust(["new"], np.array([0.12]), np.array([a, 0.0])).propensity[0] for a in (-1, 1)]
    assert p[1] > 2 * p[0]
