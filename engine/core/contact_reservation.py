"""The contacts a decision makes, carried with their caps to the store, which re-checks
and records them atomically, so two replicas cannot both exceed a cap; and what a
reported outcome changes (a cool-down, a suppression, an impression). Pure: no I/O.

``admit`` is the re-check, written once: the in-memory store runs it as it is, and the
Redis store's RESERVE script (feature_store/scripts.py) is its port to Lua, held to the
same behaviour by the store contract suite (tests/feature_store/test_store_contract.py)
and the concurrent decisions of tests/engine/test_contact_policy.py. ``claim`` is the
same for volume limits over the whole base (the VOLUME script), taken before the
customer's own re-check and given back (``given_back``) for what that refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from engine.core.catalog import Offer
from engine.core.contact_policy import count
from engine.core.contact_rules import (
    COOLDOWN_OUTCOMES,
    SUPPRESS_OUTCOMES,
    Cap,
    ContactPolicy,
    OfferPolicy,
    Volume,
)
from engine.core.customer import Contact, OutcomeEffects, Reservation
from engine.core.decision import Decision


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
    channel_volume = _counters(Volume.channel(channel), policy.channel_volume.get(channel, ()), now)
    offer_volume = tuple(
        (a.offer_id, _counters(Volume.offer(a.offer_id), p.volume, now))
        for a, p in zip(decision.actions, offer_policies, strict=True)
        if p.volume
    )
    capped = channel_caps or budget or channel_volume or offer_volume
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
        channel_volume,
        offer_volume,
    )


def _counters(subject: str, caps: tuple[Cap, ...], now: float) -> tuple[tuple[str, int, int], ...]:
    """The volume counters of ``subject`` for the periods ``now`` falls in, each kept a
    period and an hour (no longer needed once its period is over)."""
    return tuple(
        (Volume.counter(subject, cap, now), cap.max, cap.window_seconds + 3600) for cap in caps
    )


@dataclass(frozen=True, slots=True)
class Claim:
    """What the volume limits let through: ``refused`` offers (or all, ``channel_full``),
    and the counters taken by one contact each."""

    channel_full: bool
    refused: frozenset[str]
    taken: tuple[str, ...]


def claim(r: Reservation, used: Mapping[str, int]) -> Claim:
    """The volume re-check, given the counters' use now: a channel at its limit lets
    nothing through; else each limited offer whose counters all have room is let through
    and takes one on each, and the channel's counters take one for the decision."""
    if any(used.get(name, 0) >= most for name, most, _ in r.channel_volume):
        return Claim(True, frozenset(o for o, _, _ in r.offers), ())
    taken = [name for name, _, _ in r.channel_volume]
    refused = set()
    for offer_id, counters in r.offer_volume:
        if all(used.get(name, 0) < most for name, most, _ in counters):
            taken += [name for name, _, _ in counters]
        else:
            refused.add(offer_id)
    return Claim(False, frozenset(refused), tuple(taken))


def given_back(r: Reservation, claimed: Claim, reserved: Sequence[str]) -> list[str]:
    """The counters a claim took for contacts the customer's re-check then refused: each
    refused offer's, and the channel's when nothing was reserved."""
    kept = set(reserved)
    back = [
        name
        for offer_id, counters in r.offer_volume
        if offer_id not in claimed.refused and offer_id not in kept
        for name, _, _ in counters
    ]
    if r.channel_volume and not kept and not claimed.channel_full:
        back += [name for name, _, _ in r.channel_volume]
    return back


def without(r: Reservation, offer_ids: frozenset[str]) -> Reservation:
    """``r`` without ``offer_ids`` (refused by a volume limit)."""
    if not offer_ids:
        return r
    return replace(r, offers=tuple(o for o in r.offers if o[0] not in offer_ids))


@dataclass(frozen=True, slots=True)
class Admitted:
    """An offer of a reservation the store records: as a new contact, or, when ``again``,
    by extending that pending contact of an earlier decision (shown again: no new place)."""

    offer_id: str
    again: Contact | None = None


def admit(
    r: Reservation,
    contacts: Sequence[Contact],
    pending: Sequence[Contact],
    cooldowns: Mapping[str, float],
    held: Mapping[str, float],
    now: float,
) -> list[Admitted]:
    """The offers of ``r`` that fit, in its order, given the customer's contacts made
    within the horizon, live reservations, cool-downs and acceptances as the store holds
    them now. A cool-down or an acceptance keeps an offer out; an inbound offer pending
    already is shown again whatever the caps; else the channel's caps and the marketing
    budget (counted before any of this reservation's contacts), then the offer's own."""
    shown = {c.offer_id: c for c in pending}
    channel_full = any(
        count(contacts, pending, now - window, channels=(r.channel,)) >= most
        for window, most in r.channel_caps
    ) or any(
        count(contacts, pending, now - window, channels=r.budget_channels) >= most
        for window, most in r.budget
    )
    admitted = []
    for offer_id, caps, suppress in r.offers:
        if cooldowns.get(offer_id, 0.0) > now or (suppress and offer_id in held):
            continue
        again = None if r.outbound else shown.get(offer_id)
        if again is not None:
            admitted.append(Admitted(offer_id, again))
            continue
        if channel_full:
            continue
        if any(
            count(contacts, pending, now - window, offer_id=offer_id) >= most
            for window, most in caps
        ):
            continue
        admitted.append(Admitted(offer_id))
    return admitted


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
    limited = {o for o, _ in reservation.offer_volume}
    if reservation.channel_volume and not reserved:
        limited = {a.offer_id for a in decision.actions}
    lost = {
        a.offer_id: (
            "volume limit reached by concurrent decisions"
            if a.offer_id in limited
            else "cap taken by a concurrent decision"
        )
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
