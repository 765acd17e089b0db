"""What the online layer costs a decision: the decision core alone (no gRPC, no Redis), the
demo catalog and a trained demo model (compiled, as `make run` serves it), on the demo
world's customers, interleaved in blocks so that the machine's noise falls on every
variant alike:

- ``greedy, no layer``: the layer's arrays hold only the model's priors (what a service
  serves before its learner published anything);
- ``greedy, layer``: a learnt layer for every offer (level, slope, context weights);
- ``thompson, layer``: the same, exploring by Thompson sampling (32 samples a decision).

    .venv/bin/python -m benchmarks.bench_adaptive [--decisions 4000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from engine.adapters import artifact, compiled
from engine.adapters.lightgbm_scorer import LightGBMScorer
from engine.core import adaptive
from engine.core.arbitration import Exploration
from engine.core.customer import CustomerRecord
from engine.core.decision import DecisionCore, DecisionRequest
from engine.settings import ServerSettings, load_definitions
from training.settings import TrainerSettings
from training.synthetic_logs import simulate_logs
from training.train import train
from training.world import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=4000, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    definitions = load_definitions(ServerSettings())
    schema, catalog = definitions.schema, definitions.catalog
    world = generate(2000, seed=7)
    logs = simulate_logs(world, schema, catalog, definitions.stage_rules, rows=30_000)
    model = train(logs, schema, catalog, TrainerSettings())
    with tempfile.TemporaryDirectory() as folder:
        saved = artifact.save(Path(folder), model)
        compiled.compile_artifact(replace(model, folder=saved))
        scorer = LightGBMScorer(artifact.load(Path(folder), model.version))
    print(f"model {model.version}: {scorer.engine}")
    now = time.time()
    records = [
        CustomerRecord(cid, True, schema.decode_batch(schema.encode_batch(features)), attrs, {})
        for cid, features, attrs in world.profiles()
    ]

    def core(policy: str) -> DecisionCore:
        explored = replace(catalog, exploration=Exploration(policy))  # type: ignore[arg-type]
        return DecisionCore(schema, explored, definitions.stage_rules, scorer)

    plain, learnt, thompson = core("greedy"), core("greedy"), core("thompson")
    k = len(learnt.layer_context())
    rng = np.random.default_rng(1)
    cells = {
        o.offer_id: adaptive.Cell(
            tuple(rng.normal(0, 0.2, 2 + k).tolist()), (60.0,) * (2 + k), 500.0, 60.0
        )
        for o in catalog.offers
    }
    layer = adaptive.Layer(1, now, {scorer.version: cells})
    learnt.adaptive, thompson.adaptive = learnt.layer_view(layer), thompson.layer_view(layer)
    variants = {"greedy, no layer": plain, "greedy, layer": learnt, "thompson, layer": thompson}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    request = DecisionRequest("", "web", "home_hero", limit=1)
    for _ in range(args.rounds):
        for name, c in variants.items():
            for i in range(args.decisions):
                record = records[i % len(records)]
                started = time.perf_counter()
                c.decide(replace(request, customer_id=record.customer_id), record, now)
                seconds[name].append(time.perf_counter() - started)
    base = float(np.percentile(seconds["greedy, no layer"], 50)) * 1e6
    print(f"decision core, demo catalog, {args.rounds} x {args.decisions} decisions each:")
    for name, s in seconds.items():
        p50, p99 = (float(v) * 1e6 for v in np.percentile(s, [50, 99]))
        print(
            f"  {name:18s} p50 {p50:6.0f} us  p99 {p99:6.0f} us"
            f"  p50 - no layer {p50 - base:+5.0f} us"
        )


if __name__ == "__main__":
    main()
