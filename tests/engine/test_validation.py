"""Validators accept or reject with the field named; they never raise anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidArgument
from engine.api import validation


@given(st.text(max_size=200))
def test_customer_id_accepts_or_names_the_field(value: str) -> None:
    try:
        assert validation.customer_id(value) == value
    except InvalidArgument as exc:
        assert exc.field == "customer_id"
        assert str(exc).startswith("customer_id: ")
    else:
        assert 0 < len(value) <= 128 and "{" not in value and "}" not in value


@given(st.integers(-(2**31), 2**31 - 1))
def test_limit(value: int) -> None:
    if 0 <= value <= 50:
        assert validation.limit(value) == (value or 1)
    else:
        with pytest.raises(InvalidArgument, match=r"^limit: "):
            validation.limit(value)


@given(st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=40))
def test_context_map(values: dict[str, str]) -> None:
    try:
        validation.context(values)
    except InvalidArgument as exc:
        assert exc.field.startswith("context")


@given(st.text(max_size=40))
def test_event_type(value: str) -> None:
    try:
        validation.event_type(value)
    except InvalidArgument as exc:
        assert exc.field == "event_type"
    else:
        assert value.islower() or value.replace("_", "").isalnum()


def test_enum_messages_list_the_allowed_values() -> None:
    with pytest.raises(InvalidArgument, match="channel: is required; one of CHANNEL_WEB"):
        validation.channel(0)
    with pytest.raises(InvalidArgument, match="outcome: has unknown value 9"):
        validation.outcome(9)
    assert validation.channel(3) == "call_center"


def test_occurred_at() -> None:
    assert validation.occurred_at(None, 100.0) == 100.0
    assert validation.occurred_at(50.0, 100.0) == 50.0
    with pytest.raises(InvalidArgument, match="future"):
        validation.occurred_at(10_000.0, 100.0)
