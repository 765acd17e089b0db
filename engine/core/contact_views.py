"""What the contact policy holds for one customer, as an agent or GetProfile shows it:
cool-downs, suppressions and caps in use. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.core.contact_policy import contacted_offers, count
from engine.core.contact_rules import ContactPolicy, OfferPolicy
from engine.core.customer import CustomerRecord


@dataclass(frozen=True, slots=True)
class CapUse:
    channel: str  # "" for an offer's own cap; "email, sms" for the marketing budget
    used: int
    max: int
    window: str  # "3 per 7 days"
    budget: bool = False


@dataclass(frozen=True, slots=True)
class OfferState:
    """What the policy holds about one offer for one customer (the agent's view)."""

    offer_id: str
    cooldown_until: float  # unix seconds; 0: none
    suppressed_since: float  # unix seconds; 0: not suppressed
    caps: tuple[CapUse, ...]


def offer_states(
    offers: Mapping[str, OfferPolicy], record: CustomerRecord, now: float
) -> tuple[OfferState, ...]:
    """Every offer with a live cool-down, a suppression, or a cap in use, in ``offers``
    order."""
    contacted = contacted_offers(record)
    states = []
    for offer_id, policy in offers.items():
        until = record.cooldowns.get(offer_id, 0.0)
        held = record.held.get(offer_id, 0.0)
        caps = tuple(
            CapUse(
                "",
                count(record.contacts, record.pending, now - c.window_seconds, offer_id=offer_id),
                c.max,
                c.describe(),
            )
            for c in policy.caps
            if offer_id in contacted
        )
        if until > now or held or any(c.used for c in caps):
            states.append(OfferState(offer_id, until if until > now else 0.0, held, caps))
    return tuple(states)


def channel_uses(policy: ContactPolicy, record: CustomerRecord, now: float) -> tuple[CapUse, ...]:
    """The channel caps and the marketing budget in use."""
    contacts, pending = record.contacts, record.pending
    uses = [
        CapUse(
            channel,
            count(contacts, pending, now - c.window_seconds, channels=(channel,)),
            c.max,
            c.describe(),
        )
        for channel, caps in policy.channel_caps.items()
        for c in caps
    ]
    budget = policy.budget
    uses += [
        CapUse(
            ", ".join(sorted(budget.channels)),
            count(contacts, pending, now - c.window_seconds, channels=budget.channels),
            c.max,
            c.describe(),
            budget=True,
        )
        for c in budget.caps
    ]
    return tuple(u for u in uses if u.used)
