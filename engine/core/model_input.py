"""The model's input: customer features x offer features x context features.

Serving and training both build rows with ``build_matrix``, so a model sees exactly the
values it was trained on. Columns: the schema's customer features in schema order, then
``OFFER_FEATURES``. Categorical columns hold vocabulary indices (NaN when unknown).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from common.vocabulary import CHANNEL_CODE, STAGE_CODE
from engine.core.catalog import Catalog, Offer
from feature_store.schema import FeatureSchema

OFFER_FEATURES = (
    "offer_id",
    "offer_category",
    "offer_value",
    "channel",
    "stage",
    "category_match",  # the category viewed last is one of the offer's topics
    "topic_views_24h",  # events on the offer's topics in the last 24 h
)
CATEGORICAL = ("offer_id", "offer_category", "channel", "stage")
# Sentences for explanations ($offer, $category, $channel, $stage, $topic, $value).
OFFER_EXPLAIN = {
    "offer_id": "customers like this one often take $offer",
    "offer_category": "$category offers do well with this customer",
    "offer_value": "$offer is worth $value",
    "channel": "$channel suits this offer",
    "stage": "fits the $stage stage",
    "category_match": "last looked at $topic",
    "topic_views_24h": "viewed $topic pages $value times today",
}


def model_feature_names(schema: FeatureSchema) -> tuple[str, ...]:
    return schema.names + OFFER_FEATURES


@dataclass(frozen=True)
class Vocabulary:
    """Indices of categorical values, fixed at training time and shipped in the artifact."""

    offer_ids: Mapping[str, int]
    categories: Mapping[str, int]

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> Vocabulary:
        return cls(
            offer_ids={oid: i for i, oid in enumerate(sorted(catalog.by_id))},
            categories={c: i for i, c in enumerate(sorted({o.category for o in catalog.offers}))},
        )


def build_matrix(
    customer: np.ndarray,
    offers: Sequence[Offer],
    channel: str,
    stage: str,
    last_category: str,
    vocabulary: Vocabulary,
    topic_counts: Mapping[str, float],
) -> np.ndarray:
    """One row per offer (float64, C order), columns as ``model_feature_names``.

    ``topic_counts``: category -> events in the last 24 h (``k:<category>`` counters)."""
    m = customer.shape[0]
    matrix = np.empty((len(offers), m + len(OFFER_FEATURES)), dtype=np.float64)
    matrix[:, :m] = customer
    nan = math.nan
    matrix[:, m] = [vocabulary.offer_ids.get(o.offer_id, nan) for o in offers]
    matrix[:, m + 1] = [vocabulary.categories.get(o.category, nan) for o in offers]
    matrix[:, m + 2] = [o.value for o in offers]
    matrix[:, m + 3] = CHANNEL_CODE[channel]
    matrix[:, m + 4] = STAGE_CODE[stage]
    matrix[:, m + 5] = [float(last_category in o.topics) for o in offers]
    matrix[:, m + 6] = (
        [sum(topic_counts.get(t, 0.0) for t in o.topics) for o in offers] if topic_counts else 0.0
    )
    return matrix


def topic_counts(windows: Mapping[str, tuple[float, ...]]) -> dict[str, float]:
    """Category -> 24 h count, from a record's windowed counters."""
    return {name[2:]: counts[1] for name, counts in windows.items() if name.startswith("k:")}
