"""Where a call's server CPU goes, behind gRPC: `arbiter serve` (one worker) under the
closed loop of bench_load, Health/Check and then Decide, the CPU of each server thread and
of the log process per call (from /proc, nothing attached), then the event-loop thread's
time split by what it was doing, from py-spy sampling it without stopping it
(``--nonblocking``: the server runs at its own speed).

    .venv/bin/python -m benchmarks.bench_where [--seconds 5]

The split answers "what does Decide cost over the application alone": the gRPC core's
C/Cython work on the loop (call set-up, (de)serialisation hand-offs, task steps: the
samples whose innermost Python frame is the loop's callback runner), the wait in epoll,
the servicer's decode and encode, the application's stages, the log feed, and the rest
of the loop's own bookkeeping. A sample is put under the innermost frame that names a
part; py-spy cuts some stacks short when it reads a frame being replaced, and these still
land on their innermost named frame.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.bench_load import phase, prepare
from benchmarks.common import benchmark_redis, start_server
from common.ports import free_port

# A sample goes to the innermost frame naming a part: a function, or a file of the repo
# (for stacks py-spy cut short above the function that would name it).
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("request decode", ("decode_decide", "tolerant.<locals>.deserialize", "engine/api/validation")),
    ("response encode", ("encode_decision",)),
    ("signing decision ids", ("Application._signed", "engine/core/decision_id")),
    ("decision core", ("DecisionCore.", "engine/core/", "engine/adapters/", "lleaves/")),
    (
        "Redis calls (read, reserve: send, wait, decode)",
        ("Application._fetch", "Application._reserve", "feature_store/"),
    ),
    ("decision-log feed", ("LogProcess.", "engine/service/log_process")),
    ("metrics", ("MetricsTimer.", "prometheus_client/")),
    ("interceptor, servicer glue", ("engine/api/", "engine/service/")),
    ("waiting in epoll", ("EpollSelector.select",)),
]
GRPC_CORE = "gRPC core and task steps (C, on the loop)"
LOOP = "rest of the event loop"


LOOP_THREAD = "event loop (main thread)"


def thread_cpu(root: int) -> dict[str, float]:
    """CPU seconds of ``root``'s threads by name (its main thread: the event loop) and of
    its children (the log process)."""
    tick = os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{root}/task/{root}/children").read_text().split()
    used: dict[str, float] = {}
    for pid in [root, *map(int, children)]:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                name = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if pid != root:
                name = "log process"
            elif int(task.name) == root:
                name = LOOP_THREAD
            used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used


def part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        name, _, where = frame.partition(" (")
        for part, markers in PARTS:
            if any(name.startswith(m) or m in where for m in markers):
                return part
    if frames and frames[-1].startswith("Handle._run "):
        return GRPC_CORE
    return LOOP


def split(path: Path) -> tuple[Counter[str], int]:
    """Main-thread samples by part, and their number."""
    parts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        frames = stack.split(";")
        if "MainThread" not in frames[0]:
            continue
        parts[part_of(frames[1:])] += int(count)
        total += int(count)
    return parts, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    with benchmark_redis() as redis_url, tempfile.TemporaryDirectory() as tmp:
        settings = prepare(Path(tmp), redis_url)
        port = free_port()
        server = start_server(settings, port)
        try:
            for method in ("check", "decide"):
                out = Path(tmp) / f"{method}.txt"
                record = ["--nonblocking", "--threads", "-r", "250", "-f", "raw", "-o", str(out)]
                sampler = subprocess.Popen(
                    [spy, "record", *record, "-d", f"{args.seconds:.0f}", "-p", str(server.pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                before = thread_cpu(server.pid)
                r = phase(port, method, args.seconds, args.clients, args.connections)
                after = thread_cpu(server.pid)
                sampler.wait(timeout=60)
                calls = r["rate"] * args.seconds
                print(
                    f"\n{method}: {r['rate']:.0f} calls/s, p50 {r['p50']:.0f} us,"
                    f" p99 {r['p99']:.0f} us; server CPU per call by thread:"
                )
                spent = {k: (after[k] - before.get(k, 0.0)) / calls * 1e6 for k in after}
                for name, us in sorted(spent.items(), key=lambda kv: -kv[1]):
                    if us >= 5:
                        print(f"  {name:42s} {us:6.0f} us")
                print(f"  {'all':42s} {sum(spent.values()):6.0f} us")
                main_us = spent[LOOP_THREAD]
                parts, total = split(out)
                print(f"  event-loop thread, {main_us:.0f} us a call, by part ({total} samples):")
                for part, n in parts.most_common():
                    print(f"    {part:42s} {n / total * 100:5.1f}%  {n / total * main_us:6.0f} us")
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
