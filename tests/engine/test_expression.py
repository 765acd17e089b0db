"""The rule language: safe, total, and equal to Python on the subset it accepts."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.expression import ExpressionError, compile_expression

ENV: dict[str, Any] = {
    "a": 3.0,
    "b": -2.0,
    "c": 0.0,
    "channel": "web",
    "context": {"device": "mobile"},
    "attr": {"region": "North"},
}
NAMES = frozenset({"a", "b", "c"})

numbers = st.one_of(st.integers(-100, 100), st.sampled_from(["a", "b", "c", "1.5", "0"]))


@st.composite
def arithmetic(draw: st.DrawFn, depth: int = 0) -> str:
    if depth > 2 or draw(st.booleans()):
        return str(draw(numbers))
    op = draw(st.sampled_from(["+", "-", "*"]))
    return f"({draw(arithmetic(depth + 1))} {op} {draw(arithmetic(depth + 1))})"


@st.composite
def boolean(draw: st.DrawFn, depth: int = 0) -> str:
    if depth > 2 or draw(st.booleans()):
        op = draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
        return f"{draw(arithmetic())} {op} {draw(arithmetic())}"
    kind = draw(st.sampled_from(["and", "or", "not"]))
    if kind == "not":
        return f"not ({draw(boolean(depth + 1))})"
    return f"({draw(boolean(depth + 1))}) {kind} ({draw(boolean(depth + 1))})"


@given(boolean())
@settings(max_examples=300)
def test_agrees_with_python_on_the_subset(source: str) -> None:
    expected = eval(source, {"__builtins__": {}}, dict(ENV))  # the oracle, in tests only
    assert compile_expression(source, NAMES).test(ENV) is bool(expected)


@given(st.text(max_size=60))
@settings(max_examples=500)
def test_any_text_compiles_or_raises_expression_error(source: str) -> None:
    try:
        expression = compile_expression(source, NAMES)
    except ExpressionError:
        return
    expression(ENV | {n: 1.0 for n in expression.names if "." not in n})  # and never raises


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os').system('true')",
        "a.__class__",
        "(lambda: 1)()",
        "[x for x in (1, 2)]",
        "a if b else c",
        "open('/etc/passwd')",
        "a[0]",
        "a ** 99999999",
        "unknown_feature > 1",
        "context",
        "{1: 2}",
    ],
)
def test_unsafe_or_unknown_constructs_are_rejected(source: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(source, NAMES)


def test_context_attributes_membership_and_strings() -> None:
    rule = compile_expression(
        "context.device == 'mobile' and attr.region in ('North', 'South') and channel != 'sms'",
        NAMES,
    )
    assert rule.test(ENV)
    assert not rule.test(ENV | {"context": {}})
    assert rule.names == {"context.device", "attr.region", "channel"}


def test_division_by_zero_and_type_mismatch_are_false_not_errors() -> None:
    assert math.isnan(compile_expression("a / c", NAMES)(ENV))
    assert not compile_expression("a / c > 0", NAMES).test(ENV)
    assert not compile_expression("channel > 3", NAMES).test(ENV)
    assert compile_expression("1 < a < 4", NAMES).test(ENV)
    assert not compile_expression("1 < a < 2", NAMES).test(ENV)
    assert compile_expression("-a == b - 1", NAMES).test(ENV)


@pytest.mark.parametrize(
    "source",
    [
        "-" * 1999 + "1",
        "not " * 400 + "a",
        "(a + " * 100 + "a" + ")" * 100,
        " + ".join(["a"] * 300),
    ],
)
def test_deep_or_huge_rules_are_refused_not_recursed(source: str) -> None:
    with pytest.raises(ExpressionError, match=r"deeper than|over|cannot parse"):
        compile_expression(source, NAMES)


def test_arithmetic_on_strings_is_false_not_a_repetition() -> None:
    env = ENV | {"context": {"page": "x" * 256}}
    for source in ("context.page * 1000000 == ''", "'%0999999999d' % 1 == ''", "channel + 1 > 0"):
        rule = compile_expression(source, NAMES)
        assert rule(env) is False
