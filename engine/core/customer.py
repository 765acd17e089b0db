"""What the core knows of a customer when it decides, as typed data, and the names of
the counters it reads.

The stores (feature_store/redis_store.py, feature_store/memory_store.py) produce a
``CustomerRecord`` from what they hold, decoded once at the store's boundary; the core
reads its fields and never a storage name. The counter names below are the language of
the feature schema's real-time fields (engine/defaults/features.toml: ``n:page_view``,
``k:fibre`` over ``24h``), so the core owns them and the stores write them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# Counter and stamp names, as a real-time feature's ``field`` names them:
LIFETIME_COUNT = "n:"  # n:<event_type>, events ever
EVENT_COUNT = "e:"  # windows, session: e:<event_type> and e:<event_type>:<category>
CHANNEL_COUNT = "c:"  # lifetime, windows: c:<channel>
CATEGORY_COUNT = "k:"  # windows, session: k:<category>
OUTCOME_COUNT = "o:"  # lifetime, windows: o:<outcome>
STAMP = "ts:"  # lifetime: ts:last_seen, ts:<event_type>, unix seconds
LAST_SEEN = f"{STAMP}last_seen"
# What an event type or category outside the schema's vocabulary is counted as.
OTHER = "other"
# The sliding windows, in the order of CustomerRecord.windows counts.
WINDOW_SCOPES = ("1h", "24h", "7d")

# The events that give or withdraw consent; their attribute "channel" names what they
# cover ("all": every channel of CONSENT_CHANNELS).
CONSENT_EVENTS = ("opt_in", "opt_out")
CONSENT_CHANNELS = ("email", "sms")


def category_counter(category: str) -> str:
    return f"{CATEGORY_COUNT}{category}"


@dataclass(frozen=True, slots=True)
class Consent:
    """The latest consent event for a channel: given or withdrawn, when, through which
    channel."""

    given: bool
    at: float  # unix seconds
    via: str


@dataclass(frozen=True, slots=True)
class Contact:
    """An offer made (or reserved) in a decision on a channel."""

    decision_id: str
    offer_id: str
    channel: str
    at: float  # unix seconds: when made; for a reservation, when it lapses


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    """Everything one decision reads about a customer, fetched in one round trip."""

    customer_id: str
    known: bool  # False: no stored profile (a new visitor); batch holds the defaults
    batch: np.ndarray  # float32, schema batch order
    attributes: Mapping[str, str]
    # lifetime counters and stamps by name (n:<event>, c:<channel>, o:<outcome>, ts:...)
    realtime: Mapping[str, str]
    # counter name (e:<event>, c:<channel>, k:<category>, o:<outcome>) -> counts over the
    # windows of WINDOW_SCOPES
    windows: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    session: Mapping[str, str] = field(default_factory=dict)  # e:<event>, k:<category>
    contacts: tuple[Contact, ...] = ()  # made, within the contact-policy horizon
    pending: tuple[Contact, ...] = ()  # reserved inbound impressions not yet reported
    cooldowns: Mapping[str, float] = field(default_factory=dict)  # offer -> end, unix s
    held: Mapping[str, float] = field(default_factory=dict)  # offer -> accepted at, unix s
    consent: Mapping[str, Consent] = field(default_factory=dict)  # channel -> latest event
    last_category: str = ""  # of the latest event that had one
    loaded_at: float = 0.0  # unix seconds of the profile's batch load (0: none)


@dataclass(frozen=True, slots=True)
class OutcomeEffects:
    """What an outcome changes in the customer's contact policy state."""

    cooldown_until: float = 0.0  # unix seconds; 0: no cool-down
    suppress: bool = False  # never offer this offer again (accepted, converted)
    impression: bool = False  # counts as a contact for frequency caps


@dataclass(frozen=True, slots=True)
class Reservation:
    """Contacts a decision is about to make, with the caps that bound them.

    Caps are (window seconds, max) pairs; each offer is (offer id, caps, suppressed once
    accepted). Outbound contacts count at once; inbound ones are held as pending until
    ``pending_until`` unless their impression is reported. ``budget`` caps count the
    decisions on any of ``budget_channels`` (the decision's channel among them)."""

    customer_id: str
    decision_id: str
    channel: str
    outbound: bool
    pending_until: float
    channel_caps: tuple[tuple[int, int], ...]
    offers: tuple[tuple[str, tuple[tuple[int, int], ...], bool], ...]
    budget: tuple[tuple[int, int], ...] = ()
    budget_channels: tuple[str, ...] = ()
    # Volume limits over the whole customer base (contact_rules.Volume), as counters
    # (name, max, seconds the store keeps it): the channel's, taken once by a decision
    # that contacts, and each limited offer's.
    channel_volume: tuple[tuple[str, int, int], ...] = ()
    offer_volume: tuple[tuple[str, tuple[tuple[str, int, int], ...]], ...] = ()
