"""Training jobs: train on simulated decisions, evaluate against the promoted model, and
promote only a better one; the pieces every training run shares (the outcome, compiling,
the champion).

``train_demo`` learns from simulated logs of the demo world and keeps them as the base
rows every retrain from the logs learns from too (training/retrain.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from engine.adapters import artifact, compiled
from engine.adapters.artifact import ModelArtifact
from engine.core.model_input import model_feature_names
from engine.service.registry import shared_models
from engine.settings import Definitions, load_definitions
from feature_store.embedded import running_url
from training import dataset
from training.evaluation import Estimate
from training.promotion import Lift
from training.rows import TrainingRows
from training.settings import TrainerSettings
from training.synthetic_logs import simulate_logs
from training.train import evaluate, train
from training.world import generate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingOutcome:
    model: ModelArtifact
    promoted: bool
    why: str
    champion: str | None = None  # the version promoted before, when it was compared
    champion_metrics: Mapping[str, float] = field(default_factory=dict)
    # policy -> estimator -> estimate
    estimates: Mapping[str, Mapping[str, Estimate]] = field(default_factory=dict)
    lift: Lift | None = None  # from the logs: the challenger's value over the champion's


def train_demo(
    settings: TrainerSettings, *, progress: bool = True, force: bool = False
) -> TrainingOutcome:
    """Simulates logs in the demo world, trains and saves the artifact, and promotes it
    when it beats the promoted model by ``settings.promote_margin`` (AUC, same holdout),
    when there is none that fits the schema, or when ``force``."""
    definitions = load_definitions(settings)
    world = generate(settings.demo_customers, settings.world_seed)
    # Fresh logs each run (the seed is kept in the artifact): a champion is then compared
    # on decisions it was never trained on.
    seed = settings.simulation_seed or time.time_ns() % 2**31
    logs = simulate_logs(
        world,
        definitions.schema,
        definitions.catalog,
        definitions.stage_rules,
        rows=settings.train_rows,
        seed=seed,
        progress=progress,
    )
    # Kept: every retrain from the logs learns from these rows too.
    base = f"simulated-{settings.world_seed}-{seed}-{logs.rows}"
    dataset.save_base(settings.model_dir, base, logs)
    info = {"simulation_seed": seed, "base_rows": base}
    return train_and_promote(logs, definitions, settings, info, force=force)


def train_and_promote(
    rows: TrainingRows,
    definitions: Definitions,
    settings: TrainerSettings,
    info: Mapping[str, object],
    *,
    force: bool = False,
) -> TrainingOutcome:
    """Trains, saves the artifact, and promotes it when it beats the promoted model by
    ``settings.promote_margin`` (AUC on the same holdout), when no promoted model fits the
    schema, or when ``force``. (Training from the logs promotes on a bound instead:
    training/retrain.py.)"""
    return save_and_promote(settings, _judge(rows, definitions, settings, info, force=force))


def save_and_promote(
    settings: TrainerSettings, outcome: TrainingOutcome, *, unless_changed_from: str | None = None
) -> TrainingOutcome:
    """Saves the model, and promotes it when ``outcome.promoted``: compiled first (servers
    swap in the compiled form from the start), and only if the promoted version is still
    ``unless_changed_from`` when given (another trainer may have promoted meanwhile)."""
    folder = artifact.save(settings.model_dir, outcome.model, promote=False)
    outcome = replace(outcome, model=replace(outcome.model, folder=folder))
    if outcome.promoted and unless_changed_from is not None:
        current = artifact.current_version(settings.model_dir)
        if current != unless_changed_from:
            outcome = replace(
                outcome,
                promoted=False,
                why=f"{outcome.why}; not promoted: {current} was promoted while this model"
                f" was judged against {unless_changed_from}",
            )
    if outcome.promoted:
        if settings.compile_trees:
            compile_trees(outcome.model)
        artifact.set_current(settings.model_dir, outcome.model.version)
    # Every replica sees it, when the registry is shared: published whole (compiled form
    # included), then promoted.
    shared = shared_models(settings, settings.redis_url or running_url(settings.embedded_redis_dir))
    if shared is not None:
        shared.publish(outcome.model.version)
        if outcome.promoted:
            shared.promote(outcome.model.version)
    return outcome


def compile_trees(model: ModelArtifact) -> None:
    """Compiles ``model``'s trees for serving; a failure leaves it on LightGBM, said."""
    try:
        done = compiled.compile_artifact(model)
    except Exception as exc:  # the model serves uncompiled: slower, not wrong
        log.warning("model %s: trees not compiled, serving uses LightGBM: %s", model.version, exc)
        return
    log.info(
        "model %s: trees compiled in %.1f s (agree with LightGBM to %.1g on %d rows)",
        model.version,
        done.seconds,
        done.max_abs_diff,
        done.rows,
    )


def _judge(
    rows: TrainingRows,
    definitions: Definitions,
    settings: TrainerSettings,
    info: Mapping[str, object],
    *,
    force: bool,
) -> TrainingOutcome:
    """A new model trained on ``rows``, and whether it should be promoted (by AUC)."""
    names = model_feature_names(definitions.schema)
    champion = compatible_champion(settings, names)
    model = train(
        rows,
        definitions.schema,
        definitions.catalog,
        settings,
        previous=champion.vocabulary if champion else None,
    )
    model = replace(model, training={**model.training, **info})
    if champion is None:
        outcome = TrainingOutcome(model, True, "no promoted model fits the schema")
    else:
        scores = evaluate(champion, rows, definitions.schema, definitions.catalog, settings)
        gain = model.metrics["auc"] - scores["auc"]
        positives = int(model.metrics["holdout_positives"])
        enough = positives >= settings.min_holdout_positives
        better = enough and gain >= settings.promote_margin
        why = (
            f"AUC {model.metrics['auc']:.4f} vs {scores['auc']:.4f} for {champion.version}"
            f" ({gain:+.4f}, margin {settings.promote_margin:g})"
            + (
                ""
                if enough
                else f"; holdout too small to tell: {positives} positives,"
                f" {settings.min_holdout_positives} needed"
            )
        )
        outcome = TrainingOutcome(
            model,
            better or force,
            why + ("" if better else "; forced" if force else ""),
            champion.version,
            scores,
        )
    return outcome


def compatible_champion(
    settings: TrainerSettings, features: tuple[str, ...]
) -> ModelArtifact | None:
    if artifact.current_version(settings.model_dir) is None:
        return None
    champion = artifact.load(settings.model_dir)
    return champion if champion.features == features else None
