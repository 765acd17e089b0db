"""Commands that call the gRPC API: decide, profile, event, outcome, campaign, desk.
(Over 400 lines: one function per command and what it prints, in the table's order.)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from arbiter.v1 import decision_pb2, decision_pb2_grpc, profile_pb2, profile_pb2_grpc
from common.vocabulary import CHANNELS, OUTCOMES, STAGES
from engine.api import proto
from engine.api.channel import open_channel
from engine.clients.cli.command import Command, pairs
from engine.settings import DEFAULT_TARGET, ClientSettings, DeskSettings

CHANNEL_HELP = (
    f"{', '.join(CHANNELS)} (call-center, CALL_CENTER and the API's CHANNEL_CALL_CENTER"
    " spell the same one)"
)


def channel_name(text: str) -> str:
    """A channel however it is spelt (``call-center``, ``call_center``,
    ``CHANNEL_CALL_CENTER``) -> its one name, as the catalog and metrics spell it."""
    name = text.strip().lower().removeprefix("channel_").replace("-", "_")
    if name not in CHANNELS:
        raise argparse.ArgumentTypeError(f"unknown channel {text!r}: one of {', '.join(CHANNELS)}")
    return name


TARGET_HELP = f"the service, host:port (ARBITER_TARGET, default {DEFAULT_TARGET})"
TIMEOUT_SECONDS = 5.0


class Stubs:
    """One channel to the service and its two stubs."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.decisions = decision_pb2_grpc.DecisionServiceStub(channel)
        self.profiles = profile_pb2_grpc.ProfileServiceStub(channel)


def connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", help=TARGET_HELP)
    p.add_argument(
        "--tls-ca", type=Path, help="the CA of the server's certificate: TLS (ARBITER_TLS_CA_FILE)"
    )


def client_settings(args: argparse.Namespace) -> ClientSettings:
    """The settings, with ``--target`` and ``--tls-ca`` over the environment's. The API
    key comes from ARBITER_API_KEY only: a command line is visible to every user."""
    overrides = {"target": args.target, "tls_ca_file": args.tls_ca}
    return ClientSettings(**{k: v for k, v in overrides.items() if v})


def _client_arguments(p: argparse.ArgumentParser) -> None:
    connection_arguments(p)
    p.add_argument("--json", action="store_true", help="print the raw response as JSON")


def _calling(call: Callable[[Stubs, argparse.Namespace], Message | None]) -> Callable[..., int]:
    """Runs ``call`` against the service named by ``--target`` or the settings; prints
    the response as JSON when asked, an RPC error as one line."""

    def run(args: argparse.Namespace) -> int:
        with open_channel(client_settings(args)) as channel:
            try:
                response = call(Stubs(channel), args)
            except grpc.RpcError as exc:
                print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
                return 1
        if response is not None:
            print_json(response)
        return 0

    return run


def print_json(message: Message) -> None:
    print(json.dumps(json_format.MessageToDict(message), indent=2))


def print_decision(r: decision_pb2.DecideResponse) -> None:
    stage = proto.stage_name(r.lifecycle_stage)
    print(f"decision {r.decision_id}  customer {r.customer_id}  stage {stage}")
    if not r.known_customer and not r.degraded:
        print(
            f"unknown customer: nothing is stored under {r.customer_id!r}; answered as a new"
            " visitor, from the defaults (a mistyped id? the demo's look like cust-000042)"
        )
    print(f"model {r.model_version}" + (f"  DEGRADED: {r.degraded_reason}" if r.degraded else ""))
    for a in r.actions:
        m = a.message
        print(
            f"\n{a.rank}. {a.offer_id}  priority {a.priority:.3f} "
            f"(propensity {a.propensity:.4f} x value {a.value:g})"
        )
        for label, text in (
            ("headline", m.headline),
            ("body", m.body),
            ("call to action", m.call_to_action),
            ("url", m.url),
            ("agent script", m.agent_script),
        ):
            if text:
                print(f"   {label}: {text}")
        for reason in a.reasons:
            print(f"   - [{reason.code}] {reason.text}")
    if not r.actions:
        print("\nno eligible action")
    for e in r.excluded:
        print(f"   kept out: {e.offer_id}: {e.reason}")


def _decide_arguments(p: argparse.ArgumentParser) -> None:
    _client_arguments(p)
    p.add_argument("customer_id", help="the customer, e.g. cust-000042 in the demo")
    p.add_argument(
        "--channel", type=channel_name, default="web", help=f"{CHANNEL_HELP}; default: web"
    )
    p.add_argument(
        "--placement",
        default="",
        help="where on the channel, e.g. home_hero (the catalog's placements); default: none",
    )
    p.add_argument("--limit", type=int, default=3, help="how many actions, 1-50; default: 3")
    p.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the moment's context, e.g. intent=cancel (repeatable)",
    )
    p.add_argument(
        "--stage", choices=STAGES, help="the life-cycle stage, instead of the one derived"
    )
    p.add_argument(
        "--no-explain", action="store_true", help="leave out the reasons and the offers kept out"
    )


def _decide(stubs: Stubs, args: argparse.Namespace) -> Message | None:
    context = pairs(args.context, "--context")
    if args.stage:
        context["stage"] = args.stage
    response = stubs.decisions.Decide(
        decision_pb2.DecideRequest(
            customer_id=args.customer_id,
            channel=proto.channel(args.channel),
            placement=args.placement,
            context=context,
            limit=args.limit,
            explain=not args.no_explain,
        ),
        timeout=TIMEOUT_SECONDS,
    )
    if args.json:
        return response
    print_decision(response)
    return None


def _profile_arguments(p: argparse.ArgumentParser) -> None:
    _client_arguments(p)
    p.add_argument("customer_id", help="the customer, e.g. cust-000042 in the demo")


def _profile(stubs: Stubs, args: argparse.Namespace) -> Message | None:
    request = profile_pb2.GetProfileRequest(customer_id=args.customer_id)
    response = stubs.profiles.GetProfile(request, timeout=TIMEOUT_SECONDS)
    if args.json:
        return response
    print_profile(response)
    return None


NEVER = 10_000_000.0  # the schema's "never seen" for seconds_since_* features


def _when(stamp: Timestamp) -> str:
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(name: str, value: float) -> str:
    if name.startswith("seconds_since") and value >= NEVER:
        return "never"
    return f"{value:g}"


def _answers(d: profile_pb2.DecisionSummary) -> str:
    return ", ".join(proto.outcome_name(o) for o in d.outcomes)


def print_profile(r: profile_pb2.GetProfileResponse) -> None:
    """The single customer view in words: who, the stage and why, consent, the contact
    policy's state, what happened and what was offered, then every feature, sorted."""
    stage = proto.stage_name(r.lifecycle_stage)
    print(f"customer {r.customer_id}  stage {stage}: {r.lifecycle_reason or 'default'}")
    if not r.known:
        print(
            f"unknown customer: nothing is stored under {r.customer_id!r}; features below are"
            " the defaults a new visitor gets"
        )
    if r.attributes:
        print("\nattributes:")
        for name, text in sorted(r.attributes.items()):
            print(f"  {name:<28} {text}")
    _print_state(r)
    _print_history(r)
    print("\nfeatures (as a decision sees them now):")
    for name, value in sorted(r.features.items()):
        print(f"  {name:<28} {_number(name, value)}")


def _print_state(r: profile_pb2.GetProfileResponse) -> None:
    """Consent and the contact policy's state."""
    if r.consent:
        print("\nconsent:")
        for c in r.consent:
            word = "given" if c.given else "refused"
            via = f" via {proto.channel_name(c.via)}" if c.via else ""
            at = f" on {_when(c.at)}" if c.HasField("at") else ""
            print(f"  {c.channel:<8} {word} ({c.source}{at}{via})")
    if r.contact_state or r.channel_caps:
        print("\ncontact policy:")
        for o in r.contact_state:
            if o.HasField("cooldown_until"):
                print(f"  {o.offer_id}: cool-down, {o.cooldown_days_left:.1f} days left")
            if o.HasField("suppressed_since"):
                print(f"  {o.offer_id}: taken on {_when(o.suppressed_since)}, not made again")
            for cap in o.caps:
                print(f"  {o.offer_id}: {cap.used} of {cap.window}")
        for cap in r.channel_caps:
            what = f"marketing budget ({cap.channel})" if cap.budget else cap.channel
            print(f"  {what}: {cap.used} of {cap.window}")


def _print_history(r: profile_pb2.GetProfileResponse) -> None:
    """Events, offers made and their answers, and the stages the customer went through."""
    print("\nrecent events (newest first):" if r.recent_events else "\nno recent events")
    for e in r.recent_events:
        attributes = " ".join(f"{k}={v}" for k, v in sorted(e.attributes.items()))
        where = proto.channel_name(e.channel)
        print(f"  {_when(e.occurred_at)}  {where:<12} {e.event_type}  {attributes}")
    print("\noffers made (newest first):" if r.recent_decisions else "\nno offers made")
    made: dict[str, list[profile_pb2.DecisionSummary]] = {}
    for d in r.recent_decisions:  # one line a decision, its offers by rank
        made.setdefault(d.decision_id, []).append(d)
    for offers in made.values():
        first = min(offers, key=lambda d: d.rank)
        said = ", ".join(
            d.offer_id + (f" ({_answers(d)})" if d.outcomes else "")
            for d in sorted(offers, key=lambda d: d.rank)
        )
        print(f"  {_when(first.decided_at)}  {proto.channel_name(first.channel):<12} {said}")
    if r.pending_triggers:
        print("\ntriggers waiting (soonest first):")
        for waiting in r.pending_triggers:
            after = f"after {waiting.event_type} at {_when(waiting.scheduled_at)}"
            print(f"  {_when(waiting.due)}  {waiting.trigger_id} ({after})")
    if r.stage_transitions:
        print("\nstage history (oldest first):")
        for t in r.stage_transitions:
            print(
                f"  {_when(t.at)}  {proto.stage_name(t.from_stage)} -> "
                f"{proto.stage_name(t.to_stage)}: {t.reason}"
            )


def _event_arguments(p: argparse.ArgumentParser) -> None:
    _client_arguments(p)
    p.add_argument("customer_id", help="the customer, e.g. cust-000042 in the demo")
    p.add_argument(
        "--type",
        dest="event_type",
        required=True,
        help="e.g. product_view, page_view, opt_out, opt_in (lower-case snake case)",
    )
    p.add_argument(
        "--channel", type=channel_name, default="web", help=f"{CHANNEL_HELP}; default: web"
    )
    p.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an attribute, e.g. category=fibre or channel=sms (repeatable)",
    )
    p.add_argument("--key", help="idempotency key: the same key again is the same event")


def _event(stubs: Stubs, args: argparse.Namespace) -> Message | None:
    stubs.profiles.RecordEvent(
        profile_pb2.RecordEventRequest(
            customer_id=args.customer_id,
            channel=proto.channel(args.channel),
            event_type=args.event_type,
            attributes=pairs(args.attr, "--attr"),
        ),
        timeout=TIMEOUT_SECONDS,
        metadata=(("idempotency-key", args.key),) if args.key else None,
    )
    if args.json:
        print(
            json.dumps(
                {"recorded": True, "customer_id": args.customer_id, "event_type": args.event_type}
            )
        )
    else:
        print(f"recorded {args.event_type} for {args.customer_id}")
    return None


def _forget(stubs: Stubs, args: argparse.Namespace) -> Message | None:
    request = profile_pb2.ForgetCustomerRequest(customer_id=args.customer_id)
    response = stubs.profiles.ForgetCustomer(request, timeout=60)
    if args.json:
        return response
    kinds = ", ".join(response.removed) or "nothing (already forgotten, or never known)"
    print(
        f"forgot {args.customer_id}: {kinds}; {response.idempotency_keys} idempotency keys,"
        f" {response.decision_log_entries} decision and {response.outcome_log_entries}"
        " outcome log entries"
    )
    return None


def _outcome_arguments(p: argparse.ArgumentParser) -> None:
    _client_arguments(p)
    p.add_argument("decision_id", help="the decision's id, as decide printed it")
    p.add_argument("customer_id", help="the customer the decision was for")
    p.add_argument("offer_id", help="the action answered, one of the decision's")
    p.add_argument("--outcome", choices=OUTCOMES, required=True, help="what the customer did")
    p.add_argument("--value", type=float, default=0.0, help="its value, e.g. revenue; default: 0")
    p.add_argument(
        "--key", default="", help="idempotency key: the same key again is the same report"
    )


def _outcome(stubs: Stubs, args: argparse.Namespace) -> Message | None:
    now = Timestamp()
    now.GetCurrentTime()
    response = stubs.decisions.ReportOutcome(
        decision_pb2.ReportOutcomeRequest(
            decision_id=args.decision_id,
            customer_id=args.customer_id,
            offer_id=args.offer_id,
            outcome=proto.outcome(args.outcome),
            value=args.value,
            occurred_at=now,
            idempotency_key=args.key,
        ),
        timeout=TIMEOUT_SECONDS,
    )
    if args.json:
        return response
    what = f"{args.outcome} of {args.offer_id} by {args.customer_id}"
    if response.recorded:
        print(f"recorded: {what}, decision {args.decision_id}")
    else:
        print(f"already recorded: {what} (the same report again; nothing changed)")
    return None


def _campaign_arguments(p: argparse.ArgumentParser) -> None:
    connection_arguments(p)
    p.add_argument("--customers", type=Path, required=True, help="CSV with a customer_id column")
    p.add_argument(
        "--channel", type=channel_name, default="email", help=f"{CHANNEL_HELP}; default: email"
    )
    p.add_argument("--placement", default="", help="where on the channel; default: none")
    p.add_argument("--limit", type=int, default=1, help="actions per customer; default: 1")
    p.add_argument("--out", type=Path, help="write every answer here as JSON Lines")


def _campaign(args: argparse.Namespace) -> int:
    from engine.clients.campaign import run_campaign  # tqdm and the CSV reader: this only

    return run_campaign(
        client_settings(args),
        args.customers,
        args.channel,
        placement=args.placement,
        limit=args.limit,
        out=args.out,
    )


def _desk_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, help="HTTP port (default 8080, ARBITER_DESK_PORT)")
    p.add_argument(
        "--tls-ca", type=Path, help="the CA of the service's certificate (ARBITER_TLS_CA_FILE)"
    )
    p.add_argument("--target", help=f"the service (ARBITER_DESK_TARGET, default {DEFAULT_TARGET})")


def _desk(args: argparse.Namespace) -> int:
    from engine.clients.desk import serve_desk  # the HTTP server: this command only

    overrides: dict[str, Any] = {
        k: v for k, v in (("port", args.port), ("target", args.target)) if v
    }
    desk = DeskSettings(**overrides)
    # The desk calls the service with its own key (ARBITER_DESK_API_KEY), over TLS when a
    # CA is given.
    client = ClientSettings(target=desk.target, api_key=desk.api_key)
    if args.tls_ca:
        client = client.model_copy(update={"tls_ca_file": args.tls_ca})
    serve_desk(desk, client)
    return 0


COMMANDS = [
    Command(
        "decide", "ask the service for the next best action", _decide_arguments, _calling(_decide)
    ),
    Command("profile", "show the single customer view", _profile_arguments, _calling(_profile)),
    Command("event", "record a customer event", _event_arguments, _calling(_event)),
    Command(
        "forget",
        "remove everything kept about a customer (admin)",
        _profile_arguments,
        _calling(_forget),
    ),
    Command(
        "outcome",
        "report what the customer did with an action",
        _outcome_arguments,
        _calling(_outcome),
    ),
    Command(
        "campaign",
        "decide for a list of customers over one stream (email, SMS)",
        _campaign_arguments,
        _campaign,
    ),
    Command("desk", "serve the agent desktop web page", _desk_arguments, _desk),
]
