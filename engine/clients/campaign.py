"""Outbound campaigns from the command line: a CSV of customers through DecideBatch.

The client streams requests and reads answers on one bidirectional stream, so the server
decides while more requests arrive; progress and the summary are printed as it goes.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.protobuf import json_format
from tqdm import tqdm

from arbiter.v1 import decision_pb2, decision_pb2_grpc
from engine.api import proto
from engine.api.channel import open_channel
from engine.settings import ClientSettings


def read_customers(path: Path) -> list[str]:
    """Customer ids from a CSV with a ``customer_id`` column (or ids in the first column)."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    column = header.index("customer_id") if "customer_id" in header else 0
    body = rows[1:] if "customer_id" in header else rows
    return [row[column].strip() for row in body if row and row[column].strip()]


def why_nothing(response: decision_pb2.DecideResponse) -> str:
    """The kind of reason an answer has no action: what keeps the whole channel out
    (quiet hours, the marketing budget, consent: the part before its details), else
    that every eligible offer was kept out on its own, else that none was eligible."""
    for excluded in response.excluded:
        if excluded.offer_id == "*":
            return excluded.reason.split(":", 1)[0]
    if response.excluded:
        return "every offer kept out on its own (cool-downs, caps, rules)"
    return "no eligible offer"


def run_campaign(
    client: ClientSettings,
    customers_file: Path,
    channel: str,
    *,
    placement: str = "",
    limit: int = 1,
    out: Path | None = None,
) -> int:
    customers = read_customers(customers_file)

    def requests() -> Iterator[decision_pb2.DecideBatchRequest]:
        for i, customer_id in enumerate(customers):
            yield decision_pb2.DecideBatchRequest(
                request=decision_pb2.DecideRequest(
                    customer_id=customer_id,
                    channel=proto.channel(channel),
                    placement=placement,
                    limit=limit,
                    request_id=str(i),
                    explain=True,  # why nothing was sent, said in the summary
                )
            )

    counts: Counter[str] = Counter()
    started = time.perf_counter()
    sink = out.open("w") if out else None
    try:
        with open_channel(client) as chan:
            stream = decision_pb2_grpc.DecisionServiceStub(chan).DecideBatch(requests())
            for answer in tqdm(stream, total=len(customers), unit="customers"):
                if answer.HasField("error"):
                    counts[f"rejected ({answer.error.code})"] += 1
                elif answer.response.degraded:
                    counts["degraded"] += 1
                elif answer.response.actions:
                    counts["sent"] += 1
                    counts.update(f"  {a.offer_id}" for a in answer.response.actions)
                else:
                    counts[f"nothing to send: {why_nothing(answer.response)}"] += 1
                if sink:
                    sink.write(json.dumps(json_format.MessageToDict(answer)) + "\n")
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        if sink:
            sink.close()
    seconds = time.perf_counter() - started
    print(f"{len(customers)} customers in {seconds:.1f}s ({len(customers) / seconds:,.0f}/s)")
    for label, n in sorted(counts.items(), key=lambda kv: (kv[0].startswith("  "), -kv[1])):
        print(f"  {label}: {n}")
    return 0
