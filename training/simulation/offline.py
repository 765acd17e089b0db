"""The batch model alone, offline: how good is its greedy choice?

For each world seed, trains the batch model (training/train.py, with the trainer's
settings and any overrides) on random-policy logs of the demo world, then, on fresh
contexts of the same world, takes each model's best candidate (propensity x value x
lever, as arbitration ranks without exploring) and measures its true value against the
oracle's (the best candidate knowing every hidden trait) and the ceiling's (the best any
policy that sees what the service sees can do: peers.CeilingPolicy). No service, no
loop: a minute per world, where `arbiter simulate` takes half an hour, to choose among
trainer settings before the loop judges the one chosen (docs/simulation.md).

    python -m training.simulation.offline --seeds 1 2 3 4 5 --rows 45000 --contexts 8000 \\
        --variant num_leaves=31,num_trees=150,lambda_l2=0
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from engine.core.catalog import Offer
from engine.core.decision import DecisionRequest, rule_env
from engine.core.eligibility import Situation, eligible_offers
from engine.core.model_input import ServedInputs, Vocabulary, build_matrix, model_feature_names
from engine.settings import Definitions, load_definitions
from training.settings import TrainerSettings
from training.simulation.oracle import propensity
from training.simulation.peers import CeilingPolicy
from training.synthetic_logs import simulate_logs
from training.train import fit, training_matrix
from training.world import World, generate

NOW = 1_790_000_000.0  # simulate_logs' moment


@dataclass(frozen=True)
class Context:
    served: ServedInputs
    offers: tuple[Offer, ...]
    true_value: np.ndarray  # each candidate's true chance of a response x its value
    ceiling: int  # the index of the ceiling's choice


def contexts(world: World, definitions: Definitions, rows: int, seed: int) -> list[Context]:
    """Fresh decisions of ``world`` with two or more eligible offers, and their truth."""
    schema, catalog = definitions.schema, definitions.catalog
    logs = simulate_logs(world, schema, catalog, definitions.stage_rules, rows=rows, seed=seed)
    ceiling = CeilingPolicy(catalog, schema.names, world)
    assert logs.customer_index is not None, "simulated logs know their customers"
    out = []
    for served, index in zip(logs.served, logs.customer_index.tolist(), strict=True):
        request = DecisionRequest(customer_id=world.customer_id(index), channel=served.channel)
        env = rule_env(schema.names, served.features, {}, request)
        env["stage"] = served.stage
        offers = eligible_offers(catalog, Situation(served.channel, "", served.stage, NOW), env)
        if len(offers) < 2:
            continue
        named = {
            n: np.array([v]) for n, v in zip(schema.names, served.features.tolist(), strict=True)
        }
        hidden = world.hidden(slice(index, index + 1))
        truth = np.array([float(propensity(o, served, named, hidden)[0]) * o.value for o in offers])
        expected = ceiling.expected(served, [o.offer_id for o in offers])
        best = int(np.argmax([expected[o.offer_id] for o in offers]))
        out.append(Context(served, tuple(offers), truth, best))
    return out


def greedy_share(
    booster: lgb.Booster, vocabulary: Vocabulary, decisions: Sequence[Context]
) -> float:
    """The true value of the model's greedy choices as a share of the oracle's."""
    got = oracle = 0.0
    for c in decisions:
        p = booster.predict(build_matrix(c.served, c.offers, vocabulary), num_threads=1)
        priority = p * np.array([o.value * o.lever for o in c.offers])
        got += float(c.true_value[int(np.argmax(priority))])
        oracle += float(c.true_value.max())
    return got / oracle


def run_seed(
    seed: int,
    variants: Mapping[str, TrainerSettings],
    *,
    rows: int,
    contexts_per_seed: int,
    customers: int,
) -> dict[str, float]:
    """{"random": share, "ceiling": share, variant: share...} for one world."""
    definitions = load_definitions(TrainerSettings())
    schema, catalog = definitions.schema, definitions.catalog
    world = generate(customers, seed)
    logs = simulate_logs(world, schema, catalog, definitions.stage_rules, rows=rows, seed=seed)
    decisions = contexts(world, definitions, contexts_per_seed, seed + 10_000)
    vocabulary = Vocabulary.from_catalog(catalog)
    matrix = training_matrix(logs, schema, catalog, vocabulary)
    oracle = sum(float(c.true_value.max()) for c in decisions)
    out = {
        "random": sum(float(c.true_value.mean()) for c in decisions) / oracle,
        "ceiling": sum(float(c.true_value[c.ceiling]) for c in decisions) / oracle,
    }
    no_holdout = np.zeros(logs.rows, dtype=bool)
    names = model_feature_names(schema)
    for name, settings in variants.items():
        model = fit(matrix, logs.reward, no_holdout, names, vocabulary, schema, settings)
        out[name] = greedy_share(lgb.Booster(model_str=model.model_text), vocabulary, decisions)
    return out


def _variant(text: str) -> tuple[str, dict[str, Any]]:
    overrides: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        overrides[key.strip()] = float(value) if "." in value else int(value)
    return text, overrides


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.simulation.offline", description=__doc__)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--rows", type=int, default=45_000, help="random-policy training rows")
    p.add_argument("--contexts", type=int, default=8_000, help="fresh decisions judged on")
    p.add_argument("--customers", type=int, default=50_000)
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        type=_variant,
        help="trainer settings to compare with the defaults, as key=value,key=value",
    )
    args = p.parse_args(argv)
    variants = {"defaults": TrainerSettings()}
    for name, overrides in args.variant:
        variants[name] = TrainerSettings(**overrides)
    shares: dict[str, list[float]] = {}
    for seed in args.seeds:
        got = run_seed(
            seed,
            variants,
            rows=args.rows,
            contexts_per_seed=args.contexts,
            customers=args.customers,
        )
        for k, v in got.items():
            shares.setdefault(k, []).append(v)
        print(f"seed {seed}: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in got.items()))
    base = np.array(shares["defaults"])
    for name, values in shares.items():
        line = f"{name}: mean {100 * np.mean(values):.2f}%"
        if name not in ("defaults", "ceiling", "random"):
            diff = 100 * (np.array(values) - base)
            line += f", minus the defaults by seed {', '.join(f'{d:+.2f}' for d in diff)}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
