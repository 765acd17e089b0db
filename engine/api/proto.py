"""Core names <-> proto enum values, in one place for the edge, the clients and the
simulation: ``channel("call_center")`` is ``CHANNEL_CALL_CENTER``."""

from __future__ import annotations

from arbiter.v1 import common_pb2


def channel(name: str) -> common_pb2.Channel.ValueType:
    """``web``, ``mobile_app`` (or ``mobile-app``), ... -> the proto value."""
    return common_pb2.Channel.Value(f"CHANNEL_{name.replace('-', '_').upper()}")


def stage(name: str) -> common_pb2.LifecycleStage.ValueType:
    return common_pb2.LifecycleStage.Value(f"LIFECYCLE_STAGE_{name.upper()}")


def outcome(name: str) -> common_pb2.Outcome.ValueType:
    return common_pb2.Outcome.Value(f"OUTCOME_{name.upper()}")


def channel_or_unspecified(name: str) -> common_pb2.Channel.ValueType:
    """For stored records: a channel name this version does not know shows as
    CHANNEL_UNSPECIFIED instead of failing the read."""
    try:
        return channel(name)
    except ValueError:
        return common_pb2.CHANNEL_UNSPECIFIED


def channel_name(value: int) -> str:
    """``CHANNEL_CALL_CENTER`` -> ``call_center`` (display: any value, known or not)."""
    return common_pb2.Channel.Name(value).removeprefix("CHANNEL_").lower()  # type: ignore[arg-type]


def outcome_name(value: int) -> str:
    """``OUTCOME_ACCEPT`` -> ``accept``."""
    return common_pb2.Outcome.Name(value).removeprefix("OUTCOME_").lower()  # type: ignore[arg-type]


def stage_name(value: int) -> str:
    """``LIFECYCLE_STAGE_AT_RISK`` -> ``at_risk``."""
    return common_pb2.LifecycleStage.Name(value).removeprefix("LIFECYCLE_STAGE_").lower()  # type: ignore[arg-type]
