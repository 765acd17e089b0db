"""Bulk loading 50,000 demo profiles (`arbiter load`'s `load_file`) into a flushed Redis:
one process against the parallel load (a process per core, each line parsed once),
3 interleaved rounds, one run.

    .venv/bin/python -m benchmarks.bench_bulk
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import benchmark_redis, flush
from engine.settings import ServerSettings, load_definitions
from feature_store.loader import load_file
from feature_store.redis_client import connect_sync
from training.world import generate

PROFILES = 50_000


def main() -> None:
    schema = load_definitions(ServerSettings()).schema
    with benchmark_redis() as url, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "profiles.jsonl"
        generate(PROFILES, seed=7).write_profiles(path)
        client = connect_sync(url)
        rates: dict[str, list[float]] = {"one process": [], "parallel (default)": []}
        for _ in range(3):
            for name, processes in (("one process", 1), ("parallel (default)", None)):
                flush(client)
                report = load_file(client, schema, path, processes=processes)
                assert report.rows == PROFILES
                rates[name].append(report.rows_per_second)
        client.close()
    for name, runs in rates.items():
        print(f"{name:20s} {np.median(runs):9,.0f} profiles/s (median of {len(runs)})")
    one, parallel = (np.median(r) for r in rates.values())
    print(f"parallel / one process: x{parallel / one:.2f} (target >= 100,000 profiles/s)")


if __name__ == "__main__":
    main()
