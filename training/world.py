"""The demo world: a synthetic communications service provider.

Customers ``cust-000001`` ... with plausible batch features and attributes, plus hidden
traits (an interest topic, price sensitivity, travel habit) that only the simulator
knows. ``true_propensity`` is the hidden response model: the chance a customer responds
positively to an offer in a channel. It is the ground truth that models are trained
towards and that, later, policies are measured against. Deterministic for a seed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FIRST_NAMES = [
    "Alex",
    "Sam",
    "Maria",
    "Jordan",
    "Priya",
    "Chen",
    "Fatima",
    "Lucas",
    "Emma",
    "Noah",
    "Aisha",
    "Mateo",
    "Yuki",
    "Olga",
    "Tom",
    "Grace",
    "Omar",
    "Lea",
    "Ravi",
    "Sofia",
    "Ben",
    "Nina",
    "Kofi",
    "Hana",
    "Ivan",
    "Chloe",
    "Diego",
    "Mia",
    "Arjun",
    "Zoe",
]
REGIONS = ("North", "South", "East", "West", "Central")
PLAN_NAMES = ("Prepaid", "Basic 5GB", "Plus 20GB", "Unlimited")
ALLOWANCE_GB = (3.0, 5.0, 20.0, 100.0)
TOPICS = ("plans", "phones", "fibre", "streaming", "travel", "data", "smart_home", "family")
# An offer the demo catalog lacks, which the simulation adds mid-run: better than the
# others for many customers (training/simulation/__init__.py, NEW_OFFER).
NEW_OFFER_ID = "fibre_gigabit"
# Hidden traits: a traveller's share of customers, and how often a customer's product
# views are of their interest (the others: any topic, uniformly).
TRAVELLER_SHARE = 0.2
INTEREST_VIEW_SHARE = 0.6
CHANNEL_EFFECT = {"web": 0.0, "mobile_app": 0.1, "call_center": 0.7, "email": -0.6, "sms": -0.9}


@dataclass(frozen=True)
class World:
    """Column arrays of ``n`` customers; index i is customer ``customer_id(i)``."""

    seed: int
    features: dict[str, np.ndarray]  # batch features by name
    attributes: dict[str, np.ndarray]  # string arrays
    interest: np.ndarray  # hidden: index into TOPICS
    price_sensitivity: np.ndarray  # hidden: 0..1
    traveller: np.ndarray  # hidden: 0/1
    # offer -> factor on its true response probability (the simulation halves an offer's
    # appeal mid-run); 1 when absent
    appeal: dict[str, float] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.interest.shape[0])

    @staticmethod
    def customer_id(index: int) -> str:
        return f"cust-{index + 1:06d}"

    def hidden(self, rows: np.ndarray | slice) -> dict[str, np.ndarray]:
        """The hidden traits of customers ``rows`` (indices or a slice), by name, as
        ``true_propensity`` reads them."""
        return {
            "interest": self.interest[rows],
            "price_sensitivity": self.price_sensitivity[rows],
            "traveller": self.traveller[rows],
        }

    def profile(self, i: int) -> tuple[str, dict[str, float], dict[str, str]]:
        return (
            self.customer_id(i),
            {k: float(v[i]) for k, v in self.features.items()},
            {k: str(v[i]) for k, v in self.attributes.items()},
        )

    def profiles(self) -> Iterator[tuple[str, dict[str, float], dict[str, str]]]:
        return (self.profile(i) for i in range(self.size))

    def write_profiles(self, path: Path) -> int:
        """Writes the loader's JSON Lines format; returns the number of profiles."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for cid, features, attributes in self.profiles():
                row = {"customer_id": cid, "features": features, "attributes": attributes}
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
        return self.size


def generate(n: int = 50_000, seed: int = 7) -> World:
    rng = np.random.default_rng(seed)
    tier = rng.choice(4, size=n, p=[0.15, 0.35, 0.35, 0.15])
    allowance = np.array(ALLOWANCE_GB)[tier]
    usage = np.round(np.clip(allowance * rng.gamma(4.0, 0.22, n), 0.1, 150), 1)
    tenure = np.round(rng.gamma(1.6, 18.0, n)).clip(0, 240)
    products = 1 + rng.binomial(3, 0.3, n)
    has_fibre = (rng.random(n) < 0.35).astype(float)
    has_tv = (rng.random(n) < 0.25 + 0.1 * has_fibre).astype(float)
    complaints = rng.poisson(0.25, n)
    support_calls = complaints + rng.poisson(0.6, n)
    contract_left = np.where(rng.random(n) < 0.4, 0, rng.integers(0, 24, n))
    churn = np.clip(
        0.08
        + 0.12 * complaints
        + 0.15 * (contract_left == 0)
        - 0.002 * tenure
        + rng.normal(0, 0.08, n),
        0.01,
        0.98,
    )
    spend = np.round(10 + 15 * tier + 25 * has_fibre + 12 * has_tv + rng.normal(0, 6, n), 2)
    spend = spend.clip(5, None)
    age = rng.integers(18, 80, n).astype(float)
    features = {
        "is_customer": np.ones(n),
        "tenure_months": tenure,
        "plan_tier": tier.astype(float),
        "monthly_spend": spend,
        "data_usage_gb": usage,
        "data_allowance_gb": allowance,
        "data_used_pct": np.round(100 * usage / allowance),
        "products_held": products.astype(float),
        "has_fibre": has_fibre,
        "has_tv": has_tv,
        "device_age_months": rng.integers(0, 48, n).astype(float),
        "contract_months_left": contract_left.astype(float),
        "support_calls_90d": support_calls.astype(float),
        "complaints_90d": complaints.astype(float),
        "churn_risk": np.round(churn, 3),
        "lifetime_value": np.round(spend * 36 * (1 - churn), 0),
        "app_user": (rng.random(n) < np.clip(0.9 - 0.01 * (age - 18), 0.1, 0.9)).astype(float),
        "email_opt_in": (rng.random(n) < 0.7).astype(float),
        "sms_opt_in": (rng.random(n) < 0.5).astype(float),
        "age_years": age,
        # falling usage goes with complaints and churn risk
        "usage_trend": np.round(np.clip(rng.normal(1.0 - 0.6 * (churn - 0.1), 0.15), 0.1, 2.0), 2),
    }
    attributes = {
        "first_name": np.array(FIRST_NAMES)[rng.integers(0, len(FIRST_NAMES), n)],
        "plan_name": np.array(PLAN_NAMES)[tier],
        "region": np.array(REGIONS)[rng.integers(0, len(REGIONS), n)],
        "segment": np.where(spend > 60, "high_value", np.where(tenure < 6, "new", "core")),
    }
    return World(
        seed=seed,
        features=features,
        attributes=attributes,
        interest=rng.integers(0, len(TOPICS), n),
        price_sensitivity=rng.random(n),
        traveller=(rng.random(n) < TRAVELLER_SHARE).astype(float),
    )


def _offer_terms(
    offer_id: str, f: Mapping[str, np.ndarray], world_row: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Offer-specific part of the hidden log-odds (f: features by name, row-aligned)."""
    ratio = f["data_usage_gb"] / np.maximum(f["data_allowance_gb"], 0.1)
    terms: dict[str, Callable[[], Any]] = {
        "plan_upgrade_unlimited": lambda: 2.2 * np.clip(ratio - 0.7, 0, 1.5),
        "device_upgrade_5g": lambda: 0.05 * (f["device_age_months"] - 24),
        "fibre_broadband": lambda: 0.02 * f["data_usage_gb"] + 0.4 * (f["products_held"] >= 2),
        "tv_streaming_addon": lambda: 0.5 * (f["age_years"] < 40) - 0.2,
        "roaming_pack": lambda: 2.0 * world_row["traveller"] - 0.6,
        "data_boost": lambda: 1.2 * (ratio > 1.0),
        "retention_discount": lambda: 3.5 * f["churn_risk"] - 0.4,
        "bill_review": lambda: 0.4 * f["complaints_90d"] + 0.01 * (f["monthly_spend"] - 50),
        "loyalty_reward": lambda: 0.012 * f["tenure_months"],
        "onboarding_help": lambda: 1.6 * (f["tenure_months"] < 3),
        "family_plan": lambda: 0.35 * f["products_held"] - 0.9 * world_row["price_sensitivity"],
        "device_insurance": lambda: 0.4 - 0.02 * f["device_age_months"],
        "welcome_offer": lambda: 0.6 + 0.0 * f["is_customer"],
        "app_download": lambda: 0.6 * (f["age_years"] < 35) - 0.3,
        "smart_home_bundle": lambda: 0.3 * f["has_fibre"],
        # not in the demo catalog: the simulation adds it mid-run (its NEW_OFFER)
        NEW_OFFER_ID: lambda: 0.6 * f["has_fibre"] + 0.8 * (ratio > 0.9) - 0.8,
    }
    fn = terms.get(offer_id)
    return np.asarray(fn(), dtype=np.float64) if fn else np.zeros_like(ratio)


def true_propensity(
    offer_id: str,
    offer_value: float,
    offer_topics: frozenset[str],
    channel: str,
    features: Mapping[str, np.ndarray],
    hidden: Mapping[str, np.ndarray],
    category_match: np.ndarray,
    topic_views_24h: np.ndarray,
) -> np.ndarray:
    """The hidden probability of a positive response, for row-aligned arrays."""
    topic_hit = np.array([TOPICS[i] in offer_topics for i in hidden["interest"].tolist()])
    logit = (
        -3.0
        + _offer_terms(offer_id, features, hidden)
        + CHANNEL_EFFECT[channel]
        + 1.0 * category_match
        + 0.35 * np.minimum(topic_views_24h, 4)
        + 0.7 * topic_hit
        - 0.9 * hidden["price_sensitivity"] * (offer_value >= 150)
    )
    return np.asarray(1.0 / (1.0 + np.exp(-logit)))
