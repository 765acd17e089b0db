"""Versioned model artifacts: what training writes and serving loads.

Layout under the model directory::

    <model_dir>/CURRENT                 the promoted version, one line
    <model_dir>/CHALLENGER              optional: "<version> <share>", the model a share
                                        of customers (stable by customer id) is served
    <model_dir>/<version>/model.txt     LightGBM model text
    <model_dir>/<version>/artifact.json features (exact order), categorical columns,
                                        vocabularies, metrics, schema fingerprint,
                                        creation time, training data description
    <model_dir>/<version>/check_rows.npy held-out model rows: a compiled form of the
                                        trees must agree with LightGBM on them
    <model_dir>/<version>/model.o       optional: the trees compiled (compiled.py)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ArtifactMismatch, ConfigurationError
from engine.core.model_input import Vocabulary

CURRENT = "CURRENT"
CHALLENGER = "CHALLENGER"
CHECK_ROWS = "check_rows.npy"


@dataclass(frozen=True)
class ModelArtifact:
    version: str
    model_text: str
    features: tuple[str, ...]
    categorical: tuple[str, ...]
    vocabulary: Vocabulary
    schema_fingerprint: str
    created_at: str  # ISO 8601, UTC
    metrics: Mapping[str, float] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    # Held-out model rows (float64), and where the artifact was loaded from.
    check_rows: np.ndarray | None = field(default=None, compare=False, repr=False)
    folder: Path | None = field(default=None, compare=False)

    def check_features(self, expected: tuple[str, ...]) -> None:
        """Raises ArtifactMismatch unless the model reads exactly ``expected``, in order."""
        if self.features != expected:
            missing = [f for f in expected if f not in self.features]
            extra = [f for f in self.features if f not in expected]
            raise ArtifactMismatch(
                f"model {self.version} does not match the feature schema: "
                f"missing {missing}, unexpected {extra}"
                + ("" if missing or extra else ", same names in another order")
                + "; retrain with `arbiter train`"
            )


def new_version(model_text: str, now: datetime | None = None) -> str:
    moment = now or datetime.now(UTC)
    return f"{moment:%Y%m%dT%H%M%S}-{hashlib.sha256(model_text.encode()).hexdigest()[:6]}"


def save(model_dir: Path, artifact: ModelArtifact, *, promote: bool = True) -> Path:
    """Writes the artifact (atomically: a finished directory is renamed into place). A
    version is its model: saving the same model text under a version already saved keeps
    the first one (and promotes it when asked)."""
    target = model_dir / artifact.version
    if (target / "model.txt").is_file():
        if (target / "model.txt").read_text() != artifact.model_text:
            raise ConfigurationError(f"model version {artifact.version} exists with another model")
        if promote:
            set_current(model_dir, artifact.version)
        return target
    staging = model_dir / f".{artifact.version}.tmp"
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "model.txt").write_text(artifact.model_text)
    meta = {
        "version": artifact.version,
        "features": list(artifact.features),
        "categorical": list(artifact.categorical),
        "vocabulary": {
            "offer_ids": dict(artifact.vocabulary.offer_ids),
            "categories": dict(artifact.vocabulary.categories),
        },
        "schema_fingerprint": artifact.schema_fingerprint,
        "created_at": artifact.created_at,
        "metrics": dict(artifact.metrics),
        "training": dict(artifact.training),
    }
    (staging / "artifact.json").write_text(json.dumps(meta, indent=2) + "\n")
    if artifact.check_rows is not None:
        np.save(staging / CHECK_ROWS, np.asarray(artifact.check_rows, dtype=np.float64))
    staging.rename(target)
    if promote:
        set_current(model_dir, artifact.version)
    return target


def set_current(model_dir: Path, version: str) -> None:
    if not (model_dir / version / "artifact.json").is_file():
        raise ConfigurationError(f"no model version {version} in {model_dir}")
    tmp = model_dir / f".{CURRENT}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, model_dir / CURRENT)


def versions(model_dir: Path, *, skip_unreadable: bool = False) -> list[ModelArtifact]:
    """Every saved artifact, oldest first (``skip_unreadable``: leave out the ones that
    cannot be read instead of raising)."""
    if not model_dir.is_dir():
        return []
    found = []
    for folder in model_dir.iterdir():
        if not (folder / "artifact.json").is_file():
            continue
        try:
            found.append(load(model_dir, folder.name))
        except ConfigurationError:
            if not skip_unreadable:
                raise
    return sorted(found, key=lambda a: (a.created_at, a.version))


def set_challenger(model_dir: Path, version: str | None, share: float = 0.1) -> None:
    """Serves ``version`` to ``share`` of the customers (None: stop the challenge)."""
    if version is None:
        (model_dir / CHALLENGER).unlink(missing_ok=True)
        return
    if not (model_dir / version / "artifact.json").is_file():
        raise ConfigurationError(f"no model version {version} in {model_dir}")
    if not 0 < share < 1:
        raise ConfigurationError(f"challenger share {share} must be between 0 and 1")
    tmp = model_dir / f".{CHALLENGER}.tmp"
    tmp.write_text(f"{version} {share}\n")
    os.replace(tmp, model_dir / CHALLENGER)


def challenger(model_dir: Path) -> tuple[str, float] | None:
    """The challenger version and its share of customers, if a challenge is on."""
    try:
        version, share = (model_dir / CHALLENGER).read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    return version, float(share)


def current_version(model_dir: Path) -> str | None:
    try:
        return (model_dir / CURRENT).read_text().strip() or None
    except FileNotFoundError:
        return None


def load(model_dir: Path, version: str | None = None) -> ModelArtifact:
    """Loads ``version`` (default: the promoted one)."""
    version = version or current_version(model_dir)
    if version is None:
        raise ConfigurationError(f"no promoted model in {model_dir}; run `arbiter train`")
    folder = model_dir / version
    try:
        meta = json.loads((folder / "artifact.json").read_text())
        model_text = (folder / "model.txt").read_text()
        return ModelArtifact(
            version=meta["version"],
            model_text=model_text,
            features=tuple(meta["features"]),
            categorical=tuple(meta["categorical"]),
            vocabulary=Vocabulary(
                offer_ids=meta["vocabulary"]["offer_ids"],
                categories=meta["vocabulary"]["categories"],
            ),
            schema_fingerprint=meta["schema_fingerprint"],
            created_at=meta["created_at"],
            metrics=meta.get("metrics", {}),
            training=meta.get("training", {}),
            check_rows=(
                np.load(folder / CHECK_ROWS, allow_pickle=False)
                if (folder / CHECK_ROWS).is_file()
                else None
            ),
            folder=folder,
        )
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"cannot load model {version} from {folder}: {exc!r}") from exc


def folder_files(model_dir: Path, version: str) -> dict[str, bytes]:
    """Every file of a saved version, by name (what a shared registry stores)."""
    folder = model_dir / version
    if not (folder / "artifact.json").is_file():
        raise ConfigurationError(f"no model version {version} in {model_dir}")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def install(model_dir: Path, version: str, files: Mapping[str, bytes]) -> bool:
    """Writes a version from its files (a registry's copy) unless it is there already, as
    ``save`` does: a finished directory renamed into place. True when it wrote."""
    target = model_dir / version
    if (target / "artifact.json").is_file():
        return False
    staging = model_dir / f".{version}.tmp"
    staging.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if "/" in name or name.startswith("."):
            raise ConfigurationError(f"model {version}: unexpected file name {name!r}")
        (staging / name).write_bytes(content)
    staging.rename(target)
    return True
