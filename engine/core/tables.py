"""Checks every table of the catalog makes of its keys and named values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from common.errors import ConfigurationError


def known(raw: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """A key the catalog does not know is a mistake (``valid_untill``), not a silence."""
    unknown = set(raw) - set(allowed)
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")


def names(values: Any, allowed: tuple[str, ...], where: str) -> frozenset[str]:
    """``values`` as names, each one of ``allowed``."""
    out = frozenset(str(v) for v in values)
    unknown = out - set(allowed)
    if unknown:
        raise ConfigurationError(f"{where}: unknown {sorted(unknown)}; allowed {list(allowed)}")
    return out
