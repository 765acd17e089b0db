"""The Open Bandit Dataset sample: real e-commerce logs with propensities.

ZOZOTOWN's logs of two policies on the same 80 fashion items in 3 positions: a uniformly
random one and Bernoulli Thompson Sampling (BTS), 10,000 impressions each in the sample
shipped inside the PyPI wheel ``obp==0.4.1`` (``obp/dataset/obd/``). ``fetch`` downloads
that wheel once with pip (no install) into a cache; nothing is fetched at import time.

``evaluate_obd`` trains LightGBM on the random-policy logs (user features, user-item
affinity, item features, position -> click) and estimates the click rate of the learned
policy (for each impression, the item with the highest predicted click probability) with
IPS, SNIPS and DR, cross-fitted over the two halves of the logs, next to the click rates
the random and the BTS policies realised. With 38 clicks in the random sample, expect
wide intervals: the sample is a demonstration of the method, not a verdict.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

from training.evaluation import Estimate, estimates, mean_interval

WHEEL = "obp-0.4.1-py3-none-any.whl"
ITEMS = 80


def fetch(cache_dir: Path) -> Path:
    """The cached wheel; downloaded with ``pip download --no-deps obp==0.4.1`` if absent.
    Raises OSError when no package registry is reachable."""
    wheel = cache_dir / WHEEL
    if wheel.is_file():
        return wheel
    cache_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "obp==0.4.1",
            "-d",
            str(cache_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0 or not wheel.is_file():
        raise OSError(f"could not download obp==0.4.1: {done.stderr.strip()[-300:]}")
    return wheel


@dataclass(frozen=True)
class Logs:
    """One policy's logged impressions, in time order."""

    item: np.ndarray  # int
    position: np.ndarray  # int, 0-based
    click: np.ndarray  # float 0/1
    propensity: np.ndarray
    user: np.ndarray  # (n, 4) categorical codes
    affinity: np.ndarray  # (n, 80): user-item affinity for every item
    item_features: np.ndarray  # (80, 4): one numeric, three categorical codes


def _codes(values: list[str], vocabulary: dict[str, int]) -> list[int]:
    return [vocabulary.setdefault(v, len(vocabulary)) for v in values]


def load(wheel: Path, policy: str, vocabulary: dict[str, int] | None = None) -> Logs:
    """``policy``: "random" or "bts" (campaign "all"). Categorical values share
    ``vocabulary`` so two policies' logs are coded alike."""
    vocabulary = {} if vocabulary is None else vocabulary
    with zipfile.ZipFile(wheel) as archive:
        base = f"obp/dataset/obd/{policy}/all/"
        rows = list(csv.DictReader(io.StringIO(archive.read(base + "all.csv").decode())))
        items = list(csv.DictReader(io.StringIO(archive.read(base + "item_context.csv").decode())))
    items.sort(key=lambda r: int(r["item_id"]))
    item_features = np.array(
        [
            [
                float(r["item_feature_0"]),
                *_codes([r[f"item_feature_{k}"] for k in (1, 2, 3)], vocabulary),
            ]
            for r in items
        ]
    )
    return Logs(
        item=np.array([int(r["item_id"]) for r in rows]),
        position=np.array([int(r["position"]) - 1 for r in rows]),
        click=np.array([float(r["click"]) for r in rows]),
        propensity=np.array([float(r["propensity_score"]) for r in rows]),
        user=np.array(
            [_codes([r[f"user_feature_{k}"] for k in range(4)], vocabulary) for r in rows]
        ),
        affinity=np.array(
            [[float(r[f"user-item_affinity_{i}"]) for i in range(ITEMS)] for r in rows]
        ),
        item_features=item_features,
    )


def _rows(logs: Logs, index: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Model input for impressions ``index`` paired with ``items``: user features,
    position, item id, the user's affinity to it, the item's features."""
    return np.column_stack(
        [
            logs.user[index],
            logs.position[index],
            items,
            logs.affinity[index, items],
            logs.item_features[items],
        ]
    )


CATEGORICAL = [0, 1, 2, 3, 4, 5, 8, 9, 10]  # user x4, position, item, item categorical x3


@dataclass(frozen=True)
class ObdReport:
    rows: int
    clicks: int
    learned: dict[str, Estimate]  # per impression, cross-fitted on the random logs
    random: Estimate  # realised click rate of the random policy
    bts: Estimate  # realised click rate of Bernoulli Thompson Sampling


def _train(logs: Logs, rows: np.ndarray, seed: int) -> lgb.Booster:
    return lgb.train(
        {
            "objective": "binary",
            "learning_rate": 0.05,
            "num_leaves": 15,
            "min_data_in_leaf": 50,
            "seed": seed,
            "deterministic": True,
            "verbosity": -1,
            "num_threads": 2,
        },
        lgb.Dataset(
            _rows(logs, rows, logs.item[rows]), logs.click[rows], categorical_feature=CATEGORICAL
        ),
        num_boost_round=100,
    )


def evaluate_obd(wheel: Path, *, seed: int = 3) -> ObdReport:
    """Two-fold cross-fitting over time: a model trained on one half of the random logs
    chooses for every impression of the other half; the estimates pool both halves, so
    every impression is evaluated by a model that never saw it."""
    vocabulary: dict[str, int] = {}
    logs = load(wheel, "random", vocabulary)
    bts = load(wheel, "bts", vocabulary)
    n = logs.item.shape[0]
    halves = (np.arange(n // 2), np.arange(n // 2, n))
    target, predicted_logged, predicted_target = (np.empty(n) for _ in range(3))
    for fit, held in (halves, halves[::-1]):
        booster = _train(logs, fit, seed)
        grid = np.repeat(held, ITEMS)
        items = np.tile(np.arange(ITEMS), held.shape[0])
        scores = np.asarray(booster.predict(_rows(logs, grid, items))).reshape(-1, ITEMS)
        choice = scores.argmax(axis=1)
        at = np.arange(held.shape[0])
        target[held] = choice == logs.item[held]
        predicted_logged[held] = scores[at, logs.item[held]]
        predicted_target[held] = scores[at, choice]
    reward, logged_p = logs.click, logs.propensity
    return ObdReport(
        rows=n,
        clicks=int(reward.sum()),
        learned=estimates(reward, logged_p, target, predicted_logged, predicted_target),
        random=mean_interval(reward),
        bts=mean_interval(bts.click),
    )
