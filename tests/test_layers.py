"""The layers, as the tree shows them, hold: every import points down.

    common                       imports nothing of the project
    engine.core                  common (it owns the schema and the customer state)
    feature_store                + engine.core (its stores produce the core's records)
    engine.adapters              + engine.core
    engine.service               + engine.adapters
    engine.api                   + engine.service
    engine.clients               engine.api's proto helpers and channel, settings: gRPC only
    engine.ops                   + anything of engine (serve, load, models, keys)
    training                     anything above

Imports are read with ``ast`` from the source (inside functions and TYPE_CHECKING blocks
too), so a new back-arrow fails here before anyone trips over it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "feature_store", "engine", "training")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> set[str]:
    """Every module ``source`` imports (absolute names; ``from a import b`` gives a and
    a.b); relative imports resolve against ``package``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def project_modules() -> dict[str, set[str]]:
    return {
        module_name(path): imports(path)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# (modules, what they must not import): project layers first, then libraries.
RULES: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("common",), ("feature_store", "engine", "training", "arbiter")),
    (
        ("feature_store",),
        (
            "engine.adapters",
            "engine.service",
            "engine.api",
            "engine.clients",
            "engine.settings",
            "training",
            "arbiter",
            "grpc",
            "lightgbm",
        ),
    ),
    (("engine",), ("training",)),
    (
        ("engine.core",),
        (
            "engine.adapters",
            "engine.service",
            "engine.api",
            "engine.clients",
            "engine.settings",
            "feature_store",
            "grpc",
            "arbiter",
            "google.protobuf",
            "redis",
            "lightgbm",
            "asyncio",
        ),
    ),
    (("engine.adapters",), ("engine.service", "engine.api", "engine.clients", "grpc", "redis")),
    (("engine.service",), ("engine.api", "engine.clients", "grpc", "arbiter", "google.protobuf")),
    (("engine.api",), ("engine.clients", "engine.ops")),
    # API clients speak gRPC: nothing of the service, the models or the stores
    (
        ("engine.clients",),
        (
            "engine.ops",
            "engine.service",
            "engine.adapters",
            "engine.api.server",
            "engine.api.servicer",
            "feature_store",
        ),
    ),
]


def violations(modules: dict[str, set[str]]) -> list[str]:
    found = []
    for owners, forbidden in RULES:
        for module, imported in sorted(modules.items()):
            if not within(module, owners):
                continue
            found += [f"{module} imports {name}" for name in imported if within(name, forbidden)]
    return sorted(found)


def closure(modules: dict[str, set[str]], start: str) -> set[str]:
    """Everything ``start`` imports, directly or through other project modules."""
    seen, todo = set(), [start]
    while todo:
        for name in modules.get(todo.pop(), ()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def test_every_import_points_down() -> None:
    assert violations(project_modules()) == []


def test_the_core_reaches_no_grpc_redis_or_lightgbm_even_indirectly() -> None:
    modules = project_modules()
    heavy = ("grpc", "redis", "lightgbm", "arbiter", "google.protobuf")
    for module in (m for m in modules if within(m, ("engine.core",))):
        reached = closure(modules, module)
        assert not [name for name in reached if within(name, heavy)], module


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("feature_store.store", "from engine.service import profile", "imports engine.service"),
        ("engine.core.decision", "from feature_store import keys", "imports feature_store"),
        ("engine.core.decision", "import grpc", "imports grpc"),
        ("engine.core.scoring", "import lightgbm as lgb", "imports lightgbm"),
        ("engine.ops.admin", "from training import job", "imports training"),
        ("engine.clients.cli.calls", "from feature_store import keys", "imports feature_store"),
        ("engine.service.application", "from engine.api import proto", "imports engine.api"),
    ],
)
def test_a_back_arrow_is_caught(module: str, line: str, expected: str) -> None:
    modules = project_modules()
    modules[module] = modules[module] | imports_in(line, module.rpartition(".")[0])
    assert any(f"{module} {expected}" in v for v in violations(modules))


def cycles(modules: dict[str, set[str]], prefix: str) -> list[list[str]]:
    """Import circles among the modules under ``prefix`` (TYPE_CHECKING imports too)."""
    inside = {m for m in modules if m.startswith(prefix + ".")}
    graph = {m: sorted(n for n in modules[m] if n in inside and n != m) for m in inside}
    found, state, path = [], dict.fromkeys(inside, 0), []  # 0 new, 1 on the path, 2 done

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for name in graph[module]:
            if state[name] == 1:
                found.append([*path[path.index(name) :], name])
            elif state[name] == 0:
                visit(name)
        path.pop()
        state[module] = 2

    for module in sorted(inside):
        if state[module] == 0:
            visit(module)
    return found


def test_the_core_has_no_import_circle() -> None:
    assert cycles(project_modules(), "engine.core") == []


def test_an_import_circle_is_caught() -> None:
    modules = project_modules()
    line = "if TYPE_CHECKING:\n    from engine.core.decision import Decision\n"
    modules["engine.core.catalog"] |= imports_in(line, "engine.core")
    found = cycles(modules, "engine.core")
    assert any({"engine.core.catalog", "engine.core.decision"} <= set(c) for c in found)


LONG = 400


def test_a_long_module_says_why_at_its_top() -> None:
    """Past LONG lines, a module of the product states its reason in its docstring's
    first lines ("(Over 400 lines: ...)"), or is split."""
    unexplained = []
    for package in (*PACKAGES, "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            if text.count("\n") > LONG and "(Over " not in "\n".join(text.split("\n")[:12]):
                unexplained.append(str(path.relative_to(ROOT)))
    assert sorted(unexplained) == []
