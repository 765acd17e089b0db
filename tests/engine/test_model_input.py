"""The model's input: an offer's index never moves, and a model that never saw an offer
scores it as unknown."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from engine.adapters import artifact
from engine.adapters.lightgbm_scorer import LightGBMScorer
from engine.core.catalog import parse_catalog
from engine.core.model_input import ServedInputs, Vocabulary, build_matrix, model_feature_names
from engine.settings import DEFAULTS, Definitions
from training.settings import TrainerSettings
from training.synthetic_logs import simulate_logs
from training.train import train
from training.world import World

# Sorts before every demo offer: with sorted indices it would move all of them.
NEW_OFFER = """
[[offer]]
id = "aaa_new_offer"
category = "zz_new_category"
value = 25
"""


def test_the_vocabulary_only_grows() -> None:
    previous = Vocabulary(offer_ids={"b": 0, "d": 1, "gone": 2}, categories={"x": 0})
    catalog = parse_catalog(
        '[[offer]]\nid = "d"\ncategory = "x"\nvalue = 1\n'
        '[[offer]]\nid = "a"\ncategory = "w"\nvalue = 1\n'
        '[[offer]]\nid = "c"\ncategory = "x"\nvalue = 1\n'
        '[[offer]]\nid = "b"\ncategory = "x"\nvalue = 1\n',
        frozenset(),
    )

    grown = Vocabulary.from_catalog(catalog, previous)

    assert grown.offer_ids == {"b": 0, "d": 1, "gone": 2, "a": 3, "c": 4}
    assert grown.categories == {"x": 0, "w": 1}
    assert Vocabulary.from_catalog(catalog).offer_ids == {"a": 0, "b": 1, "c": 2, "d": 3}


def test_a_model_trained_before_an_offer_existed_scores_it_as_unknown(
    model_dir: Path, definitions: Definitions, world: World
) -> None:
    old = artifact.load(model_dir)
    text = (DEFAULTS / "catalog.toml").read_text() + NEW_OFFER
    catalog = parse_catalog(text, frozenset(definitions.schema.names))
    new = catalog.by_id["aaa_new_offer"]
    served = ServedInputs(np.zeros(len(definitions.schema.names)), "web", "consideration")
    offer_column = model_feature_names(definitions.schema).index("offer_id")

    rows = build_matrix(served, [new, *catalog.offers[:3]], old.vocabulary)
    scores = LightGBMScorer(old).predict(rows)

    assert math.isnan(rows[0, offer_column]) and math.isnan(rows[0, offer_column + 1])
    assert not np.isnan(rows[1:, offer_column]).any()
    assert np.isfinite(scores).all() and ((scores > 0) & (scores < 1)).all()

    # The next model keeps every index the old one used, and learns the new offer at the
    # next free one.
    logs = simulate_logs(
        world, definitions.schema, catalog, definitions.stage_rules, rows=2000, seed=5
    )
    successor = train(
        logs, definitions.schema, catalog, TrainerSettings(num_trees=5), previous=old.vocabulary
    )
    for offer_id, index in old.vocabulary.offer_ids.items():
        assert successor.vocabulary.offer_ids[offer_id] == index
    assert successor.vocabulary.offer_ids["aaa_new_offer"] == len(old.vocabulary.offer_ids)
