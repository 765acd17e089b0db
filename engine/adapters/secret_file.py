"""The decision-id secrets on disk: one per line, the first signs and all verify
(engine/core/decision_id.py). With no file yet, one is created holding a random secret,
readable by its owner only, so a single server works out of the box and replicas that
share the data directory (or are given the same file) verify each other's ids."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from common.errors import ConfigurationError
from engine.core.decision_id import MIN_SECRET_BYTES


def load_or_create(path: Path) -> list[bytes]:
    """The secrets in ``path`` (blank lines and ``#`` comments skipped)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(
                "# Decision-id secrets: the first signs, all verify. To rotate, put a new\n"
                "# one first and keep the old one until its decisions' outcomes are in.\n"
                f"{secrets.token_hex(32)}\n"
            )
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigurationError(f"cannot read decision secrets {path}: {exc.strerror}") from exc
    found = [ln.strip().encode() for ln in lines if ln.strip() and not ln.startswith("#")]
    if not found or any(len(s) < MIN_SECRET_BYTES for s in found):
        raise ConfigurationError(
            f"decision secrets {path}: at least one secret of {MIN_SECRET_BYTES}+ characters"
        )
    return found
