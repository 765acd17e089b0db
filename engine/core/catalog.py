"""The offer catalog: what may be offered, to whom, where, and with which message.

Read from a TOML file (see engine/defaults/catalog.toml). Audience rules are compiled
once at load time; a bad rule or an unknown feature name fails the load, not a request.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from common.errors import ConfigurationError
from common.vocabulary import CHANNELS, STAGES
from engine.core.adaptive import Ramp
from engine.core.arbitration import (
    DEFAULT_DRAWS,
    DEFAULT_EPSILON,
    DEFAULT_FLOOR,
    DEFAULT_SD_SCALE,
    DEFAULT_TEMPERATURE,
    Exploration,
)
from engine.core.contact_rules import (
    DAY,
    Budget,
    Cap,
    ContactPolicy,
    OfferPolicy,
    QuietHours,
    known_zone,
    parse_clock,
)
from engine.core.expression import Expression, compile_expression
from engine.core.tables import known as _known
from engine.core.tables import names as _names
from engine.core.triggers import Triggers, parse_triggers

# Message fields an offer (or a stage override of it) may set.
MESSAGE_FIELDS = (
    "headline",
    "body",
    "call_to_action",
    "url",
    "app_url",
    "agent_script",
    "email_subject",
    "email_body",
    "sms",
)
SMS_MAX = 160
# The keys each table may hold: any other is refused at load, naming it (a misspelt
# ``valid_untill`` would otherwise leave an offer valid for ever).
# fmt: off
CATALOG_TABLES = (
    "template_defaults", "contact_policy", "exploration", "adaptive", "consent",
    "channel_audience", "offer", "trigger", "outbound",
)
CONTACT_POLICY_KEYS = (
    "channel_caps", "channel_volume", "outbound_channels", "pending_impression_minutes",
    "budget", "quiet_hours", "offer_defaults",
)
EXPLORATION_KEYS = (
    "policy", "epsilon", "temperature", "draws", "floor", "sd_scale", "off_placements",
    "off_channels",
)
OFFER_KEYS = (
    "id", "name", "category", "tags", "value", "lever", "channels", "placements", "stages",
    "audience", "valid_from", "valid_until", "fallback", "message", "policy",
)
# fmt: on


@dataclass(frozen=True, slots=True)
class Offer:
    offer_id: str
    name: str
    category: str
    value: float  # business value of a positive response
    lever: float  # business weight, 1.0 is neutral
    channels: frozenset[str]
    placements: frozenset[str]  # empty: any placement
    stages: frozenset[str]  # empty: any stage
    audience: Expression | None
    valid_from: float | None  # unix seconds
    valid_until: float | None
    fallback: bool  # may be offered when the feature store is unavailable
    message: Mapping[str, str]  # base message fields
    topics: frozenset[str] = frozenset()  # category and tags: what "last viewed" matches
    policy: OfferPolicy = field(default_factory=OfferPolicy)
    stage_messages: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def message_for(self, stage: str) -> dict[str, str]:
        """Base message fields with the stage's overrides applied."""
        return {**self.message, **self.stage_messages.get(stage, {})}


@dataclass(frozen=True)
class Catalog:
    offers: tuple[Offer, ...]
    version: str  # content hash of the source
    template_defaults: Mapping[str, str] = field(default_factory=dict)
    # Per channel: a rule every decision on that channel must pass (e.g. opt-ins).
    channel_audience: Mapping[str, Expression] = field(default_factory=dict)
    # Channels that need consent -> the opt-in feature that holds it (engine/core/consent.py).
    consent_features: Mapping[str, str] = field(default_factory=dict)
    contact_policy: ContactPolicy = field(default_factory=ContactPolicy)
    exploration: Exploration = field(default_factory=Exploration)
    ramp: Ramp = field(default_factory=Ramp)
    # schema features the online layer learns whom each offer suits from ([adaptive])
    adaptive_features: tuple[str, ...] = ()
    triggers: Triggers = field(default_factory=Triggers)  # [[trigger]]: engine/core/triggers.py
    by_id: Mapping[str, Offer] = field(init=False)
    by_channel: Mapping[str, tuple[Offer, ...]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {o.offer_id: o for o in self.offers})
        object.__setattr__(
            self,
            "by_channel",
            {c: tuple(o for o in self.offers if c in o.channels) for c in CHANNELS},
        )


def _timestamp(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC).timestamp()
    raise ConfigurationError(f"{where}: expected a TOML date or datetime, got {value!r}")


def _message(raw: Mapping[str, Any], where: str) -> dict[str, str]:
    out = {}
    for key, value in raw.items():
        if key in STAGES:
            continue
        if key not in MESSAGE_FIELDS:
            raise ConfigurationError(f"{where}: unknown message field {key!r}")
        out[key] = str(value)
    if len(out.get("sms", "")) > SMS_MAX:
        raise ConfigurationError(f"{where}.sms: longer than {SMS_MAX} characters")
    return out


def _caps(raw: Any, where: str) -> tuple[Cap, ...]:
    caps = []
    for item in raw:
        try:
            seconds = float(item.get("days", 0)) * DAY + float(item.get("hours", 0)) * 3600
            cap = Cap(int(seconds), int(item["max"]))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"{where}: a cap is {{days|hours = N, max = M}}") from exc
        if cap.window_seconds <= 0 or cap.max < 0:
            raise ConfigurationError(f"{where}: a cap needs a positive window and max >= 0")
        caps.append(cap)
    return tuple(caps)


def _offer_policy(raw: Mapping[str, Any], base: OfferPolicy, where: str) -> OfferPolicy:
    _known(raw, ("caps", "cooldown_days", "suppress_after_accept", "volume"), where)
    return OfferPolicy(
        caps=_caps(raw["caps"], f"{where}.caps") if "caps" in raw else base.caps,
        cooldown_seconds=float(raw.get("cooldown_days", base.cooldown_seconds / DAY)) * DAY,
        suppress_after_accept=bool(raw.get("suppress_after_accept", base.suppress_after_accept)),
        volume=_caps(raw["volume"], f"{where}.volume") if "volume" in raw else base.volume,
    )


def _budget(raw: Mapping[str, Any], outbound: frozenset[str], where: str) -> Budget:
    """``{days|hours = N, max = M, channels = [...]}`` (channels: the outbound ones)."""
    if not raw:
        return Budget()
    _known(raw, ("days", "hours", "max", "channels"), where)
    caps = _caps([{k: v for k, v in raw.items() if k != "channels"}], where)
    return Budget(caps, _names(raw.get("channels", sorted(outbound)), CHANNELS, where))


def _quiet_hours(raw: Mapping[str, Any], outbound: frozenset[str], where: str) -> QuietHours:
    """``{start = "21:00", end = "08:00", channels = [...], timezone_attribute = "timezone",
    default_timezone = "Europe/London"}`` (channels: the outbound ones)."""
    if not raw:
        return QuietHours()
    _known(raw, ("start", "end", "channels", "timezone_attribute", "default_timezone"), where)
    start, end = (parse_clock(str(raw.get(k, ""))) for k in ("start", "end"))
    if start is None or end is None:
        raise ConfigurationError(f'{where}: start and end are times of day, "HH:MM"')
    zone = str(raw.get("default_timezone", "UTC"))
    if not known_zone(zone):
        raise ConfigurationError(f"{where}.default_timezone: unknown time zone {zone!r}")
    return QuietHours(
        start,
        end,
        _names(raw.get("channels", sorted(outbound)), CHANNELS, where),
        str(raw.get("timezone_attribute", "timezone")),
        zone,
    )


def _contact_policy(raw: Mapping[str, Any]) -> tuple[ContactPolicy, OfferPolicy]:
    where = "contact_policy"
    _known(raw, CONTACT_POLICY_KEYS, where)
    channel_caps = {
        str(c): _caps(caps, f"{where}.channel_caps.{c}")
        for c, caps in raw.get("channel_caps", {}).items()
        if _names([c], CHANNELS, f"{where}.channel_caps")
    }
    outbound = _names(raw.get("outbound_channels", ("email", "sms")), CHANNELS, where)
    policy = ContactPolicy(
        channel_caps=channel_caps,
        outbound=outbound,
        pending_seconds=float(raw.get("pending_impression_minutes", 5)) * 60,
        budget=_budget(raw.get("budget", {}), outbound, f"{where}.budget"),
        quiet_hours=_quiet_hours(raw.get("quiet_hours", {}), outbound, f"{where}.quiet_hours"),
        channel_volume={
            str(c): _caps(caps, f"{where}.channel_volume.{c}")
            for c, caps in raw.get("channel_volume", {}).items()
            if _names([c], CHANNELS, f"{where}.channel_volume")
        },
    )
    defaults = _offer_policy(
        raw.get("offer_defaults", {}), OfferPolicy(), f"{where}.offer_defaults"
    )
    return policy, defaults


def _exploration(raw: Mapping[str, Any]) -> Exploration:
    where = "exploration"
    _known(raw, EXPLORATION_KEYS, where)
    policy = str(raw.get("policy", "greedy"))
    if policy not in ("greedy", "epsilon", "softmax", "thompson"):
        raise ConfigurationError(f"{where}.policy: one of greedy, epsilon, softmax, thompson")
    exploration = Exploration(
        policy=policy,  # type: ignore[arg-type]
        epsilon=float(raw.get("epsilon", DEFAULT_EPSILON)),
        temperature=float(raw.get("temperature", DEFAULT_TEMPERATURE)),
        draws=int(raw.get("draws", DEFAULT_DRAWS)),
        floor=float(raw.get("floor", DEFAULT_FLOOR)),
        sd_scale=float(raw.get("sd_scale", DEFAULT_SD_SCALE)),
        off_placements=frozenset(str(p) for p in raw.get("off_placements", ())),
        off_channels=_names(raw.get("off_channels", ()), CHANNELS, f"{where}.off_channels"),
    )
    if not 0 < exploration.epsilon <= 1 or exploration.temperature <= 0:
        raise ConfigurationError(f"{where}: epsilon in (0, 1], temperature > 0")
    if not 1 <= exploration.draws <= 1024 or not 0 <= exploration.floor < 1:
        raise ConfigurationError(f"{where}: draws in 1..1024, floor in [0, 1)")
    if not 0 < exploration.sd_scale <= 4:
        raise ConfigurationError(f"{where}.sd_scale: in (0, 4]")
    return exploration


def _adaptive_features(raw: Mapping[str, Any], feature_names: frozenset[str]) -> tuple[str, ...]:
    """``[adaptive] features``: the schema features the online layer learns whom each offer
    suits from."""
    names = tuple(str(n) for n in raw.get("features", ()))
    unknown = sorted(set(names) - feature_names)
    if unknown:
        raise ConfigurationError(f"adaptive.features: not in the feature schema: {unknown}")
    return names


def _ramp(raw: Mapping[str, Any]) -> Ramp:
    """``[adaptive]``: how a new offer is ramped in (engine/core/adaptive.py)."""
    where = "adaptive"
    _known(raw, ("new_offer_share", "mature_positives", "new_offer_prior", "features"), where)
    prior = str(raw.get("new_offer_prior", "category"))
    if prior not in ("category", "none"):
        raise ConfigurationError(f"{where}.new_offer_prior: category or none")
    ramp = Ramp(
        start_share=float(raw.get("new_offer_share", Ramp.start_share)),
        mature_positives=float(raw.get("mature_positives", Ramp.mature_positives)),
        similar=prior == "category",
    )
    if not 0 < ramp.start_share <= 1 or ramp.mature_positives <= 0:
        raise ConfigurationError(f"{where}: new_offer_share in (0, 1], mature_positives > 0")
    return ramp


def _offer(raw: Mapping[str, Any], feature_names: frozenset[str], policy: OfferPolicy) -> Offer:
    oid = str(raw.get("id", ""))
    where = f"offer {oid or '?'}"
    if not oid:
        raise ConfigurationError("catalog: an offer has no id")
    audience = raw.get("audience")
    message = raw.get("message", {})
    _known(raw, OFFER_KEYS, where)
    try:
        return Offer(
            offer_id=oid,
            name=str(raw.get("name", oid)),
            category=str(raw["category"]),
            value=float(raw["value"]),
            lever=float(raw.get("lever", 1.0)),
            channels=_names(raw.get("channels", CHANNELS), CHANNELS, f"{where}.channels"),
            placements=frozenset(str(p) for p in raw.get("placements", ())),
            stages=_names(raw.get("stages", ()), STAGES, f"{where}.stages"),
            audience=compile_expression(audience, feature_names) if audience else None,
            valid_from=_timestamp(raw.get("valid_from"), f"{where}.valid_from"),
            valid_until=_timestamp(raw.get("valid_until"), f"{where}.valid_until"),
            fallback=bool(raw.get("fallback", False)),
            message=_message(message, f"{where}.message"),
            topics=frozenset([str(raw["category"]), *(str(t) for t in raw.get("tags", ()))]),
            policy=_offer_policy(raw.get("policy", {}), policy, f"{where}.policy"),
            stage_messages={
                s: _message(m, f"{where}.message.{s}") for s, m in message.items() if s in STAGES
            },
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: {exc!r}") from exc


def _consent(raw: Mapping[str, Any], feature_names: frozenset[str]) -> dict[str, str]:
    out = {}
    for channel, feature in raw.items():
        _names([channel], CHANNELS, "consent")
        if str(feature) not in feature_names:
            raise ConfigurationError(f"consent.{channel}: no feature {feature!r} in the schema")
        out[str(channel)] = str(feature)
    return out


def parse_catalog(text: str, feature_names: frozenset[str]) -> Catalog:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"catalog: {exc}") from exc
    _known(doc, CATALOG_TABLES, "catalog")
    contact_policy, offer_defaults = _contact_policy(doc.get("contact_policy", {}))
    offers = tuple(_offer(o, feature_names, offer_defaults) for o in doc.get("offer", []))
    ids = [o.offer_id for o in offers]
    if len(set(ids)) != len(ids):
        raise ConfigurationError("catalog: duplicate offer ids")
    if not offers:
        raise ConfigurationError("catalog: no offers")
    return Catalog(
        offers=offers,
        version=hashlib.sha256(text.encode()).hexdigest()[:12],
        template_defaults={k: str(v) for k, v in doc.get("template_defaults", {}).items()},
        channel_audience={
            str(c): compile_expression(str(rule), feature_names)
            for c, rule in doc.get("channel_audience", {}).items()
            if _names([c], CHANNELS, "catalog.channel_audience")
        },
        consent_features=_consent(doc.get("consent", {}), feature_names),
        contact_policy=contact_policy,
        exploration=_exploration(doc.get("exploration", {})),
        ramp=_ramp(doc.get("adaptive", {})),
        adaptive_features=_adaptive_features(doc.get("adaptive", {}), feature_names),
        triggers=parse_triggers(
            doc.get("trigger", []), feature_names, frozenset(ids), doc.get("outbound", [])
        ),
    )


def load_catalog(path: Path, feature_names: frozenset[str]) -> Catalog:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read catalog {path}: {exc}") from exc
    return parse_catalog(text, feature_names)
