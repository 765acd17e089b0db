"""The model's input: customer features x offer features x context features.

Serving and training both build rows with ``build_matrix`` from one ``ServedInputs``, so
a model sees exactly the values it was trained on: the decision log keeps the served
inputs (``to_log``) and training and off-policy evaluation read them back
(``from_log``). Columns: the schema's customer features in schema order, then
``OFFER_FEATURES``. Categorical columns hold vocabulary indices (NaN when unknown).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.vocabulary import CHANNEL_CODE, STAGE_CODE
from engine.core.catalog import Catalog, Offer
from engine.core.customer import CATEGORY_COUNT, WINDOW_SCOPES, CustomerRecord
from engine.core.schema import FeatureSchema

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
_DAY_WINDOW = WINDOW_SCOPES.index("24h")


def model_feature_names(schema: FeatureSchema) -> tuple[str, ...]:
    return schema.names + OFFER_FEATURES


@functools.lru_cache(maxsize=8)
def feature_names_id(names: tuple[str, ...]) -> str:
    """A short fingerprint of the customer features' names and order (once per schema:
    the log writer and the training reader ask for it per entry)."""
    return hashlib.sha256("\x1f".join(names).encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class ServedInputs:
    """One decision's model inputs besides the offers, as served: the one shape serving,
    the decision log, training and off-policy evaluation share."""

    features: np.ndarray  # customer features, float64, schema order
    channel: str
    stage: str
    last_category: str = ""  # the category of the customer's latest event that had one
    topic_counts: Mapping[str, float] = field(default_factory=dict)  # category -> 24 h events

    @classmethod
    def from_record(
        cls, record: CustomerRecord, features: np.ndarray, channel: str, stage: str
    ) -> ServedInputs:
        counts = {
            name.removeprefix(CATEGORY_COUNT): values[_DAY_WINDOW]
            for name, values in record.windows.items()
            if name.startswith(CATEGORY_COUNT)
        }
        return cls(features, channel, stage, record.last_category, counts)

    def to_log(self, names: Sequence[str]) -> dict[str, Any]:
        """The fields of a decision-log entry that hold these inputs (JSON-able). Compact:
        the features as a list in ``names`` order, with a fingerprint of the names
        (``feature_names_id``) instead of the names themselves."""
        return {
            "channel": self.channel,
            "stage": self.stage,
            "feature_names": feature_names_id(tuple(names)),
            "features": self.features.tolist(),
            "served": {
                "last_category": self.last_category,
                "topic_counts": dict(self.topic_counts),
            },
        }

    @classmethod
    def from_log(cls, entry: Mapping[str, Any], names: Sequence[str]) -> ServedInputs | None:
        """The inputs a logged decision was served with; None when it was logged with other
        features than ``names`` (another schema). Reads entries written before the list
        form too (a dict of features by name)."""
        logged = entry["features"]
        if isinstance(logged, Mapping):
            try:
                features = np.array([float(logged[n]) for n in names])
            except KeyError:
                return None
        elif entry.get("feature_names") == feature_names_id(tuple(names)):  # same names, order
            features = np.array(logged, dtype=np.float64)
        else:
            return None
        served = entry.get("served", {})
        return cls(
            features,
            entry["channel"],
            entry["stage"],
            served.get("last_category", ""),
            served.get("topic_counts", {}),
        )


@dataclass(frozen=True)
class Vocabulary:
    """Indices of categorical values, fixed at training time and shipped in the artifact.

    Append-only across a model's successors: an offer or category keeps its index for
    good, a new one takes the next free index, and one that left the catalog keeps its
    place (it may come back). A model that never saw an offer scores it as unknown (NaN).
    """

    offer_ids: Mapping[str, int]
    categories: Mapping[str, int]

    @classmethod
    def from_catalog(cls, catalog: Catalog, previous: Vocabulary | None = None) -> Vocabulary:
        """``previous``'s indices, then the catalog's values it lacks, sorted, after them."""
        return cls(
            offer_ids=_appended(previous.offer_ids if previous else {}, catalog.by_id),
            categories=_appended(
                previous.categories if previous else {}, {o.category for o in catalog.offers}
            ),
        )


def _appended(known: Mapping[str, int], values: Iterable[str]) -> dict[str, int]:
    out = dict(known)
    start = max(out.values(), default=-1) + 1
    for i, value in enumerate(sorted(v for v in set(values) if v not in out)):
        out[value] = start + i
    return out


def build_matrix(
    served: ServedInputs, offers: Sequence[Offer], vocabulary: Vocabulary
) -> np.ndarray:
    """One row per offer (float64, C order), columns as ``model_feature_names``."""
    customer = served.features
    m = customer.shape[0]
    matrix = np.empty((len(offers), m + len(OFFER_FEATURES)), dtype=np.float64)
    matrix[:, :m] = customer
    nan = math.nan
    matrix[:, m] = [vocabulary.offer_ids.get(o.offer_id, nan) for o in offers]
    matrix[:, m + 1] = [vocabulary.categories.get(o.category, nan) for o in offers]
    matrix[:, m + 2] = [o.value for o in offers]
    matrix[:, m + 3] = CHANNEL_CODE[served.channel]
    matrix[:, m + 4] = STAGE_CODE[served.stage]
    matrix[:, m + 5] = [float(served.last_category in o.topics) for o in offers]
    counts = served.topic_counts
    matrix[:, m + 6] = (
        [sum(counts.get(t, 0.0) for t in o.topics) for o in offers] if counts else 0.0
    )
    return matrix
