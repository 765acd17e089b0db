"""The Feast side of `benchmarks/bench_feast.py`, run in Feast's own environment
(.venv-feast: Feast is a benchmark-only dependency, never in the serving path).

    feast_side.py PROFILES.jsonl FEATURES(comma-separated) REDIS_HOST:PORT PORT SECONDS

Builds a feature repository of the demo profiles (one feature view of the given
features, a parquet source), applies and materializes it into the given redis-server,
serves it with `feast listen` (Feast's gRPC feature server) on 127.0.0.1:PORT, then
drives GetOnlineFeatures for a random demo customer per call from 2 client processes x 4
connections, closed loop, and prints one JSON line: p50/p90/p99 (us) and calls/s.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pandas as pd

CLIENTS, CONNECTIONS = 2, 4


def repository(workdir: Path, profiles: Path, features: list[str], redis: str) -> int:
    rows = []
    stamp = datetime.now(UTC) - timedelta(hours=1)
    with profiles.open() as lines:
        for line in lines:
            row = json.loads(line)
            values = row["features"]
            rows.append(
                {
                    "customer_id": row["customer_id"],
                    "event_timestamp": stamp,
                    **{f: float(values.get(f, 0.0)) for f in features},
                }
            )
    frame = pd.DataFrame(rows)
    frame.to_parquet(workdir / "profiles.parquet")
    (workdir / "feature_store.yaml").write_text(
        "project: arbiter_bench\nprovider: local\nregistry: registry.db\n"
        f"online_store:\n  type: redis\n  connection_string: {redis}\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
    fields = "\n".join(f'        Field(name="{f}", dtype=Float32),' for f in features)
    (workdir / "repo.py").write_text(
        f"""from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
source = FileSource(path="{workdir / "profiles.parquet"}", timestamp_field="event_timestamp")
profile = FeatureView(
    name="profile",
    entities=[customer],
    ttl=timedelta(days=365),
    schema=[
{fields}
    ],
    source=source,
)
"""
    )
    return len(frame)


async def _loop(port: int, features: list[str], seconds: float, customers: int) -> list[float]:
    from feast.protos.feast.serving.GrpcServer_pb2_grpc import GrpcFeatureServerStub
    from feast.protos.feast.serving.ServingService_pb2 import FeatureList, GetOnlineFeaturesRequest
    from feast.protos.feast.types.Value_pb2 import RepeatedValue, Value

    options = [("grpc.use_local_subchannel_pool", 1)]
    names = FeatureList(val=[f"profile:{f}" for f in features])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = GrpcFeatureServerStub(channel)
        took: list[float] = []
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            customer = f"cust-{random.randint(1, customers):06d}"
            request = GetOnlineFeaturesRequest(
                features=names,
                entities={"customer_id": RepeatedValue(val=[Value(string_val=customer)])},
            )
            started = time.perf_counter()
            await stub.GetOnlineFeatures(request, timeout=5)
            took.append(time.perf_counter() - started)
        return took


def _client(port: int, features: list[str], seconds: float, customers: int) -> list[float]:
    async def run() -> list[float]:
        parts = await asyncio.gather(
            *(_loop(port, features, seconds, customers) for _ in range(CONNECTIONS))
        )
        return [x for p in parts for x in p]

    return asyncio.run(run())


def main() -> None:
    profiles, features_arg, redis, port, seconds = sys.argv[1:6]
    features = features_arg.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        customers = repository(workdir, Path(profiles), features, redis)
        feast = [str(Path(sys.executable).parent / "feast")]
        subprocess.run([*feast, "apply"], cwd=workdir, check=True, capture_output=True)
        started = time.perf_counter()
        end = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
        subprocess.run(
            [*feast, "materialize-incremental", end], cwd=workdir, check=True, capture_output=True
        )
        materialized = customers / (time.perf_counter() - started)
        server = subprocess.Popen(
            [*feast, "listen", "--address", f"127.0.0.1:{port}"],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=120)
            _client(int(port), features, 1.0, customers)  # warm-up
            with multiprocessing.get_context("spawn").Pool(CLIENTS) as pool:
                results = pool.starmap(
                    _client, [(int(port), features, float(seconds), customers)] * CLIENTS
                )
        finally:
            server.terminate()
            server.wait(timeout=30)
    took = np.array([x for r in results for x in r]) * 1e6
    p50, p90, p99 = np.percentile(took, [50, 90, 99])
    print(
        json.dumps(
            {
                "p50": p50,
                "p90": p90,
                "p99": p99,
                "rate": took.size / float(seconds),
                "materialized_per_second": materialized,
            }
        )
    )


if __name__ == "__main__":
    main()
