"""An example sender for Arbiter's delivery streams (docs/outbound.md).

It reads one channel's stream in a consumer group, "sends" each message (here: prints
it; a real gateway calls its email or SMS provider), acknowledges it, and tells Arbiter
what became of it: delivered, an impression (ReportOutcome); bounced, an event on the
customer (RecordEvent ``message_bounced``), so that the decision is not taken for one the
customer saw and ignored. A message handed to a sender that died unacknowledged is taken
over by another after ``--claim-idle`` seconds (XAUTOCLAIM), so none is lost; the
message id is the provider's idempotency key, so one delivered twice is sent once.

    REDIS_URL=redis://127.0.0.1:6379/0 ARBITER_TARGET=127.0.0.1:50051 \\
        python examples/sender.py --channel email --group email-gateway

Only redis-py, grpcio and Arbiter's generated stubs (arbiter/v1) are needed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any

import grpc
import redis

from arbiter.v1 import common_pb2, decision_pb2, decision_pb2_grpc, profile_pb2, profile_pb2_grpc

CHANNELS = {"email": common_pb2.CHANNEL_EMAIL, "sms": common_pb2.CHANNEL_SMS}


def stream_of(channel: str) -> str:
    return f"arb:{{out:{channel}}}:stream"


def deliver(fields: dict[str, str]) -> bool:
    """Sends the message: True delivered, False bounced. Here it prints it, and bounces
    what has no address to go to (a customer id ending in 0, as a stand-in)."""
    copy = json.loads(fields["message"])
    print(
        f"to {fields['customer_id']} by {fields['channel']}:"
        f" {copy.get('headline') or copy.get('body', '')!r}"
        f" [{fields['offer_id']}, message {fields['message_id']}]",
        flush=True,
    )
    return not fields["customer_id"].endswith("0")


def report(
    decisions: Any, profiles: Any, channel: str, fields: dict[str, str], delivered: bool
) -> None:
    if delivered:
        decisions.ReportOutcome(
            decision_pb2.ReportOutcomeRequest(
                decision_id=fields["decision_id"],
                customer_id=fields["customer_id"],
                offer_id=fields["offer_id"],
                outcome=common_pb2.OUTCOME_IMPRESSION,
                idempotency_key=f"delivered:{fields['message_id']}",
                reported_by="example-sender",
            ),
            timeout=5,
        )
    else:
        profiles.RecordEvent(
            profile_pb2.RecordEventRequest(
                customer_id=fields["customer_id"],
                channel=CHANNELS[channel],
                event_type="message_bounced",
                attributes={"decision_id": fields["decision_id"], "offer_id": fields["offer_id"]},
            ),
            metadata=[("idempotency-key", f"bounced:{fields['message_id']}")],
            timeout=5,
        )


def run(
    client: redis.Redis,
    channel: grpc.Channel,
    outbound: str,
    group: str,
    consumer: str,
    *,
    once: bool,
    claim_idle: float,
) -> int:
    """Sends until stopped (``once``: what is there now, then returns); how many sent."""
    stream = stream_of(outbound)
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:  # the group is there already
        if "BUSYGROUP" not in str(exc):
            raise
    decisions = decision_pb2_grpc.DecisionServiceStub(channel)
    profiles = profile_pb2_grpc.ProfileServiceStub(channel)
    done = 0
    while True:
        # first what another sender was handed and left (it died), then new messages
        claimed: Any = client.xautoclaim(
            stream, group, consumer, min_idle_time=int(claim_idle * 1000), start_id="0-0"
        )
        taken = claimed[1]  # [next start, entries, (Redis 7: ids deleted meanwhile)]
        read: Any = client.xreadgroup(
            group, consumer, {stream: ">"}, count=100, block=None if once else 1000
        )
        entries = list(taken) + [e for _, batch in read or [] for e in batch]
        for entry_id, raw in entries:
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            report(decisions, profiles, outbound, fields, deliver(fields))
            client.xack(stream, group, entry_id)  # after the report: a crash sends again
            done += 1
        if once and not entries:
            return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channel", default="email", choices=sorted(CHANNELS))
    p.add_argument("--group", default="gateway")
    p.add_argument("--consumer", default=socket.gethostname())
    p.add_argument("--once", action="store_true", help="send what is there, then stop")
    p.add_argument("--claim-idle", type=float, default=60.0)
    args = p.parse_args(argv)
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    channel = grpc.insecure_channel(os.environ.get("ARBITER_TARGET", "127.0.0.1:50051"))
    try:
        sent = run(
            client,
            channel,
            args.channel,
            args.group,
            args.consumer,
            once=args.once,
            claim_idle=args.claim_idle,
        )
    except KeyboardInterrupt:
        return 0
    finally:
        channel.close()
        client.close()
    print(f"{sent} messages handled", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
