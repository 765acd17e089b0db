"""Request validation: every check names the field it rejects.

Works on plain values (the servicer passes decoded fields), so it can be tested and
fuzzed without gRPC. Limits are part of the public contract (docs/architecture.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from common.errors import InvalidArgument
from common.vocabulary import CHANNELS, OUTCOMES, STAGES
from feature_store import keys
from feature_store.keys import customer_id_problem

MAX_LIMIT = 50
MAX_MAP_ENTRIES = 32
MAX_KEY_LENGTH = 64
MAX_VALUE_LENGTH = 256
MAX_OFFER_IDS = 200
MAX_ID_LENGTH = 128
MAX_FUTURE_SECONDS = 300.0  # clock skew tolerated on occurred_at
MAX_OUTCOME_VALUE = 1e9  # an outcome's value (revenue) beyond this is a mistake
EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,31}")


def customer_id(value: str, field: str = "customer_id") -> str:
    problem = customer_id_problem(value)
    if problem:
        raise InvalidArgument(field, problem)
    return value


def enum_name(number: int, names: tuple[str, ...], prefix: str, field: str) -> str:
    """Maps a proto enum number (1-based over ``names``) to its core name."""
    if 1 <= number <= len(names):
        return names[number - 1]
    allowed = ", ".join(f"{prefix}_{n.upper()}" for n in names)
    what = "is required" if number == 0 else f"has unknown value {number}"
    raise InvalidArgument(field, f"{what}; one of {allowed}")


def channel(number: int, field: str = "channel") -> str:
    return enum_name(number, CHANNELS, "CHANNEL", field)


def outcome(number: int, field: str = "outcome") -> str:
    return enum_name(number, OUTCOMES, "OUTCOME", field)


def short_text(
    value: str, field: str, *, limit: int = MAX_ID_LENGTH, required: bool = False
) -> str:
    if required and not value:
        raise InvalidArgument(field, "is required")
    if len(value) > limit:
        raise InvalidArgument(field, f"is {len(value)} characters, at most {limit} allowed")
    if not value.isprintable():
        raise InvalidArgument(field, "must be printable text")
    return value


def string_map(values: Mapping[str, str], field: str) -> dict[str, str]:
    if len(values) > MAX_MAP_ENTRIES:
        raise InvalidArgument(field, f"has {len(values)} entries, at most {MAX_MAP_ENTRIES}")
    for key, value in values.items():
        short_text(
            key, f"{field} key {key[:MAX_KEY_LENGTH]!r}", limit=MAX_KEY_LENGTH, required=True
        )
        if len(value) > MAX_VALUE_LENGTH:
            raise InvalidArgument(
                f"{field}[{key}]", f"is longer than {MAX_VALUE_LENGTH} characters"
            )
    return dict(values)


def context(values: Mapping[str, str]) -> dict[str, str]:
    checked = string_map(values, "context")
    stage = checked.get("stage")
    if stage is not None and stage not in STAGES:
        raise InvalidArgument("context[stage]", f"unknown stage {stage!r}; one of {list(STAGES)}")
    return checked


def limit(value: int) -> int:
    if not 0 <= value <= MAX_LIMIT:
        raise InvalidArgument("limit", f"is {value}, must be 0..{MAX_LIMIT} (0 means 1)")
    return value or 1


def offer_ids(values: Sequence[str]) -> tuple[str, ...]:
    if len(values) > MAX_OFFER_IDS:
        raise InvalidArgument("offer_ids", f"has {len(values)} entries, at most {MAX_OFFER_IDS}")
    return tuple(short_text(v, f"offer_ids[{i}]", required=True) for i, v in enumerate(values))


def event_type(value: str) -> str:
    if not EVENT_TYPE.fullmatch(value):
        raise InvalidArgument(
            "event_type", f"{value[:40]!r} must be lower-case snake case, 1..32 characters"
        )
    return value


def finite(value: float, field: str) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, "must be a finite number")
    return value


def outcome_value(value: float, field: str = "value") -> float:
    """Revenue and the like: finite, and within +/- ``MAX_OUTCOME_VALUE``."""
    finite(value, field)
    if abs(value) > MAX_OUTCOME_VALUE:
        raise InvalidArgument(field, f"is {value:g}, beyond +/-{MAX_OUTCOME_VALUE:g}")
    return value


def occurred_at(seconds: float | None, now: float, field: str = "occurred_at") -> float:
    """Unix seconds of an event; ``None`` (unset) means now. Rejects the far future."""
    if seconds is None:
        return now
    if seconds > now + MAX_FUTURE_SECONDS:
        raise InvalidArgument(field, "is in the future")
    if seconds <= 0:
        raise InvalidArgument(field, "must be after 1970")
    return seconds


CONSENT_TARGETS = (*keys.CONSENT_CHANNELS, "all")


def consent_event(event_type: str, attributes: Mapping[str, str]) -> None:
    """An ``opt_in`` / ``opt_out`` event must say which channel it covers."""
    if event_type in keys.CONSENT_EVENTS and attributes.get("channel") not in CONSENT_TARGETS:
        raise InvalidArgument(
            "attributes[channel]", f"{event_type} needs one of {list(CONSENT_TARGETS)}"
        )
