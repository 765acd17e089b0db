"""Decide on a Redis Cluster against Decide on a single Redis, in one run.

The same demo world (50,000 customers) and compiled model, loaded into an embedded
single redis-server and into an embedded cluster of 3 primaries with a replica each (all
on this machine's loopback, from the same redis-server binary); one `arbiter serve`
on each, with the same number of workers; closed-loop client processes as in
bench_load, alternating 5 s phases between the servers (and a third on the cluster with
the decision path through redis-py's cluster client: the hot connections taken away).
Printed: the bulk load rate into each, p50/p90/p99 and calls/s per phase, and the ratios.

    .venv/bin/python -m benchmarks.bench_cluster [--seconds 5] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from benchmarks.bench_load import phase, prepare
from benchmarks.common import start_server
from common.ports import free_port
from engine.settings import load_definitions
from feature_store.embedded import EmbeddedCluster, EmbeddedRedis
from feature_store.loader import load_file
from feature_store.redis_client import connect_sync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4, help="per client process")
    parser.add_argument("--workers", type=int, default=1, help="per server")
    args = parser.parse_args()
    with (
        EmbeddedRedis() as single,
        EmbeddedCluster(masters=3, replicas=1) as cluster,
        tempfile.TemporaryDirectory() as tmp,
    ):
        settings = prepare(Path(tmp), single.url)  # loads the single server, trains
        on_cluster = settings.model_copy(update={"redis_url": cluster.url})
        report = load_file(
            connect_sync(cluster.url),
            load_definitions(settings).schema,
            Path(tmp) / "profiles.jsonl",
        )
        print(f"bulk load into the cluster: {report.rows_per_second:,.0f} profiles/s")
        names = ("single", "cluster", "cluster, redis-py")
        ports = {name: free_port() for name in names}
        servers = {
            "single": start_server(settings, ports["single"], args.workers),
            "cluster": start_server(on_cluster, ports["cluster"], args.workers),
            # the lever taken away: the decision path through redis-py's cluster client
            "cluster, redis-py": start_server(
                on_cluster, ports["cluster, redis-py"], args.workers, hot_client="false"
            ),
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        try:
            for _ in range(args.rounds):
                for name in names:
                    runs[name].append(
                        phase(ports[name], "decide", args.seconds, args.clients, args.connections)
                    )
        finally:
            for server in servers.values():
                server.terminate()
                server.wait(timeout=60)
        print(
            f"\nDecide, demo catalog, limit 3, {args.workers} worker(s) a server,"
            f" {args.clients} client processes x {args.connections} connections:"
        )
        for name, phases in runs.items():
            for r in phases:
                print(
                    f"  {name:17s} p50 {r['p50']:6.0f} us  p90 {r['p90']:6.0f} us"
                    f"  p99 {r['p99']:6.0f} us  {r['rate']:6.0f} calls/s"
                )
        rate = {name: float(np.mean([r["rate"] for r in phases])) for name, phases in runs.items()}
        p99 = {name: float(np.median([r["p99"] for r in phases])) for name, phases in runs.items()}
        print(
            f"cluster / single: calls/s x{rate['cluster'] / rate['single']:.2f}"
            f" ({rate['cluster']:.0f} vs {rate['single']:.0f}), p99"
            f" x{p99['cluster'] / p99['single']:.2f}; hot connections / redis-py on the cluster:"
            f" calls/s x{rate['cluster'] / rate['cluster, redis-py']:.2f}"
        )


if __name__ == "__main__":
    main()
