"""`make chaos`, small: every scenario of benchmarks/chaos/ runs here on a real server
and a Redis of its own, asserting what it guarantees (the full run's figures are in
docs/reliability.md)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.chaos import faults, fuzzing, harness, load, outages, outcomes

ACCEPTED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}


def test_redis_paused_then_killed_under_load_fails_no_call(tmp_path: Path) -> None:
    run = faults.redis_faults(tmp_path, seconds=4.0)
    assert run.tally.calls > 100 and run.tally.failed == 0
    assert 0 < run.tally.degraded < run.tally.calls
    assert run.recovered_after < 2.0


@pytest.mark.parametrize(
    ("blackhole", "empty"),
    [(False, False), (True, False), (False, True)],
    ids=["refused", "black-holed", "restarted-empty"],
)
def test_redis_killed_and_restarted_costs_no_caller_its_deadline(
    tmp_path: Path, blackhole: bool, empty: bool
) -> None:
    # The probe of a user: `arbiter serve` (two workers, a trained model) on a Redis with
    # AOF, open-loop Decides, Redis SIGKILLed and back 2 s later; meanwhile its port
    # refuses connections, or answers no SYN at all; or it comes back without its data (no
    # AOF). A 500 ms deadline here: a call must degrade, never fail or hang; how close the
    # calls come to the 200 ms a user would set is `make chaos`'s figure (the suite runs
    # on two processes of a two-core machine).
    k = outages.kill_restart(
        tmp_path,
        seconds=6.0,  # "back" is said after a second of calls served without a failure
        kill_at=1.5,
        back_at=3.5,
        rate=100,
        deadline=0.5,
        workers=2,
        model=True,
        blackhole=blackhole,
        empty=empty,
    )
    # each within its deadline (one that was not would have failed DEADLINE_EXCEEDED)
    assert k.tally.calls > 500 and k.tally.failed == 0, k.tally
    assert 0 < k.tally.degraded < k.tally.calls  # degraded while down, and only then
    # full answers again before the run ends, 2.5 s after Redis answers again (how soon:
    # `make chaos` measures it; no wall-clock figure in the default run)
    assert k.full_after < 6.0 - 3.5
    assert k.tracebacks == 0, k.warnings
    assert k.logged == k.served and k.doubled == 0  # the log caught up, nothing twice
    # One WARNING line per change of state (one worker served): the store down (with what
    # Redis said, when it said something) and back; the decision log failing and writing
    # again, when a write failed (behind a black hole it waits on its connect instead);
    # the learner paused and learning again, when a tick met the outage.
    said = " | ".join(k.warnings)
    assert all(any(change in line for change in CHANGES) for line in k.warnings), said
    assert said.count("feature store down (") == said.count("feature store back after ") == 1
    failing, again, paused, learning = (said.count(change) for change in CHANGES[2:])
    assert failing == again <= 1, said
    assert paused == learning <= 1, said
    if not blackhole:  # what Redis said: refused, or the connection reset by the kill
        assert re.search(r"feature store down \(.* failed: (cannot connect|connection)", said)


CHANGES = (
    "feature store down (",
    "feature store back after ",
    "decision log: writes failing (",
    "decision log: writing again after ",
    "learner: paused, Redis unavailable (",
    "learner: learning again after ",
)


def test_a_cluster_primary_killed_costs_no_caller_its_deadline(tmp_path: Path) -> None:
    # A 500 ms deadline here: a call must degrade, never fail or hang; how close the calls
    # come to the 200 ms a user would set is `make chaos`'s figure (a busy CI machine once
    # held one call of 600 past 200 ms)
    k = outages.primary_killed(tmp_path, seconds=6.0, kill_at=1.5, rate=100, deadline=0.5)
    assert k.tally.calls > 500 and k.tally.failed == 0, k.tally  # each within its deadline
    assert 0 < k.tally.degraded < k.tally.calls
    assert k.full_after < 6.0 - 1.5  # the replica promoted (node timeout 1 s), then whole
    assert k.tracebacks == 0, k.warnings
    assert k.logged == k.served and k.doubled == 0


def test_a_graceful_restart_loses_and_doubles_no_outcome(tmp_path: Path) -> None:
    restart = outcomes.restart(tmp_path, outcomes=100)
    assert restart.acknowledged == 100
    assert restart.lost == 0 and restart.duplicated == 0


def test_concurrent_duplicates_are_recorded_once(tmp_path: Path) -> None:
    duplicates = outcomes.duplicates(tmp_path, keys=30)
    assert duplicates.recorded_twice == 0 and duplicates.logged_twice == 0
    assert duplicates.unanswered == 0  # a client that retries is answered


def test_fuzzed_requests_get_statuses_a_client_can_act_on(tmp_path: Path) -> None:
    fuzz = fuzzing.fuzz(tmp_path, examples=400)
    assert set(fuzz.tally.codes) <= ACCEPTED, fuzz.tally.codes
    assert fuzz.still_serving
    assert fuzz.rss_after_mb - fuzz.rss_before_mb < 50


def not_for_time(tally: harness.Tally) -> Counter[str]:
    """Degraded answers for a reason other than a call over its time budget: how often a
    busy machine runs a reservation past its 50 ms is `make chaos`'s figure, not a fault."""
    return Counter({r: n for r, n in tally.reasons.items() if "slower than" not in r})


def test_a_hot_customer_does_not_hurt_the_others(tmp_path: Path) -> None:
    hot = load.hot(tmp_path, seconds=2.0, events=1000)
    assert hot.after.failed == 0 and not not_for_time(hot.after), hot.after.reasons
    assert hot.hot_fields < 200
    assert hot.flood.codes["RESOURCE_EXHAUSTED"] > 0


def test_a_short_soak_keeps_serving_with_flat_memory(tmp_path: Path) -> None:
    windows = load.soak(tmp_path, seconds=4.0, window=2.0)
    assert len(windows) == 2
    assert all(w.tally.failed == 0 and not not_for_time(w.tally) for w in windows), [
        str(w.tally) for w in windows
    ]
    assert windows[-1].rss_mb - windows[0].rss_mb < 50


def test_a_short_soak_through_the_server_answers_every_call_in_time(tmp_path: Path) -> None:
    windows, collections = load.served_soak(tmp_path, seconds=6.0, window=3.0, rate=100)
    assert len(windows) == 2
    # every call answered within its 2 s deadline (how fast: `make chaos`'s soak figures)
    assert all(w.calls >= 250 and w.failed == 0 for w in windows), windows
    assert collections.seen, collections  # every collection of the server, timed
