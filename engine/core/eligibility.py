"""Eligibility: which offers of the catalog may be made here and now.

Checks, in order: channel, the request's offer_ids restriction, placement, life-cycle
stage, validity dates, audience rule. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from engine.core.catalog import Catalog, Offer
from engine.core.expression import Env


@dataclass(frozen=True, slots=True)
class Situation:
    """Where and when a decision is made."""

    channel: str
    placement: str
    stage: str
    now: float  # unix seconds


def is_eligible(offer: Offer, situation: Situation, env: Env) -> bool:
    if offer.placements and situation.placement and situation.placement not in offer.placements:
        return False
    if offer.stages and situation.stage not in offer.stages:
        return False
    if offer.valid_from is not None and situation.now < offer.valid_from:
        return False
    if offer.valid_until is not None and situation.now >= offer.valid_until:
        return False
    return offer.audience is None or offer.audience.test(env)


def eligible_offers(
    catalog: Catalog,
    situation: Situation,
    env: Env,
    restrict_to: Collection[str] = (),
) -> list[Offer]:
    """Offers of the catalog that pass every rule, in catalog order."""
    channel_rule = catalog.channel_audience.get(situation.channel)
    if channel_rule is not None and not channel_rule.test(env):
        return []
    offers = catalog.by_channel.get(situation.channel, ())
    if restrict_to:
        wanted = set(restrict_to)
        offers = tuple(o for o in offers if o.offer_id in wanted)
    return [o for o in offers if is_eligible(o, situation, env)]


def fallback_offers(catalog: Catalog, situation: Situation) -> list[Offer]:
    """Offers allowed when nothing is known about the customer: channel, placement, dates.
    None on a channel with an audience rule, that needs consent or has quiet hours (none
    can be checked without the customer's state and time zone)."""
    if (
        situation.channel in catalog.channel_audience
        or situation.channel in catalog.consent_features
        or situation.channel in catalog.contact_policy.quiet_hours.channels
    ):
        return []
    return [
        o
        for o in catalog.by_channel.get(situation.channel, ())
        if o.fallback
        and not (o.placements and situation.placement and situation.placement not in o.placements)
        and (o.valid_from is None or situation.now >= o.valid_from)
        and (o.valid_until is None or situation.now < o.valid_until)
    ]


def passed_rules(catalog: Catalog, offer: Offer, situation: Situation) -> list[str]:
    """Human-readable rules this offer passed, for explanations."""
    rules = [f"offered on {situation.channel}"]
    channel_rule = catalog.channel_audience.get(situation.channel)
    if channel_rule is not None:
        rules.append(f"channel audience: {channel_rule.source}")
    if offer.stages:
        rules.append(f"targets the {situation.stage.replace('_', '-')} stage")
    if offer.audience is not None:
        rules.append(f"audience: {offer.audience.source}")
    return rules
