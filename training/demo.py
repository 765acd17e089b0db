"""The demo world end to end: generate profiles, load them, train a first model.

Each step is skipped when its result is already there, so `make run` is fast the
second time: the profile file exists, Redis holds that exact file (by content hash and
schema), and a model is promoted.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from common.errors import ArtifactMismatch
from engine.adapters import artifact
from engine.core.model_input import model_feature_names
from engine.settings import load_definitions
from feature_store import keys
from feature_store.loader import load_file
from feature_store.redis_client import SyncClient, translated
from training.job import train_demo
from training.settings import TrainerSettings
from training.world import generate

log = logging.getLogger(__name__)


def profiles_path(settings: TrainerSettings, fingerprint: str) -> Path:
    """The demo's profile file, named by its size, seed and the ``fingerprint`` of the
    schema it was written for: a schema that gains a feature writes a new file, not loads
    an old one without it."""
    return (
        settings.data_dir
        / "demo"
        / f"customers-{settings.demo_customers}-{settings.world_seed}-{fingerprint}.jsonl"
    )


def ensure_profiles_file(settings: TrainerSettings, fingerprint: str) -> Path:
    path = profiles_path(settings, fingerprint)
    if not path.exists():
        log.info("generating %d demo customers into %s", settings.demo_customers, path)
        generate(settings.demo_customers, settings.world_seed).write_profiles(path)
    return path


def ensure_loaded(settings: TrainerSettings, client: SyncClient, *, progress: bool = True) -> bool:
    """Loads the demo profiles unless Redis already holds them; True when it loaded."""
    definitions = load_definitions(settings)
    path = ensure_profiles_file(settings, definitions.schema.fingerprint)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with translated("reading what was loaded"):
        meta = client.hgetall(keys.LOAD_META)
    if (
        meta.get(b"source_sha256") == digest.encode()
        and meta.get(b"schema") == definitions.schema.fingerprint.encode()
    ):
        return False
    report = load_file(client, definitions.schema, path, progress=progress)
    log.info(
        "loaded %d profiles in %.1fs (%.0f/s)", report.rows, report.seconds, report.rows_per_second
    )
    return True


def ensure_model(settings: TrainerSettings, *, progress: bool = True) -> None:
    """Trains a model when none is promoted, or when the promoted one was trained on
    other features than the schema's (the demo may retrain on its own)."""
    if artifact.current_version(settings.model_dir) is None:
        log.info("no model yet: training one on simulated logs")
    else:
        expected = model_feature_names(load_definitions(settings).schema)
        try:
            artifact.load(settings.model_dir).check_features(expected)
            return
        except ArtifactMismatch as exc:
            log.info("retraining: %s", exc)
    model = train_demo(settings, progress=progress).model
    log.info(
        "model %s: AUC %.3f, log loss %.4f",
        model.version,
        model.metrics["auc"],
        model.metrics["log_loss"],
    )
