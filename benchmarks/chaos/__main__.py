"""`python -m benchmarks.chaos`: every scenario, figures printed (`make chaos`)."""

from __future__ import annotations

import argparse
import functools
import resource
from collections.abc import Callable
from pathlib import Path

from benchmarks.chaos.faults import redis_faults
from benchmarks.chaos.fuzzing import fuzz
from benchmarks.chaos.harness import rss_mb
from benchmarks.chaos.load import hot, served_soak, soak
from benchmarks.chaos.outages import Outage, kill_restart, primary_killed
from benchmarks.chaos.outcomes import duplicates, restart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fuzz", type=int, default=100_000)
    parser.add_argument("--soak-seconds", type=float, default=120.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--data", type=Path, default=Path("var/chaos"))
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of an earlier commit, its code generated (make protos): the outages"
        " and the soak served by it too, in the same run",
    )
    args = parser.parse_args()
    print(
        f"RSS at start {rss_mb():.0f} MB (max so far {resource.getrusage(0).ru_maxrss / 1024:.0f})"
    )

    checkouts: list[tuple[str, Path | None]] = [("now", None)]
    if args.before is not None:
        checkouts.insert(0, ("before", args.before.resolve()))
    outages: dict[str, Callable[..., Outage]] = {
        "killed, port refusing": functools.partial(kill_restart, workers=2, model=True),
        "killed, port black-holed": functools.partial(
            kill_restart, workers=2, model=True, blackhole=True
        ),
        "killed, restarted empty": functools.partial(
            kill_restart, workers=2, model=True, empty=True
        ),
        "cluster primary killed": functools.partial(primary_killed, workers=2),
    }
    print(
        "\nRedis killed at 7 s and back at 12 s (a cluster's primary killed at 3 s of 10),"
        " 150 Decide/s open loop with a 200 ms deadline, `arbiter serve --workers 2`:"
    )
    print(
        "| scenario | code | calls | errors | worst | p99 | degraded | seconds to full answers"
        " | log lost / doubled | tracebacks |"
    )
    said: list[str] = []
    for name, run in outages.items():
        for code, tree in checkouts:
            o = run(args.data / f"{name.replace(',', '').replace(' ', '-')}-{code}", tree=tree)
            print(o.row(f"{name} | {code}"), flush=True)
            said += [f"  {name}, {code}:"] + [f"    {line}" for line in o.warnings[:12]]
    print("\nwhat the servers logged:", *said, sep="\n")
    faults = redis_faults(args.data / "redis")
    print(f"\nredis paused 1 s, then killed and restarted: {faults.tally}")
    print(f"  full answers again {faults.recovered_after:.2f} s after the restart")
    r = restart(args.data / "restart")
    print(
        f"\ngraceful restart with outcomes in flight: {r.acknowledged} acknowledged,"
        f" {r.lost} lost, {r.duplicated} logged twice, {r.refused_during_restart} refused"
        " during the restart (retried)"
    )
    d = duplicates(args.data / "duplicates")
    print(
        f"\nthe same outcome twice at once: {d.keys} keys, {d.recorded_twice} recorded twice,"
        f" {d.logged_twice} logged twice, {d.unanswered} calls unanswered after retries"
    )
    f = fuzz(args.data / "fuzz", args.fuzz)
    print(f"\nfuzz: {f.tally}")
    print(
        f"  RSS {f.rss_before_mb:.0f} -> {f.rss_after_mb:.0f} MB; still serving: {f.still_serving}"
    )
    h = hot(args.data / "hot")
    print(f"\nhot customer: others at 100/s before the flood: {h.quiet}")
    print(f"  the flood, 5,000 made-up event types for one customer: {h.flood}")
    print(f"  the hot customer's real-time fields after it: {h.hot_fields}")
    print(f"  others at 100/s after it, the hot customer deciding too: {h.after}")
    print(f"  others' p99 after / before: x{h.after.p99() / max(h.quiet.p99(), 1):.2f}")
    soaks: list[tuple[str, Path | None, bool]] = [
        *((code, tree, True) for code, tree in checkouts[:-1]),
        ("now without gc.freeze", None, False),
        ("now", None, True),
    ]
    for code, tree, freeze in soaks:
        windows, collections = served_soak(
            args.data / f"served-soak-{code.replace(' ', '-')}",
            seconds=args.soak_seconds,
            window=args.window,
            tree=tree,
            freeze=freeze,
            demo=True,
        )
        print(
            f"\nsoak through arbiter serve --demo ({code}, one worker), 150 calls/s open loop,"
            f" {args.soak_seconds:g} s in windows of {args.window:g} s:"
        )
        for sw in windows:
            print(
                f"  {sw.seconds:6.1f} s  {sw.calls} calls, {sw.failed} failed, p50"
                f" {sw.p50_ms:.1f} ms, p99 {sw.p99_ms:.1f} ms, p99.9 {sw.p999_ms:.1f} ms;"
                f" of the {sw.slow} calls over p99, {sw.slow_in_gc} met a collection"
            )
        print(f"  the server's garbage collections: {collections}", flush=True)
    print(f"\nsoak, {args.soak_seconds:g} s in windows of {args.window:g} s:")
    for w in soak(args.data / "soak", args.soak_seconds, args.window):
        print(f"  {w.seconds:6.1f} s  RSS {w.rss_mb:5.0f} MB  {w.tally}")


if __name__ == "__main__":
    main()
