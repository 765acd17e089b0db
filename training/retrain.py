"""The scheduled retrain from the logs: everything still relevant, cross-fitted against the
champion on the decisions it made since it was trained, promoted on a bound.
(Over 400 lines: one run's steps, in the order they run.)

One run (`arbiter train --source logs`, or each tick of ``--every``):

1. reads the training set (training/dataset.py): the base rows the first model learnt
   from, the Parquet export and the Redis logs of the last ``training_window_days``, each
   action a row once its answer is known or its channel's window has passed;
2. the *fresh* decisions are those logged since the champion's data ended (its
   ``training["until"]``): the champion never saw them. Too few (under
   ``min_holdout_decisions``) and the run stops there, saying so: nothing new to learn
   or to judge with (so a run with nothing new is idempotent);
3. two challengers are trained on everything except one half of the fresh decisions
   each (halves drawn by a hash of each decision's time), and each judges the half it
   did not see: the paired value lift over the champion and the guardrails
   (training/promotion.py) pool both halves, so every decision is judged by a model
   that never learnt from it;
4. the model that is saved (and promoted when the verdict says so) is trained on
   everything, fresh decisions included: an outcome reported before the run is in it.

Two trainers never promote twice: a run holds a lock in Redis (``arb:trainer:lock``,
with an expiry) and promotes only if the champion it judged against is still the
promoted model.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ConfigurationError
from common.reward import RewardWindows
from engine.adapters import artifact
from engine.adapters.artifact import ModelArtifact
from engine.adapters.lightgbm_scorer import LightGBMScorer
from engine.core import adaptive
from engine.core.model_input import Vocabulary, model_feature_names
from engine.service.registry import shared_models
from engine.settings import Definitions, load_definitions
from feature_store import keys, log_codec, scripts
from feature_store.embedded import running_url
from feature_store.log_reader import read_merged, read_outcomes
from feature_store.redis_client import SyncClient, translated
from training import dataset, monitor
from training.dataset import TrainingSet
from training.job import TrainingOutcome, compatible_champion, save_and_promote
from training.logs import JoinReport
from training.promotion import Guards, Lift, Paired, paired_values
from training.settings import TrainerSettings
from training.train import fit

log = logging.getLogger(__name__)
LOCK_KEY = keys.TRAINER_LOCK
LOCK_SECONDS = 3600  # a run that dies leaves the lock for at most this long


class TrainerBusy(ConfigurationError):
    """Another trainer holds the lock."""


@dataclass(frozen=True)
class Verdict:
    promote: bool
    why: str
    lift: Lift | None = None
    guards: Guards | None = None


@contextmanager
def trainer_lock(client: SyncClient | None) -> Iterator[None]:
    """Holds ``LOCK_KEY`` for the run (nothing without Redis: an export-only run)."""
    if client is None:
        yield
        return
    token = secrets.token_hex(8)
    with translated("taking the trainer lock"):
        taken = client.set(LOCK_KEY, token, nx=True, ex=LOCK_SECONDS)
    if not taken:
        raise TrainerBusy("another trainer is running (it holds the trainer lock); not run")
    try:
        yield
    finally:
        with translated("releasing the trainer lock"):
            client.eval(scripts.RELEASE_LOCK, 1, LOCK_KEY, token)


def train_from_logs(
    settings: TrainerSettings,
    client: SyncClient | None,
    *,
    export: Path | None = None,
    force: bool = False,
    shuffled_labels: bool = False,
) -> tuple[TrainingOutcome, JoinReport]:
    """One run (the module's steps) on the Redis logs of ``client`` and the Parquet
    dataset at ``export`` (either may be absent). ``force`` promotes whatever the
    verdict; ``shuffled_labels`` is a negative control: the models learn from shuffled
    labels (judged on the real ones), and the verdict must refuse them."""
    with trainer_lock(client):
        return _run(settings, client, export, force=force, shuffled=shuffled_labels)


def train_from_export(
    settings: TrainerSettings, dest: Path, *, force: bool = False
) -> tuple[TrainingOutcome, JoinReport]:
    """``train_from_logs`` on the Parquet dataset `arbiter export-logs` wrote, alone."""
    return train_from_logs(settings, None, export=dest, force=force)


def _sources(
    client: SyncClient | None, export: Path | None, start: float
) -> tuple[list[Iterable[Mapping[str, Any]]], list[Mapping[str, Any]]]:
    """The decisions (export first: it holds the older ones) and every outcome."""
    decisions: list[Iterable[Mapping[str, Any]]] = []
    outcomes: list[Mapping[str, Any]] = []
    if export is not None and (export / "decisions").is_dir():
        from training import export as exported  # pyarrow's dataset reader

        decisions.append(dataset.since(exported.exported_decisions(export, since=start), start))
        outcomes.extend(exported.exported_outcomes(export))
    if client is not None:
        outcomes.extend(read_outcomes(client))
        merged = read_merged(client, keys.decision_logs(), log_codec.decode_decision)
        decisions.append(dataset.since(merged, start))
    return decisions, outcomes


def _run(
    settings: TrainerSettings,
    client: SyncClient | None,
    export: Path | None,
    *,
    force: bool,
    shuffled: bool,
) -> tuple[TrainingOutcome, JoinReport]:
    definitions = load_definitions(settings)
    schema, catalog = definitions.schema, definitions.catalog
    names = model_feature_names(schema)
    now = time.time()
    if client is not None and settings.model_registry != "local":
        shared = shared_models(
            settings, settings.redis_url or running_url(settings.embedded_redis_dir)
        )
        if shared is not None:  # the champion is what the registry says (a rollback, too)
            shared.sync()
    champion = compatible_champion(settings, names)
    base_name = str(champion.training.get("base_rows", "")) if champion else ""
    base = dataset.load_base(settings.model_dir, base_name) if base_name else None
    decisions, outcomes = _sources(client, export, now - settings.training_window_days * 86400)
    windows = RewardWindows.of(settings.reward_window_minutes, settings.attribution_hours)
    vocabulary = Vocabulary.from_catalog(catalog, champion.vocabulary if champion else None)
    # Each offer's model watched, from the same pass over the logs (training/monitor.py).
    tally = monitor.Tally(now - settings.monitor_days * 86400, now)
    data = dataset.build(
        schema, catalog, vocabulary, windows, now=now, base=base,
        decisions=[_tapped(source, tally.add) for source in decisions], outcomes=outcomes,
    )  # fmt: skip
    report = data.report
    if client is not None:
        _publish_health(client, tally, outcomes, windows, settings, champion)
    if data.rows < 100 or len(set(data.reward.tolist())) < 2:
        raise ConfigurationError(
            f"not enough labelled decisions to train: {data.rows} rows; {report}"
        )
    cutoff = _champion_cutoff(champion)
    fresh = data.context_ts > cutoff
    if int(fresh.sum()) < settings.min_holdout_decisions and not force:
        raise ConfigurationError(
            f"nothing to judge a new model on: {int(fresh.sum())} answered decisions since"
            f" {champion.version if champion else 'the start'}'s data ended,"
            f" {settings.min_holdout_decisions} needed (ARBITER_MIN_HOLDOUT_DECISIONS); {report}"
        )
    labels = _shuffled(data.reward, settings.training_seed) if shuffled else data.reward
    verdict, metrics = _judge(
        data, labels, fresh, cutoff, champion, vocabulary, definitions, settings
    )
    model = fit(
        data.matrix, labels, np.zeros(data.rows, dtype=bool), names, vocabulary, schema, settings
    )
    info = {
        "source": "+".join(
            s for s, on in (("export", export is not None), ("logs", client is not None)) if on
        ),
        "until": now,
        "window_days": settings.training_window_days,
        "base_rows": base_name,
        "logged_rows": int(data.logged.sum()),
        "judged_decisions": int(fresh.sum()),
        "holdout": "cross-fitted on the decisions since the champion",
        **({"shuffled_labels": True} if shuffled else {}),
    }
    model = replace(
        model, metrics={**model.metrics, **metrics}, training={**model.training, **info}
    )
    promote = verdict.promote or force
    why = verdict.why + ("; forced" if force and not verdict.promote else "")
    outcome = TrainingOutcome(
        model, promote, why, champion.version if champion else None, lift=verdict.lift
    )
    saved = save_and_promote(
        settings, outcome, unless_changed_from=champion.version if champion else None
    )
    if client is not None and champion is not None and saved.promoted:
        fresh_rows = data.logged & (data.decision_ts > cutoff)
        carry = carried(data.matrix[fresh_rows], names, vocabulary, saved.model, champion)
        with translated("handing the online layer to the new model"):
            client.hset(keys.LAYER_CARRY, saved.model.version, json.dumps(carry))
    return saved, report


def carried(
    matrix: np.ndarray,
    names: tuple[str, ...],
    vocabulary: Vocabulary,
    model: ModelArtifact,
    champion: ModelArtifact,
) -> dict[str, Any]:
    """What the online layer needs to carry its corrections from ``champion`` over to
    ``model`` (engine/service/learner.py): per offer, how far the new model's log-odds moved
    from the champion's on the decisions since the champion's data ended, the rows of
    that offer. A correction the new model learnt is then taken off the layer's; one it
    did not learn (its data came too late, or too little of it) stays."""
    if not matrix.shape[0]:
        return {"from": champion.version, "offers": {}}
    new = adaptive.logit(LightGBMScorer(model, use_compiled=False).predict(matrix))
    old = adaptive.logit(
        LightGBMScorer(champion, use_compiled=False).predict(_for_champion(matrix, names, champion))
    )
    column = matrix[:, names.index("offer_id")]
    offers = {}
    for offer, index in vocabulary.offer_ids.items():
        rows = column == index
        if rows.any():
            offers[offer] = round(float((new[rows] - old[rows]).mean()), 6)
    return {"from": champion.version, "offers": offers}


def _publish_health(
    client: SyncClient,
    tally: monitor.Tally,
    outcomes: list[Mapping[str, Any]],
    windows: RewardWindows,
    settings: TrainerSettings,
    champion: ModelArtifact | None,
) -> None:
    """Each offer's model as the promoted one serves it (its holdout AUC the reference):
    the champion already loaded, read again only when the promoted model is another
    schema's."""
    serving = champion
    if serving is None and artifact.current_version(settings.model_dir):
        serving = artifact.load(settings.model_dir)
    health = tally.report(
        outcomes,
        windows,
        model_version=serving.version if serving else "",
        model_auc=float(serving.metrics.get("auc", math.nan)) if serving else math.nan,
    )
    monitor.publish(client, health)


def _tapped(
    decisions: Iterable[Mapping[str, Any]], tap: Callable[[Mapping[str, Any]], None]
) -> Iterator[Mapping[str, Any]]:
    for d in decisions:
        tap(d)
        yield d


def _champion_cutoff(champion: ModelArtifact | None) -> float:
    """When the champion's data ended; -inf without one (every decision is fresh)."""
    if champion is None:
        return -math.inf
    until = champion.training.get("until")
    return float(until) if isinstance(until, int | float) else -math.inf


def _shuffled(labels: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(labels)


def _judge(
    data: TrainingSet,
    labels: np.ndarray,
    fresh: np.ndarray,
    cutoff: float,
    champion: ModelArtifact | None,
    vocabulary: Vocabulary,
    definitions: Definitions,
    settings: TrainerSettings,
) -> tuple[Verdict, dict[str, float]]:
    """Cross-fitting on the fresh decisions: the verdict and the pooled out-of-fold
    metrics (the saved model's)."""
    schema, catalog = definitions.schema, definitions.catalog
    names = model_feature_names(schema)
    # Halves drawn by a hash of each decision's time: fixed for a decision, and blind to
    # any pattern in the traffic (alternating by time put every accept in one half of a
    # feed that alternated accepts and declines).
    fold_of_stamp = {t: _half(t) for t in data.context_ts[fresh].tolist()}
    # A row's fold is its decision's (base rows, and rows of decisions not judged: -1).
    row_fold = np.array([fold_of_stamp.get(t, -1) for t in data.decision_ts.tolist()])
    row_fold[~(data.logged & (data.decision_ts > cutoff))] = -1
    contexts = [c for c, f in zip(data.contexts, fresh.tolist(), strict=True) if f]
    context_fold = [fold_of_stamp[t] for t in data.context_ts[fresh].tolist()]
    paired: list[Paired] = []
    predicted = np.full(data.rows, np.nan)
    champion_scorer = LightGBMScorer(champion) if champion is not None else None
    for fold in (0, 1):
        held = row_fold == fold
        if not held.any():
            continue
        model = fit(data.matrix, labels, held, names, vocabulary, schema, settings)
        scorer = LightGBMScorer(model)
        predicted[held] = scorer.predict(data.matrix[held])
        mine = [c for c, f in zip(contexts, context_fold, strict=True) if f == fold]
        if mine:
            paired.append(
                paired_values(mine, scorer, champion_scorer, catalog, catalog.exploration)
            )
    held = row_fold >= 0
    truth = data.reward[held]  # judged on the real answers, whatever was learnt from
    served = None
    if champion is not None and champion_scorer is not None:
        served = champion_scorer.predict(_for_champion(data.matrix[held], names, champion))
    guards = Guards.measure(truth, predicted[held], served)
    lift = Lift.of(paired) if paired else None
    metrics = {
        "auc": guards.auc,
        "auc_low": guards.auc_low,
        "calibration_error": guards.calibration,
        "test_rows": int(held.sum()),
        "holdout_positives": int(truth.sum()),
    }
    return _verdict(lift, guards, champion, settings), metrics


def _half(ts: float) -> int:
    return zlib.crc32(struct.pack("<d", ts)) & 1


def _for_champion(
    matrix: np.ndarray, names: tuple[str, ...], champion: ModelArtifact
) -> np.ndarray:
    """Rows built with the challenger's vocabulary, as the champion reads them: the
    vocabulary only grows, so an index the champion lacks is a value it never saw."""
    out = matrix.copy()
    for column, known in (
        ("offer_id", len(champion.vocabulary.offer_ids)),
        ("offer_category", len(champion.vocabulary.categories)),
    ):
        j = names.index(column)
        out[out[:, j] >= known, j] = np.nan
    return out


def _verdict(
    lift: Lift | None, guards: Guards, champion: ModelArtifact | None, settings: TrainerSettings
) -> Verdict:
    failures = guards.failures(settings.guard_auc_drop, settings.guard_calibration)
    against = champion.version if champion else "value x lever alone (no promoted model fits)"
    parts = []
    if lift is not None:
        parts.append(
            f"value per decision {lift.challenger} vs {lift.champion} for {against}:"
            f" lift {lift.difference} (paired DR, 95%, {lift.decisions} decisions)"
        )
    parts.append(
        f"AUC on the decisions since the champion {guards.auc:.4f}"
        + (f" vs its {guards.champion_auc:.4f}" if guards.champion_auc is not None else "")
        + f"; calibration error {guards.calibration:.4f}"
        + (
            f" vs {guards.champion_calibration:.4f}"
            if guards.champion_calibration is not None
            else ""
        )
    )
    gain = guards.log_loss_gain
    if gain is not None:
        parts.append(f"log loss gain {gain} (paired, 95%)")
    told = lift is not None and lift.supported
    if lift is not None and not told:
        parts.append(
            f"its value cannot be told from these logs: {lift.unsupported:.0%} of its choices"
            " are offers the logging policy could not show there (it explores too little:"
            " [exploration] in the catalog)"
        )
    beats = told and lift is not None and lift.difference.low > 0
    lower = told and lift is not None and not lift.difference.high > 0
    predicts = (
        settings.promotion_rule == "value-or-prediction" and gain is not None and gain.low > 0
    )
    if champion is None:
        # No model to beat: a model that ranks (the AUC guard) serves unless its value is
        # shown below value x lever's.
        if lower:
            failures.insert(0, "its value is shown lower than value x lever alone")
        else:
            parts.append("no promoted model fits the schema")
    elif beats:
        pass
    elif predicts and not lower:
        # The value lift cannot tell (yet); it answers the champion's own decisions
        # better, beyond the interval, and is not shown to earn less.
        parts.append("promoted on its predictions: its value is not shown lower")
    elif predicts:
        failures.insert(0, "it predicts better, but its value is shown lower")
    elif told:
        failures.insert(0, "the lift's lower bound is not above zero")
    else:
        failures.insert(0, "its value cannot be told and its predictions are not better")
    why = "; ".join(parts)
    if failures:
        return Verdict(False, f"{why}; refused: {'; '.join(failures)}", lift, guards)
    return Verdict(True, why, lift, guards)


def every(
    seconds: float,
    run: Callable[[], None],
    *,
    runs: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Calls ``run`` now and then every ``seconds`` (from one start to the next; a run
    longer than the period starts the next at once), ``runs`` times or for ever. A run
    that raises ``ConfigurationError`` (not enough data, another trainer) is logged and
    the schedule goes on."""
    done = 0
    while runs is None or done < runs:
        started = clock()
        try:
            run()
        except ConfigurationError as exc:
            log.warning("training run skipped: %s", exc)
        done += 1
        if runs is not None and done >= runs:
            return
        time.sleep(max(0.0, started + seconds - clock()))
