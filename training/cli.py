"""The `arbiter` command's entry point: engine's commands plus the training ones.
(Over 400 lines: the argument tables of train, simulate, whatif and experiments, each
beside the function that runs it.)

Training is the layer above engine (engine imports nothing from it), so the command is
composed here: engine's table (engine/clients/cli), with the demo bootstrap for
`serve --demo`, and train, simulate and demo-data.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import logs
from common.errors import ArbiterError, ConfigurationError
from engine import ops
from engine.clients import cli
from engine.clients.cli.command import Command
from engine.core.arbitration import DEFAULT_EPSILON, DEFAULT_TEMPERATURE
from engine.ops.admin import redis_url
from feature_store.embedded import running_url
from feature_store.redis_client import connect_sync
from training.settings import TrainerSettings

if TYPE_CHECKING:
    from training.job import TrainingOutcome


def prepare_demo(url: str) -> None:
    """`serve --demo`: the demo world's profiles in Redis and a model, when absent."""
    from training import demo  # the world and a training run: serve --demo only

    settings = TrainerSettings(redis_url=url)
    demo.ensure_loaded(settings, connect_sync(url))
    demo.ensure_model(settings)


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, help="simulated decisions (ARBITER_TRAIN_ROWS)")
    p.add_argument("--force", action="store_true", help="promote even if not better")
    p.add_argument(
        "--source",
        choices=["simulated", "logs", "export"],
        default="simulated",
        help="simulated demo logs, the decision and outcome logs in Redis, or as"
        " exported to Parquet by export-logs (ARBITER_EXPORT_DIR)",
    )
    p.add_argument(
        "--window-hours", type=float, help="attribution window (ARBITER_ATTRIBUTION_HOURS)"
    )
    p.add_argument(
        "--every",
        type=_duration,
        help="with --source logs or export: train now and then every DURATION (30m, 1h,"
        " 1d), until stopped",
    )
    p.add_argument(
        "--shuffled-labels",
        action="store_true",
        help="a negative control: learn from shuffled labels; the promotion rule must"
        " refuse the model",
    )
    p.add_argument(
        "--dataset",
        choices=["obd"],
        help="train on a public logged dataset instead (obd: the Open Bandit Dataset sample)",
    )


def _duration(text: str) -> float:
    """Seconds in ``30s``, ``30m``, ``1h`` or ``1d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = float(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r}: a number and s, m, h or d (1h)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: longer than nothing")
    return seconds


def _train(args: argparse.Namespace) -> int:
    from training import job, retrain  # lightgbm and the training stack: train only

    overrides: dict[str, float] = {}
    if args.rows:
        overrides["train_rows"] = args.rows
    if args.window_hours:
        overrides["attribution_hours"] = args.window_hours
    settings = TrainerSettings(**overrides)  # type: ignore[arg-type]
    if args.dataset == "obd":
        return _train_obd(settings.data_dir / "cache")
    if args.source == "simulated":
        if args.every or args.shuffled_labels:
            raise SystemExit("arbiter train: --every and --shuffled-labels need --source logs")
        _print_outcome(job.train_demo(settings, force=args.force))
        return 0
    client = connect_sync(redis_url(settings)) if args.source == "logs" else None

    def once() -> None:
        outcome, joined = retrain.train_from_logs(
            settings,
            client,
            export=settings.export_path,
            force=args.force,
            shuffled_labels=args.shuffled_labels,
        )
        print(joined)
        _print_outcome(outcome)

    if args.every:
        retrain.every(args.every, once)
        return 0
    try:
        once()
    except ConfigurationError as exc:
        print(f"arbiter train: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_outcome(outcome: TrainingOutcome) -> None:
    if outcome.estimates:
        print("off-policy value per decision on the latest decisions (95% interval):")
        for policy, estimates in outcome.estimates.items():
            cells = "  ".join(f"{name} {estimate}" for name, estimate in estimates.items())
            print(f"  {policy:11s} {cells}")
    state = "promoted" if outcome.promoted else "saved, not promoted"
    print(f"model {outcome.model.version}: {state}: {outcome.why}", flush=True)
    for name, value in outcome.model.metrics.items():
        print(f"  {name:16s} {value:.4f}" if isinstance(value, float) else f"  {name:16s} {value}")


def _train_obd(cache: Path) -> int:
    from training.obd import evaluate_obd, fetch

    try:
        wheel = fetch(cache)
    except OSError as exc:
        raise ConfigurationError(str(exc)) from exc
    report = evaluate_obd(wheel)
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


def _simulate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--days", type=int, default=5)
    p.add_argument("--customers", type=int, default=5000, help="customers deciding per day")
    p.add_argument(
        "--policy",
        choices=["epsilon", "softmax", "thompson"],
        default="thompson",
        help="how it explores (thompson: from the online layer's posteriors)",
    )
    p.add_argument(
        "--learn-every",
        type=int,
        default=100,
        help="decisions between the online learner's ticks (0: no online layer)",
    )
    p.add_argument(
        "--new-offer-day", type=int, default=0, help="a new, better offer joins on that day"
    )
    p.add_argument(
        "--sd-scale",
        type=float,
        help="thompson: the share of the posterior's width it samples at (the catalog's)",
    )
    p.add_argument(
        "--catalog",
        metavar="TABLE.KEY=VALUE",
        action="append",
        default=[],
        help="a setting of the served catalog changed for the run, as TOML"
        " (e.g. adaptive.new_offer_share=0.2); repeatable",
    )
    p.add_argument(
        "--halve",
        metavar="OFFER:DAY",
        help="the offer's appeal (its true response rate) halves from that day on",
    )
    p.add_argument("--before-policy", help="with --before: its --policy (default: this run's)")
    p.add_argument(
        "--before-args",
        default="",
        help="with --before: more options for its command (e.g. --retrains-per-day 8)",
    )
    p.add_argument(
        "--epsilon", type=float, default=DEFAULT_EPSILON, help="epsilon-greedy's share of draws"
    )
    p.add_argument(
        "--temperature", type=float, default=DEFAULT_TEMPERATURE, help="softmax temperature"
    )
    p.add_argument("--world", type=int, default=50_000, help="customers in the demo world")
    p.add_argument("--out", type=Path, default=Path("var/simulation"))
    p.add_argument(
        "--compare",
        type=lambda text: [t.strip() for t in text.split(",") if t.strip()],
        help="policies head to head on the same decisions, e.g. arbiter,vw,value,random"
        " (once per seed, with 95%% intervals)",
    )
    p.add_argument(
        "--seeds", type=int, default=3, help="with --compare: seeds 1..N (worlds, traffic)"
    )
    p.add_argument(
        "--before",
        type=Path,
        help="with --compare: a checkout of an earlier Arbiter (git worktree) whose own"
        " learner runs the same seeds beside this one and joins the table as 'before'",
    )
    p.add_argument(
        "--retrains-per-day",
        type=int,
        default=4,
        help="scheduled retrains inside each simulated day, evenly spaced (the last after"
        " the day's final answers)",
    )
    p.add_argument(
        "--vw-args",
        default=None,
        help="Vowpal Wabbit's options for the vw policy (default: cb_explore_adf, squarecb)",
    )


def _catalog_changes(settings: Sequence[str], sd_scale: float | None) -> dict[str, dict[str, Any]]:
    """``TABLE.KEY=VALUE`` settings (the value in TOML; a bare word is a string) by table."""
    changed: dict[str, dict[str, Any]] = {}
    if sd_scale is not None:
        changed["exploration"] = {"sd_scale": sd_scale}
    for setting in settings:
        name, equals, text = setting.partition("=")
        table, dot, key = name.strip().partition(".")
        if not (equals and dot and table and key):
            raise ValueError(f"{setting!r}: TABLE.KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        changed.setdefault(table, {})[key.strip()] = value
    return changed


def _simulate(args: argparse.Namespace) -> int:
    from training import simulation  # a server and a training loop of its own
    from training.simulation.peers import DEFAULT_VW_ARGS

    days = {
        "days": args.days,
        "customers_per_day": args.customers,
        "world_size": args.world,
        "policy": args.policy,
        "epsilon": args.epsilon,
        "temperature": args.temperature,
        "retrains_per_day": args.retrains_per_day,
        "learn_every": args.learn_every,
        "new_offer_day": args.new_offer_day,
        "halve": None,
    }
    try:
        days["changed"] = _catalog_changes(args.catalog, args.sd_scale)
    except ValueError as exc:
        print(f"arbiter simulate: --catalog: {exc}", file=sys.stderr)
        return 2
    if args.halve:
        offer, _, day = args.halve.partition(":")
        if not day.isdigit():
            print("arbiter simulate: --halve OFFER:DAY", file=sys.stderr)
            return 2
        days["halve"] = (offer, int(day))
    if args.retrains_per_day < 1:
        print("arbiter simulate: --retrains-per-day: at least 1", file=sys.stderr)
        return 2
    log_file = args.out.with_name(f"{args.out.name}.log")  # beside the folder a run clears
    logs.to_file(log_file)
    print(f"simulating; the service's and the learner's logs: {log_file}", flush=True)
    if args.compare:
        try:
            simulation.compare_seeds(
                args.out,
                policies=args.compare,
                seeds=range(1, args.seeds + 1),
                vw_args=args.vw_args or DEFAULT_VW_ARGS,
                before=args.before,
                before_args=[
                    *(["--policy", args.before_policy] if args.before_policy else []),
                    *args.before_args.split(),
                ],
                **days,
            )
        except ValueError as e:
            print(f"arbiter simulate: {e}", file=sys.stderr)
            return 2
        return 0
    simulation.run(args.out, **days)
    return 0


def _demo_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--customers", type=int)
    p.add_argument("--out", type=Path)


def _demo_data(args: argparse.Namespace) -> int:
    from engine.settings import load_definitions
    from training import demo
    from training.world import generate

    settings = TrainerSettings(**({"demo_customers": args.customers} if args.customers else {}))
    if args.out:
        count = generate(settings.demo_customers, settings.world_seed).write_profiles(args.out)
        print(f"wrote {count} profiles to {args.out}")
    else:
        fingerprint = load_definitions(settings).schema.fingerprint
        print(f"profiles in {demo.ensure_profiles_file(settings, fingerprint)}")
    return 0


def _export_logs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dest", type=Path, nargs="?", help="the dataset's folder (ARBITER_EXPORT_DIR)")


def _export_logs(args: argparse.Namespace) -> int:
    from training.export import export_logs  # pyarrow: this command only

    settings = TrainerSettings()
    dest = args.dest or settings.export_path
    report = export_logs(connect_sync(redis_url(settings)), dest)
    print(
        f"exported {report.rows['decisions']} decisions and {report.rows['outcomes']}"
        f" outcomes to {dest} in {report.seconds:.1f} s ({report.rows_per_second:,.0f} rows/s,"
        f" {report.files} files)"
    )
    return 0


def _compile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", help="the model version (default: the promoted one)")


def _compile(args: argparse.Namespace) -> int:
    from engine.adapters import artifact, compiled

    settings = TrainerSettings()
    model = artifact.load(settings.model_dir, args.version)
    done = compiled.compile_artifact(model)
    print(
        f"compiled model {model.version} in {done.seconds:.1f} s: agrees with LightGBM to"
        f" {done.max_abs_diff:.1g} on {done.rows} check rows; running servers pick it up"
        " at their next reload of a model"
    )
    return 0


def _whatif_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", type=Path, required=True, help="the changed catalog (TOML)")
    p.add_argument("--model", help="a model version to score with (default: the promoted one)")
    p.add_argument("--html", type=Path, help="also write the report as HTML with plots")


def _whatif(args: argparse.Namespace) -> int:
    from engine.core.catalog import load_catalog
    from engine.service.reloader import load_scorer
    from engine.settings import load_definitions
    from feature_store.log_reader import read_logs
    from training import whatif

    settings = TrainerSettings()
    definitions = load_definitions(settings)
    schema = definitions.schema
    try:
        changed = load_catalog(args.catalog, frozenset(schema.names))
        current = load_scorer(settings.model_dir, schema)
        scorer = load_scorer(settings.model_dir, schema, args.model) if args.model else current
    except (ConfigurationError, OSError) as e:
        print(f"arbiter whatif: {e}", file=sys.stderr)
        return 2
    if current.vocabulary is None or scorer.vocabulary is None:
        print("arbiter whatif: no trained model to score with (arbiter train)", file=sys.stderr)
        return 2
    decisions, outcomes = read_logs(connect_sync(redis_url(settings)))
    result = whatif.evaluate(
        decisions, outcomes, schema, (definitions.catalog, current), (changed, scorer)
    )
    print(whatif.text(result))
    if args.html:
        whatif.write_report(result, args.html, f"What if: {args.catalog.name}")
        print(f"report: {args.html}")
    return 3 if result.refused else 0


def _experiments_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["report"])
    p.add_argument(
        "--challenger", help="the challenger's model version (default: the running challenge)"
    )
    p.add_argument(
        "--share",
        type=float,
        help="the share of customers it was set to (default: the running challenge's)",
    )
    p.add_argument("--html", type=Path, help="also write the report as HTML with plots")


def _experiments(args: argparse.Namespace) -> int:
    from engine.adapters import artifact
    from engine.settings import load_definitions
    from feature_store.log_reader import read_logs
    from training import experiments

    settings = TrainerSettings()
    running = artifact.challenger(settings.model_dir)
    version = args.challenger or (running[0] if running else None)
    if version is None:
        print(
            "arbiter experiments: no challenge is running; name one with --challenger",
            file=sys.stderr,
        )
        return 2
    share = args.share
    if share is None:
        if running is None or running[0] != version:
            print(
                f"arbiter experiments: {version} is not the running challenger; give --share",
                file=sys.stderr,
            )
            return 2
        share = running[1]
    if not 0 < share < 1:
        print(f"arbiter experiments: --share must be between 0 and 1, not {share}", file=sys.stderr)
        return 2
    decisions, outcomes = read_logs(connect_sync(redis_url(settings)))
    try:
        worth = {o.offer_id: o.value for o in load_definitions(settings).catalog.offers}
        found = experiments.report(decisions, outcomes, version, share, worth)
    except ValueError as e:
        print(f"arbiter experiments: {e}", file=sys.stderr)
        return 2
    print(experiments.text(found))
    if args.html:
        experiments.write_report(found, args.html)
        print(f"report: {args.html}")
    return 0


COMMANDS = [
    Command("train", "train a model; promote it only when better", _train_arguments, _train),
    Command(
        "compile",
        "compile a model's trees for this CPU (training does it for a promoted model)",
        _compile_arguments,
        _compile,
    ),
    Command(
        "export-logs",
        "append the decision and outcome logs since the last export to a Parquet dataset",
        _export_logs_arguments,
        _export_logs,
    ),
    Command(
        "simulate",
        "the closed loop over simulated days (own service)",
        _simulate_arguments,
        _simulate,
    ),
    Command(
        "whatif",
        "what a changed catalog or model would have earned on the logged decisions",
        _whatif_arguments,
        _whatif,
    ),
    Command(
        "experiments",
        "a champion / challenger experiment from the logs: uplift per arm, sample ratio",
        _experiments_arguments,
        _experiments,
    ),
    Command(
        "demo-data",
        "generate the demo world's customer profiles",
        _demo_data_arguments,
        _demo_data,
    ),
]


def offers_view(args: argparse.Namespace, fresh: bool) -> None:
    """`arbiter models`: the latest published report of each offer's model; `arbiter models
    offers`: computed from the logs now (and published), ``--html`` written."""
    from common.reward import RewardWindows
    from training import monitor

    settings = TrainerSettings()
    if not fresh:
        url = settings.redis_url or running_url(settings.embedded_redis_dir)
        if url is None:
            print("\neach offer's model: in Redis (set REDIS_URL, or start `arbiter serve`)")
            return
        try:
            report = monitor.published(connect_sync(url, timeout_seconds=2))
        except ArbiterError as exc:
            print(f"\neach offer's model: not read ({exc})")
            return
        if report is None:
            print(
                "\neach offer's model: no report yet (`arbiter models offers`, or a training run)"
            )
            return
    else:
        from engine.adapters import artifact
        from feature_store import keys, log_codec
        from feature_store.log_reader import read_merged, read_outcomes

        client = connect_sync(redis_url(settings))
        now = time.time()
        days = args.days if args.days is not None else settings.monitor_days
        serving = (
            artifact.load(settings.model_dir)
            if artifact.current_version(settings.model_dir)
            else None
        )
        report = monitor.offer_health(
            read_merged(client, keys.decision_logs(), log_codec.decode_decision),
            read_outcomes(client),
            RewardWindows.of(settings.reward_window_minutes, settings.attribution_hours),
            now=now,
            since=now - days * 86400,
            model_version=serving.version if serving else "",
            model_auc=float(serving.metrics.get("auc", math.nan)) if serving else math.nan,
        )
        monitor.publish(client, report)
    print()
    print(monitor.table(report))
    if args.html:
        monitor.write_report(report, args.html)
        print(f"report: {args.html}")


def main(argv: list[str] | None = None) -> int:
    serve, admin = ops.commands(prepare_demo, offers_view)
    return cli.main([serve, *cli.commands(), *admin, *COMMANDS], argv)


if __name__ == "__main__":
    raise SystemExit(main())
