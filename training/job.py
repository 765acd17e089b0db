"""Training jobs: train on simulated or logged decisions, evaluate against the promoted
model, and promote only a better one.

``train_demo`` learns from simulated logs of the demo world; ``train_from_logs`` from the
decision and outcome logs in Redis (``train_from_export``: as exported to Parquet), and
also estimates off-policy what the new model's policy, the current one's, value-only and
random would earn.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common.errors import ConfigurationError
from common.vocabulary import POSITIVE_OUTCOMES
from engine.adapters import artifact, compiled
from engine.adapters.artifact import ModelArtifact
from engine.adapters.lightgbm_scorer import LightGBMScorer
from engine.core.model_input import model_feature_names
from engine.core.scoring import Scorer
from engine.service.registry import shared_models
from engine.settings import Definitions, load_definitions
from feature_store.embedded import running_url
from feature_store.log_reader import read_logs
from feature_store.redis_client import SyncClient
from training.evaluation import Estimate, contexts_from_logs, evaluate_policies
from training.logs import JoinReport, join_logs, rewarder
from training.rows import TrainingRows
from training.settings import TrainerSettings
from training.synthetic_logs import simulate_logs
from training.train import evaluate, train
from training.world import generate

log = logging.getLogger(__name__)
# Off-policy estimates are made on at most this many of the latest logged decisions: their
# contexts are held in memory, and 50,000 already give intervals of a few percent.
OPE_MAX_DECISIONS = 50_000


@dataclass(frozen=True)
class TrainingOutcome:
    model: ModelArtifact
    promoted: bool
    why: str
    champion: str | None = None  # the version promoted before, when it was compared
    champion_metrics: Mapping[str, float] = field(default_factory=dict)
    # policy -> estimator -> estimate (training from logs only)
    estimates: Mapping[str, Mapping[str, Estimate]] = field(default_factory=dict)


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
    return train_and_promote(logs, definitions, settings, {"simulation_seed": seed}, force=force)


def train_from_logs(
    settings: TrainerSettings, client: SyncClient, *, force: bool = False
) -> tuple[TrainingOutcome, JoinReport]:
    """Trains on the decision and outcome logs in Redis (features as served), evaluated
    on the latest 20% of decisions (a time-based holdout), and promotes as ``train_demo``."""
    decisions, outcomes = read_logs(client)
    return _train_on_logs(
        settings,
        lambda: iter(decisions),
        outcomes,
        lambda until, share: holdout_decisions(decisions, until, share),
        {"source": "logs"},
        force=force,
    )


def train_from_export(
    settings: TrainerSettings, dest: Path, *, force: bool = False
) -> tuple[TrainingOutcome, JoinReport]:
    """``train_from_logs`` on the Parquet dataset `arbiter export-logs` wrote to ``dest``,
    read a day at a time: what stays in memory is the training rows and the outcomes,
    not the logs."""
    from training import export  # pyarrow: this job only

    def holdout(until: float, share: float) -> Sequence[Mapping[str, Any]]:
        stamps = export.exported_stamps(dest)
        matured = stamps[stamps <= until]
        kept = int(matured.shape[0] * share)
        if kept == 0:
            return []
        since = float(matured[matured.shape[0] - kept])
        return [d for d in export.exported_decisions(dest, since=since) if d["ts"] <= until]

    return _train_on_logs(
        settings,
        lambda: export.exported_decisions(dest),
        export.exported_outcomes(dest),
        holdout,
        {"source": "export"},
        force=force,
    )


def _train_on_logs(
    settings: TrainerSettings,
    decisions: Callable[[], Iterable[Mapping[str, Any]]],
    outcomes: Sequence[Mapping[str, Any]],
    holdout: Callable[[float, float], Sequence[Mapping[str, Any]]],
    info: Mapping[str, object],
    *,
    force: bool,
) -> tuple[TrainingOutcome, JoinReport]:
    """Trains on logged ``decisions`` (oldest first, read once) joined with ``outcomes``;
    ``holdout(until, share)`` gives the latest ``share`` of the decisions made by
    ``until``, where the off-policy estimates are made (at most ``OPE_MAX_DECISIONS``
    of them, the latest)."""
    definitions = load_definitions(settings)
    window = settings.attribution_hours * 3600
    now = time.time()
    rows, report = join_logs(
        decisions(), outcomes, definitions.schema, window_seconds=window, until=now
    )
    if rows.rows < 100 or len(set(rows.reward.tolist())) < 2:
        raise ConfigurationError(
            f"not enough labelled decisions to train: {rows.rows} rows from {report.used} "
            f"decisions older than {settings.attribution_hours:g} h "
            f"({report.too_recent} too recent, {report.degraded} degraded)"
        )
    info = {**info, "attribution_hours": settings.attribution_hours, "until": now}
    champion = _compatible_champion(settings, model_feature_names(definitions.schema))
    # Off-policy estimates of the new model's policy and the alternatives, on the decisions
    # of the holdout (the latest ones), which the new model did not learn from.
    latest = holdout(now - window, settings.holdout)
    contexts = contexts_from_logs(
        latest[-OPE_MAX_DECISIONS:],
        rewarder(outcomes, window, POSITIVE_OUTCOMES),
        definitions.schema,
        definitions.catalog,
    )
    del latest
    catalog = definitions.catalog

    def off_policy(model: ModelArtifact) -> Mapping[str, Mapping[str, Estimate]]:
        if not contexts:
            return {}
        new = LightGBMScorer(model)
        models: dict[str, Scorer] = {"new": new}
        if champion is not None:
            models["current"] = LightGBMScorer(champion)
        return evaluate_policies(contexts, models, catalog, new, catalog.exploration)

    outcome = train_and_promote(
        rows, definitions, settings, info, by_time=True, force=force, off_policy=off_policy
    )
    return outcome, report


def holdout_decisions(
    decisions: Sequence[Mapping[str, Any]], until: float, share: float
) -> Sequence[Mapping[str, Any]]:
    """The latest ``share`` of the decisions made by ``until`` (in log order): where a model
    trained from the logs is evaluated, off-policy too."""
    matured = [d for d in decisions if d["ts"] <= until]
    return matured[len(matured) - int(len(matured) * share) :]


def train_and_promote(
    rows: TrainingRows,
    definitions: Definitions,
    settings: TrainerSettings,
    info: Mapping[str, object],
    *,
    by_time: bool = False,
    force: bool = False,
    off_policy: Callable[[ModelArtifact], Mapping[str, Mapping[str, Estimate]]] | None = None,
) -> TrainingOutcome:
    """Trains, saves the artifact, and promotes it when it beats the promoted model by
    ``settings.promote_margin`` (AUC on the same holdout), when no promoted model fits the
    schema, or when ``force``. With ``off_policy`` (policy -> estimator -> estimate), the
    new policy's SNIPS estimate must also be known to within
    ``settings.promote_max_ope_halfwidth`` of its value."""
    outcome = _judge(rows, definitions, settings, info, by_time=by_time, force=force)
    if off_policy is not None:
        outcome = replace(outcome, estimates=off_policy(outcome.model))
        snips = outcome.estimates.get("new", {}).get("snips")
        if outcome.promoted and outcome.champion is not None and not force and snips:
            half = (snips.high - snips.low) / 2
            # no rewarded decision, or no overlap at all (nan): nothing can be told
            relative = half / snips.value if snips.value > 0 else math.inf
            if not relative <= settings.promote_max_ope_halfwidth:
                outcome = replace(
                    outcome,
                    promoted=False,
                    why=f"{outcome.why}; the new policy's off-policy estimate is too uncertain:"
                    f" {snips} is +/-{relative:.0%}, at most"
                    f" {settings.promote_max_ope_halfwidth:.0%} to promote",
                )
    # Compiled before it is promoted: servers swap in the compiled form from the start.
    folder = artifact.save(settings.model_dir, outcome.model, promote=False)
    outcome = replace(outcome, model=replace(outcome.model, folder=folder))
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
    by_time: bool,
    force: bool,
) -> TrainingOutcome:
    """A new model trained on ``rows``, and whether it should be promoted (by AUC)."""
    model = train(rows, definitions.schema, definitions.catalog, settings, by_time=by_time)
    model = replace(model, training={**model.training, **info})
    champion = _compatible_champion(settings, model.features)
    if champion is None:
        outcome = TrainingOutcome(model, True, "no promoted model fits the schema")
    else:
        scores = evaluate(
            champion, rows, definitions.schema, definitions.catalog, settings, by_time=by_time
        )
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


def _compatible_champion(
    settings: TrainerSettings, features: tuple[str, ...]
) -> ModelArtifact | None:
    if artifact.current_version(settings.model_dir) is None:
        return None
    champion = artifact.load(settings.model_dir)
    return champion if champion.features == features else None
