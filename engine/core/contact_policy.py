"""The contact policy at decision time: which offers its rules (contact_rules.py) let
through for one customer now, and why the others were kept out.

Inbound contacts count when their impression is reported (``ReportOutcome``); the
decision reserves them meanwhile (pending, contact_reservation.py), so caps hold between
decision and impression. A pending offer belongs to the customer, not to the decision: a
later inbound decision, on any channel, shows it again first (``showing``) and takes no
new place for it, so a refreshed page keeps its offers and other channels are not starved
by unreported ones. Outbound decisions (email, SMS) are sends and count at once.
``allowed`` filters candidates from the state read with the profile; the store re-checks
the same caps atomically when it records the contacts. Volume limits over the whole
customer base are checked against ``volume``, the counters' use as a replica last read
it (``VolumeWatch``); the store takes them atomically with the reservation. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence, Set

from engine.core.catalog import Offer
from engine.core.contact_rules import DAY, ContactPolicy, OfferPolicy, Volume
from engine.core.customer import Contact, CustomerRecord


def count(
    contacts: Iterable[Contact],
    pending: Iterable[Contact],
    since: float,
    offer_id: str | None = None,
    channels: Container[str] = (),
) -> int:
    """Contacts of ``offer_id``, or else distinct decisions on any of ``channels``, made
    since ``since`` or pending."""
    if offer_id is not None:
        made = sum(1 for c in contacts if c.offer_id == offer_id and c.at > since)
        return made + sum(1 for c in pending if c.offer_id == offer_id)
    decisions = {c.decision_id for c in contacts if c.channel in channels and c.at > since}
    decisions |= {c.decision_id for c in pending if c.channel in channels}
    return len(decisions)


def contacted_offers(record: CustomerRecord) -> frozenset[str]:
    """Offers with a contact or reservation: only these can have reached a cap."""
    return frozenset(c.offer_id for c in (*record.contacts, *record.pending))


def showing(policy: ContactPolicy, channel: str, record: CustomerRecord) -> dict[str, float]:
    """Offers pending from an earlier decision that a decision on ``channel`` shows again
    without taking a new place (inbound channels only: a send is a contact of its own),
    offer id -> when the hold lapses."""
    if channel in policy.outbound:
        return {}
    return {c.offer_id: c.at for c in record.pending}


def channel_block(
    policy: ContactPolicy,
    channel: str,
    record: CustomerRecord,
    now: float,
    volume: Mapping[str, float] | None = None,
) -> str:
    """Why no new contact may be made on ``channel`` now, or "" when one may: the
    channel's caps, the marketing budget, the channel's volume limits over the whole base
    (``volume``: counter -> use) (quiet hours: ``QuietHours.block``)."""
    if volume is not None:
        for cap in policy.channel_volume.get(channel, ()):
            used = volume.get(Volume.counter(Volume.channel(channel), cap, now), 0)
            if used >= cap.max:
                return Volume.describe(used, cap)
    for cap in policy.channel_caps.get(channel, ()):
        since = now - cap.window_seconds
        used = count(record.contacts, record.pending, since, channels=(channel,))
        if used >= cap.max:
            return f"{channel} cap reached: {used} of {cap.describe()}"
    budget = policy.budget
    if channel in budget.channels:
        for cap in budget.caps:
            since = now - cap.window_seconds
            used = count(record.contacts, record.pending, since, channels=budget.channels)
            if used >= cap.max:
                return budget.describe(used, cap)
    return ""


def offer_block(
    offer_id: str,
    policy: OfferPolicy,
    record: CustomerRecord,
    now: float,
    contacted: frozenset[str] | None = None,
    again: bool = False,
) -> str:
    """Why ``offer_id`` may not be offered now, or "" when it may. ``contacted`` (from
    ``contacted_offers``) lets a caller checking many offers skip the uncontacted ones;
    ``again``: the offer is pending (``showing``), so it already has its place."""
    if policy.suppress_after_accept and offer_id in record.held:
        return "already accepted"
    until = record.cooldowns.get(offer_id, 0.0)
    if until > now:
        return f"declined: cool-down for {(until - now) / DAY:.0f} more days"
    if contacted is not None and offer_id not in contacted:
        return ""
    for cap in policy.caps:
        used = count(record.contacts, record.pending, now - cap.window_seconds, offer_id=offer_id)
        if used - again >= cap.max:
            return f"cap reached: {used} of {cap.describe()}"
    return ""


def offer_usage(offer_id: str, policy: OfferPolicy, record: CustomerRecord, now: float) -> str:
    """The caps that let an offer through, for explanations: "1 of 3 per 7 days"."""
    return ", ".join(
        f"{count(record.contacts, record.pending, now - c.window_seconds, offer_id=offer_id)}"
        f" of {c.describe()}"
        for c in policy.caps
    )


def allowed(
    policy: ContactPolicy,
    channel: str,
    offers: Sequence[Offer],
    record: CustomerRecord,
    now: float,
    held: Mapping[str, float],
    volume: Mapping[str, float] | None = None,
) -> tuple[list[Offer], dict[str, str]]:
    """The offers the policy lets through, and why the others were kept out (offer id,
    or "*" for the whole channel, -> reason). A channel at its cap still shows again the
    offers ``held`` (``showing``); in quiet hours it shows nothing. ``volume``: the
    volume counters' use (counter -> contacts), when the catalog has volume limits."""
    quiet = policy.quiet_hours.block(channel, record.attributes, now)
    if quiet:  # nothing at all, not even an offer still showing; and what else holds,
        # so that a call at night shows the cool-down a call by day would
        return [], {"*": quiet, **_screen(offers, record, now, {}, "", volume)[1]}
    blocked = channel_block(policy, channel, record, now, volume)
    if blocked and not any(o.offer_id in held for o in offers):
        return [], {"*": blocked}
    return _screen(offers, record, now, held, blocked, volume)


def volume_block(offer: Offer, volume: Mapping[str, float], now: float) -> str:
    """Why ``offer`` may not be made to anyone more in this period, or ""."""
    for cap in offer.policy.volume:
        used = volume.get(Volume.counter(Volume.offer(offer.offer_id), cap, now), 0)
        if used >= cap.max:
            return Volume.describe(used, cap)
    return ""


def _screen(
    offers: Sequence[Offer],
    record: CustomerRecord,
    now: float,
    held: Mapping[str, float],
    blocked: str,
    volume: Mapping[str, float] | None = None,
) -> tuple[list[Offer], dict[str, str]]:
    """Each offer kept, or kept out with why: ``blocked`` (the channel's cap) unless it
    is held, else its own state (a cool-down, its cap, an acceptance)."""
    kept, excluded = [], {}
    # Only offers with some state (contacts, a cool-down, an acceptance) can be blocked:
    # the others, usually nearly all of them, pass without a look (100 candidates: ~10 us).
    contacted = contacted_offers(record)
    stateful: Set[str] = contacted
    if record.cooldowns or record.held:
        stateful = contacted | record.cooldowns.keys() | record.held.keys()
    for offer in offers:
        offer_id = offer.offer_id
        again = offer_id in held
        why = blocked if blocked and not again else ""
        if not why and offer_id in stateful:
            why = offer_block(offer_id, offer.policy, record, now, contacted, again)
        if not why and volume is not None and offer.policy.volume and not again:
            why = volume_block(offer, volume, now)
        if why:
            excluded[offer_id] = why
        else:
            kept.append(offer)
    return kept, excluded
