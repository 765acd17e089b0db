"""The layers, as the tree shows them, hold: every import points down.

    common                       imports nothing of the project
    feature_store                common
    engine.core                  common, feature_store's schema, keys and records
    engine.adapters              + engine.core
    engine.service               + engine.adapters
    engine.api                   + engine.service
    engine.clients               + engine.api (proto helpers), settings
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
    (("feature_store",), ("engine", "training", "arbiter", "grpc", "lightgbm")),
    (("engine",), ("training",)),
    (
        ("engine.core",),
        (
            "engine.adapters",
            "engine.service",
            "engine.api",
            "engine.clients",
            "engine.settings",
            "feature_store.redis_store",
            "feature_store.redis_client",
            "feature_store.loader",
            "feature_store.log_reader",
            "feature_store.embedded",
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
    (("engine.api",), ("engine.clients",)),
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
        ("feature_store.store", "from engine.core import decision", "imports engine.core"),
        ("engine.core.decision", "import grpc", "imports grpc"),
        ("engine.core.scoring", "import lightgbm as lgb", "imports lightgbm"),
        ("engine.clients.cli.admin", "from training import job", "imports training"),
        ("engine.service.application", "from engine.api import proto", "imports engine.api"),
    ],
)
def test_a_back_arrow_is_caught(module: str, line: str, expected: str) -> None:
    modules = project_modules()
    modules[module] = modules[module] | imports_in(line, module.rpartition(".")[0])
    assert any(f"{module} {expected}" in v for v in violations(modules))
