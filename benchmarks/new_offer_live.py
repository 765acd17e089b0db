"""A new offer learnt by a real `arbiter serve --demo` within minutes, through its public
API: the server (on ``REDIS_URL``, flushed, or an embedded Redis; the demo world and a
first model, its learner process)
serves the demo catalog; callers decide for random customers on the web and answer as
this script says: the new offer, added to the catalog file while it serves, is accepted
3 times in 4, every other offer once in 10 (else declined). Every half minute it prints
the new offer's share of the decisions and the layer the server serves (its /metrics);
at the end, `arbiter models`.

    .venv/bin/python -m benchmarks.new_offer_live [--minutes 4] [--add-after 0.5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np

from arbiter.v1 import common_pb2, decision_pb2, decision_pb2_grpc
from benchmarks.common import benchmark_redis, flush, start_server
from common.ports import free_port
from engine.settings import DEFAULTS, ServerSettings
from feature_store.redis_client import connect_sync

NEW_OFFER = """
[[offer]]
id = "streaming_bundle"
name = "Streaming bundle"
category = "tv"
tags = ["streaming"]
value = 80
channels = ["web"]
[offer.message]
headline = "Every streaming service, one bill"
body = "Add the streaming bundle to $plan_name."
call_to_action = "Add the bundle"
"""


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--add-after", type=float, default=0.5, help="minutes")
    args = parser.parse_args()
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory() as folder, benchmark_redis() as redis_url:
        work = Path(folder)
        catalog = work / "catalog.toml"
        shutil.copy(DEFAULTS / "catalog.toml", catalog)
        flush(connect_sync(redis_url))
        settings = ServerSettings(
            data_dir=work, catalog_path=catalog, reload_seconds=1.0, redis_url=redis_url
        )
        port, metrics_port = free_port(), free_port()
        print("starting `arbiter serve --demo` (the demo world and a first model: a minute)")
        server = start_server(settings, port, demo=True, metrics_port=str(metrics_port))
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            decisions = decision_pb2_grpc.DecisionServiceStub(channel)
            started, added, window = time.monotonic(), False, [0, 0]
            next_print = started + 30
            while time.monotonic() - started < args.minutes * 60:
                if not added and time.monotonic() - started > args.add_after * 60:
                    catalog.write_text(catalog.read_text() + NEW_OFFER)
                    added = True
                    print(f"{time.monotonic() - started:5.0f} s: streaming_bundle added")
                customer = f"cust-{int(rng.integers(50_000)) + 1:06d}"
                answer = decisions.Decide(
                    decision_pb2.DecideRequest(
                        customer_id=customer, channel=common_pb2.CHANNEL_WEB, placement="home_hero"
                    ),
                    timeout=5,
                )
                if answer.actions:
                    offer = answer.actions[0].offer_id
                    new = offer == "streaming_bundle"
                    window[0] += 1
                    window[1] += new
                    accepted = rng.random() < (0.75 if new else 0.1)
                    decisions.ReportOutcome(
                        decision_pb2.ReportOutcomeRequest(
                            decision_id=answer.decision_id,
                            customer_id=customer,
                            offer_id=offer,
                            outcome=common_pb2.OUTCOME_ACCEPT
                            if accepted
                            else common_pb2.OUTCOME_DECLINE,
                        ),
                        timeout=5,
                    )
                if time.monotonic() >= next_print:
                    share = window[1] / max(window[0], 1)
                    print(
                        f"{time.monotonic() - started:5.0f} s: {window[0]} decisions,"
                        f" streaming_bundle {share:.1%}; layer publication"
                        f" {_metric(metrics_port, 'arbiter_adaptive_layer_version'):.0f},"
                        f" learner up {_metric(metrics_port, 'arbiter_adaptive_learner_up'):.0f}",
                        flush=True,
                    )
                    window, next_print = [0, 0], next_print + 30
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")},
                "ARBITER_DATA_DIR": str(work),
                "ARBITER_CATALOG_PATH": str(catalog),
                "REDIS_URL": redis_url,
            }
            print("\n$ arbiter models", flush=True)
            subprocess.run([sys.executable, "-m", "training.cli", "models"], env=env, check=True)
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
