"""The `arbiter` command: run the service, call it, load data, train.

arbiter serve [--demo]                      start the gRPC service
arbiter decide CUSTOMER --channel web       ask for the next best action
arbiter campaign --customers FILE.csv --channel email   a decision (a send) per customer
arbiter profile CUSTOMER                    the single customer view
arbiter desk                                the agent desktop on http://127.0.0.1:8080
arbiter event CUSTOMER --type page_view --attr category=fibre
arbiter outcome DECISION CUSTOMER OFFER --outcome accept
arbiter load FILE                           bulk-load profiles (JSON Lines)
arbiter train                               train; promote only when better
arbiter models [promote|challenge VERSION]  list versions; promote (rollback); challenger
arbiter demo-data                           generate the demo world's profiles
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from common.errors import ArbiterError
from common.vocabulary import CHANNELS, OUTCOMES, STAGES

DEFAULT_TARGET = "127.0.0.1:50051"


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{flag} expects key=value, got {item!r}")
        out[key] = value
    return out


def _channel_number(name: str) -> int:
    return CHANNELS.index(name.replace("-", "_")) + 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arbiter", description="Arbiter decision engine")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    channels = [c.replace("_", "-") for c in CHANNELS]

    s = sub.add_parser("serve", help="start the gRPC service")
    s.add_argument("--demo", action="store_true", help="generate, load and train the demo world")
    s.add_argument("--port", type=int, help="gRPC port (default 50051, ARBITER_PORT)")

    def client(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_)
        c.add_argument("--target", default=os.environ.get("ARBITER_TARGET", DEFAULT_TARGET))
        c.add_argument("--json", action="store_true", help="print the raw response as JSON")
        return c

    d = client("decide", "ask the service for the next best action")
    d.add_argument("customer_id")
    d.add_argument("--channel", choices=channels, default="web")
    d.add_argument("--placement", default="")
    d.add_argument("--limit", type=int, default=3)
    d.add_argument("--context", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument("--stage", choices=STAGES, help="override the life-cycle stage")
    d.add_argument("--no-explain", action="store_true")

    pr = client("profile", "show the single customer view")
    pr.add_argument("customer_id")

    e = client("event", "record a customer event")
    e.add_argument("customer_id")
    e.add_argument("--type", dest="event_type", required=True)
    e.add_argument("--channel", choices=channels, default="web")
    e.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE")

    o = client("outcome", "report what the customer did with an action")
    o.add_argument("decision_id")
    o.add_argument("customer_id")
    o.add_argument("offer_id")
    o.add_argument("--outcome", choices=OUTCOMES, required=True)
    o.add_argument("--value", type=float, default=0.0)
    o.add_argument("--key", default="", help="idempotency key")

    c = client("campaign", "decide for a list of customers over one stream (email, SMS)")
    c.add_argument("--customers", type=Path, required=True, help="CSV with a customer_id column")
    c.add_argument("--channel", choices=channels, default="email")
    c.add_argument("--placement", default="")
    c.add_argument("--limit", type=int, default=1)
    c.add_argument("--out", type=Path, help="write every answer here as JSON Lines")

    dk = sub.add_parser("desk", help="serve the agent desktop web page")
    dk.add_argument("--port", type=int, help="HTTP port (default 8080, ARBITER_DESK_PORT)")
    dk.add_argument("--target", help="the gRPC service (default 127.0.0.1:50051)")

    ld = sub.add_parser("load", help="bulk-load profiles from a JSON Lines file")
    ld.add_argument("path", type=Path)

    t = sub.add_parser("train", help="train a model on simulated decision/outcome logs")
    t.add_argument("--rows", type=int, help="simulated decisions (ARBITER_TRAIN_ROWS)")
    t.add_argument("--force", action="store_true", help="promote even if not better")
    t.add_argument(
        "--source",
        choices=["simulated", "logs"],
        default="simulated",
        help="simulated demo logs, or the decision and outcome logs in Redis",
    )
    t.add_argument(
        "--window-hours", type=float, help="attribution window (ARBITER_ATTRIBUTION_HOURS)"
    )
    t.add_argument(
        "--dataset",
        choices=["obd"],
        help="train on a public logged dataset instead (obd: the Open Bandit Dataset sample)",
    )

    m = sub.add_parser(
        "models", help="list model versions; promote one (rollback); run a challenger"
    )
    m.add_argument(
        "action",
        nargs="?",
        choices=["list", "promote", "challenge", "end-challenge"],
        default="list",
    )
    m.add_argument("version", nargs="?")
    m.add_argument("--share", type=float, default=0.1, help="challenger share of customers")

    sm = sub.add_parser("simulate", help="the closed loop over simulated days (own service)")
    sm.add_argument("--days", type=int, default=5)
    sm.add_argument("--customers", type=int, default=5000, help="customers deciding per day")
    sm.add_argument(
        "--policy",
        choices=["epsilon", "softmax"],
        default="epsilon",
        help="how the service explores",
    )
    sm.add_argument("--epsilon", type=float, default=0.1, help="epsilon-greedy's share of draws")
    sm.add_argument("--temperature", type=float, default=0.1, help="softmax temperature")
    sm.add_argument("--world", type=int, default=50_000, help="customers in the demo world")
    sm.add_argument("--out", type=Path, default=Path("var/simulation"))

    g = sub.add_parser("demo-data", help="generate the demo world's customer profiles")
    g.add_argument("--customers", type=int)
    g.add_argument("--out", type=Path)
    return p


def _print_json(message: Any) -> None:
    from google.protobuf import json_format

    print(json.dumps(json_format.MessageToDict(message), indent=2))


def _print_decision(r: Any) -> None:
    from arbiter.v1 import common_pb2

    stage = common_pb2.LifecycleStage.Name(r.lifecycle_stage).removeprefix("LIFECYCLE_STAGE_")
    print(f"decision {r.decision_id}  customer {r.customer_id}  stage {stage.lower()}")
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


def _client_call(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf.timestamp_pb2 import Timestamp

    from arbiter.v1 import decision_pb2, decision_pb2_grpc, profile_pb2, profile_pb2_grpc

    with grpc.insecure_channel(args.target) as channel:
        decisions = decision_pb2_grpc.DecisionServiceStub(channel)
        profiles = profile_pb2_grpc.ProfileServiceStub(channel)
        try:
            if args.command == "decide":
                context = _pairs(args.context, "--context")
                if args.stage:
                    context["stage"] = args.stage
                response: Any = decisions.Decide(
                    decision_pb2.DecideRequest(
                        customer_id=args.customer_id,
                        channel=_channel_number(args.channel),  # type: ignore[arg-type]
                        placement=args.placement,
                        context=context,
                        limit=args.limit,
                        explain=not args.no_explain,
                    ),
                    timeout=5,
                )
                _print_json(response) if args.json else _print_decision(response)
            elif args.command == "profile":
                response = profiles.GetProfile(
                    profile_pb2.GetProfileRequest(customer_id=args.customer_id), timeout=5
                )
                _print_json(response)
            elif args.command == "event":
                profiles.RecordEvent(
                    profile_pb2.RecordEventRequest(
                        customer_id=args.customer_id,
                        channel=_channel_number(args.channel),  # type: ignore[arg-type]
                        event_type=args.event_type,
                        attributes=_pairs(args.attr, "--attr"),
                    ),
                    timeout=5,
                )
                print(f"recorded {args.event_type} for {args.customer_id}")
            else:
                now = Timestamp()
                now.GetCurrentTime()
                response = decisions.ReportOutcome(
                    decision_pb2.ReportOutcomeRequest(
                        decision_id=args.decision_id,
                        customer_id=args.customer_id,
                        offer_id=args.offer_id,
                        outcome=OUTCOMES.index(args.outcome) + 1,  # type: ignore[arg-type]
                        value=args.value,
                        occurred_at=now,
                        idempotency_key=args.key,
                    ),
                    timeout=5,
                )
                state = "recorded" if response.recorded else "already recorded"
                print(f"{state} as {response.outcome_id}")
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0


def _serve(args: argparse.Namespace) -> int:
    from engine.api.server import serve
    from engine.settings import ServerSettings, TrainerSettings
    from feature_store.embedded import EmbeddedRedis

    overrides: dict[str, Any] = {"demo": True} if args.demo else {}
    if args.port is not None:
        overrides["port"] = args.port
    settings = ServerSettings(**overrides)
    embedded = None
    redis_url = settings.redis_url
    if redis_url is None:
        embedded = EmbeddedRedis(settings.embedded_redis_dir).start()
        redis_url = embedded.url
        print(f"embedded redis-server on {redis_url} (data in {settings.embedded_redis_dir})")
    try:
        if settings.demo:
            import redis

            from training import demo

            trainer = TrainerSettings(redis_url=redis_url)
            demo.ensure_loaded(trainer, redis.Redis.from_url(redis_url))
            demo.ensure_model(trainer)
        print(
            f"serving on {settings.host}:{settings.port}. Try, in another terminal:\n"
            f"  .venv/bin/arbiter decide cust-000042 --channel web\n"
            f"  .venv/bin/arbiter decide cust-000042 --channel call-center\n"
            f"  .venv/bin/arbiter event cust-000042 --type page_view --attr category=fibre\n"
            f"  .venv/bin/arbiter profile cust-000042\n"
            f"Ctrl-C stops.",
            flush=True,
        )
        asyncio.run(serve(settings, redis_url))
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def _redis_url(settings: Any) -> str:
    """``REDIS_URL``, or the embedded server a running `arbiter serve` started."""
    from feature_store.embedded import running_url

    url: str | None = settings.redis_url or running_url(settings.embedded_redis_dir)
    if url is None:
        raise SystemExit("set REDIS_URL, or start `arbiter serve` (embedded Redis) first")
    return url


def _load(args: argparse.Namespace) -> int:
    import redis

    from engine.settings import LoaderSettings, load_definitions
    from feature_store.loader import load_file

    loader = LoaderSettings()
    schema = load_definitions(loader).schema
    report = load_file(redis.Redis.from_url(_redis_url(loader)), schema, args.path, progress=True)
    print(
        f"loaded {report.rows} profiles in {report.seconds:.1f}s ({report.rows_per_second:,.0f}/s)"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from engine.settings import TrainerSettings
    from training import job

    overrides: dict[str, Any] = {}
    if args.rows:
        overrides["train_rows"] = args.rows
    if args.window_hours:
        overrides["attribution_hours"] = args.window_hours
    trainer = TrainerSettings(**overrides)
    if args.dataset == "obd":
        return _train_obd(trainer.data_dir / "cache")
    if args.source == "logs":
        import redis

        client = redis.Redis.from_url(_redis_url(trainer))
        outcome, joined = job.train_from_logs(trainer, client, force=args.force)
        print(
            f"{joined.used} of {joined.decisions} logged decisions used "
            f"({joined.too_recent} too recent, {joined.degraded} degraded, "
            f"{joined.other_schema} with other features)"
        )
    else:
        outcome = job.train_demo(trainer, force=args.force)
    if outcome.estimates:
        print("off-policy value per decision on the latest decisions (95% interval):")
        for policy, estimates in outcome.estimates.items():
            cells = "  ".join(f"{name} {estimate}" for name, estimate in estimates.items())
            print(f"  {policy:11s} {cells}")
    state = "promoted" if outcome.promoted else "saved, not promoted"
    print(f"model {outcome.model.version}: {state}: {outcome.why}")
    for name, value in outcome.model.metrics.items():
        print(f"  {name:16s} {value:.4f}" if isinstance(value, float) else f"  {name:16s} {value}")
    return 0


def _train_obd(cache: Path) -> int:
    from training.obd import evaluate_obd, fetch

    report = evaluate_obd(fetch(cache))
    print(
        f"Open Bandit Dataset sample: {report.rows} random-policy impressions,"
        f" {report.clicks} clicks"
    )
    print("click rate per impression (95% interval):")
    for name, estimate in report.learned.items():
        print(f"  learned policy, {name:5s}  {estimate}")
    print(f"  random policy (logged)  {report.random}")
    print(f"  BTS policy (logged)     {report.bts}")
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    from engine.settings import TrainerSettings
    from training import demo

    settings = TrainerSettings(**({"demo_customers": args.customers} if args.customers else {}))
    if args.out:
        from training.world import generate

        count = generate(settings.demo_customers, settings.world_seed).write_profiles(args.out)
        print(f"wrote {count} profiles to {args.out}")
    else:
        print(f"profiles in {demo.ensure_profiles_file(settings)}")
    return 0


def _models(settings: Any, action: str, version: str | None, share: float = 0.1) -> int:
    from engine.adapters import artifact

    if action in ("promote", "challenge") and not version:
        raise SystemExit(f"arbiter models {action} VERSION")
    if action == "promote":
        artifact.set_current(settings.model_dir, version or "")
        print(f"promoted {version}; a running service picks it up within its reload interval")
        return 0
    if action == "challenge":
        artifact.set_challenger(settings.model_dir, version, share)
        print(f"{version} now serves {share:.0%} of customers (stable by customer id)")
        return 0
    if action == "end-challenge":
        artifact.set_challenger(settings.model_dir, None)
        print("challenge ended: the promoted model serves every customer")
        return 0
    current = artifact.current_version(settings.model_dir)
    challenge = artifact.challenger(settings.model_dir)
    outcomes = _outcomes_by_model(settings)
    print(f"{'':2}{'version':26} {'created':29} {'AUC':>6} {'log loss':>8} {'rows':>7}  outcomes")
    for model in artifact.versions(settings.model_dir):
        mark = (
            "* "
            if model.version == current
            else "c "
            if challenge and model.version == challenge[0]
            else "  "
        )
        m = model.metrics
        taken, positive = outcomes.get(model.version, (0, 0))
        served = f"{positive}/{taken} accepted" if taken else ""
        print(
            f"{mark}{model.version:26} {model.created_at:29} {m.get('auc', float('nan')):6.4f}"
            f" {m.get('log_loss', float('nan')):8.4f} {model.training.get('rows', ''):>7}  {served}"
        )
    if challenge:
        print(f"(* promoted; c challenger, serving {challenge[1]:.0%} of customers)")
    return 0


def _outcomes_by_model(settings: Any) -> dict[str, tuple[int, int]]:
    """Actions and accepted actions per model from the logs, when a Redis is at hand."""
    import redis

    from feature_store.embedded import running_url
    from training.logs import outcomes_by_model, read_logs

    url = settings.redis_url or running_url(settings.embedded_redis_dir)
    if url is None:
        return {}
    try:
        return outcomes_by_model(*read_logs(redis.Redis.from_url(url, socket_timeout=2)))
    except redis.RedisError:
        return {}


def main(argv: list[str] | None = None) -> int:
    # Single-threaded numerics: threads add no throughput under load and fight the
    # server for the cores. Must be set before lightgbm/numpy start their pools.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Piped into `head`: stop quietly, as other command-line tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command in ("decide", "profile", "event", "outcome"):
            return _client_call(args)
        if args.command == "desk":
            from engine.clients.desk import DeskSettings, serve_desk

            overrides = {k: v for k, v in (("port", args.port), ("target", args.target)) if v}
            serve_desk(DeskSettings(**overrides))
            return 0
        if args.command == "campaign":
            from engine.clients.campaign import run_campaign

            return run_campaign(
                args.target,
                args.customers,
                _channel_number(args.channel),
                placement=args.placement,
                limit=args.limit,
                out=args.out,
            )
        if args.command == "models":
            from engine.settings import TrainerSettings

            return _models(TrainerSettings(), args.action, args.version, args.share)
        if args.command == "simulate":
            from training import simulation

            simulation.run(
                args.out,
                days=args.days,
                customers_per_day=args.customers,
                world_size=args.world,
                policy=args.policy,
                epsilon=args.epsilon,
                temperature=args.temperature,
            )
            return 0
        return {"load": _load, "train": _train, "demo-data": _demo_data}[args.command](args)
    except ArbiterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
