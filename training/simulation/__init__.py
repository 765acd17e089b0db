"""`arbiter simulate`: the closed loop, day after day, against the real service.

Each simulated day, customers of the demo world browse (``RecordEvent``), get a decision
(``Decide``: the running service with its exploring policy), and answer as the hidden
response model says (``ReportOutcome``). The scheduled retrain (training/retrain.py)
runs a given number of times a day, evenly through it, and promotes the new model only
on its bound; the service swaps it in live.

Per day it reports the expected value per decision of the served policy (exploring), of
the promoted model's own greedy choice, of the oracle (which knows the true response
probabilities and takes the best eligible offer), of a uniformly random and of a
value-only policy, all on the same decisions and candidates, plus what was realised; and
for each retrain its estimated value lift over the champion next to the true lift (by
the hidden model, on the decisions it was judged on).

With ``compare``, peer policies (Vowpal Wabbit's contextual bandit, value-only, random)
choose among the same candidates on every decision, once per seed (`compare_seeds`).

Modules: traffic.py (a day of browsing, decisions and outcomes; retraining), oracle.py
(the hidden model's value of any policy), peers.py (the peer policies), compare.py (the
head-to-head over seeds), report.py (table, HTML, CSV), offline.py (the batch model's
greedy choice alone, offline, for choosing trainer settings).
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from common.vocabulary import CHANNELS
from engine.adapters.lightgbm_scorer import LightGBMScorer
from engine.api.background import BackgroundServer
from engine.core.arbitration import DEFAULT_EPSILON, DEFAULT_TEMPERATURE
from engine.settings import DEFAULTS, Definitions, ServerSettings, load_definitions
from feature_store.embedded import EmbeddedRedis
from feature_store.loader import load_profiles
from feature_store.redis_client import SyncClient, connect_sync
from training.job import train_demo
from training.settings import TrainerSettings
from training.simulation import compare, events
from training.simulation.peers import DEFAULT_VW_ARGS, VWPolicy, peers_by_name
from training.simulation.report import LEGEND, DayResult, table, write_csv, write_report
from training.simulation.traffic import Simulation
from training.synthetic_logs import simulate_logs
from training.world import NEW_OFFER_ID, World, generate

__all__ = [
    "NEW_OFFER",
    "DayResult",
    "Simulation",
    "compare_seeds",
    "exploring_catalog",
    "run",
    "stack",
]

# The offer `--new-offer-day` adds to the catalog mid-run: unknown to every model, better
# than the others for many customers (its hidden appeal: training/world.py).
NEW_OFFER = f"""
[[offer]]
id = "{NEW_OFFER_ID}"
name = "Gigabit fibre"
category = "broadband"
tags = ["fibre", "data"]
value = 350
channels = ["web", "mobile_app", "call_center", "email"]
[offer.message]
headline = "Gigabit fibre, $first_name"
body = "Ten times the speed for the whole household."
call_to_action = "Go gigabit"
url = "https://shop.example.com/fibre/gigabit"
agent_script = "$first_name, gigabit fibre is now available at your address. Shall I check it?"
"""


def exploring_catalog(
    path: Path,
    policy: str,
    *,
    epsilon: float = DEFAULT_EPSILON,
    temperature: float = DEFAULT_TEMPERATURE,
    source: Path = DEFAULTS / "catalog.toml",
    changed: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Writes the catalog ``source`` to ``path``, exploring by ``policy`` (epsilon or
    softmax) everywhere its ``[exploration]`` table does not switch it off, with the
    settings in ``changed`` (table -> key -> value, e.g. ``{"adaptive":
    {"new_offer_share": 0.2}}``) set over the file's. Quiet hours, a wall-clock rule, are
    dropped: simulated days pass in seconds."""
    doc = tomllib.loads(source.read_text())
    doc.get("contact_policy", {}).pop("quiet_hours", None)
    doc["exploration"] = {
        **doc.get("exploration", {}),
        "policy": policy,
        "epsilon": epsilon,
        "temperature": temperature,
    }
    for name, settings in (changed or {}).items():
        doc[name] = {**doc.get(name, {}), **settings}
    path.write_text(tomli_w.dumps(doc))
    return path


@dataclass
class Served:
    """A simulated world served by a service of its own (`stack`)."""

    server: BackgroundServer
    client: SyncClient
    world: World
    trainer: TrainerSettings
    definitions: Definitions


@contextmanager
def stack(
    workdir: Path,
    *,
    world_size: int,
    policy: str = "softmax",
    epsilon: float = DEFAULT_EPSILON,
    temperature: float = DEFAULT_TEMPERATURE,
    seed: int = 1,
    first_rows: int = 30_000,
    min_holdout_decisions: int = 500,
    changed: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[Served]:
    """A fresh embedded Redis holding the world's profiles, a first model trained on
    simulated logs, and a server of its own exploring with ``policy`` (its catalog:
    ``workdir``/catalog.toml, reloaded on ``server.reloader.check()``). ``seed`` picks
    the world and the first model's simulated logs (seed 1: the demo world)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    catalog = exploring_catalog(
        workdir / "catalog.toml",
        policy,
        epsilon=epsilon,
        temperature=temperature,
        changed=changed,
    )
    trainer = TrainerSettings(
        data_dir=workdir,
        catalog_path=catalog,
        demo_customers=world_size,
        train_rows=first_rows,  # the first model's simulated logs; retraining reads the logs
        # Simulated hours pass in seconds: a decision's answer comes at once, and one
        # without an answer is "no response" a fraction of a second later.
        attribution_hours=0.0001,
        reward_window_minutes=dict.fromkeys(CHANNELS, 0.003),
        min_holdout_decisions=min_holdout_decisions,
        compile_trees=False,  # serving on LightGBM: compiling takes longer than a day here
        world_seed=TrainerSettings().world_seed + seed - 1,
        simulation_seed=1_000 + seed,  # known, so that VW can learn from the same logs
    )
    world = generate(world_size, trainer.world_seed)
    with EmbeddedRedis() as server_redis:
        client = connect_sync(server_redis.url)
        definitions = load_definitions(trainer)
        load_profiles(client, definitions.schema, world.profiles())
        first = train_demo(trainer, progress=False)  # day 0: a model from simulated logs
        print(
            f"first model {first.model.version} (simulated logs), AUC"
            f" {first.model.metrics['auc']:.3f} on a held-out fifth of them"
        )
        settings = ServerSettings(
            data_dir=workdir, catalog_path=catalog, port=0, reload_seconds=0.0
        )
        server = BackgroundServer(settings, server_redis.url)
        try:
            yield Served(server, client, world, trainer, definitions)
        finally:
            server.stop()
            client.close()


def run(
    workdir: Path,
    *,
    days: int,
    customers_per_day: int,
    world_size: int,
    policy: str = "softmax",
    epsilon: float = DEFAULT_EPSILON,
    temperature: float = DEFAULT_TEMPERATURE,
    progress: bool = True,
    seed: int = 1,
    peers: Sequence[str] = (),
    vw_args: str = DEFAULT_VW_ARGS,
    retrains_per_day: int = 1,
    min_holdout_decisions: int = 500,
    learn_every: int = 0,
    new_offer_day: int = 0,
    halve: tuple[str, int] | None = None,
    changed: Mapping[str, Mapping[str, Any]] | None = None,
    first_rows: int = 30_000,
) -> list[DayResult]:
    """The whole loop on a fresh embedded Redis and a server of its own (`stack`),
    exploring with ``policy`` (epsilon, softmax or thompson), retraining
    ``retrains_per_day`` times a day (evenly through it; the last after the day's final
    answers), the online learner ticking every ``learn_every`` decisions (0: none); writes
    ``report.html``, ``days.csv`` and ``events.csv`` into ``workdir``. ``peers`` (vw,
    value, random) choose beside the served policy on every decision; VW first learns
    from the same logs as the first model. ``new_offer_day``: NEW_OFFER joins the catalog
    at the start of that day; ``halve``: (offer, day) whose appeal halves that day
    (events.py measures how fast the served policy follows)."""
    with stack(
        workdir,
        world_size=world_size,
        policy=policy,
        epsilon=epsilon,
        temperature=temperature,
        seed=seed,
        min_holdout_decisions=min_holdout_decisions,
        changed=changed,
        first_rows=first_rows,
    ) as w:
        definitions = w.definitions
        rivals = peers_by_name(
            peers,
            definitions.catalog,
            definitions.schema.names,
            w.world,
            vw_args=vw_args,
            seed=seed,
        )
        for rival in rivals.values():
            if isinstance(rival, VWPolicy):
                logs = simulate_logs(
                    w.world,
                    definitions.schema,
                    definitions.catalog,
                    definitions.stage_rules,
                    rows=w.trainer.train_rows,
                    seed=w.trainer.simulation_seed,
                )
                rival.warm_start(logs, definitions.catalog)
        try:
            simulation = Simulation(
                w.server,
                w.client,
                w.world,
                w.trainer,
                seed=seed,
                peers=rivals,
                learn_every=learn_every,
            )
            results = []
            print(LEGEND, flush=True)
            print(table([]), flush=True)
            for day in range(1, days + 1):
                if day == new_offer_day:
                    simulation.add_offer(NEW_OFFER)
                if halve is not None and day == halve[1]:
                    w.world.appeal[halve[0]] = 0.5
                result = simulation.run_day(
                    day, customers_per_day, progress=progress, retrains=retrains_per_day
                )
                results.append(result)
                print(table(results).splitlines()[len(results)], flush=True)
                for retrain in result.retrains:
                    state = "promoted" if retrain.promoted else "not promoted"
                    truth = (
                        "" if retrain.true_lift is None else f" [true lift {retrain.true_lift:.4f}]"
                    )
                    print(f"     after {retrain.after}: {state}: {retrain.why}{truth}", flush=True)
            scorer = w.server.application.core.scorer
            model = scorer.artifact if isinstance(scorer, LightGBMScorer) else None
            shares = {r.day: r.policy / r.oracle for r in results if r.oracle}
            changes = [("new offer", NEW_OFFER_ID, new_offer_day)] if new_offer_day else []
            if halve is not None:
                changes.append(("appeal halved", *halve))
            measured = [
                events.measure(kind, offer, day, simulation.trace, simulation.day_starts, shares)
                for kind, offer, day in changes
                if day in simulation.day_starts
            ]
            simulation.write_decisions(workdir / "decisions.csv")
        finally:
            for rival in rivals.values():
                if isinstance(rival, VWPolicy):
                    rival.close()
    summary = table(results).splitlines()[len(results) + 1 :]
    print("\n".join(summary))
    write_report(results, workdir / "report.html", model)
    write_csv(results, workdir / "days.csv")
    events.write_csv(measured, workdir / "events.csv")
    for followed in measured:
        print(events.describe(followed))
    print(f"report: {workdir / 'report.html'}")
    return results


def compare_seeds(
    workdir: Path,
    *,
    policies: Sequence[str],
    seeds: Sequence[int],
    days: int,
    customers_per_day: int,
    world_size: int,
    policy: str = "softmax",
    epsilon: float = DEFAULT_EPSILON,
    temperature: float = DEFAULT_TEMPERATURE,
    vw_args: str = DEFAULT_VW_ARGS,
    retrains_per_day: int = 1,
    before: Path | None = None,
    before_args: Sequence[str] = (),
    learn_every: int = 0,
    new_offer_day: int = 0,
    halve: tuple[str, int] | None = None,
    changed: Mapping[str, Mapping[str, Any]] | None = None,
    first_rows: int = 30_000,
) -> list[list[DayResult]]:
    """`run` once per seed with the peers among ``policies``, then the head-to-head table
    (printed, and ``compare.csv`` with every seed's figures). ``before``: a checkout of an
    earlier Arbiter whose own `arbiter simulate --compare arbiter` runs beside this one
    (same seeds, so the same worlds and traffic; ``before_args`` added to its command)
    and joins the table as "before". The mid-run changes (``new_offer_day``, ``halve``)
    are this run's only."""
    unknown = [p for p in policies if p not in compare.POLICIES]
    if unknown:
        raise ValueError(
            f"--compare: unknown policy {', '.join(unknown)} (known: {', '.join(compare.POLICIES)})"
        )
    if "arbiter" not in policies:
        raise ValueError("--compare: arbiter, the served policy, must be one of them")
    if not seeds:
        raise ValueError("--seeds: at least one")
    peers = [p for p in policies if p != "arbiter"]
    earlier = None
    if before is not None:
        earlier = compare.start_before(
            before,
            workdir / "before",
            seeds=len(seeds),
            days=days,
            customers=customers_per_day,
            world=world_size,
            policy=policy,
            epsilon=epsilon,
            temperature=temperature,
            extra=before_args,
        )
    runs = []
    for seed in seeds:
        print(f"\nseed {seed}:", flush=True)
        runs.append(
            run(
                workdir / f"seed-{seed}",
                days=days,
                customers_per_day=customers_per_day,
                world_size=world_size,
                policy=policy,
                epsilon=epsilon,
                temperature=temperature,
                progress=False,
                seed=seed,
                peers=peers,
                vw_args=vw_args,
                retrains_per_day=retrains_per_day,
                learn_every=learn_every,
                new_offer_day=new_offer_day,
                halve=halve,
                changed=changed,
                first_rows=first_rows,
            )
        )
    if earlier is not None:
        runs = compare.join_before(earlier, workdir / "before", runs, seeds)
        policies = [*policies, "before"]
    print()
    print(compare.table(runs, policies, seeds))
    compare.write_csv(runs, policies, seeds, workdir / "compare.csv")
    compare.write_report(runs, policies, seeds, workdir / "compare.html")
    measured = [events.read_csv(workdir / f"seed-{seed}" / "events.csv") for seed in seeds]
    for kind in sorted({f.event for seed in measured for f in seed}):
        found = [f for seed in measured for f in seed if f.event == kind]
        print(f"{kind}, per seed:")
        for seed, f in zip(seeds, found, strict=False):
            print(f"  seed {seed}: {events.describe(f)}")
    print(f"figures: {workdir / 'compare.csv'}; report: {workdir / 'compare.html'}")
    return runs
