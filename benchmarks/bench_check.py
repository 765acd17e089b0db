"""The guard against the next regression of the decision path: Decide against the same
server's Health/Check through the public API, as benchmarks/bench_load.py measures it
(demo catalog, limit 3, a new customer a call, closed loop, one worker), reduced to two
ratios that do not depend on how busy the machine is: Check p99 / Decide p99 and Decide
calls/s / Check calls/s (both: higher is better). Fails when either falls more than 25%
below the figures recorded in benchmarks/recorded.json; ``--record`` writes this run's.

    make bench-check          (.venv/bin/python -m benchmarks.bench_check [--record])
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.bench_load import phase, prepare
from benchmarks.common import benchmark_redis, start_server
from common.ports import free_port

RECORDED = Path(__file__).with_name("recorded.json")
TOLERANCE = 0.25  # a ratio may fall this far below the recorded one


def measure(seconds: float, rounds: int, clients: int, connections: int) -> dict[str, float]:
    """The two ratios over ``rounds`` interleaved Check and Decide phases: p99s of the
    best phase of each (the least disturbed by the machine), rates averaged."""
    with benchmark_redis() as redis_url, tempfile.TemporaryDirectory() as tmp:
        settings = prepare(Path(tmp), redis_url)
        port = free_port()
        server = start_server(settings, port, 1)
        try:
            phase(port, "decide", 1.0, clients, connections)  # warm: first calls, JIT-free
            runs: dict[str, list[dict[str, float]]] = {"check": [], "decide": []}
            for _ in range(rounds):
                for method in runs:
                    runs[method].append(phase(port, method, seconds, clients, connections))
        finally:
            server.terminate()
            server.wait(timeout=60)
    for method, results in runs.items():
        for r in results:
            print(
                f"  {method:7s} p50 {r['p50']:6.0f} us  p99 {r['p99']:6.0f} us"
                f"  {r['rate']:6.0f} calls/s"
            )
    p99 = {m: min(r["p99"] for r in results) for m, results in runs.items()}
    rate = {m: float(np.mean([r["rate"] for r in results])) for m, results in runs.items()}
    return {
        "check_p99_over_decide_p99": p99["check"] / p99["decide"],
        "decide_rate_over_check_rate": rate["decide"] / rate["check"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4, help="per client process")
    parser.add_argument("--record", action="store_true", help=f"write {RECORDED.name}")
    args = parser.parse_args()
    ratios = measure(args.seconds, args.rounds, args.clients, args.connections)
    if args.record:
        RECORDED.write_text(
            json.dumps({k: round(float(v), 3) for k, v in ratios.items()}, indent=2) + "\n"
        )
        print(f"recorded in {RECORDED}: {ratios}")
        return
    recorded = json.loads(RECORDED.read_text())
    failed = []
    for name, value in ratios.items():
        floor = recorded[name] * (1 - TOLERANCE)
        verdict = "ok" if value >= floor else "REGRESSED"
        print(f"{name}: {value:.3f} (recorded {recorded[name]:.3f}, floor {floor:.3f}) {verdict}")
        if value < floor:
            failed.append(name)
    if failed:
        sys.exit(f"bench-check: {', '.join(failed)} more than {TOLERANCE:.0%} below the record")


if __name__ == "__main__":
    main()
