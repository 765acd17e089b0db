"""The online layer: per offer, a Bayesian correction of the batch model's log-odds,
learnt from every outcome between retrains (the learner: engine/service/learner.py).
(Over 400 lines: the posterior's updates, its sanity bounds and its stored form belong
together.)

For a candidate the batch model scores ``p``, with log-odds ``z``, for a customer whose
context features (a few of the schema's, standardised: ``Context``) are ``x``, the layer says

    log-odds = z + w0 + w1 * (z - CENTRE) + v . x

where ``(w0, w1, v)`` is the offer's posterior under the serving model: a Gaussian with a
diagonal precision (Chapelle and Li 2011's Laplace approximation of an online logistic
regression). ``w0`` moves the offer's level, ``w1`` its calibration (how far the model's
spread is to be trusted), ``v`` whom it suits, where the model does not know (a new offer:
the model scores it as any offer of its category). Serving uses the posterior mean for the
propensity it shows and ranks by; Thompson sampling (arbitration.py) draws from it, so
exploration goes where the layer is unsure.

A model's prior for an offer follows from its evidence: the training rows and positives it
had of that offer (``ModelEvidence``, in the artifact). An offer the model learnt from
starts narrow (as many rows as the model had, up to ``MAX_PRECISION``); an offer it never
saw starts wide (``NEW_SD``), centred, when ``Ramp.similar`` says so, on the layer's level
for the offers of its category. A new offer is ramped: while its positives (the model's and
the layer's) are fewer than ``Ramp.mature_positives``, it may take a slot in only a share of
the decisions it is eligible for, rising from ``Ramp.start_share`` with each positive.

Pure: the posteriors arrive as a published ``Layer``; ``View`` holds its arrays for one
catalog and one model, built once per change (no Redis call per decision).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The log-odds the slope pivots on: an offer's level moves with w0 at a 10% propensity.
CENTRE = math.log(0.1 / 0.9)
# The prior of an offer the model never saw: standard deviations in log-odds of the level,
# the slope and each context weight (per standard deviation of its feature).
NEW_SD = (0.6, 0.25, 0.2)
# Sanity bounds: a correction's mean stays within +-MAX_SHIFT log-odds, and no posterior is
# narrower than MIN_SD (level, slope; its precision at most MAX_PRECISION): the layer keeps
# adapting, an offer's last ~500 examples (at a 10% response rate) weigh as much as all
# before them. The slope is held closer: it multiplies log-odds 1-2 away from the centre.
MAX_SHIFT = 3.0
MIN_SD = (0.15, 0.04, 0.04)
MAX_PRECISION = tuple(1.0 / sd**2 for sd in MIN_SD)
CLIP_X = 5.0  # a standardised context feature beyond +-5 counts as 5
_CLIP = 1e-6


def _kind(i: int) -> int:
    """0 level, 1 slope, 2 a context weight: the bounds of dimension ``i``."""
    return min(i, 2)


@dataclass(frozen=True, slots=True)
class Cell:
    """One offer's posterior under one model: mean and diagonal precision of (w0, w1, v...),
    with the examples and positives the layer counted."""

    mean: tuple[float, ...]
    precision: tuple[float, ...]
    examples: float = 0.0
    positives: float = 0.0

    def to_json(self) -> list[float]:
        return [*self.mean, *self.precision, round(self.examples, 3), round(self.positives, 3)]

    @classmethod
    def from_json(cls, raw: Sequence[float]) -> Cell:
        values = [float(v) for v in raw]
        d = (len(values) - 2) // 2
        if d < 2 or len(values) != 2 * d + 2:
            raise ValueError(f"a posterior of {len(values)} numbers")
        cell = cls(tuple(values[:d]), tuple(values[d : 2 * d]), values[-2], values[-1])
        return cell.bounded()

    def bounded(self) -> Cell:
        """Within the sanity bounds (NaN or infinite values become the bounds' edges)."""
        mean = tuple(float(np.clip(np.nan_to_num(m), -MAX_SHIFT, MAX_SHIFT)) for m in self.mean)
        precision = tuple(
            float(
                np.clip(
                    np.nan_to_num(q, nan=1.0),
                    1.0 / NEW_SD[_kind(i)] ** 2,
                    MAX_PRECISION[_kind(i)],
                )
            )
            for i, q in enumerate(self.precision)
        )
        return Cell(mean, precision, max(self.examples, 0.0), max(self.positives, 0.0))


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a model learnt of one offer: its training rows and positives."""

    rows: int
    positives: int


ModelEvidence = Mapping[str, Evidence]
# What a model trained before models kept their evidence is taken to know of an offer.
KNOWN = Evidence(10_000, 1_000)


def evidence_from(raw: Mapping[str, Any] | None) -> dict[str, Evidence]:
    """An artifact's ``training["offers"]`` ({offer: [rows, positives]})."""
    return {str(o): Evidence(int(v[0]), int(v[1])) for o, v in (raw or {}).items()}


def prior(evidence: Evidence | None, level: float = 0.0, context: int = 0) -> Cell:
    """The layer's starting point for an offer under a model with ``evidence`` of it, with
    ``context`` features: centred on no correction (``level`` for an offer the model never
    saw), as narrow as the model's rows of it justify (the information a logistic fit had of
    that offer's level; the slope and whom it suits, held closer)."""
    d = 2 + context
    if evidence is None or evidence.rows <= 0:
        widths = [1.0 / NEW_SD[_kind(i)] ** 2 for i in range(d)]
        return Cell((level,) + (0.0,) * (d - 1), tuple(widths))
    rate = min(max(evidence.positives / evidence.rows, 0.01), 0.99)
    q = evidence.rows * rate * (1.0 - rate)
    return Cell((0.0,) * d, (q,) + (4.0 * q,) * (d - 1)).bounded()


def starting(
    offer: str,
    category_of: Mapping[str, str],
    cells: Mapping[str, Cell],
    evidence: ModelEvidence,
    context: int,
    *,
    similar: bool = True,
) -> Cell:
    """An offer's posterior before the layer learnt anything of it under a model: its
    ``prior``; an offer the model never saw starts, when ``similar``, at the average level
    the layer learnt for the offers of its category the model knows."""
    known = evidence.get(offer)
    level = 0.0
    if known is None and similar:
        category = category_of.get(offer)
        levels = [
            c.mean[0]
            for o, c in cells.items()
            if o != offer and o in evidence and category_of.get(o) == category
        ]
        level = float(np.mean(levels)) if levels else 0.0
    return prior(known, level, context)


@dataclass(frozen=True)
class Context:
    """The context features the layer learns whom an offer suits from: schema features by
    index, standardised by the model's training statistics (``mean``, ``scale``), for logged
    features of schema ``names_id``."""

    names: tuple[str, ...]
    index: tuple[int, ...]
    mean: np.ndarray
    scale: np.ndarray
    names_id: str = ""

    @classmethod
    def of(
        cls,
        wanted: Sequence[str],
        schema_names: Sequence[str],
        stats: Mapping[str, Sequence[float]],
        names_id: str = "",
    ) -> Context:
        """The features of ``wanted`` that the model has statistics of."""
        kept = [n for n in wanted if n in stats and n in schema_names]
        return cls(
            tuple(kept),
            tuple(list(schema_names).index(n) for n in kept),
            np.array([float(stats[n][0]) for n in kept]),
            np.array([max(float(stats[n][1]), 1e-6) for n in kept]),
            names_id,
        )

    def __len__(self) -> int:
        return len(self.index)

    def vector(self, features: np.ndarray) -> np.ndarray:
        """``features`` (schema order; rows of them too) as the layer's context: a missing
        value (NaN) counts as the average."""
        x = features[..., self._columns].astype(np.float64)  # a copy: worked in place
        x -= self.mean
        x /= self.scale
        np.clip(x, -CLIP_X, CLIP_X, out=x)
        missing = np.isnan(x)
        if missing.any():
            x[missing] = 0.0
        return x

    @functools.cached_property
    def _columns(self) -> np.ndarray:
        return np.array(self.index, dtype=np.intp)

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "index": list(self.index),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "names_id": self.names_id,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Context:
        return cls(
            tuple(raw["names"]),
            tuple(int(i) for i in raw["index"]),
            np.array(raw["mean"], dtype=np.float64),
            np.array(raw["scale"], dtype=np.float64),
            str(raw.get("names_id", "")),
        )


NO_CONTEXT = Context((), (), np.zeros(0), np.ones(0))


@dataclass(frozen=True)
class Ramp:
    """How a new offer is brought in (the catalog's ``[adaptive]`` table)."""

    start_share: float = 0.5  # of its eligible decisions, with no positive yet
    mature_positives: float = 20.0  # positives (the model's and the layer's) to serve freely
    similar: bool = True  # a new offer starts at its category's level

    def share(self, positives: np.ndarray) -> np.ndarray:
        grown = self.start_share + (1.0 - self.start_share) * positives / self.mature_positives
        return np.minimum(grown, 1.0)


@dataclass(frozen=True)
class Layer:
    """The learner's posteriors as published: per model version, per offer."""

    version: int  # the publication's number, rising
    updated: float  # unix seconds of the learner's last tick
    models: Mapping[str, Mapping[str, Cell]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "updated": self.updated,
            "models": {
                m: {o: c.to_json() for o, c in cells.items()} for m, cells in self.models.items()
            },
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Layer:
        return cls(
            int(raw["version"]),
            float(raw["updated"]),
            {
                str(m): {str(o): Cell.from_json(c) for o, c in cells.items()}
                for m, cells in raw.get("models", {}).items()
            },
        )


EMPTY = Layer(0, 0.0)


@dataclass(frozen=True, slots=True)
class Adjusted:
    """A decision's candidates through the layer, row-aligned."""

    propensity: np.ndarray  # the posterior mean's propensity: served, ranked by greedily
    logit: np.ndarray  # the corrected log-odds at the mean
    sd: np.ndarray  # standard deviation of the correction, log-odds
    share: np.ndarray  # the ramp: chance each may take a slot (1 once mature)


class View:
    """The layer's arrays for one catalog and one model, a row per catalog offer."""

    def __init__(
        self,
        offer_ids: Sequence[str],
        categories: Sequence[str],
        model_version: str,
        evidence: ModelEvidence,
        layer: Layer = EMPTY,
        ramp: Ramp | None = None,
        context: Context = NO_CONTEXT,
    ) -> None:
        self.ramp = ramp or Ramp()
        self.context = context
        self.layer_version = layer.version
        self.model_version = model_version
        d = 2 + len(context)
        cells = {o: c for o, c in layer.models.get(model_version, {}).items() if len(c.mean) == d}
        self.rows = {o: i for i, o in enumerate(offer_ids)}
        category_of = dict(zip(offer_ids, categories, strict=True))
        n = len(offer_ids)
        mean, precision = np.zeros((n, d)), np.ones((n, d))
        positives = np.zeros(n)
        for i, o in enumerate(offer_ids):
            known = evidence.get(o)
            cell = cells.get(o) or starting(
                o, category_of, cells, evidence, len(context), similar=self.ramp.similar
            )
            mean[i], precision[i] = cell.mean, cell.precision
            positives[i] = cell.positives + (known.positives if known else 0)
        self.mean = mean
        self.variance = 1.0 / precision
        self.share = self.ramp.share(positives)
        self.positives = positives
        self.learnt = bool(cells)
        # One table for the hot path, a row an offer and a last one for an offer outside
        # this catalog (no correction): [1, slope, x...] . row[:d] is the shift, . row[d:2d]
        # (squared) the variance; row[2d] the ramp's share.
        table = np.zeros((n + 1, 2 * d + 1))
        table[:n, :d], table[:n, d : 2 * d], table[:n, 2 * d] = mean, self.variance, self.share
        table[n, 2 * d] = 1.0
        self._table, self._d, self._outside = table, d, n

    def adjust(
        self, offer_ids: Sequence[str], propensity: np.ndarray, features: np.ndarray
    ) -> Adjusted:
        """The candidates' propensities through the layer's posterior mean, for a customer
        with ``features`` (schema order)."""
        outside, rows = self._outside, self.rows
        t = self._table[[rows.get(o, outside) for o in offer_ids]]
        d = self._d
        z = logit(propensity)
        x = np.empty((z.shape[0], d))
        x[:, 0] = 1.0
        np.subtract(z, CENTRE, out=x[:, 1])
        if d > 2:
            x[:, 2:] = self.context.vector(features)
        shift = (t[:, :d] * x).sum(axis=1)
        x *= x
        sd = np.sqrt((t[:, d : 2 * d] * x).sum(axis=1))
        corrected = z + shift
        return Adjusted(_sigmoid(corrected), corrected, sd, t[:, 2 * d])


def learn(
    cell: Cell,
    z: np.ndarray,
    reward: np.ndarray,
    weight: np.ndarray,
    context: np.ndarray | None = None,
) -> Cell:
    """``cell`` updated by a batch of examples of its offer: the batch model's log-odds
    ``z``, rewards 0/1, weights (a customer past its daily share weighs 0) and the
    customers' context (rows of ``Context.vector``). Newton's method finds the mode of
    prior x likelihood; the precision grows by the likelihood's curvature there (Chapelle
    and Li 2011, algorithm 3), within the sanity bounds."""
    keep = weight > 0
    if not keep.any():
        return cell
    z, reward, weight = z[keep], reward[keep].astype(np.float64), weight[keep]
    columns = [np.ones_like(z), z - CENTRE]
    if context is not None and context.shape[1]:
        columns += list(context[keep].T)
    x = np.stack(columns, axis=1)
    m0, q0 = np.array(cell.mean), np.array(cell.precision)
    w = m0.copy()
    for _ in range(8):
        p = _sigmoid(z + x @ w)
        gradient = q0 * (w - m0) + x.T @ (weight * (p - reward))
        hessian = np.diag(q0) + (x * (weight * p * (1.0 - p))[:, None]).T @ x
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-7:
            break
    p = _sigmoid(z + x @ w)
    q = q0 + (x * x).T @ (weight * p * (1.0 - p))
    return Cell(
        tuple(w.tolist()),
        tuple(q.tolist()),
        cell.examples + float(weight.sum()),
        cell.positives + float(weight @ reward),
    ).bounded()


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of propensities, clipped away from 0 and 1."""
    q = np.clip(p, _CLIP, 1.0 - _CLIP)
    return np.asarray(np.log(q) - np.log1p(-q))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def scenarios(
    adjusted: Adjusted,
    weight: np.ndarray,
    draws: int,
    rng: np.random.Generator,
    sd_scale: float = 1.0,
) -> np.ndarray:
    """``draws`` Thompson samples of every candidate's priority, (draws, candidates): the
    propensity drawn from its posterior (its width times ``sd_scale``) times ``weight``
    (value x lever); a candidate its ramp keeps out of a draw gets -inf there."""
    n = adjusted.logit.shape[0]
    x = rng.standard_normal((draws, n))
    # weight x sigmoid(logit + noise x sd), in place: ~6 us against ~12 with temporaries
    x *= adjusted.sd * sd_scale if sd_scale != 1.0 else adjusted.sd
    x += adjusted.logit
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1.0
    np.divide(weight, x, out=x)
    if (adjusted.share < 1.0).any():
        x[rng.random((draws, n)) >= adjusted.share] = -np.inf
    return x
