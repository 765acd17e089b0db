"""The logs at scale: `arbiter export-logs` throughput, and training on 1M logged
decisions from the exported Parquet dataset against training from the Redis streams,
with the peak memory of each (one run).

How the million decisions are made: the demo service decides for 2,000 demo customers
(real entries: features as served, candidates, probabilities), and each is copied 500
times with a new decision id and a time spread over the 10 days before now (the stream
entry ids follow the times, so the export partitions them by day); a twentieth of the
copies get an accept outcome. Then, in the same Redis: `export_logs` to a temporary
folder, then `arbiter train --source export` and `arbiter train --source logs` each in a
process of its own, whose peak resident memory is read from the kernel.

    .venv/bin/python -m benchmarks.bench_export [--decisions 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import orjson

from benchmarks.bench_load import prepare
from benchmarks.common import benchmark_redis
from engine.api.server import build_application, redis_store_for
from engine.core.decision import DecisionRequest
from engine.settings import ServerSettings, load_definitions
from feature_store import keys
from feature_store.log_reader import read_decisions
from feature_store.redis_client import connect_sync
from training.export import export_logs

TEMPLATES = 2000
DAYS = 10


async def templates(settings: ServerSettings) -> None:
    """Real decisions of the demo service, logged."""
    definitions = load_definitions(settings)
    store = redis_store_for(settings, settings.redis_url or "", definitions)
    application = build_application(settings, store, definitions)
    application.writer.start()
    for n in range(TEMPLATES):
        request = DecisionRequest(f"cust-{1 + n:06d}", "web", "home_hero", limit=2)
        await application.decide(request)
    await application.writer.close()
    await store.aclose()


def copies(client: Any, total: int) -> tuple[int, int]:
    """``total`` decisions made from the logged ones (which they replace), oldest first
    over DAYS days, and an accept for every twentieth; returns (decisions, outcomes)."""
    logged = read_decisions(client)
    client.delete(*keys.decision_logs(), *keys.outcome_logs())  # the copies only, in order
    start = time.time() - DAYS * 86400
    step = DAYS * 86400 / total
    pipe = client.pipeline(transaction=False)
    outcomes = 0
    for i in range(total):
        entry: dict[str, Any] = dict(logged[i % len(logged)])
        ts = start + i * step
        entry["decision_id"] = f"copy-{i:08d}"
        entry["ts"] = ts
        shard = keys.log_shard(entry["customer_id"])
        stream_id = f"{int(ts * 1000)}-{i}"
        packed = zlib.compress(orjson.dumps(entry), 1)
        pipe.xadd(keys.decision_log(shard), {keys.DECISION_FIELD_COMPRESSED: packed}, id=stream_id)
        if i % 20 == 0 and entry["actions"]:
            outcome = {
                "decision_id": entry["decision_id"],
                "customer_id": entry["customer_id"],
                "offer_id": entry["actions"][0]["offer_id"],
                "outcome": "accept",
                "value": 0.0,
                "occurred_at": ts + 60,
                "idempotency_key": f"k-{i}",
            }
            pipe.xadd(
                keys.outcome_log(shard),
                {keys.OUTCOME_FIELD: orjson.dumps(outcome)},
                id=f"{int((ts + 60) * 1000)}-{i}",
            )
            outcomes += 1
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    return total, outcomes


def train_in_a_process(source: str, env: dict[str, str], log: Path) -> tuple[float, float, str]:
    """(seconds, peak resident memory in MB, first line printed) of `arbiter train
    --source`, in a process of its own (its own peak, from wait4)."""
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "training.cli", "train", "--source", source, "--force"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    text = log.read_text()
    if process.returncode != 0:
        raise SystemExit(f"train --source {source} failed:\n{text[-2000:]}")
    lines = [line for line in text.splitlines() if "logged decisions used" in line]
    return seconds, usage.ru_maxrss / 1024, lines[0] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    args = parser.parse_args()
    with benchmark_redis() as redis_url, tempfile.TemporaryDirectory() as tmp:
        settings = prepare(Path(tmp), redis_url)
        asyncio.run(templates(settings))
        client = connect_sync(redis_url)
        started = time.perf_counter()
        made, outcomes = copies(client, args.decisions)
        print(
            f"{made:,} decisions and {outcomes:,} outcomes written to the log shards in"
            f" {time.perf_counter() - started:.0f} s"
        )
        dest = Path(tmp) / "exported"
        report = export_logs(client, dest)
        size = sum(p.stat().st_size for p in dest.rglob("*.parquet"))
        print(
            f"export-logs: {sum(report.rows.values()):,} rows in {report.seconds:.1f} s"
            f" ({report.rows_per_second:,.0f} rows/s), {report.files} files,"
            f" {size / 1e6:.0f} MB of Parquet"
        )
        again = export_logs(client, dest)
        print(f"export-logs again: {sum(again.rows.values())} new rows in {again.seconds:.2f} s")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")},
            "REDIS_URL": redis_url,
            "ARBITER_DATA_DIR": tmp,
            "ARBITER_EXPORT_DIR": str(dest),
            "ARBITER_ATTRIBUTION_HOURS": "1",
            "ARBITER_COMPILE_TREES": "false",
        }
        for source in ("export", "logs"):
            seconds, peak_mb, line = train_in_a_process(source, env, Path(tmp) / f"{source}.log")
            print(
                f"train --source {source}: {seconds:.0f} s, peak memory {peak_mb:,.0f} MB; {line}"
            )


if __name__ == "__main__":
    main()
