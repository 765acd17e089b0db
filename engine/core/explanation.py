"""Explanations: why an action was chosen, in sentences an agent can say.

Every action carries the stage and why, the eligibility rules it passed, its use of the
contact caps and the terms of its priority; with ``explain``, also the top positive SHAP
contributions of its model row, each turned into the feature's declared sentence
("viewed fibre pages 3 times today").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from string import Template

import numpy as np

from engine.core import contact_policy, eligibility, rendering
from engine.core.catalog import Catalog, Offer
from engine.core.customer import CustomerRecord, category_counter
from engine.core.model_input import OFFER_EXPLAIN, model_feature_names
from engine.core.schema import FeatureSchema

TOP_CONTRIBUTIONS = 3


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    text: str
    feature: str = ""
    contribution: float = 0.0


def ago(seconds: float) -> str:
    """``7200`` -> "2 hours ago"; ``never`` for the "never seen" default (1e7 s and up)."""
    if seconds >= 1e7:
        return "never"
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


class Explainer:
    """Builds the reasons of the actions of decisions made with one schema and catalog."""

    def __init__(self, schema: FeatureSchema, catalog: Catalog) -> None:
        self.catalog = catalog
        self.feature_names = model_feature_names(schema)
        self._sentences = {
            **{f.name: f.explain for f in schema.features if f.explain},
            **OFFER_EXPLAIN,
        }

    def reasons(
        self,
        offer: Offer,
        situation: eligibility.Situation,
        stage_reason: str,
        record: CustomerRecord,
        row: np.ndarray,
        contributions: np.ndarray | None,
        priority: str,
        held_until: float = 0.0,
    ) -> tuple[Reason, ...]:
        """Stage, rules, caps, feature contributions (when given), then ``priority``;
        ``held_until``: when the offer's place, held since an earlier decision showed it,
        lapses (0: not showing)."""
        reasons = [Reason("LIFECYCLE_STAGE", f"stage {situation.stage}: {stage_reason}")]
        reasons += [
            Reason("RULE_ELIGIBILITY", text)
            for text in eligibility.passed_rules(self.catalog, offer, situation)
        ]
        usage = contact_policy.offer_usage(offer.offer_id, offer.policy, record, situation.now)
        if usage:
            reasons.append(Reason("CONTACT_POLICY", f"within its cap: {usage} used before now"))
        if held_until:
            until = time.strftime("%H:%M:%S UTC", time.gmtime(held_until))
            reasons.append(
                Reason(
                    "CONTACT_POLICY",
                    "shown again: an earlier decision's impression is not reported yet;"
                    f" its place is held until {until}, no new one taken",
                )
            )
        if contributions is not None:
            top = np.argsort(-contributions, kind="stable")[:TOP_CONTRIBUTIONS]
            for i in top.tolist():
                if contributions[i] <= 0:
                    break
                reasons.append(
                    Reason(
                        "FEATURE_CONTRIBUTION",
                        self._sentence(i, row[i], offer, situation, record),
                        feature=self.feature_names[i],
                        contribution=float(contributions[i]),
                    )
                )
        reasons.append(Reason("ARBITRATION", priority))
        return tuple(reasons)

    def _sentence(
        self,
        column: int,
        value: float,
        offer: Offer,
        situation: eligibility.Situation,
        record: CustomerRecord,
    ) -> str:
        """What an agent can say about one model input; the feature's name and value when
        no sentence is declared."""
        name = self.feature_names[column]
        template = self._sentences.get(name, "")
        shown = rendering.format_value(value)
        if not template:
            return f"{name} = {shown}"
        last = record.last_category
        viewed = [t for t in sorted(offer.topics) if record.windows.get(category_counter(t))]
        variables = {
            "value": shown,
            "yesno": "yes" if value else "no",
            "ago": ago(value),
            "offer": offer.name,
            "category": offer.category,
            "channel": situation.channel.replace("_", " "),
            "stage": situation.stage.replace("_", "-"),
            "topic": last if name == "category_match" else ", ".join(viewed) or offer.category,
        }
        return Template(template).safe_substitute(variables)
