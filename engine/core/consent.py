"""Consent, as the latest word of the customer: a batch opt-in feature (``email_opt_in``)
unless an ``opt_in`` / ``opt_out`` event came after the profile's load, which then wins
until a newer batch value is loaded. The catalog names the feature of each channel that
needs consent (``[consent]``); a channel without consent gets no action and says why.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from engine.core.customer import Consent, CustomerRecord


def latest_event(record: CustomerRecord, channel: str) -> Consent | None:
    """The consent event for ``channel`` if it is newer than the batch load."""
    event = record.consent.get(channel)
    return event if event is not None and event.at > record.loaded_at else None


def apply(
    features: np.ndarray,
    names: Sequence[str],
    record: CustomerRecord,
    consent_features: Mapping[str, str],
) -> np.ndarray:
    """``features`` (changed in place) with each channel's opt-in feature taken from a
    consent event newer than the batch load."""
    for channel, feature in consent_features.items():
        event = latest_event(record, channel)
        if event is not None:
            features[names.index(feature)] = 1.0 if event.given else 0.0
    return features


def block(
    channel: str,
    values: Mapping[str, Any],
    record: CustomerRecord,
    consent_features: Mapping[str, str],
) -> str:
    """Why ``channel`` may not be used for this customer, or "" when it may; ``values``
    are the features by name, consent applied (the rules' environment)."""
    feature = consent_features.get(channel)
    if feature is None or values[feature] >= 0.5:
        return ""
    event = latest_event(record, channel)
    if event is not None:
        day = datetime.fromtimestamp(event.at, UTC).date().isoformat()
        return f"consent: opted out of {channel} on {day} (via {event.via.replace('_', ' ')})"
    return f"consent: no opt-in for {channel}"
