"""Arbiter's whole Decide against Feast's gRPC feature server fetching the same customer's
features, side by side in one run on this machine.

The same 50,000 demo customers; Feast 0.67 (its own environment, .venv-feast, and its
own redis-server) serves all the schema's features of one feature view with `feast
listen`; Arbiter serves the demo catalog (limit 3, compiled trees). Both are driven by
the same client shape: 2 client processes x 4 connections, closed loop, a random
customer per call.

    make bench-feast          (or: .venv/bin/python -m benchmarks.bench_feast)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from benchmarks.bench_load import phase, prepare
from benchmarks.common import benchmark_redis, start_server
from common.ports import free_port
from engine.settings import load_definitions
from feature_store.embedded import EmbeddedRedis
from training.world import generate

FEAST_PYTHON = Path(".venv-feast/bin/python")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if not FEAST_PYTHON.exists():
        raise SystemExit("Feast's environment is missing: `make bench-feast` builds it")
    with benchmark_redis() as redis_url, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        settings = prepare(workdir, redis_url)
        features = load_definitions(settings).schema.names
        profiles = workdir / "feast-profiles.jsonl"
        generate(50_000, 7).write_profiles(profiles)
        results: dict[str, dict[str, float]] = {}
        with EmbeddedRedis(workdir / "feast-redis") as own:
            host_port = own.url.removeprefix("redis://").split("/")[0]
            done = subprocess.run(
                [
                    str(FEAST_PYTHON),
                    str(Path(__file__).with_name("feast_side.py")),
                    str(profiles),
                    ",".join(features),
                    host_port,
                    str(free_port()),
                    str(args.seconds),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(f"the Feast side failed:\n{done.stderr[-3000:]}")
            results["Feast gRPC feature server, features only"] = json.loads(
                done.stdout.strip().splitlines()[-1]
            )
        for workers in (1, 2):
            port = free_port()
            server = start_server(settings, port, workers)
            try:
                phase(port, "decide", 1.0, 2, 4)  # warm-up
                results[f"Arbiter Decide, whole decision, {workers} worker(s)"] = phase(
                    port, "decide", args.seconds, 2, 4
                )
            finally:
                server.terminate()
                server.wait(timeout=60)
    print(
        f"\n{len(features)} features a customer, 50,000 customers, 2 client processes x 4"
        f" connections, closed loop, {args.seconds:g} s:"
    )
    for name, r in results.items():
        print(
            f"  {name:48s} {r['rate']:6.0f} calls/s  p50 {r['p50'] / 1000:6.2f} ms"
            f"  p99 {r['p99'] / 1000:6.2f} ms"
        )
    feast = results["Feast gRPC feature server, features only"]
    print(f"  Feast materialized {feast['materialized_per_second']:,.0f} profiles/s")
    best = max((r for n, r in results.items() if n.startswith("Arbiter")), key=lambda r: r["rate"])
    print(
        f"  Arbiter (best) / Feast: throughput x{best['rate'] / feast['rate']:.2f},"
        f" p99 x{best['p99'] / feast['p99']:.2f} (target: >= 1.3 and <= 0.8)"
    )


if __name__ == "__main__":
    main()
