"""Load test with locust: a realistic mix of Arbiter's callers against any deployment.

    make load                                        # against 127.0.0.1:50051, 30 s
    make load LOAD_TARGET=arbiter.internal:443 LOAD_USERS=200 LOAD_SECONDS=300
    .venv-load/bin/locust -f benchmarks/locustfile.py --host 127.0.0.1:50051   # web UI

Users (locust's gRPC pattern: grpc patched for gevent, a request event fired per call):
- web and app visitors: Decide on a page (limit 3, 50 ms deadline), an event now and
  then, and the impression or a click reported for some of the answers;
- call-center agents: Decide with explanations, then GetProfile, then the customer's
  answer;
- a campaign: DecideBatch streams of 64 email decisions.

Every call names a demo customer at random (cust-000001..cust-050000, as `make run`
loads). ``ARBITER_API_KEY`` and ``ARBITER_TLS_CA_FILE`` are honoured, as by our clients;
``ARBITER_LOAD_DEADLINE_MS`` sets the deadline of the interactive calls (default 50).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, between, events, task
from locust.exception import LocustError

from arbiter.v1 import common_pb2, decision_pb2, decision_pb2_grpc, profile_pb2, profile_pb2_grpc

grpc_gevent.init_gevent()  # before any channel: grpc's I/O on gevent

CUSTOMERS = 50_000
DEADLINE = float(os.environ.get("ARBITER_LOAD_DEADLINE_MS", "50")) / 1000
CAMPAIGN_CHUNK = 64


def _customer() -> str:
    return f"cust-{random.randint(1, CUSTOMERS):06d}"


class Timed:
    """A stub whose calls fire locust's request event: name, time, size, error."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self.stub, self.metadata = stub, metadata

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.stub, name)

        def call(request: Any, timeout: float = DEADLINE, label: str = "") -> Any:
            started = time.perf_counter()
            response, error, size = None, None, 0
            try:
                response = method(request, timeout=timeout, metadata=self.metadata)
                size = response.ByteSize() if hasattr(response, "ByteSize") else 0
            except grpc.RpcError as exc:
                error = exc
            events.request.fire(
                request_type="grpc",
                name=label or name,
                response_time=(time.perf_counter() - started) * 1000,
                response_length=size,
                response=response,
                context=None,
                exception=error,
            )
            return response

        return call


class ArbiterUser(User):
    abstract = True

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        if not self.host:
            raise LocustError("--host HOST:PORT of the Arbiter service is required")
        ca = os.environ.get("ARBITER_TLS_CA_FILE")
        if ca:
            with open(ca, "rb") as f:
                credentials = grpc.ssl_channel_credentials(f.read())
            self.channel = grpc.secure_channel(self.host, credentials)
        else:
            self.channel = grpc.insecure_channel(self.host)
        key = os.environ.get("ARBITER_API_KEY")
        metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self.decisions = Timed(decision_pb2_grpc.DecisionServiceStub(self.channel), metadata)
        self.profiles = Timed(profile_pb2_grpc.ProfileServiceStub(self.channel), metadata)

    def on_stop(self) -> None:
        self.channel.close()

    def report(self, answer: Any, customer: str, outcome: int, label: str) -> None:
        if answer is None or not answer.actions:
            return
        action = random.choice(answer.actions)
        self.decisions.ReportOutcome(
            decision_pb2.ReportOutcomeRequest(
                decision_id=answer.decision_id,
                customer_id=customer,
                offer_id=action.offer_id,
                outcome=outcome,
            ),
            label=label,
        )


class Visitor(ArbiterUser):
    """A web or app visitor: pages, events, some impressions and clicks reported."""

    weight = 8
    wait_time = between(0.5, 2.0)

    @task(6)
    def page(self) -> None:
        customer = _customer()
        channel = random.choice((common_pb2.CHANNEL_WEB, common_pb2.CHANNEL_MOBILE_APP))
        answer = self.decisions.Decide(
            decision_pb2.DecideRequest(
                customer_id=customer, channel=channel, placement="home_hero", limit=3
            ),
            label="Decide web/app",
        )
        if random.random() < 0.3:
            self.report(answer, customer, common_pb2.OUTCOME_IMPRESSION, "ReportOutcome impression")
        if random.random() < 0.05:
            self.report(answer, customer, common_pb2.OUTCOME_CLICK, "ReportOutcome click")

    @task(2)
    def browse(self) -> None:
        self.profiles.RecordEvent(
            profile_pb2.RecordEventRequest(
                customer_id=_customer(),
                channel=common_pb2.CHANNEL_WEB,
                event_type="product_view",
                attributes={"category": random.choice(("fibre", "phones", "plans", "tv"))},
            )
        )


class Agent(ArbiterUser):
    """A call-center agent: the next best actions with reasons, the profile, an answer."""

    weight = 2
    wait_time = between(2.0, 6.0)

    @task
    def call(self) -> None:
        customer = _customer()
        answer = self.decisions.Decide(
            decision_pb2.DecideRequest(
                customer_id=customer,
                channel=common_pb2.CHANNEL_CALL_CENTER,
                limit=3,
                explain=True,
            ),
            timeout=0.5,  # a person waits: a looser deadline than a page
            label="Decide call center + explain",
        )
        self.profiles.GetProfile(profile_pb2.GetProfileRequest(customer_id=customer), timeout=0.5)
        outcome = random.choice((common_pb2.OUTCOME_ACCEPT, common_pb2.OUTCOME_DECLINE))
        self.report(answer, customer, outcome, "ReportOutcome agent")


class Campaign(ArbiterUser):
    """An outbound campaign: email decisions streamed in chunks over DecideBatch."""

    fixed_count = 1
    wait_time = between(1.0, 2.0)

    @task
    def chunk(self) -> None:
        def requests() -> Iterator[decision_pb2.DecideBatchRequest]:
            for _ in range(CAMPAIGN_CHUNK):
                yield decision_pb2.DecideBatchRequest(
                    request=decision_pb2.DecideRequest(
                        customer_id=_customer(), channel=common_pb2.CHANNEL_EMAIL
                    )
                )

        started = time.perf_counter()
        error = None
        answers = 0
        try:
            stream = self.decisions.stub.DecideBatch(
                requests(), timeout=30, metadata=self.decisions.metadata
            )
            answers = sum(1 for _ in stream)
        except grpc.RpcError as exc:
            error = exc
        events.request.fire(
            request_type="grpc",
            name=f"DecideBatch x{CAMPAIGN_CHUNK}",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=answers,
            response=None,
            context=None,
            exception=error,
        )
