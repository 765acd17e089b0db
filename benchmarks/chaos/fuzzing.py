"""Requests from hypothesis over the protos, and raw bytes: every answer a status a
client can act on (never UNKNOWN or INTERNAL).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from arbiter.v1 import decision_pb2, profile_pb2
from benchmarks.chaos.harness import WEB, Tally, rss_of, served_world

text = st.text(max_size=80)


DECIDE = st.builds(
    decision_pb2.DecideRequest,
    customer_id=text,
    channel=st.integers(0, 7),
    placement=text,
    context=st.dictionaries(text, text, max_size=5),
    limit=st.integers(-(2**31), 2**31 - 1),
    offer_ids=st.lists(text, max_size=5),
    explain=st.booleans(),
)


OUTCOME = st.builds(
    decision_pb2.ReportOutcomeRequest,
    decision_id=text,
    customer_id=text,
    offer_id=st.sampled_from(["fibre_broadband", "ghost", ""]) | text,
    outcome=st.integers(0, 8),
    value=st.floats(allow_nan=True, allow_infinity=True),
    idempotency_key=text,
)


EVENT = st.builds(
    profile_pb2.RecordEventRequest,
    customer_id=text,
    channel=st.integers(0, 7),
    event_type=text,
    attributes=st.dictionaries(text, text, max_size=5),
)


PROFILE = st.builds(profile_pb2.GetProfileRequest, customer_id=text)


METHODS = {
    "Decide": "/arbiter.v1.DecisionService/Decide",
    "ReportOutcome": "/arbiter.v1.DecisionService/ReportOutcome",
    "RecordEvent": "/arbiter.v1.ProfileService/RecordEvent",
    "GetProfile": "/arbiter.v1.ProfileService/GetProfile",
}


CASES = st.one_of(
    st.tuples(st.just("Decide"), DECIDE.map(lambda m: m.SerializeToString())),
    st.tuples(st.just("ReportOutcome"), OUTCOME.map(lambda m: m.SerializeToString())),
    st.tuples(st.just("RecordEvent"), EVENT.map(lambda m: m.SerializeToString())),
    st.tuples(st.just("GetProfile"), PROFILE.map(lambda m: m.SerializeToString())),
    st.tuples(st.sampled_from(list(METHODS)), st.binary(max_size=300)),
)


@dataclass
class Fuzz:
    tally: Tally
    rss_before_mb: float
    rss_after_mb: float
    still_serving: bool


def fuzz(data_dir: Path, examples: int = 1000) -> Fuzz:
    """Fuzzed calls to `arbiter serve` in its own process; its RSS before and after."""
    with served_world(data_dir) as (channel, pid):
        calls = {n: channel.unary_unary(path, None, None) for n, path in METHODS.items()}
        tally = Tally()
        for n in range(200):  # warm the server up before the first measure
            warm = decision_pb2.DecideRequest(customer_id=f"cust-{1 + n:06d}", channel=WEB)
            calls["Decide"](warm.SerializeToString(), timeout=5)
        before = rss_of(pid)

        @settings(
            max_examples=examples,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(CASES)
        def send(case: tuple[str, bytes]) -> None:
            tally.call(lambda: calls[case[0]](case[1], timeout=5))

        send()
        after = rss_of(pid)
        probe = decision_pb2.DecideRequest(customer_id="cust-001999", channel=WEB)
        reply = decision_pb2.DecideResponse.FromString(
            calls["Decide"](probe.SerializeToString(), timeout=5)
        )
        return Fuzz(tally, before, after, bool(reply.actions) and not reply.degraded)
