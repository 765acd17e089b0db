"""Event triggers, measured (`make bench-triggers`; docs/outbound.md):

1. **latency**: `arbiter serve` (one worker) takes RecordEvent of a zero-delay trigger's
   event at ``--events`` a second, each for another customer, while Decide serves
   ``--decides`` a second; from each RecordEvent's send to its message read from the
   stream (a blocking XREAD), percentiles. Decide's own percentiles beside them.
2. **exactly once**: ``--triggers`` triggers scheduled due now, fired by `arbiter serve`
   while it is killed (SIGKILL, its whole process group) ``--kills`` times and started
   again; then every one must be on the stream once: none twice, none lost.
3. **an always-on run killed mid-pass**: a run over every opted-in customer at a time two
   to three minutes ahead (UTC), its pass over the 24,000 profiles killed (SIGKILL)
   ``--run-kills`` times as it goes (a third and two thirds of the way); the next process
   takes the pass over when the dead one's lease lapses (30 s) and goes on from the last
   page written. When the time comes, each customer of the segment must be sent once or
   suppressed once (the run's summary): none twice, none lost.

The catalog: the demo's, without quiet hours (the run must not depend on the hour), with
an offer every opted-in customer may get by email and a trigger choosing only it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import threading
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import redis
import tomli_w

from arbiter.v1 import common_pb2, decision_pb2, decision_pb2_grpc, profile_pb2, profile_pb2_grpc
from benchmarks.chaos.harness import train_model
from benchmarks.common import percentiles, start_server
from common.ports import free_port
from engine.core.triggers import Pending
from engine.settings import DEFAULTS, ServerSettings, load_definitions
from feature_store import keys
from feature_store.embedded import EmbeddedRedis
from feature_store.loader import load_profiles
from feature_store.triggers import SCHEDULE
from training.world import generate

WORLD = 24_000
EVENT = "bench_alert"


def bench_catalog(path: Path) -> Path:
    doc = tomllib.loads((DEFAULTS / "catalog.toml").read_text())
    doc["contact_policy"].pop("quiet_hours", None)
    doc["contact_policy"].pop("budget", None)
    doc.pop("outbound", None)  # the bench's messages only on the stream
    doc["offer"].append(
        {
            "id": "bench_note",
            "name": "A note",
            "category": "service",
            "value": 1,
            "channels": ["email"],
            "message": {"headline": "A note for $first_name", "body": "Thank you."},
        }
    )
    doc["trigger"] = [
        {"id": "bench", "events": [EVENT], "channels": ["email"], "offers": ["bench_note"]}
    ]
    path.write_text(tomli_w.dumps(doc))
    return path


def start(
    settings: ServerSettings, port: int, log: Path, runs: bool = False
) -> subprocess.Popen[bytes]:
    """`arbiter serve`, one worker, in a process group of its own (killed whole);
    ``runs``: looking for an always-on run's pass to make every second."""
    with log.open("ab") as out:
        return start_server(
            settings,
            port,
            1,
            log=out,
            session=True,
            trigger_poll_seconds="0.2",
            outbound_run_seconds="1" if runs else "0",
        )


def kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def stream_ids(client: redis.Redis) -> list[str]:
    entries: Any = client.xrange(keys.outbound_stream("email"))
    return [fields[b"message_id"].decode() for _, fields in entries]


def latency(
    client: redis.Redis,
    port: int,
    customers: list[str],
    events: int,
    decides: int,
    seconds: float,
    event_type: str = EVENT,
) -> None:
    stream = keys.outbound_stream("email")
    arrived: dict[str, float] = {}
    sent: dict[str, float] = {}
    done = threading.Event()

    def read() -> None:
        last = "$"
        while not done.is_set():
            found: Any = client.xread({stream: last}, block=200)
            now = time.monotonic()
            for _, entries in found or []:
                for entry_id, fields in entries:
                    last = entry_id
                    arrived[fields[b"customer_id"].decode()] = now

    decide_us: list[float] = []

    def decide_load(stub: Any) -> None:
        i, begun = 0, time.monotonic()
        while not done.is_set():
            request = decision_pb2.DecideRequest(
                customer_id=customers[-1 - (i % 1000)], channel=common_pb2.CHANNEL_WEB
            )
            t = time.perf_counter()
            stub.Decide(request, timeout=2)
            decide_us.append((time.perf_counter() - t) * 1e6)
            i += 1
            time.sleep(max(0.0, begun + i / decides - time.monotonic()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        profiles = profile_pb2_grpc.ProfileServiceStub(channel)
        decider = threading.Thread(
            target=decide_load, args=(decision_pb2_grpc.DecisionServiceStub(channel),)
        )
        decider.start()
        begun = time.monotonic()
        futures = []
        n = min(int(events * seconds), len(customers) - 1000)
        for i in range(n):
            customer = customers[i]
            sent[customer] = time.monotonic()
            futures.append(
                profiles.RecordEvent.future(
                    profile_pb2.RecordEventRequest(
                        customer_id=customer, channel=common_pb2.CHANNEL_WEB, event_type=event_type
                    ),
                    timeout=5,
                )
            )
            time.sleep(max(0.0, begun + (i + 1) / events - time.monotonic()))
        for f in futures:
            f.result()
        time.sleep(2.0)
        done.set()
        decider.join()
    reader.join()
    ms = [1000 * (arrived[c] - sent[c]) for c in sent if c in arrived]
    print(f"event -> message on the stream: {len(ms)} of {len(sent)} events at {events}/s")
    if ms:
        print("  " + percentiles(np.array(ms) * 1000))
    print(f"Decide at {decides}/s meanwhile:\n  {percentiles(decide_us)}")


def exactly_once(
    client: redis.Redis, settings: ServerSettings, customers: list[str], kills: int, log: Path
) -> None:
    schedule = client.register_script(SCHEDULE)
    now = time.time()
    ids = []
    for i, customer in enumerate(customers):
        pending = Pending(f"x{i}", "bench", customer, EVENT, {}, now, now)
        ids.append(pending.schedule_id)
        bucket = keys.trigger_bucket(customer)
        member = keys.trigger_member(customer, "bench")
        schedule(
            keys=list(keys.trigger_keys(bucket)), args=[member, now, now, 0, pending.to_json()]
        )

    def waiting() -> int:
        return sum(int(client.hlen(keys.trigger_keys(b)[1])) for b in range(keys.TRIGGER_BUCKETS))

    rng = np.random.default_rng(1)
    port = free_port()
    began = time.monotonic()
    process = start(settings, port, log)
    for k in range(kills):
        time.sleep(float(rng.uniform(0.3, 1.5)))
        left = waiting()
        kill(process)
        print(f"  kill {k + 1}: SIGKILL with {left} triggers waiting")
        process = start(settings, port, log)
    while waiting() and time.monotonic() - began < 600:
        time.sleep(0.2)
    took = time.monotonic() - began
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(60)
    on_stream = stream_ids(client)
    counts = Counter(on_stream)
    twice = sum(1 for c in counts.values() if c > 1)
    lost = len(set(ids) - set(counts))
    print(
        f"exactly once: {len(ids)} scheduled, {kills} kills (SIGKILL), {took:.1f} s:"
        f" {len(counts)} on the stream, {twice} twice, {lost} lost, {waiting()} still waiting"
    )


def run_killed(
    client: redis.Redis,
    settings: ServerSettings,
    work: Path,
    segment: list[str],
    kills: int,
    log: Path,
) -> None:
    doc = tomllib.loads(settings.catalog_path.read_text())
    at = time.gmtime(time.time() + 180)  # 2 to 3 minutes ahead: after the pass and kills
    doc["outbound"] = [
        {
            "id": "bench_run",
            "segment": "email_opt_in == 1",
            "channels": ["email"],
            "offers": ["bench_note"],
            "at": f"{at.tm_hour:02d}:{at.tm_min:02d}",
        }
    ]
    catalog = work / "catalog-run.toml"
    catalog.write_text(tomli_w.dumps(doc))
    settings = settings.model_copy(update={"catalog_path": catalog})
    client.delete(keys.outbound_stream("email"))
    cycle = time.strftime("%Y-%m-%d", time.gmtime())
    _, progress = keys.run_keys("bench_run", cycle)

    def state() -> dict[str, str]:
        raw: Any = client.hgetall(progress)
        return {k.decode(): v.decode() for k, v in raw.items()}

    port = free_port()
    began = time.monotonic()
    process = start(settings, port, log, runs=True)
    for k in range(kills):
        mark = (k + 1) * WORLD // (kills + 1)
        while int(state().get("scanned", 0)) < mark and time.monotonic() - began < 300:
            time.sleep(0.01)
        kill(process)
        print(f"  kill {k + 1}: SIGKILL with the pass at {state().get('scanned')} customers")
        process = start(settings, port, log, runs=True)
    while "finished" not in state() and time.monotonic() - began < 600:
        time.sleep(0.2)
    passed = time.monotonic() - began
    print(f"  the pass: {passed:.1f} s, {state()}")
    print(f"  waiting for {doc['outbound'][0]['at']} UTC ...")

    def waiting() -> int:
        return sum(int(client.hlen(keys.trigger_keys(b)[1])) for b in range(keys.TRIGGER_BUCKETS))

    while (waiting() or "finished" not in state()) and time.monotonic() - began < 900:
        time.sleep(0.5)
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(60)
    done = state()
    entries: Any = client.xrange(keys.outbound_stream("email"))
    sent = Counter(
        f[b"customer_id"].decode() for _, f in entries if f[b"trigger_id"] == b"bench_run"
    )
    suppressed = sum(int(v) for f, v in done.items() if f.startswith("suppressed:"))
    twice = sum(1 for c in sent.values() if c > 1)
    outside = len(set(sent) - set(segment))
    lost = len(segment) - len(sent) - suppressed
    print(
        f"run killed mid-pass: {len(segment)} customers in the segment (of {WORLD} profiles),"
        f" {kills} kills: {len(sent)} sent, {suppressed} suppressed,"
        f" {twice} twice, {outside} outside the segment, {lost} lost; scheduled"
        f" {done.get('scheduled')}, already waiting {done.get('already_pending', 0)}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200, help="RecordEvent a second")
    p.add_argument("--decides", type=int, default=200, help="Decide a second meanwhile")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--triggers", type=int, default=10_000)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--run-kills", type=int, default=2)
    p.add_argument(
        "--baseline",
        action="store_true",
        help="the same load with events no trigger reacts to (page_view), and no more",
    )
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="arbiter-bench-triggers-"))
    own = EmbeddedRedis().start()
    try:
        catalog = bench_catalog(work / "catalog.toml")
        settings = ServerSettings(data_dir=work, catalog_path=catalog, redis_url=own.url)
        client = redis.Redis.from_url(own.url)
        world = generate(WORLD, 7)
        load_profiles(client, load_definitions(settings).schema, world.profiles())
        train_model(settings)
        opted = [world.customer_id(i) for i in range(WORLD) if world.features["email_opt_in"][i]]
        log = work / "serve.log"
        print(f"{len(opted)} customers who take email; the server's log: {log}")
        split = len(opted) - args.triggers
        port = free_port()
        process = start(settings, port, log)
        try:
            kind = "page_view" if args.baseline else EVENT
            latency(client, port, opted[:split], args.events, args.decides, args.seconds, kind)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)
        if args.baseline:
            return 0
        client.delete(keys.outbound_stream("email"))
        exactly_once(client, settings, opted[split:], args.kills, log)
        run_killed(client, settings, work, opted, args.run_kills, log)
        client.close()
    finally:
        own.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
