"""The breaker tells a slow store from one slow customer."""

from __future__ import annotations

from engine.service.breaker import Breaker


def test_one_slow_customer_does_not_open_it_for_everyone() -> None:
    breaker = Breaker(60.0)
    for _ in range(10):
        breaker.timed_out("slow", "hot-customer")
    assert breaker.opened == 0 and breaker.refusal() == ""


def test_slow_calls_for_several_customers_open_it() -> None:
    breaker = Breaker(60.0)
    breaker.timed_out("slow", "a")
    breaker.timed_out("slow", "a")
    assert breaker.refusal() == ""
    breaker.timed_out("slow", "b")
    assert breaker.opened == 1 and breaker.refusal() == "slow"


def test_a_success_starts_the_count_again_and_an_error_opens_at_once() -> None:
    breaker = Breaker(60.0)
    breaker.timed_out("slow", "a")
    breaker.timed_out("slow", "b")
    breaker.succeeded()
    breaker.timed_out("slow", "c")
    assert breaker.opened == 0
    breaker.failed("down")
    assert breaker.refusal() == "down"
