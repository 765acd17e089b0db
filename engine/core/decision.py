"""The decision path: one customer record in, one ranked, rendered decision out.

Pure and synchronous: no gRPC, no Redis, no clock (``now`` is passed in). The service
fetches the record, calls ``DecisionCore.decide``, reserves the contacts and logs the
result. The stages: features -> stage -> eligibility and contact policy -> scoring ->
arbitration -> rendering and explanation (explanation.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from engine.core import adaptive, arbitration, consent, contact_policy, eligibility, rendering
from engine.core.catalog import Catalog, Offer
from engine.core.customer import CustomerRecord
from engine.core.explanation import Explainer, Reason
from engine.core.lifecycle import StageRules
from engine.core.model_input import ServedInputs, Vocabulary, build_matrix, feature_names_id
from engine.core.schema import FeatureSchema
from engine.core.scoring import Scorer, ValueOnlyScorer
from engine.core.timing import NO_TIMER, StageTimer

__all__ = [
    "Action",
    "Candidates",
    "Decision",
    "DecisionCore",
    "DecisionRequest",
    "Reason",
    "rule_env",
]


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
    on the hot path): ``propensity`` is the batch model's, ``priority`` ranks by the
    online layer's (adaptive.py)."""

    offer_ids: tuple[str, ...]
    propensity: np.ndarray
    priority: np.ndarray

    def __len__(self) -> int:
        return len(self.offer_ids)


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    customer_id: str
    known_customer: bool
    stage: str
    stage_reason: str
    actions: tuple[Action, ...]
    candidates: Candidates
    served: ServedInputs  # the model inputs as served: what the log keeps for training
    model_version: str
    catalog_version: str
    layer_version: int = 0  # the online layer's publication that corrected the scores
    degraded: bool = False
    degraded_reason: str = ""
    # offers the contact policy kept out (offer id, or "*" for the channel) -> why
    excluded: Mapping[str, str] = field(default_factory=dict)


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
        self._explainer = Explainer(schema, catalog)
        self._vocabulary = scorer.vocabulary or Vocabulary.from_catalog(catalog)
        self._baseline = ValueOnlyScorer()
        self._rng = rng if rng is not None else np.random.default_rng()
        self.adaptive = self.layer_view(adaptive.EMPTY)

    def layer_view(self, layer: adaptive.Layer) -> adaptive.View:
        """The online layer's arrays for this core's catalog and model (built off the hot
        path; the service assigns ``adaptive`` when a new layer is published)."""
        offers = self.catalog.offers
        return adaptive.View(
            [o.offer_id for o in offers],
            [o.category for o in offers],
            self.scorer.version,
            self.scorer.evidence,
            layer,
            self.catalog.ramp,
            self.layer_context(),
        )

    def layer_context(self) -> adaptive.Context:
        """The catalog's context features for the online layer, as this model scales them."""
        names = self.schema.names
        return adaptive.Context.of(
            self.catalog.adaptive_features,
            names,
            self.scorer.feature_stats,
            feature_names_id(names),
        )

    def decide(
        self,
        request: DecisionRequest,
        record: CustomerRecord | None,
        now: float,
        degraded_reason: str = "",
        timer: StageTimer = NO_TIMER,
        *,
        value_only: str = "",
        explain_skipped: str = "",
        volume: Mapping[str, int] | None = None,
    ) -> Decision:
        """Decides for ``record``; ``record=None`` means the feature store was unavailable
        (``degraded_reason`` says why): defaults and fallback offers answer instead.
        ``value_only``: rank by value without the model, and why (a caller's deadline);
        ``explain_skipped``: why an asked-for explanation's feature contributions are left
        out (each action says so instead); ``volume``: the volume limits' counters as last
        read (counter -> contacts), an offer or a channel at its limit kept out."""
        schema = self.schema
        fallback = record is None
        if record is None:
            record = CustomerRecord(request.customer_id, False, schema.decode_batch(None), {}, {})
        features = self.customer_features(record, now)
        env = rule_env(schema.names, features, record.attributes, request)
        timer.lap("features")

        stage, stage_reason = self.stage_rules.derive(env, dict(request.context))
        env["stage"] = stage
        situation = eligibility.Situation(request.channel, request.placement, stage, now)
        # Offers still showing from an earlier decision (once per decision: the policy,
        # arbitration and the reasons all need them).
        held = contact_policy.showing(self.catalog.contact_policy, request.channel, record)
        offers, excluded = self._candidates(request, record, situation, env, fallback, held, volume)
        timer.lap("eligibility")

        served = ServedInputs.from_record(record, features, request.channel, stage)
        matrix = build_matrix(served, offers, self._vocabulary)
        scorer: Scorer = self._baseline if value_only else self.scorer
        if value_only:
            degraded_reason = degraded_reason or value_only
        try:
            propensity = scorer.predict(matrix) if offers else np.empty(0)
        except Exception as exc:
            scorer = self._baseline
            propensity = scorer.predict(matrix)
            degraded_reason = degraded_reason or f"model failed, value-only fallback: {exc}"
        timer.lap("scoring")

        base, layer_version, draws = propensity, 0, None
        weight = np.array([o.value * o.lever for o in offers])
        exploration = self.catalog.exploration
        if not exploration.applies(request.channel, request.placement):
            exploration = arbitration.GREEDY
        if offers and scorer is self.scorer:  # the layer corrects the model, not value-only
            view = self.adaptive
            adjusted = view.adjust([o.offer_id for o in offers], propensity, served.features)
            propensity, layer_version = adjusted.propensity, view.layer_version
            if exploration.policy == "thompson":
                draws = adaptive.scenarios(
                    adjusted, weight, exploration.draws, self._rng, exploration.sd_scale
                )
        priority = arbitration.priorities(propensity, weight, 1.0)
        # Offers still showing from an earlier decision come first: a refresh keeps them.
        ranked = arbitration.arbitrate(
            priority,
            [o.category for o in offers],
            request.limit,
            one_per_category=self.one_per_category,
            exploration=exploration,
            rng=self._rng,
            first=[i for i, o in enumerate(offers) if o.offer_id in held] if held else (),
            draws=draws,
        )
        timer.lap("arbitration")

        if explain_skipped and request.explain:
            request = replace(request, explain=False)
        actions = self._actions(
            request,
            record,
            situation,
            served,
            stage_reason,
            offers,
            ranked,
            matrix,
            propensity,
            scorer,
            held,
        )
        if explain_skipped:
            note = Reason("EXPLANATION", f"feature contributions skipped: {explain_skipped}")
            actions = tuple(replace(a, reasons=(*a.reasons, note)) for a in actions)
        timer.lap("rendering")
        return Decision(
            decision_id=uuid.uuid4().hex,
            customer_id=request.customer_id,
            known_customer=record.known,
            stage=stage,
            stage_reason=stage_reason,
            actions=actions,
            candidates=Candidates(tuple(o.offer_id for o in offers), base, priority),
            served=served,
            model_version=scorer.version,
            catalog_version=self.catalog.version,
            layer_version=layer_version,
            degraded=bool(degraded_reason),
            degraded_reason=degraded_reason,
            excluded=excluded,
        )

    def customer_features(self, record: CustomerRecord, now: float) -> np.ndarray:
        """The customer's features in schema order, with consent as its latest word."""
        features = self.schema.customer_vector(record, now)
        return consent.apply(features, self.schema.names, record, self.catalog.consent_features)

    def customer_env(
        self, record: CustomerRecord, request: DecisionRequest, now: float
    ) -> dict[str, Any]:
        """What a rule over this customer sees (``rule_env``) as their profile is at
        ``now``: a trigger's condition, a run's segment. The stage is not derived."""
        features = self.customer_features(record, now)
        return rule_env(self.schema.names, features, record.attributes, request)

    def _candidates(
        self,
        request: DecisionRequest,
        record: CustomerRecord,
        situation: eligibility.Situation,
        env: dict[str, Any],
        fallback: bool,
        held: Mapping[str, float],
        volume: Mapping[str, int] | None,
    ) -> tuple[list[Offer], dict[str, str]]:
        """Eligible offers that the contact policy allows, and why others were excluded
        by the policy (offer id, or "*" for the whole channel, -> reason)."""
        if fallback:
            offers = eligibility.fallback_offers(self.catalog, situation)
            if request.offer_ids:
                offers = [o for o in offers if o.offer_id in request.offer_ids]
            return offers, {}
        consent_features = self.catalog.consent_features
        blocked = consent.block(request.channel, env, record, consent_features)
        if blocked:
            return [], {"*": blocked}
        offers = eligibility.eligible_offers(self.catalog, situation, env, request.offer_ids)
        return contact_policy.allowed(
            self.catalog.contact_policy,
            request.channel,
            offers,
            record,
            situation.now,
            held,
            volume,
        )

    def _actions(
        self,
        request: DecisionRequest,
        record: CustomerRecord,
        situation: eligibility.Situation,
        served: ServedInputs,
        stage_reason: str,
        offers: list[Offer],
        ranked: list[arbitration.Ranked],
        matrix: np.ndarray,
        propensity: np.ndarray,
        scorer: Scorer,
        held: Mapping[str, float],
    ) -> tuple[Action, ...]:
        """The ranked offers, rendered for the channel and stage, with their reasons. The
        rule, cap and priority reasons are cheap and kept for every decision (the log has
        them); feature contributions (TreeSHAP, ~0.5 ms a row) only with ``explain``."""
        if not ranked:
            return ()
        variables = rendering.template_variables(
            self.schema.names,
            served.features,
            record.attributes,
            self.catalog.template_defaults,
        )
        contributions = None
        if request.explain:
            contributions = scorer.contributions(matrix[[r.index for r in ranked]])
        actions = []
        for position, r in enumerate(ranked):
            offer = offers[r.index]
            p = float(propensity[r.index])
            reasons = self._explainer.reasons(
                offer,
                situation,
                stage_reason,
                record,
                matrix[r.index],
                None if contributions is None else contributions[position],
                f"priority {r.priority:.4g} = propensity {p:.4f}"
                f" x value {offer.value:g} x lever {offer.lever:g}",
                held.get(offer.offer_id, 0.0),
            )
            actions.append(
                Action(
                    offer_id=offer.offer_id,
                    rank=r.rank,
                    message=rendering.render(offer, request.channel, situation.stage, variables),
                    propensity=p,
                    value=offer.value,
                    priority=r.priority,
                    probability=r.probability,
                    reasons=reasons,
                )
            )
        return tuple(actions)
