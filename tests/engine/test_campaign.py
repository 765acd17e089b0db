"""Outbound campaigns over DecideBatch: the same decisions, the same contact policy."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import redis

from arbiter.v1 import common_pb2, decision_pb2
from engine.campaign import run_campaign
from tests.conftest import WORLD_SIZE, ServerThread


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


def test_campaign_answers_in_order_and_respects_the_email_cap(
    server: ServerThread, loaded: redis.Redis
) -> None:
    customers = [f"cust-{i:06d}" for i in range(1, WORLD_SIZE + 1)]

    runs = [campaign(server, customers) for _ in range(3)]

    for answers in runs:
        assert [a.customer_id for a in answers] == customers
        assert [a.request_id for a in answers] == [f"r{i}" for i in range(len(customers))]
        problems = [a for a in answers if a.HasField("error") or a.response.degraded]
        assert not problems, problems[0]
    sent = [sum(1 for a in answers if a.response.actions) for answers in runs]
    assert sent[0] > WORLD_SIZE // 3  # the opted-in customers with an eligible offer
    assert sent[1] == sent[0]  # two emails a week...
    assert sent[2] == 0  # ...and no third
    capped = runs[2][0].response if runs[0][0].response.actions else None
    if capped is not None:
        assert not capped.actions
    per_customer = Counter(
        m.split(b"|")[0] and key.split(b"{")[1].split(b"}")[0]
        for key in loaded.scan_iter(b"arb:{*}:contacts")
        for m in loaded.zrange(key, 0, -1)
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

    code = run_campaign(
        f"127.0.0.1:{server.running.port}", customers, common_pb2.CHANNEL_SMS, out=out
    )

    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("300 customers in ")
    assert "sent: " in printed
    assert len(out.read_text().splitlines()) == 300
