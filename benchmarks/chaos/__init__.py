"""`make chaos`: the service under the faults and callers production brings, each scenario
on a real server and a real Redis of its own, with the figures printed. One module a
scenario (faults, outages, outcomes, fuzzing, load) over a shared harness (harness.py);
`python -m benchmarks.chaos` runs them all (__main__.py).

    python -m benchmarks.chaos [--fuzz 100000] [--soak-seconds 120] [--window 10]

- kill: Redis (AOF) killed at 7 s and restarted at 12 s under 150 Decide/s with a 200 ms
  deadline, through `arbiter serve --workers 2` (again with its port black-holed while
  down, and restarted empty); a Redis Cluster's primary killed the same way;
- redis: Redis paused for 1 s, then killed and restarted, under a steady Decide load;
- restart: a graceful restart with outcomes in flight (lost = acknowledged, not logged);
- duplicates: each outcome sent twice at the same moment (duplicated = logged twice);
- fuzz: requests from hypothesis over the protos, and raw bytes (never UNKNOWN/INTERNAL);
- hot: one customer flooded with new event types; the others' p99 with and without;
- soak: a mixed load for a while; RSS and p99 per window; and through `arbiter serve` at
  150 calls/s open loop: p50, p99 and p99.9 per window and the server's collections.

tests/test_chaos.py runs every scenario small inside `make test`, asserting what each one
guarantees; docs/reliability.md gives the figures of a full run.
"""
