"""The decision core: one customer record in, one ranked, rendered decision out.

Pure and synchronous: no gRPC, no Redis, no clock (``now`` is passed in). The service
layer fetches the record, calls ``DecisionCore.decide`` and logs the result.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from string import Template
from typing import Any

import numpy as np

from engine.core import arbitration, contact_policy, eligibility, rendering
from engine.core.catalog import Catalog, Offer
from engine.core.lifecycle import StageRules
from engine.core.model_input import (
    OFFER_EXPLAIN,
    Vocabulary,
    build_matrix,
    model_feature_names,
    topic_counts,
)
from engine.core.scoring import Scorer, ValueOnlyScorer
from feature_store.schema import LAST_CATEGORY_FIELD, FeatureSchema
from feature_store.store import CustomerRecord

TOP_CONTRIBUTIONS = 3


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    customer_id: str
    channel: str
    placement: str = ""
    context: Mapping[str, str] = field(default_factory=dict)
    limit: int = 1
    offer_ids: tuple[str, ...] = ()
    request_id: str = ""
    explain: bool = False


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    text: str
    feature: str = ""
    contribution: float = 0.0


@dataclass(frozen=True, slots=True)
class Action:
    offer_id: str
    rank: int
    message: rendering.RenderedMessage
    propensity: float
    value: float
    priority: float
    probability: float
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True, slots=True)
class Candidates:
    """Every eligible offer with its scores, row-aligned (arrays: no per-offer objects
    on the hot path)."""

    offer_ids: tuple[str, ...]
    propensity: np.ndarray
    priority: np.ndarray

    def __len__(self) -> int:
        return len(self.offer_ids)


@dataclass(frozen=True, slots=True)
class ServedInputs:
    """The customer-side inputs of the offer-level model features, as served (logged so
    training rebuilds the exact rows)."""

    last_category: str
    topic_counts: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    customer_id: str
    known_customer: bool
    stage: str
    stage_reason: str
    actions: tuple[Action, ...]
    candidates: Candidates
    features: np.ndarray  # customer features as served, schema order
    model_version: str
    catalog_version: str
    degraded: bool = False
    degraded_reason: str = ""
    # offers the contact policy kept out (offer id, or "*" for the channel) -> why
    excluded: Mapping[str, str] = field(default_factory=dict)
    served: ServedInputs | None = None


def _ago(seconds: float) -> str:
    if seconds >= 1e7:
        return "never"
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


class StageTimer:
    """Accumulates microseconds per decision stage (benchmarks and diagnostics)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._last = time.perf_counter()

    def start(self) -> None:
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.totals[stage] = self.totals.get(stage, 0.0) + (now - self._last) * 1e6
        self._last = now


def rule_env(
    names: tuple[str, ...],
    features: np.ndarray,
    attributes: Mapping[str, str],
    request: DecisionRequest,
) -> dict[str, Any]:
    """The variables rules see: features by name, channel, placement, context, attr.
    The caller adds ``stage`` once it is derived."""
    env: dict[str, Any] = dict(zip(names, features.tolist(), strict=True))
    env["channel"] = request.channel
    env["placement"] = request.placement
    env["stage"] = ""
    env["context"] = request.context
    env["attr"] = attributes
    return env


class DecisionCore:
    """Holds one consistent set of schema, catalog, stage rules and model."""

    def __init__(
        self,
        schema: FeatureSchema,
        catalog: Catalog,
        stage_rules: StageRules,
        scorer: Scorer,
        *,
        one_per_category: bool = True,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.schema = schema
        self.catalog = catalog
        self.stage_rules = stage_rules
        self.scorer = scorer
        self.one_per_category = one_per_category
        self.feature_names = model_feature_names(schema)
        self._explain = {
            **{f.name: f.explain for f in schema.features if f.explain},
            **OFFER_EXPLAIN,
        }
        self._vocabulary = scorer.vocabulary or Vocabulary.from_catalog(catalog)
        self._baseline = ValueOnlyScorer()
        self._rng = rng if rng is not None else np.random.default_rng()

    def decide(
        self,
        request: DecisionRequest,
        record: CustomerRecord | None,
        now: float,
        degraded_reason: str = "",
        timer: StageTimer | None = None,
    ) -> Decision:
        """Decides for ``record``; ``record=None`` means the feature store was unavailable
        (``degraded_reason`` says why): defaults and fallback offers answer instead."""
        schema = self.schema
        fallback = record is None
        if record is None:
            record = CustomerRecord(request.customer_id, False, schema.decode_batch(None), {}, {})
        features = schema.customer_vector(record, now)
        env = rule_env(schema.names, features, record.attributes, request)
        if timer:
            timer.lap("features")

        stage, stage_reason = self.stage_rules.derive(env, dict(request.context))
        env["stage"] = stage
        situation = eligibility.Situation(request.channel, request.placement, stage, now)
        offers, excluded = self._candidates(request, record, situation, env, fallback)
        if timer:
            timer.lap("eligibility")

        served = ServedInputs(
            record.realtime.get(LAST_CATEGORY_FIELD, ""), topic_counts(record.windows)
        )
        matrix = build_matrix(
            features,
            offers,
            request.channel,
            stage,
            served.last_category,
            self._vocabulary,
            served.topic_counts,
        )
        scorer: Scorer = self.scorer
        try:
            propensity = scorer.predict(matrix) if offers else np.empty(0)
        except Exception as exc:
            scorer = self._baseline
            propensity = scorer.predict(matrix)
            degraded_reason = degraded_reason or f"model failed, value-only fallback: {exc}"
        if timer:
            timer.lap("scoring")

        value = np.array([o.value for o in offers])
        lever = np.array([o.lever for o in offers])
        priority = arbitration.priorities(propensity, value, lever)
        exploration = self.catalog.exploration
        if not exploration.applies(request.channel, request.placement):
            exploration = arbitration.GREEDY
        ranked = arbitration.arbitrate(
            priority,
            [o.category for o in offers],
            request.limit,
            one_per_category=self.one_per_category,
            exploration=exploration,
            rng=self._rng,
        )
        if timer:
            timer.lap("arbitration")

        variables = (
            rendering.template_variables(
                schema.names, features, record.attributes, self.catalog.template_defaults
            )
            if ranked
            else {}
        )
        # The rule, cap and priority reasons are cheap and kept for every decision (the log
        # has them); feature contributions (TreeSHAP, ~0.5 ms a row) only with explain.
        contributions = None
        if request.explain and ranked:
            contributions = scorer.contributions(matrix[[r.index for r in ranked]])
        actions = []
        for position, r in enumerate(ranked):
            offer = offers[r.index]
            row = None if contributions is None else contributions[position]
            reasons = self._reasons(offer, situation, stage_reason, record, matrix[r.index], row)
            reasons += (
                Reason(
                    "ARBITRATION",
                    f"priority {r.priority:.4g} = propensity {propensity[r.index]:.4f}"
                    f" x value {offer.value:g} x lever {offer.lever:g}",
                ),
            )
            actions.append(
                Action(
                    offer_id=offer.offer_id,
                    rank=r.rank,
                    message=rendering.render(offer, request.channel, stage, variables),
                    propensity=float(propensity[r.index]),
                    value=offer.value,
                    priority=r.priority,
                    probability=r.probability,
                    reasons=reasons,
                )
            )
        if timer:
            timer.lap("rendering")

        return Decision(
            decision_id=uuid.uuid4().hex,
            customer_id=request.customer_id,
            known_customer=record.known,
            stage=stage,
            stage_reason=stage_reason,
            actions=tuple(actions),
            candidates=Candidates(tuple(o.offer_id for o in offers), propensity, priority),
            features=features,
            model_version=scorer.version,
            catalog_version=self.catalog.version,
            degraded=bool(degraded_reason),
            degraded_reason=degraded_reason,
            excluded=excluded,
            served=served,
        )

    def _candidates(
        self,
        request: DecisionRequest,
        record: CustomerRecord,
        situation: eligibility.Situation,
        env: dict[str, Any],
        fallback: bool,
    ) -> tuple[list[Offer], dict[str, str]]:
        """Eligible offers that the contact policy allows, and why others were excluded
        by the policy (offer id, or "*" for the whole channel, -> reason)."""
        if fallback:
            offers = eligibility.fallback_offers(self.catalog, situation)
            if request.offer_ids:
                offers = [o for o in offers if o.offer_id in request.offer_ids]
            return offers, {}
        offers = eligibility.eligible_offers(self.catalog, situation, env, request.offer_ids)
        policy = self.catalog.contact_policy
        blocked = contact_policy.channel_block(policy, request.channel, record, situation.now)
        if blocked:
            return [], {"*": blocked}
        allowed, excluded = [], {}
        contacted = contact_policy.contacted_offers(record)
        for offer in offers:
            why = contact_policy.offer_block(
                offer.offer_id, offer.policy, record, situation.now, contacted
            )
            if why:
                excluded[offer.offer_id] = why
            else:
                allowed.append(offer)
        return allowed, excluded

    def _sentence(
        self,
        column: int,
        value: float,
        offer: Offer,
        situation: eligibility.Situation,
        record: CustomerRecord,
    ) -> str:
        """What an agent can say about one model input, e.g. "viewed fibre pages 3 times
        today"; the feature's name and value when no sentence is declared."""
        name = self.feature_names[column]
        template = self._explain.get(name, "")
        shown = rendering.format_value(value)
        if not template:
            return f"{name} = {shown}"
        last = record.realtime.get(LAST_CATEGORY_FIELD, "")
        viewed = [t for t in sorted(offer.topics) if record.windows.get(f"k:{t}")]
        variables = {
            "value": shown,
            "yesno": "yes" if value else "no",
            "ago": _ago(value),
            "offer": offer.name,
            "category": offer.category,
            "channel": situation.channel.replace("_", " "),
            "stage": situation.stage.replace("_", "-"),
            "topic": last if name == "category_match" else ", ".join(viewed) or offer.category,
        }
        return Template(template).safe_substitute(variables)

    def _reasons(
        self,
        offer: Offer,
        situation: eligibility.Situation,
        stage_reason: str,
        record: CustomerRecord,
        row: np.ndarray,
        contributions: np.ndarray | None,
    ) -> tuple[Reason, ...]:
        reasons = [Reason("LIFECYCLE_STAGE", f"stage {situation.stage}: {stage_reason}")]
        reasons += [
            Reason("RULE_ELIGIBILITY", text)
            for text in eligibility.passed_rules(self.catalog, offer, situation)
        ]
        usage = contact_policy.offer_usage(offer.offer_id, offer.policy, record, situation.now)
        if usage:
            reasons.append(Reason("CONTACT_POLICY", f"within its cap: {usage} used before now"))
        if contributions is not None:
            top = np.argsort(-contributions, kind="stable")[:TOP_CONTRIBUTIONS]
            for i in top.tolist():
                if contributions[i] <= 0:
                    break
                name = self.feature_names[i]
                reasons.append(
                    Reason(
                        "FEATURE_CONTRIBUTION",
                        self._sentence(i, row[i], offer, situation, record),
                        feature=name,
                        contribution=float(contributions[i]),
                    )
                )
        return tuple(reasons)
