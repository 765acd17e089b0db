"""Contact policy: frequency caps, cool-downs and suppression.

Declared in the catalog (``[contact_policy]`` and per offer ``[offer.policy]``):

- caps per offer over rolling windows ("at most 3 impressions in 7 days"), counted across
  channels, and per channel ("at most 1 SMS a day"), counted in decisions;
- a cool-down after DECLINE or DISMISS: the offer is not made again, on any channel,
  until it ends;
- suppression after ACCEPT or CONVERT: the customer now holds it, so it is not offered
  again.

Inbound contacts count when their impression is reported (``ReportOutcome``); the
decision reserves them meanwhile, so caps hold between decision and impression.
Outbound decisions (email, SMS) are sends and count at once. The check here filters
candidates from the state read with the profile; the reservation in Redis re-checks it
atomically (feature_store/scripts.py RESERVE), so two replicas cannot both exceed a cap.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from feature_store.store import Contact, CustomerRecord

DAY = 86400


@dataclass(frozen=True, slots=True)
class Cap:
    window_seconds: int
    max: int

    def describe(self) -> str:
        days = self.window_seconds / DAY
        span = (
            f"{days:g} day{'s' if days != 1 else ''}"
            if days >= 1
            else (f"{self.window_seconds / 3600:g} h")
        )
        return f"{self.max} per {span}"


@dataclass(frozen=True, slots=True)
class OfferPolicy:
    caps: tuple[Cap, ...] = ()
    cooldown_seconds: float = 30 * DAY
    suppress_after_accept: bool = True


@dataclass(frozen=True)
class ContactPolicy:
    channel_caps: Mapping[str, tuple[Cap, ...]] = field(default_factory=dict)
    outbound: frozenset[str] = frozenset({"email", "sms"})
    pending_seconds: float = 300.0  # how long an inbound decision holds its impression

    def horizon_seconds(self, offer_policies: Iterable[OfferPolicy]) -> int:
        """The longest window any cap looks back over (at least a day)."""
        windows = [c.window_seconds for caps in self.channel_caps.values() for c in caps]
        windows += [c.window_seconds for p in offer_policies for c in p.caps]
        return max([DAY, *windows])


def _count(
    contacts: Iterable[Contact],
    pending: Iterable[Contact],
    since: float,
    offer_id: str | None = None,
    channel: str | None = None,
) -> int:
    if offer_id is not None:
        made = sum(1 for c in contacts if c.offer_id == offer_id and c.at > since)
        return made + sum(1 for c in pending if c.offer_id == offer_id)
    decisions = {c.decision_id for c in contacts if c.channel == channel and c.at > since}
    decisions |= {c.decision_id for c in pending if c.channel == channel}
    return len(decisions)


def contacted_offers(record: CustomerRecord) -> frozenset[str]:
    """Offers with a contact or reservation: only these can have reached a cap."""
    return frozenset(c.offer_id for c in (*record.contacts, *record.pending))


def channel_block(policy: ContactPolicy, channel: str, record: CustomerRecord, now: float) -> str:
    """Why nothing may be offered on ``channel`` now, or "" when something may."""
    for cap in policy.channel_caps.get(channel, ()):
        used = _count(record.contacts, record.pending, now - cap.window_seconds, channel=channel)
        if used >= cap.max:
            return f"{channel} cap reached: {used} of {cap.describe()}"
    return ""


def offer_block(
    offer_id: str,
    policy: OfferPolicy,
    record: CustomerRecord,
    now: float,
    contacted: frozenset[str] | None = None,
) -> str:
    """Why ``offer_id`` may not be offered now, or "" when it may. ``contacted`` (from
    ``contacted_offers``) lets a caller checking many offers skip the uncontacted ones."""
    if policy.suppress_after_accept and f"held:{offer_id}" in record.policy:
        return "already accepted"
    until = record.policy.get(f"cool:{offer_id}", 0.0)
    if until > now:
        return f"declined: cool-down for {(until - now) / DAY:.0f} more days"
    if contacted is not None and offer_id not in contacted:
        return ""
    for cap in policy.caps:
        used = _count(record.contacts, record.pending, now - cap.window_seconds, offer_id=offer_id)
        if used >= cap.max:
            return f"cap reached: {used} of {cap.describe()}"
    return ""


def offer_usage(offer_id: str, policy: OfferPolicy, record: CustomerRecord, now: float) -> str:
    """The caps that let an offer through, for explanations: "1 of 3 per 7 days"."""
    return ", ".join(
        f"{_count(record.contacts, record.pending, now - c.window_seconds, offer_id=offer_id)}"
        f" of {c.describe()}"
        for c in policy.caps
    )
