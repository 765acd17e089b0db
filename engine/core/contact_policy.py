"""Contact policy: frequency caps, cool-downs and suppression, in one place: the rules,
the check at decision time, the reservation that records a decision's contacts, and what
an outcome changes.

Declared in the catalog (``[contact_policy]`` and per offer ``[offer.policy]``):

- caps per offer over rolling windows ("at most 3 impressions in 7 days"), counted across
  channels, and per channel ("at most 1 SMS a day"), counted in decisions;
- a marketing budget per customer across channels ("at most 4 contacts a week, email and
  SMS together"), counted in decisions like a channel cap over all its channels;
- quiet hours for outbound channels in the customer's time zone (an attribute, the
  catalog's default otherwise): no send between, say, 21:00 and 08:00 there;
- a cool-down after DECLINE or DISMISS: the offer is not made again, on any channel,
  until it ends;
- suppression after ACCEPT or CONVERT: the customer now holds it, so it is not offered
  again.

Inbound contacts count when their impression is reported (``ReportOutcome``); the
decision reserves them meanwhile (pending), so caps hold between decision and impression.
A pending offer belongs to the customer, not to the decision: a later inbound decision,
on any channel, shows it again first (``showing``) and takes no new place for it, so a
refreshed page keeps its offers and other channels are not starved by unreported ones.
Outbound decisions (email, SMS) are sends and count at once. ``allowed`` filters
candidates from the state read with the profile; ``reservation`` describes the contacts a
decision makes, which the store re-checks and records atomically (in Redis:
feature_store/scripts.py RESERVE), so two replicas cannot both exceed a cap;
``apply_reservation`` keeps what the store reserved; ``outcome_effects`` says what a
reported outcome changes. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.vocabulary import POSITIVE_OUTCOMES
from feature_store import keys
from feature_store.store import Contact, CustomerRecord, OutcomeEffects, Reservation

if TYPE_CHECKING:  # decision.py imports this module
    from engine.core.catalog import Offer
    from engine.core.decision import Decision

DAY = 86400
COOLDOWN_OUTCOMES = frozenset({"decline", "dismiss"})
SUPPRESS_OUTCOMES = POSITIVE_OUTCOMES


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


@dataclass(frozen=True, slots=True)
class Budget:
    """Marketing contacts a customer gets on ``channels`` together, counted in decisions
    that contacted them (one email with three offers is one contact)."""

    caps: tuple[Cap, ...] = ()
    channels: frozenset[str] = frozenset()

    def describe(self, used: int, cap: Cap) -> str:
        channels = ", ".join(sorted(self.channels))
        return f"marketing budget reached: {used} of {cap.describe()} ({channels})"


@dataclass(frozen=True, slots=True)
class QuietHours:
    """No contact on ``channels`` from ``start`` to ``end`` (minutes after midnight; the
    span may cross midnight) in the customer's time zone: the attribute
    ``timezone_attribute`` when it names a known zone, else ``default_timezone``."""

    start: int = 0
    end: int = 0
    channels: frozenset[str] = frozenset()
    timezone_attribute: str = "timezone"
    default_timezone: str = "UTC"

    def block(self, channel: str, attributes: Mapping[str, str], now: float) -> str:
        if channel not in self.channels or self.start == self.end:
            return ""
        zone = _zone(attributes.get(self.timezone_attribute, "")) or _zone(self.default_timezone)
        local = datetime.fromtimestamp(now, zone)
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            quiet = self.start <= minute < self.end
        else:
            quiet = minute >= self.start or minute < self.end
        if not quiet:
            return ""
        return (
            f"quiet hours: no {channel} from {_clock(self.start)} to {_clock(self.end)}"
            f" in {zone}; it is {local:%H:%M} there"
        )


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@lru_cache(maxsize=1024)  # attributes come from data: bounded
def _zone(name: str) -> ZoneInfo | None:
    """The time zone ``name``, or None when it is empty or unknown."""
    try:
        return ZoneInfo(name) if name else None
    except (ValueError, ZoneInfoNotFoundError):
        return None


def parse_clock(text: str) -> int | None:
    """``"21:30"`` -> minutes after midnight; None when ``text`` is not HH:MM."""
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        return None
    if int(hours) > 23 or int(minutes) > 59:
        return None
    return int(hours) * 60 + int(minutes)


def known_zone(name: str) -> bool:
    return _zone(name) is not None


@dataclass(frozen=True)
class ContactPolicy:
    channel_caps: Mapping[str, tuple[Cap, ...]] = field(default_factory=dict)
    outbound: frozenset[str] = frozenset({"email", "sms"})
    pending_seconds: float = 300.0  # how long an inbound decision holds its impression
    budget: Budget = Budget()
    quiet_hours: QuietHours = QuietHours()

    def horizon_seconds(self, offer_policies: Iterable[OfferPolicy]) -> int:
        """The longest window any cap looks back over (at least a day)."""
        windows = [c.window_seconds for caps in self.channel_caps.values() for c in caps]
        windows += [c.window_seconds for p in offer_policies for c in p.caps]
        windows += [c.window_seconds for c in self.budget.caps]
        return max([DAY, *windows])


def _count(
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


def channel_block(policy: ContactPolicy, channel: str, record: CustomerRecord, now: float) -> str:
    """Why no new contact may be made on ``channel`` now, or "" when one may: the
    channel's caps, the marketing budget (quiet hours: ``QuietHours.block``)."""
    for cap in policy.channel_caps.get(channel, ()):
        since = now - cap.window_seconds
        used = _count(record.contacts, record.pending, since, channels=(channel,))
        if used >= cap.max:
            return f"{channel} cap reached: {used} of {cap.describe()}"
    budget = policy.budget
    if channel in budget.channels:
        for cap in budget.caps:
            since = now - cap.window_seconds
            used = _count(record.contacts, record.pending, since, channels=budget.channels)
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
    if policy.suppress_after_accept and keys.held_field(offer_id) in record.policy:
        return "already accepted"
    until = record.policy.get(keys.cooldown_field(offer_id), 0.0)
    if until > now:
        return f"declined: cool-down for {(until - now) / DAY:.0f} more days"
    if contacted is not None and offer_id not in contacted:
        return ""
    for cap in policy.caps:
        used = _count(record.contacts, record.pending, now - cap.window_seconds, offer_id=offer_id)
        if used - again >= cap.max:
            return f"cap reached: {used} of {cap.describe()}"
    return ""


def offer_usage(offer_id: str, policy: OfferPolicy, record: CustomerRecord, now: float) -> str:
    """The caps that let an offer through, for explanations: "1 of 3 per 7 days"."""
    return ", ".join(
        f"{_count(record.contacts, record.pending, now - c.window_seconds, offer_id=offer_id)}"
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
) -> tuple[list[Offer], dict[str, str]]:
    """The offers the policy lets through, and why the others were kept out (offer id,
    or "*" for the whole channel, -> reason). A channel at its cap still shows again the
    offers ``held`` (``showing``); in quiet hours it shows nothing."""
    quiet = policy.quiet_hours.block(channel, record.attributes, now)
    if quiet:  # nothing at all, not even an offer still showing; and what else holds,
        # so that a call at night shows the cool-down a call by day would
        return [], {"*": quiet, **_screen(offers, record, now, {}, "")[1]}
    blocked = channel_block(policy, channel, record, now)
    if blocked and not any(o.offer_id in held for o in offers):
        return [], {"*": blocked}
    return _screen(offers, record, now, held, blocked)


def _screen(
    offers: Sequence[Offer],
    record: CustomerRecord,
    now: float,
    held: Mapping[str, float],
    blocked: str,
) -> tuple[list[Offer], dict[str, str]]:
    """Each offer kept, or kept out with why: ``blocked`` (the channel's cap) unless it
    is held, else its own state (a cool-down, its cap, an acceptance)."""
    kept, excluded = [], {}
    # Only offers with some state (contacts, a cool-down, an acceptance) can be blocked:
    # the others, usually nearly all of them, pass without a look (100 candidates: ~10 us).
    contacted = contacted_offers(record)
    stateful = contacted | _offers_in(record.policy)
    for offer in offers:
        offer_id = offer.offer_id
        again = offer_id in held
        why = blocked if blocked and not again else ""
        if not why and offer_id in stateful:
            why = offer_block(offer_id, offer.policy, record, now, contacted, again)
        if why:
            excluded[offer_id] = why
        else:
            kept.append(offer)
    return kept, excluded


def _offers_in(state: Mapping[str, float]) -> frozenset[str]:
    """The offers the policy hash holds a cool-down or an acceptance of."""
    return frozenset(
        name[len(prefix) :]
        for name in state
        for prefix in (keys.COOLDOWN, keys.HELD)
        if name.startswith(prefix)
    )


def reservation(
    policy: ContactPolicy, offers: Mapping[str, Offer], decision: Decision, channel: str, now: float
) -> Reservation | None:
    """The contacts a decision makes, with their caps; None when nothing is capped."""
    if not decision.actions:
        return None
    channel_caps = tuple((c.window_seconds, c.max) for c in policy.channel_caps.get(channel, ()))
    budgeted = channel in policy.budget.channels
    budget = tuple((c.window_seconds, c.max) for c in policy.budget.caps) if budgeted else ()
    offer_policies = [offers[a.offer_id].policy for a in decision.actions]
    capped = channel_caps or budget
    if not capped and not any(p.caps or p.suppress_after_accept for p in offer_policies):
        return None
    return Reservation(
        decision.customer_id,
        decision.decision_id,
        channel,
        channel in policy.outbound,
        now + policy.pending_seconds,
        channel_caps,
        tuple(
            (a.offer_id, tuple((c.window_seconds, c.max) for c in p.caps), p.suppress_after_accept)
            for a, p in zip(decision.actions, offer_policies, strict=True)
        ),
        budget,
        tuple(sorted(policy.budget.channels)) if budget else (),
    )


def apply_reservation(
    decision: Decision, reservation: Reservation, result: Sequence[str] | str
) -> Decision:
    """Keeps the actions the reservation recorded. ``result`` is the offer ids reserved,
    or why the reservation failed: then outbound decisions send nothing and inbound ones
    answer, flagged degraded."""
    if isinstance(result, str):
        if reservation.outbound:
            reason = f"contact policy unavailable, nothing sent: {result}"
            return replace(decision, actions=(), degraded=True, degraded_reason=reason)
        reason = f"contacts not reserved: {result}"
        if decision.degraded_reason:
            reason = f"{decision.degraded_reason}; {reason}"
        return replace(decision, degraded=True, degraded_reason=reason)
    reserved = set(result)
    if len(reserved) == len(decision.actions):
        return decision
    kept = [a for a in decision.actions if a.offer_id in reserved]
    lost = {
        a.offer_id: "cap taken by a concurrent decision"
        for a in decision.actions
        if a.offer_id not in reserved
    }
    return replace(
        decision,
        actions=tuple(replace(a, rank=i) for i, a in enumerate(kept, start=1)),
        excluded={**decision.excluded, **lost},
    )


def outcome_effects(policy: OfferPolicy, outcome: str, occurred_at: float) -> OutcomeEffects:
    """What a reported outcome changes: a cool-down after a decline or dismissal,
    suppression after an accept or conversion, and any response counts as seen (once)
    towards the caps."""
    return OutcomeEffects(
        cooldown_until=(
            occurred_at + policy.cooldown_seconds if outcome in COOLDOWN_OUTCOMES else 0.0
        ),
        suppress=outcome in SUPPRESS_OUTCOMES and policy.suppress_after_accept,
        impression=True,
    )


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
        until = record.policy.get(keys.cooldown_field(offer_id), 0.0)
        held = record.policy.get(keys.held_field(offer_id), 0.0)
        caps = tuple(
            CapUse(
                "",
                _count(record.contacts, record.pending, now - c.window_seconds, offer_id=offer_id),
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
            _count(contacts, pending, now - c.window_seconds, channels=(channel,)),
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
            _count(contacts, pending, now - c.window_seconds, channels=budget.channels),
            c.max,
            c.describe(),
            budget=True,
        )
        for c in budget.caps
    ]
    return tuple(u for u in uses if u.used)
