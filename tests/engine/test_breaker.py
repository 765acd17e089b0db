"""The breaker tells a slow store from one slow customer, and from a stall of our own
event loop."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import REGISTRY

from engine.service.breaker import Breaker


def now() -> float:
    """A call starting now (after every timeout seen so far)."""
    return time.monotonic()


def test_one_slow_customer_does_not_open_it_for_everyone() -> None:
    breaker = Breaker(60.0)
    for _ in range(10):
        breaker.timed_out("slow", "hot-customer", now())
    assert breaker.opened == 0 and breaker.refusal() == ""


def test_slow_calls_for_several_customers_open_it() -> None:
    breaker = Breaker(60.0)
    breaker.timed_out("slow", "a", now())
    breaker.timed_out("slow", "a", now())
    assert breaker.refusal() == ""
    breaker.timed_out("slow", "b", now())
    assert breaker.opened == 1 and breaker.refusal() == "slow"


def test_a_success_starts_the_count_again_and_an_error_opens_at_once() -> None:
    breaker = Breaker(60.0)
    breaker.timed_out("slow", "a", now())
    breaker.timed_out("slow", "b", now())
    breaker.succeeded()
    breaker.timed_out("slow", "c", now())
    assert breaker.opened == 0
    breaker.failed("down")
    assert breaker.refusal() == "down"


def test_calls_in_flight_together_count_as_one() -> None:
    """A stalled event loop times out every call in flight at once: one stall, however
    many customers; calls started after it count again."""
    breaker = Breaker(60.0)
    started = now()
    for customer in "abcdefghijklmnop":
        breaker.timed_out("slow", customer, started)
    assert breaker.opened == 0 and breaker.refusal() == ""
    breaker.timed_out("slow", "q", now())
    assert breaker.opened == 0
    breaker.timed_out("slow", "r", now())
    assert breaker.opened == 1 and breaker.refusal() == "slow"


def test_an_outage_is_one_line_down_and_one_line_back(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    breaker = Breaker(0.0)  # open for no time: every call tries the store again
    with caplog.at_level(logging.WARNING, logger="engine.service.breaker"):
        breaker.succeeded()  # healthy: nothing to say
        for _ in range(5):  # the store keeps failing: it reopens each time
            breaker.failed("feature store read failed")
            clock[0] += 0.1
        # a cluster with a primary gone: calls to the others succeed in between
        for _ in range(5):
            breaker.succeeded()
            clock[0] += 0.3
            breaker.failed("feature store read failed")
        clock[0] += 0.5
        breaker.succeeded()  # the failover is done
        clock[0] += 0.5
        breaker.succeeded()
        assert len(caplog.records) == 1  # not "back" before a second without a failure
        clock[0] += 0.6
        breaker.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("feature store down (feature store read failed)")
    assert lines[1] == "feature store back after 2.5 s: full answers again"
    assert breaker.opened == 10


def test_after_an_outage_one_call_at_a_time_tries_the_store() -> None:
    breaker = Breaker(0.0)  # the open period ends at once: half-open
    breaker.failed("down")
    assert breaker.refusal() == ""  # this call probes
    assert breaker.refusal() == "down"  # the others answer degraded without waiting
    assert breaker.refusal() == "down"
    breaker.timed_out("slow", "a", now())  # the probe missed its budget: open again
    assert breaker.opened == 2
    assert breaker.refusal() == ""  # the next probe
    breaker.succeeded()  # the store answered: closed for everyone
    assert [breaker.refusal() for _ in range(3)] == ["", "", ""]


def test_a_probe_that_never_tells_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    breaker = Breaker(0.0)
    breaker.failed("down")
    assert breaker.refusal() == ""  # a probe, which then neither succeeds nor fails
    clock[0] += 0.5
    assert breaker.refusal() == "down"
    clock[0] += 0.6  # past PROBE_SECONDS: another call may find out
    assert breaker.refusal() == ""
    assert breaker.refusal() == "down"


def test_a_breaker_retired_while_down_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    breaker = Breaker(1.0, "127.0.0.1:7001")
    with caplog.at_level(logging.WARNING, logger="engine.service.breaker"):
        breaker.failed("feature store read failed")
        breaker.retired()
        breaker.retired()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("feature store at 127.0.0.1:7001 down (")
    assert lines[1].startswith("feature store at 127.0.0.1:7001 gone after ")


def test_the_gauge_shows_open_while_any_breaker_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """One primary's breaker closing leaves the gauge at 1 while another's is open; a
    stopped service's breaker, open or not, leaves it to the next one."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def shown() -> float | None:
        return REGISTRY.get_sample_value("arbiter_breaker_open")

    first, second = Breaker(1.0, "127.0.0.1:7001"), Breaker(1.0, "127.0.0.1:7002")
    first.failed("down")
    second.failed("down")
    assert shown() == 1
    clock[0] += 2.0  # past both open periods
    assert first.refusal() == ""  # first closed, second not yet asked
    assert shown() == 1
    assert second.refusal() == ""
    assert shown() == 0
    second.failed("down")
    first.retired()  # retired while closed: second still open
    assert shown() == 1
    second.stopped()
    assert shown() == 0


def test_its_open_period_is_drawn_between_half_and_all_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers and replicas that lost one Redis together do not try it again in step."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    periods = []
    for _ in range(40):
        breaker = Breaker(1.0)
        for _ in range(6):  # its longest by now
            breaker.failed("down")
        breaker.failed("down")
        opened = clock[0]
        while breaker.refusal():
            clock[0] += 0.01
        periods.append(round(clock[0] - opened, 2))
    assert min(periods) >= 0.5 and max(periods) <= 1.01, periods
    assert len(set(periods)) > 10, periods


def test_it_backs_off_while_the_store_keeps_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blip degrades for tens of milliseconds; an outage is tried about every
    ``seconds``; a served call starts the back-off again."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def period(breaker: Breaker) -> float:
        breaker.failed("down")
        opened = clock[0]
        while breaker.refusal():
            clock[0] += 0.001
        return clock[0] - opened

    breaker = Breaker(0.5)
    periods = [period(breaker) for _ in range(8)]
    assert 0.025 <= periods[0] <= 0.051, periods
    assert 0.05 <= periods[1] <= 0.101, periods
    assert all(0.25 <= p <= 0.501 for p in periods[4:]), periods  # at its longest
    breaker.succeeded()
    assert period(breaker) <= 0.051
