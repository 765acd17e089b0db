"""Operator commands: bulk-load profiles into Redis, and the model registry (list, promote
a version, run a challenger)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from common.errors import ArbiterError
from common.vocabulary import POSITIVE_OUTCOMES
from engine.adapters import artifact
from engine.api.auth import ROLES, new_key
from engine.clients.cli.command import Command
from engine.core import adaptive
from engine.core.model_input import feature_names_id
from engine.service.learner import ask_rollback, read_published
from engine.service.registry import shared_models
from engine.settings import CommonSettings, LoaderSettings, ServerSettings, load_definitions
from feature_store import keys
from feature_store.embedded import running_url
from feature_store.loader import load_file
from feature_store.log_reader import read_logs
from feature_store.redis_client import connect_sync


def redis_url(settings: CommonSettings) -> str:
    """``REDIS_URL``, or the embedded server a running `arbiter serve` started."""
    url = settings.redis_url or running_url(settings.embedded_redis_dir)
    if url is None:
        raise SystemExit("set REDIS_URL, or start `arbiter serve` (embedded Redis) first")
    return url


def _load_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path)


def _load(args: argparse.Namespace) -> int:
    settings = LoaderSettings()
    schema = load_definitions(settings).schema
    client = connect_sync(redis_url(settings))
    report = load_file(client, schema, args.path, batch_size=settings.batch_size, progress=True)
    print(
        f"loaded {report.rows} profiles in {report.seconds:.1f}s ({report.rows_per_second:,.0f}/s)"
    )
    return 0


def outcomes_by_model(
    decisions: Iterable[Mapping[str, Any]],
    outcomes: Iterable[Mapping[str, Any]],
    positive: frozenset[str] = POSITIVE_OUTCOMES,
) -> dict[str, tuple[int, int]]:
    """Per model version: (actions taken, actions with a positive outcome), whenever it
    was reported: the champion / challenger comparison."""
    hits = {(o["decision_id"], o["offer_id"]) for o in outcomes if o["outcome"] in positive}
    counts: dict[str, list[int]] = {}
    for d in decisions:
        tally = counts.setdefault(d["model_version"], [0, 0])
        for action in d["actions"]:
            tally[0] += 1
            tally[1] += (d["decision_id"], action["offer_id"]) in hits
    return {version: (n, k) for version, (n, k) in counts.items()}


def _outcomes_by_model(settings: CommonSettings) -> dict[str, tuple[int, int]]:
    """Actions and accepted actions per model from the logs, when a Redis is at hand."""
    url = settings.redis_url or running_url(settings.embedded_redis_dir)
    if url is None:
        return {}
    try:
        return outcomes_by_model(*read_logs(connect_sync(url, timeout_seconds=2)))
    except ArbiterError:
        return {}


def _models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        nargs="?",
        choices=["list", "promote", "challenge", "end-challenge", "offers", "rollback"],
        default="list",
        help="offers: each offer's model, computed from the logs now; rollback: the online"
        " layer back to its last kept publication (or VERSION's)",
    )
    p.add_argument("version", nargs="?")
    p.add_argument("--share", type=float, default=0.1, help="challenger share of customers")
    p.add_argument("--days", type=float, help="offers: the window (ARBITER_MONITOR_DAYS, 7)")
    p.add_argument("--html", type=Path, help="offers: also write the report as HTML")


# Each offer's model (`arbiter models`, `arbiter models offers`): the training layer's,
# given to ``models_command``; called with the arguments and whether to compute it now
# (else the latest published report is shown).
OffersView = Callable[[argparse.Namespace, bool], None]


def models_command(offers: OffersView | None = None) -> Command:
    def run(args: argparse.Namespace) -> int:
        if args.action == "offers" and offers is None:
            raise SystemExit("arbiter models offers: needs the training package")
        status = _models(args)
        if offers is not None and args.action in ("list", "offers"):
            offers(args, args.action == "offers")
        return status

    return Command(
        "models",
        "list model versions and each offer's health; promote one (rollback); run a challenger",
        _models_arguments,
        run,
    )


def _models(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    action, version = args.action, args.version
    if action in ("promote", "challenge") and not version:
        raise SystemExit(f"arbiter models {action} VERSION")
    # With a shared registry the pointers there are the truth (the version is published
    # first when only this folder has it); the local folder follows, as every replica's.
    shared = (
        shared_models(settings, redis_url(settings)) if settings.model_registry != "local" else None
    )
    if action == "promote":
        if shared is not None:
            shared.promote(version)
        else:
            artifact.set_current(settings.model_dir, version)
        print(f"promoted {version}; running services pick it up within their reload interval")
    elif action == "challenge":
        if shared is not None:
            shared.challenge(version, args.share)
        else:
            artifact.set_challenger(settings.model_dir, version, args.share)
        print(f"{version} now serves {args.share:.0%} of customers (stable by customer id)")
    elif action == "offers":
        pass  # the training layer's view (models_command)
    elif action == "rollback":
        _rollback(settings, int(version) if version else None)
    elif action == "end-challenge":
        if shared is not None:
            shared.challenge(None)
        else:
            artifact.set_challenger(settings.model_dir, None)
        print("challenge ended: the promoted model serves every customer")
    else:
        _list_models(settings)
    return 0


def _list_models(settings: CommonSettings) -> None:
    if settings.model_registry != "local":
        shared = shared_models(settings, redis_url(settings))
        if shared is not None:
            shared.sync()  # what the replicas serve
    current = artifact.current_version(settings.model_dir)
    challenge = artifact.challenger(settings.model_dir)
    outcomes = _outcomes_by_model(settings)
    print(f"{'':2}{'version':26} {'created':29} {'AUC':>6} {'log loss':>8} {'rows':>7}  outcomes")
    for model in artifact.versions(settings.model_dir):
        mark = "  "
        if model.version == current:
            mark = "* "
        elif challenge and model.version == challenge[0]:
            mark = "c "
        m = model.metrics
        taken, positive = outcomes.get(model.version, (0, 0))
        served = f"{positive}/{taken} accepted" if taken else ""
        print(
            f"{mark}{model.version:26} {model.created_at:29} {m.get('auc', float('nan')):6.4f}"
            f" {m.get('log_loss', float('nan')):8.4f} {model.training.get('rows', ''):>7}  {served}"
        )
    if challenge:
        print(f"(* promoted; c challenger, serving {challenge[1]:.0%} of customers)")
    if current is not None:
        _layer_table(settings, current)


def _layer_table(settings: CommonSettings, version: str) -> None:
    """The online layer of the promoted model, per offer: what it learnt since the model
    was promoted, how sure it is, and how far a new offer is ramped in."""
    url = settings.redis_url or running_url(settings.embedded_redis_dir)
    if url is None:
        return
    try:
        published = read_published(connect_sync(url, timeout_seconds=2))
    except ArbiterError:
        return
    definitions = load_definitions(settings)
    catalog, names = definitions.catalog, definitions.schema.names
    model = artifact.load(settings.model_dir, version)
    evidence = adaptive.evidence_from(model.training.get("offers"))
    layer = published.layer if published else adaptive.EMPTY
    context = adaptive.Context.of(
        catalog.adaptive_features,
        names,
        model.training.get("feature_stats", {}),
        feature_names_id(names),
    )
    view = adaptive.View(
        [o.offer_id for o in catalog.offers],
        [o.category for o in catalog.offers],
        version,
        evidence,
        layer,
        catalog.ramp,
        context,
    )
    cells = layer.models.get(version, {})
    age = f"{time.time() - layer.updated:.0f} s ago" if layer.updated else "never"
    print(f"\nonline layer: publication {layer.version}, last learnt {age}; model {version}:")
    print(
        f"  {'offer':26} {'model rows':>10} {'examples':>8} {'positives':>9}"
        f" {'shift':>6} {'width':>6} {'slope':>6}  maturity"
    )
    for i, offer in enumerate(catalog.offers):
        known = evidence.get(offer.offer_id)
        cell = cells.get(offer.offer_id)
        share = float(view.share[i])
        print(
            f"  {offer.offer_id:26} {known.rows if known else 0:>10}"
            f" {cell.examples if cell else 0:>8.0f} {cell.positives if cell else 0:>9.0f}"
            f" {view.mean[i, 0]:>+6.2f} {view.variance[i, 0] ** 0.5:>6.2f}"
            f" {view.mean[i, 1]:>+6.2f}  {'mature' if share >= 1 else f'new: {share:.0%} of slots'}"
        )


def _rollback(settings: CommonSettings, to: int | None) -> None:
    client = connect_sync(redis_url(settings))
    before = read_published(client)
    if before is None:
        raise SystemExit("no online layer published yet: nothing to roll back")
    ask_rollback(client, to)
    for _ in range(50):  # the learner applies it at its next tick
        time.sleep(0.1)
        after = read_published(client)
        if after is not None and after.layer.version > before.layer.version:
            done = client.hget(keys.LAYER, keys.LAYER_ROLLBACK) is None
            if done:
                print(f"online layer rolled back: now publication {after.layer.version}")
                return
    print("rollback asked: the learner applies it at its next tick (is one running?)")


def _keys_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["new"])
    p.add_argument("--id", required=True, help="the key's name in logs, e.g. web-frontend")
    p.add_argument(
        "--role",
        action="append",
        required=True,
        choices=ROLES,
        help="a role of the key (repeat for more)",
    )
    p.add_argument("--rate", type=float, help="calls per second allowed (default: no limit)")


def _keys(args: argparse.Namespace) -> int:
    secret, entry = new_key(args.id, args.role)
    if args.rate:
        entry += f"rate_per_second = {args.rate:g}\n"
    print(f"secret (give it to the caller, it is shown once): {secret}\n")
    print("add to ARBITER_API_KEYS_FILE:\n")
    print(entry, end="")
    return 0


def _learn(args: argparse.Namespace) -> int:
    from engine.service.learner_process import learn  # numpy's learner: this command only

    settings = ServerSettings()
    learn(settings, redis_url(settings))
    return 0


COMMANDS = [
    Command("load", "bulk-load profiles from a JSON Lines file", _load_arguments, _load),
    Command(
        "learn",
        "run the online learner in the foreground (`arbiter serve` starts one of its own)",
        lambda p: None,
        _learn,
    ),
    models_command(),
    Command(
        "keys", "make an API key: prints its secret and the TOML entry", _keys_arguments, _keys
    ),
]
