"""Outbound campaigns over DecideBatch: the same decisions, the same contact policy."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import redis

from arbiter.v1 import common_pb2, decision_pb2
from engine.clients.campaign import run_campaign
from engine.settings import ClientSettings, Definitions
from feature_store.loader import load_profiles
from tests.conftest import ServerThread
from training.world import generate


def campaign(
    server: ServerThread, customers: list[str], channel: int = common_pb2.CHANNEL_EMAIL
) -> list[decision_pb2.DecideBatchResponse]:
    requests = (
        decision_pb2.DecideBatchRequest(
            request=decision_pb2.DecideRequest(customer_id=c, channel=channel, request_id=f"r{i}")  # type: ignore[arg-type]
        )
        for i, c in enumerate(customers)
    )
    return list(server.decisions.DecideBatch(requests, timeout=120))


def test_answers_come_in_request_order(server: ServerThread) -> None:
    customers = [f"cust-{i:06d}" for i in range(1, 201)]
    answers = campaign(server, customers)
    assert [a.customer_id for a in answers] == customers
    assert [a.request_id for a in answers] == [f"r{i}" for i in range(len(customers))]
    problems = [a for a in answers if a.HasField("error") or a.response.degraded]
    assert not problems, problems[0]


CAMPAIGN_SIZE = 2_000  # enough for the cap to bind on thousands of customers, and quick


def test_a_campaign_of_thousands_respects_the_email_cap_and_reports_throughput(
    server: ServerThread,
    redis_client: redis.Redis,
    definitions: Definitions,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    load_profiles(redis_client, definitions.schema, generate(CAMPAIGN_SIZE, seed=7).profiles())
    customers = tmp_path / "customers.csv"
    customers.write_text(
        "customer_id\n" + "".join(f"cust-{i:06d}\n" for i in range(1, CAMPAIGN_SIZE + 1))
    )
    target = ClientSettings(target=f"127.0.0.1:{server.running.port}")

    sent = []
    for run in range(3):
        out = tmp_path / f"run{run}.jsonl"
        assert run_campaign(target, customers, "email", out=out) == 0
        answers = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(answers) == CAMPAIGN_SIZE
        assert not [a for a in answers if "error" in a or a["response"].get("degraded")]
        sent.append(sum(1 for a in answers if a["response"].get("actions")))
        printed = capsys.readouterr().out
        assert printed.startswith(f"{CAMPAIGN_SIZE} customers in ")  # with the rate per second
        with capsys.disabled():  # the throughput of each run, in the test output
            print(f"\n  email campaign run {run + 1}: {printed.splitlines()[0]}")

    assert sent[0] > CAMPAIGN_SIZE // 3  # customers opted in to email with an eligible offer
    assert sent[1] == sent[0]  # two emails a week...
    assert sent[2] == 0  # ...and no third
    # what kept each customer out, by kind: the cap on the third run, beside consent
    assert f"  nothing to send: email cap reached: {sent[0]}\n" in printed
    assert "  nothing to send: consent: " in printed
    per_customer = Counter(
        key
        for key in redis_client.scan_iter(b"arb:{*}:contacts", count=1000)
        for _ in redis_client.zrange(key, 0, -1)
    )
    assert max(per_customer.values()) == 2
    assert sum(per_customer.values()) == sent[0] + sent[1]


def test_a_bad_request_gets_its_error_and_the_stream_goes_on(server: ServerThread) -> None:
    answers = campaign(server, ["cust-000001", "bad id", "cust-000002"], common_pb2.CHANNEL_WEB)
    assert [a.HasField("error") for a in answers] == [False, True, False]
    assert answers[1].error.code == "INVALID_ARGUMENT"
    assert answers[1].error.message.startswith("customer_id")
    assert answers[2].response.actions


def test_campaign_command_reports_counts(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    customers = tmp_path / "customers.csv"
    customers.write_text(
        "customer_id,segment\n" + "".join(f"cust-{i:06d},x\n" for i in range(1, 301))
    )
    out = tmp_path / "answers.jsonl"

    client = ClientSettings(target=f"127.0.0.1:{server.running.port}")
    code = run_campaign(client, customers, "sms", out=out)

    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("300 customers in ")
    assert "sent: " in printed
    assert len(out.read_text().splitlines()) == 300
