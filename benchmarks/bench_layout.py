"""Profile value layout: one packed float32 vector vs one hash field per feature.

Reads N profiles of F features each way from a real redis-server (sync redis-py with
hiredis, as the numbers in docs/redis-keys.md), decoding to a numpy vector. Interleaved
repetitions, medians.

    .venv/bin/python -m benchmarks.bench_layout [--features 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import redis

from benchmarks.common import benchmark_redis


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with benchmark_redis() as url:
        measure(redis.Redis.from_url(url), args)


def measure(client: redis.Redis, args: argparse.Namespace) -> None:
    names = [f"feature_{i:02d}" for i in range(args.features)]
    rng = np.random.default_rng(1)
    pipe = client.pipeline(transaction=False)
    for c in range(args.customers):
        values = rng.random(args.features).astype("<f4")
        pipe.hset(f"bench:{{c{c}}}:vec", mapping={"v": values.tobytes(), "s": "x", "a": "{}"})
        pipe.hset(f"bench:{{c{c}}}:hash", mapping=dict(zip(names, values.tolist(), strict=True)))
    pipe.execute()

    def packed(c: int) -> np.ndarray:
        blob = client.hget(f"bench:{{c{c}}}:vec", "v")
        return np.frombuffer(blob, dtype="<f4")  # type: ignore[arg-type]

    def hashed(c: int) -> np.ndarray:
        fields = client.hgetall(f"bench:{{c{c}}}:hash")
        return np.array([float(fields[n.encode()]) for n in names], dtype=np.float32)

    results: dict[str, list[float]] = {"packed vector (HGET)": [], "hash per feature (HGETALL)": []}
    for _ in range(args.rounds):
        for name, fn in (("packed vector (HGET)", packed), ("hash per feature (HGETALL)", hashed)):
            t = time.perf_counter()
            for c in range(args.customers):
                fn(c)
            results[name].append((time.perf_counter() - t) / args.customers * 1e6)
    medians = {k: statistics.median(v) for k, v in results.items()}
    for name, us in medians.items():
        print(f"{name:28s} {us:6.1f} us per profile ({args.features} features)")
    vec, hsh = medians.values()
    print(f"packed is {100 * (1 - vec / hsh):.0f}% faster")
    memory = {kind: client.memory_usage(f"bench:{{c0}}:{kind}") for kind in ("vec", "hash")}
    print(f"memory per profile: packed {memory['vec']} B, hash {memory['hash']} B")
    client.delete(*[f"bench:{{c{c}}}:{k}" for c in range(args.customers) for k in ("vec", "hash")])


if __name__ == "__main__":
    main()
