"""A champion / challenger experiment in the simulated world, read back by `arbiter
experiments report`: the first model (simulated logs of --champion-rows decisions)
against a challenger trained on --challenger-rows, served to --share of the customers
(salted by the challenger's version), for --days of traffic; then the report from the
decision and outcome logs (uplift with its interval and test, the sample-ratio check).

    .venv/bin/python -m benchmarks.bench_experiment [--customers 5000] [--share 0.5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from engine.adapters import artifact
from feature_store.log_reader import read_logs
from training import experiments
from training.job import train_demo
from training.simulation import stack
from training.simulation.traffic import Simulation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--customers", type=int, default=5000, help="deciding per day")
    parser.add_argument("--world", type=int, default=50_000)
    parser.add_argument("--share", type=float, default=0.5)
    parser.add_argument("--champion-rows", type=int, default=30_000)
    parser.add_argument("--challenger-rows", type=int, default=200_000)
    parser.add_argument("--html", type=Path, help="also write the report as HTML")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        stack(Path(tmp), world_size=args.world, first_rows=args.champion_rows) as served,
    ):
        model_dir = served.trainer.model_dir
        champion = artifact.current_version(model_dir)
        more = served.trainer.model_copy(
            update={"train_rows": args.challenger_rows, "simulation_seed": 77}
        )
        challenger = train_demo(more, progress=False).model
        if champion is not None:
            artifact.set_current(model_dir, champion)  # it challenges: it does not take over
        artifact.set_challenger(model_dir, challenger.version, args.share)
        served.server.run(served.server.reloader.check())
        print(f"champion {champion}, challenger {challenger.version} on {args.share:.0%}")
        simulation = Simulation(served.server, served.client, served.world, served.trainer)
        for day in range(1, args.days + 1):
            simulation.run_day(day, args.customers)
        decisions, outcomes = read_logs(served.client)
        worth = {o.offer_id: o.value for o in served.definitions.catalog.offers}
    found = experiments.report(decisions, outcomes, challenger.version, args.share, worth)
    print(experiments.text(found))
    if args.html:
        experiments.write_report(found, args.html)
        print(f"report: {args.html}")


if __name__ == "__main__":
    main()
