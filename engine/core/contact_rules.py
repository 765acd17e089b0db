"""The contact policy's rules, as the catalog declares them (``[contact_policy]`` and per
offer ``[offer.policy]``):

- caps per offer over rolling windows ("at most 3 impressions in 7 days"), counted across
  channels, and per channel ("at most 1 SMS a day"), counted in decisions;
- a marketing budget per customer across channels ("at most 4 contacts a week, email and
  SMS together"), counted in decisions like a channel cap over all its channels;
- quiet hours for outbound channels in the customer's time zone (an attribute, the
  catalog's default otherwise): no send between, say, 21:00 and 08:00 there;
- a cool-down after DECLINE or DISMISS: the offer is not made again, on any channel,
  until it ends;
- suppression after ACCEPT or CONVERT: the customer now holds it, so it is not offered
  again;
- volume limits over the whole customer base, per offer ("retention_discount: at most 500
  a day") and per channel ("40 call-center callbacks an hour"), counted in contacts made
  in fixed periods (a day is a UTC day, an hour a clock hour).

Where they are applied: contact_policy.py checks them at decision time,
contact_reservation.py carries them to the store that records a decision's contacts
(and says what an outcome changes), contact_views.py shows what is in use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.vocabulary import POSITIVE_OUTCOMES

DAY = 86400
VOLUME_REACHED = "volume limit reached"  # how a volume limit's refusal begins
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
    volume: tuple[Cap, ...] = ()  # over the whole customer base (``Volume``)


class Volume:
    """Volume limits: at most ``Cap.max`` contacts of an offer (or decisions on a channel)
    over the whole customer base in each fixed period of ``Cap.window_seconds``, periods
    aligned to the epoch. Each period has a counter, named here: the store keeps it."""

    @staticmethod
    def counter(subject: str, cap: Cap, now: float) -> str:
        """``offer:<id>`` or ``channel:<name>``, the cap and the period ``now`` falls in."""
        return f"{subject}|{cap.window_seconds}|{int(now // cap.window_seconds)}"

    @staticmethod
    def offer(offer_id: str) -> str:
        return f"offer:{offer_id}"

    @staticmethod
    def channel(channel: str) -> str:
        return f"channel:{channel}"

    @staticmethod
    def describe(used: float, cap: Cap) -> str:
        """ "volume limit reached: 500 of 500 today"."""
        if cap.window_seconds == DAY:
            period = "today (UTC)"
        elif cap.window_seconds == 3600:
            period = "this hour"
        else:
            period = f"in this period of {cap.window_seconds / 3600:g} h"
        return f"{VOLUME_REACHED}: {used:g} of {cap.max} {period}"


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

    def zone(self, attributes: Mapping[str, str]) -> ZoneInfo | None:
        """The customer's time zone: their attribute's when known, else the default."""
        return _zone(attributes.get(self.timezone_attribute, "")) or _zone(self.default_timezone)

    def block(self, channel: str, attributes: Mapping[str, str], now: float) -> str:
        if channel not in self.channels or self.start == self.end:
            return ""
        zone = self.zone(attributes)
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

    def end_after(self, channel: str, attributes: Mapping[str, str], now: float) -> float | None:
        """When the quiet hours holding ``channel`` at ``now`` end, in unix seconds (the
        first minute ``block`` lets it through); None when they do not hold it now."""
        if not self.block(channel, attributes, now):
            return None
        zone = self.zone(attributes)
        local = datetime.fromtimestamp(now, zone)
        end = local.replace(hour=self.end // 60, minute=self.end % 60, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)  # wall-clock arithmetic: 08:00 there, whatever DST does
        return end.timestamp()


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
    # decisions that contact customers on a channel, over the whole base (``Volume``)
    channel_volume: Mapping[str, tuple[Cap, ...]] = field(default_factory=dict)

    def volume_limits(
        self, offer_policies: Mapping[str, OfferPolicy], now: float
    ) -> list[tuple[str, int]]:
        """Every volume counter of the period ``now`` falls in (what a replica watches),
        with its max."""
        out = [
            (Volume.counter(Volume.channel(channel), cap, now), cap.max)
            for channel, caps in self.channel_volume.items()
            for cap in caps
        ]
        out += [
            (Volume.counter(Volume.offer(offer_id), cap, now), cap.max)
            for offer_id, policy in offer_policies.items()
            for cap in policy.volume
        ]
        return out

    def horizon_seconds(self, offer_policies: Iterable[OfferPolicy]) -> int:
        """The longest window any cap looks back over (at least a day)."""
        windows = [c.window_seconds for caps in self.channel_caps.values() for c in caps]
        windows += [c.window_seconds for p in offer_policies for c in p.caps]
        windows += [c.window_seconds for c in self.budget.caps]
        return max([DAY, *windows])
