"""A small, safe expression language for audience and life-cycle rules.

Syntax is a subset of Python expressions, parsed by the standard ``ast`` module and
compiled once into closures; nothing is ever passed to ``eval``. Allowed:

- numbers, strings, ``True``/``False``; tuples or lists of constants (for ``in``);
- names: any feature of the schema, and ``channel``, ``placement``, ``stage`` (strings);
- ``context.<key>`` and ``attr.<name>``: request context and customer attributes
  (strings; "" when absent);
- ``and``, ``or``, ``not``; ``+ - * / %`` on numbers and unary ``-``;
  ``== != < <= > >= in not in``, chained comparisons too.

Bounded: at most MAX_LENGTH characters, MAX_DEPTH levels of nesting and MAX_NODES nodes,
and arithmetic on strings is false rather than a repetition or a format.

A division by zero gives NaN (so comparisons with it are false); comparing a string with
a number is false for ordering operators. Rules are therefore total: evaluating a compiled
rule never raises.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import ConfigurationError

Env = Mapping[str, Any]
Compiled = Callable[[Env], Any]

MAX_LENGTH = 2000
MAX_DEPTH = 32  # nesting: also bounds the compiled closures' recursion
MAX_NODES = 400
NAMESPACES = ("context", "attr")
STRING_NAMES = ("channel", "placement", "stage")


class ExpressionError(ConfigurationError):
    """An expression that is not valid in the rule language."""


def _div(a: Any, b: Any) -> Any:
    return a / b if b else math.nan


def _mod(a: Any, b: Any) -> Any:
    return a % b if b else math.nan


def _numeric(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Arithmetic on numbers only: ``context.page * 1000000`` would build a string of a
    million copies, and ``"%0999999999d" % 1`` a gigabyte; on strings it is just false."""

    def apply(a: Any, b: Any) -> Any:
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            raise TypeError("arithmetic needs numbers")
        return op(a, b)

    return apply


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: _numeric(operator.add),
    ast.Sub: _numeric(operator.sub),
    ast.Mult: _numeric(operator.mul),
    ast.Div: _numeric(_div),
    ast.Mod: _numeric(_mod),
}


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        try:
            return op(a, b)
        except TypeError:
            return False

    return compare


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: _ordered(operator.lt),
    ast.LtE: _ordered(operator.le),
    ast.Gt: _ordered(operator.gt),
    ast.GtE: _ordered(operator.ge),
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


@dataclass(frozen=True)
class Expression:
    """A compiled expression; ``names`` are the variables it reads."""

    source: str
    names: frozenset[str]
    _fn: Compiled

    def __call__(self, env: Env) -> Any:
        try:
            return self._fn(env)
        except (TypeError, ValueError, ArithmeticError, KeyError):
            return False

    def test(self, env: Env) -> bool:
        return bool(self(env))


def compile_expression(source: str, allowed_names: frozenset[str] | None = None) -> Expression:
    """Compiles ``source``; with ``allowed_names``, an unknown name is an error."""
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(f"cannot parse {source[:80]!r}: {type(exc).__name__}") from exc
    _check_size(tree, source)
    names: set[str] = set()
    fn = _Compiler(names, allowed_names, source).build(tree.body)
    return Expression(source, frozenset(names), fn)


def _check_size(tree: ast.AST, source: str) -> None:
    """Refuses trees deeper than MAX_DEPTH or larger than MAX_NODES, walking without
    recursion (a rule of 2,000 nested minus signs must not reach the recursion limit)."""
    stack, count = [(tree, 0)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH or count > MAX_NODES:
            what = f"deeper than {MAX_DEPTH}" if depth > MAX_DEPTH else f"over {MAX_NODES} nodes"
            raise ExpressionError(f"{source[:80]!r}: expression {what}")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


class _Compiler:
    def __init__(self, names: set[str], allowed: frozenset[str] | None, source: str) -> None:
        self.names = names
        self.allowed = allowed
        self.source = source

    def fail(self, node: ast.AST, why: str) -> ExpressionError:
        return ExpressionError(f"{self.source!r}: {why} (column {getattr(node, 'col_offset', 0)})")

    def build(self, node: ast.AST) -> Compiled:  # noqa: C901 - one branch per node type
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float | str | bool):
                raise self.fail(node, f"constant {node.value!r} is not allowed")
            value = node.value
            return lambda env: value
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Attribute):
            return self.attribute(node)
        if isinstance(node, ast.Tuple | ast.List):
            items = tuple(self.constant(e) for e in node.elts)
            return lambda env: items
        if isinstance(node, ast.BoolOp):
            parts = [self.build(v) for v in node.values]
            if len(parts) == 2:  # the common case, without a generator per test
                a, b = parts
                if isinstance(node.op, ast.And):
                    return lambda env: bool(a(env)) and bool(b(env))
                return lambda env: bool(a(env)) or bool(b(env))
            if isinstance(node.op, ast.And):
                return lambda env: all(p(env) for p in parts)
            return lambda env: any(p(env) for p in parts)
        if isinstance(node, ast.UnaryOp):
            operand = self.build(node.operand)
            if isinstance(node.op, ast.Not):
                return lambda env: not operand(env)
            if isinstance(node.op, ast.USub):
                return lambda env: -operand(env)
            if isinstance(node.op, ast.UAdd):
                return operand
            raise self.fail(node, "operator not allowed")
        if isinstance(node, ast.BinOp):
            op = _BINARY.get(type(node.op))
            if op is None:
                raise self.fail(node, f"operator {type(node.op).__name__} not allowed")
            left, right = self.build(node.left), self.build(node.right)
            return lambda env: op(left(env), right(env))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        raise self.fail(node, f"{type(node).__name__} is not allowed")

    def constant(self, node: ast.AST) -> Any:
        sign = 1
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            sign, node = -1, node.operand
        if not isinstance(node, ast.Constant) or not isinstance(node.value, int | float | str):
            raise self.fail(node, "lists may hold only numbers and strings")
        return node.value * sign if sign == -1 else node.value

    def name(self, node: ast.Name) -> Compiled:
        key = node.id
        if key in NAMESPACES:
            raise self.fail(node, f"{key} needs a key, as in {key}.something")
        if self.allowed is not None and key not in self.allowed and key not in STRING_NAMES:
            raise self.fail(node, f"unknown name {key!r}")
        self.names.add(key)
        return lambda env: env[key]

    def attribute(self, node: ast.Attribute) -> Compiled:
        base = node.value
        if not isinstance(base, ast.Name) or base.id not in NAMESPACES:
            raise self.fail(node, "only context.<key> and attr.<name> are allowed")
        space, key = base.id, node.attr
        self.names.add(f"{space}.{key}")
        return lambda env: env[space].get(key, "")

    def compare(self, node: ast.Compare) -> Compiled:
        ops = []
        for o in node.ops:
            op = _COMPARE.get(type(o))
            if op is None:
                raise self.fail(node, "comparison operator not allowed")
            ops.append(op)
        operands = [self.build(node.left), *(self.build(c) for c in node.comparators)]
        if len(ops) == 1:  # the common case: one comparison, often with a constant
            (op,), (left, right) = ops, operands
            last = node.comparators[0]
            if isinstance(last, ast.Constant | ast.Tuple | ast.List):
                value = right({})
                return lambda env: op(left(env), value)
            return lambda env: op(left(env), right(env))
        pairs = list(zip(ops, operands[:-1], operands[1:], strict=True))

        def chain(env: Env) -> bool:
            return all(op(left(env), right(env)) for op, left, right in pairs)

        return chain
