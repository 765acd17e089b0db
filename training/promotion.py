"""Promotion on a bound: what a challenger must show to replace the champion, on the
same recent decisions (training/retrain.py draws them and decides).

The value of a policy on a logged decision is the doubly robust (DR) estimate of the
offer value it earns (the first slot): the reward model's expected value under the policy,
corrected by the weighted error on the action that was logged,

    sum_a pi(a|x) r(x,a) v_a + pi(A|x) / p(A|x) * (reward - r(x,A)) * v_A.

Both policies are evaluated as they would be deployed (the catalog's exploration), on the
same decisions, so their per-decision difference is paired: the noise both share (who
came, what they answered) cancels. The reward model is the challenger trained without
these decisions: every decision it scores is out of its sample, which is what
cross-fitting (training/obd.py) ensures there. With the logged probabilities right, the
estimate is unbiased whatever the reward model; a good one only narrows the interval.
It needs support: where the challenger would choose an offer the logging policy had no
chance of showing (a greedy log), only the reward model speaks for it; past
``MAX_UNSUPPORTED`` of its choice there, the value cannot be told (``Lift.supported``).

The value lift needs many decisions (its interval is wide: the offers' values differ by
ten times and the answers are yes or no). The challenger's predictions are told sooner:
the champion's per-row log loss minus the challenger's on the answers to the champion's
own choices, paired (``Guards.log_loss_gain``). The rule that reads both is retrain's.

Guardrails, on the rows of the same decisions: the challenger's AUC is above 0.5 beyond
its standard error (Hanley and McNeil) and no more than ``guard_auc_drop`` below the
champion's; its calibration error is no more than ``guard_calibration`` above the
champion's. A model trained on shuffled labels fails the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.core.arbitration import GREEDY, Exploration, slot_probabilities
from engine.core.catalog import Catalog
from engine.core.model_input import build_matrix
from engine.core.scoring import Scorer
from training.evaluation import Z95, Context, Estimate, mean_interval
from training.metrics import auc, auc_standard_error, calibration_error

# Past this share of the challenger's choices on offers the logging policy could not show,
# its value cannot be told from the logs (as `arbiter whatif` refuses).
MAX_UNSUPPORTED = 0.10


@dataclass(frozen=True)
class Lift:
    """Value per decision of the challenger and the champion, and their paired
    difference (challenger minus champion), DR, 95% intervals, on ``decisions``;
    ``unsupported``: the mean share of the challenger's choice the logs cannot show."""

    challenger: Estimate
    champion: Estimate
    difference: Estimate
    decisions: int
    unsupported: float = 0.0

    @classmethod
    def of(cls, paired: Sequence[Paired]) -> Lift:
        """Pooled from per-decision values of the two policies on the same decisions."""
        new = np.concatenate([p.new for p in paired])
        old = np.concatenate([p.old for p in paired])
        unsupported = float(np.concatenate([p.unsupported for p in paired]).mean())
        return cls(
            mean_interval(new), mean_interval(old), mean_interval(new - old), len(new), unsupported
        )

    @property
    def supported(self) -> bool:
        return self.unsupported <= MAX_UNSUPPORTED


def _row_log_loss(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    p = np.clip(predicted, 1e-15, 1 - 1e-15)
    return np.asarray(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def candidate_propensities(
    contexts: Sequence[Context], scorer: Scorer, catalog: Catalog
) -> list[np.ndarray]:
    """The scorer's propensity for every candidate of every context, in one call."""
    vocabulary = scorer.vocabulary
    assert vocabulary is not None, "a model policy needs a model"
    parts = [
        build_matrix(c.served, [catalog.by_id[o] for o in c.candidates], vocabulary)
        for c in contexts
    ]
    if not parts:
        return []
    scores = scorer.predict(np.concatenate(parts))
    return np.split(scores, np.cumsum([p.shape[0] for p in parts])[:-1])


def deployed(
    contexts: Sequence[Context],
    propensities: Sequence[np.ndarray] | None,
    catalog: Catalog,
    exploration: Exploration,
) -> list[np.ndarray]:
    """Per decision, the policy's probability of each candidate: it ranks by propensity x
    value x lever (``propensities`` None: by value x lever alone), with ``exploration``
    where it applies."""
    out = []
    for i, c in enumerate(contexts):
        offers = [catalog.by_id[o] for o in c.candidates]
        weight = np.array([o.value * o.lever for o in offers])
        priority = weight if propensities is None else propensities[i] * weight
        explore = exploration if exploration.applies(c.served.channel, c.placement) else GREEDY
        out.append(slot_probabilities(priority, explore))
    return out


def dr_values(
    contexts: Sequence[Context],
    policy: Sequence[np.ndarray],
    fitted: Sequence[np.ndarray],
    catalog: Catalog,
) -> np.ndarray:
    """Per decision, the DR estimate of the value ``policy`` (each candidate's
    probability) earns; ``fitted`` is the reward model's propensities."""
    out = np.empty(len(contexts))
    for i, c in enumerate(contexts):
        value = np.array([catalog.by_id[o].value for o in c.candidates])
        pi = policy[i]
        a = c.candidates.index(c.action)
        out[i] = (
            float(pi @ (fitted[i] * value))
            + pi[a] / c.probability * (c.reward - fitted[i][a]) * value[a]
        )
    return out


@dataclass(frozen=True)
class Paired:
    """Per decision: the challenger's value, the champion's, and the share of the
    challenger's choice that falls on offers the champion (the logging policy) could not
    have shown there: where only the reward model speaks for it."""

    new: np.ndarray
    old: np.ndarray
    unsupported: np.ndarray


def paired_values(
    contexts: Sequence[Context],
    challenger: Scorer,
    champion: Scorer | None,
    catalog: Catalog,
    exploration: Exploration,
) -> Paired:
    """The challenger's and the champion's (None: value x lever alone) values on the same
    ``contexts``, the challenger as the reward model."""
    fitted = candidate_propensities(contexts, challenger, catalog)
    new = deployed(contexts, fitted, catalog, exploration)
    old = deployed(
        contexts,
        None if champion is None else candidate_propensities(contexts, champion, catalog),
        catalog,
        exploration,
    )
    unsupported = np.array([float(n[o <= 0].sum()) for n, o in zip(new, old, strict=True)])
    return Paired(
        dr_values(contexts, new, fitted, catalog),
        dr_values(contexts, old, fitted, catalog),
        unsupported,
    )


@dataclass(frozen=True)
class Guards:
    """The challenger's and the champion's AUC and calibration error on the same rows."""

    auc: float
    auc_low: float  # AUC - 1.96 standard errors
    calibration: float
    champion_auc: float | None = None
    champion_calibration: float | None = None
    # The champion's log loss minus the challenger's, per row, paired (95%): above zero,
    # the challenger predicts the answers to the champion's own decisions better.
    log_loss_gain: Estimate | None = None

    @classmethod
    def measure(
        cls, labels: np.ndarray, predicted: np.ndarray, champion: np.ndarray | None
    ) -> Guards:
        positives = int(labels.sum())
        value = auc(labels, predicted)
        se = auc_standard_error(value, positives, labels.shape[0] - positives)
        if champion is None:
            return cls(value, value - Z95 * se, calibration_error(labels, predicted))
        return cls(
            value,
            value - Z95 * se,
            calibration_error(labels, predicted),
            auc(labels, champion),
            calibration_error(labels, champion),
            mean_interval(_row_log_loss(labels, champion) - _row_log_loss(labels, predicted)),
        )

    def failures(self, auc_drop: float, calibration_rise: float) -> list[str]:
        """Why the challenger must not serve; empty when it may."""
        out = []
        if not self.auc_low > 0.5:
            out.append(
                f"its AUC {self.auc:.4f} is not above 0.5 beyond its error"
                f" (lower bound {self.auc_low:.4f}): it has not learnt to rank"
            )
        if self.champion_auc is not None and not self.auc >= self.champion_auc - auc_drop:
            out.append(
                f"its AUC {self.auc:.4f} is more than {auc_drop:g} below the champion's"
                f" {self.champion_auc:.4f}"
            )
        if (
            self.champion_calibration is not None
            and not self.calibration <= self.champion_calibration + calibration_rise
        ):
            out.append(
                f"its calibration error {self.calibration:.4f} is more than"
                f" {calibration_rise:g} above the champion's {self.champion_calibration:.4f}"
            )
        return out
