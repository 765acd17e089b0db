"""`arbiter simulate`: the closed loop, day after day, against the real service.

Each simulated day, customers of the demo world browse (``RecordEvent``), get a decision
(``Decide``: the running service with its exploring policy), and answer as the hidden
response model says (``ReportOutcome``). After the day the loop retrains on the logs and
promotes the new model only when it is better; the service swaps it in live.

Per day it reports the expected value per decision of the served policy (exploring), of
the promoted model's own greedy choice, of the oracle (which knows the true response
probabilities and takes the best eligible offer), of a uniformly random and of a
value-only policy, all on the same decisions and candidates, plus what was realised, and
the off-policy estimate of the next model next to the acceptance that model then realises
(drawn, and expected under the hidden model).
"""

from __future__ import annotations

import html
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from tqdm import tqdm

from arbiter.v1 import common_pb2, decision_pb2, profile_pb2
from engine.adapters.lightgbm_scorer import LightGBMScorer
from engine.api.server import BackgroundServer
from engine.core.arbitration import GREEDY, slot_probabilities
from engine.core.catalog import Catalog
from engine.core.scoring import Scorer
from engine.settings import TrainerSettings, load_definitions
from feature_store import keys
from training.evaluation import Estimate, contexts_from_logs, model_propensities
from training.job import holdout_decisions, train_from_logs
from training.logs import read_stream
from training.train import TrainingConfig
from training.world import TOPICS, World, true_propensity


@dataclass(frozen=True)
class DayResult:
    day: int
    model_version: str
    decisions: int
    policy: float  # expected value per decision of the served (exploring) policy
    greedy: float  # the same of the promoted model's own choice, without exploration
    oracle: float
    random: float
    value_only: float
    realised: float  # value per decision actually earned
    acceptance: float  # accepted decisions / decisions
    expected_acceptance: float  # mean true acceptance probability of the served offers
    next_model: str = ""
    promoted: bool = False
    ope_next: Estimate | None = None  # SNIPS acceptance of tomorrow's policy, from the logs
    ope_next_dr: Estimate | None = None  # the doubly robust estimate of the same
    ope_truth: float | None = None  # its true value on the decisions it was estimated from


_BROWSING = (keys.REALTIME, keys.WINDOWS, keys.SESSION, keys.EVENTS)
_DAY = 86_400
# Moves a customer's contacts (sorted set, scored by time) and cool-down ends back by
# ARGV[1] seconds.
_AGE = """
local contacts = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #contacts, 2 do
  redis.call('ZADD', KEYS[1], tonumber(contacts[i + 1]) - ARGV[1], contacts[i])
end
local policy = redis.call('HGETALL', KEYS[2])
for i = 1, #policy, 2 do
  if string.sub(policy[i], 1, 5) == 'cool:' then
    redis.call('HSET', KEYS[2], policy[i], tonumber(policy[i + 1]) - ARGV[1])
  end
end
return 0
"""


def _timestamp(seconds: float) -> Timestamp:
    return Timestamp(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))


def _expected(entry: Mapping[str, Any], world: World, catalog: Catalog) -> dict[str, float]:
    """True expected value of every candidate of a logged decision (hidden model)."""
    index = int(entry["customer_id"].split("-")[1]) - 1
    named = {k: np.array([v]) for k, v in entry["features"].items()}
    hidden = {
        "interest": world.interest[index : index + 1],
        "price_sensitivity": world.price_sensitivity[index : index + 1],
        "traveller": world.traveller[index : index + 1],
    }
    served = entry.get("served", {})
    last, topics = served.get("last_category", ""), served.get("topic_counts", {})
    out = {}
    for offer_id, *_ in entry["candidates"]:
        offer = catalog.by_id[offer_id]
        p = true_propensity(
            offer_id,
            offer.value,
            offer.topics,
            entry["channel"],
            named,
            hidden,
            np.array([float(last in offer.topics)]),
            np.array([sum(topics.get(t, 0.0) for t in offer.topics)]),
        )
        out[offer_id] = float(p[0])
    return out


def age_contact_state(client: redis.Redis, customer_ids: Sequence[str], seconds: float) -> None:
    """Moves the customers' contacts and cool-down ends ``seconds`` back in time, so caps
    over days and cool-downs run out as if that time had passed (an acceptance keeps
    suppressing its offer: that does not run out)."""
    age = client.register_script(_AGE)
    pipe = client.pipeline(transaction=False)
    for cid in customer_ids:
        age(
            keys=[keys.customer_key(cid, keys.CONTACTS), keys.customer_key(cid, keys.POLICY)],
            args=[seconds],
            client=pipe,
        )
    pipe.execute()


class Simulation:
    def __init__(
        self,
        server: BackgroundServer,
        client: redis.Redis,
        world: World,
        settings: TrainerSettings,
        *,
        seed: int = 1,
    ) -> None:
        self.server = server
        self.client = client
        self.world = world
        self.settings = settings
        definitions = load_definitions(settings)
        self.catalog = definitions.catalog
        self.schema = definitions.schema
        self.rng = np.random.default_rng(seed)
        self._logged = 0

    def _browse(self, index: int) -> None:
        interest = TOPICS[int(self.world.interest[index])]
        for _ in range(int(self.rng.poisson(1.5))):
            topic = (
                interest if self.rng.random() < 0.6 else TOPICS[int(self.rng.integers(len(TOPICS)))]
            )
            self.server.profiles.RecordEvent(
                profile_pb2.RecordEventRequest(
                    customer_id=self.world.customer_id(index),
                    channel=common_pb2.CHANNEL_WEB,
                    event_type="product_view",
                    attributes={"category": topic},
                ),
                timeout=5,
            )

    def _new_day(self) -> None:
        """Simulated days last minutes: let a day pass. Yesterday's browsing would still be
        inside the real-time windows: forget it; contacts and cool-downs age by a day."""
        customers = [self.world.customer_id(i) for i in range(self.world.size)]
        pipe = self.client.pipeline(transaction=False)
        for cid in customers:
            pipe.delete(*(keys.customer_key(cid, k) for k in _BROWSING))
        pipe.execute()
        age_contact_state(self.client, customers, _DAY)

    def run_day(self, day: int, customers: int, *, progress: bool = False) -> DayResult:
        self._new_day()
        chosen = self.rng.choice(self.world.size, size=customers, replace=False)
        version = ""
        for index in tqdm(
            chosen.tolist(), disable=not progress, desc=f"day {day}", unit="customers"
        ):
            self._browse(index)
            response = self.server.decisions.Decide(
                decision_pb2.DecideRequest(
                    customer_id=self.world.customer_id(index),
                    channel=common_pb2.CHANNEL_WEB,
                    placement="home_hero",
                ),
                timeout=5,
            )
            version = response.model_version
        self.server.flush_log()
        entries = list(read_stream(self.client, keys.DECISION_LOG, b"d"))[self._logged :]
        self._logged += len(entries)
        policy, greedy, oracle, random, value_only = [], [], [], [], []
        chance, realised, accepted = [], 0.0, 0
        for entry in entries:
            if not entry["actions"]:
                continue
            truth = _expected(entry, self.world, self.catalog)
            value = {o: self.catalog.by_id[o].value for o in truth}
            action = entry["actions"][0]["offer_id"]
            policy.append(truth[action] * value[action])
            chance.append(truth[action])
            best_priority = max(entry["candidates"], key=lambda c: c[2])[0]
            greedy.append(truth[best_priority] * value[best_priority])
            oracle.append(max(truth[o] * value[o] for o in truth))
            random.append(float(np.mean([truth[o] * value[o] for o in truth])))
            best = max(truth, key=lambda o: value[o] * self.catalog.by_id[o].lever)
            value_only.append(truth[best] * value[best])
            self._report(entry, action, "impression")
            if self.rng.random() < truth[action]:
                self._report(entry, action, "accept")
                realised += value[action]
                accepted += 1
        n = max(len(policy), 1)

        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else 0.0

        return DayResult(
            day=day,
            model_version=version,
            decisions=len(policy),
            policy=mean(policy),
            greedy=mean(greedy),
            oracle=mean(oracle),
            random=mean(random),
            value_only=mean(value_only),
            realised=realised / n,
            acceptance=accepted / n,
            expected_acceptance=mean(chance),
        )

    def _report(self, entry: Mapping[str, Any], offer_id: str, outcome: str) -> None:
        self.server.decisions.ReportOutcome(
            decision_pb2.ReportOutcomeRequest(
                decision_id=entry["decision_id"],
                customer_id=entry["customer_id"],
                offer_id=offer_id,
                outcome=common_pb2.Outcome.Value(f"OUTCOME_{outcome.upper()}"),
                # the customer answers right after seeing it (inside the attribution window)
                occurred_at=_timestamp(entry["ts"] + 0.1),
            ),
            timeout=5,
        )

    def retrain(self, result: DayResult) -> DayResult:
        """Trains on every logged decision so far, promotes if better, swaps it in."""
        time.sleep(max(0.0, self.settings.attribution_hours * 3600 + 0.05))
        outcome, _ = train_from_logs(self.settings, self.client)
        if outcome.promoted:
            self.server.run(self.server.reloader.check())
        # The estimate that can be checked tomorrow: of the policy that will then serve.
        serving = "new" if outcome.promoted else "current"
        snips = outcome.estimates.get(serving, {}).get("snips")
        dr = outcome.estimates.get(serving, {}).get("dr")
        truth = None
        if snips is not None:
            scorer = (
                LightGBMScorer(outcome.model)
                if outcome.promoted
                else self.server.arbiter.core.scorer
            )
            until = float(outcome.model.training["until"]) - self.settings.attribution_hours * 3600
            truth = self.true_acceptance(scorer, until)
        return DayResult(
            **{
                **result.__dict__,
                "next_model": outcome.model.version,
                "promoted": outcome.promoted,
                "ope_next": snips,
                "ope_next_dr": dr,
                "ope_truth": truth,
            }
        )

    def true_acceptance(self, scorer: Scorer, until: float) -> float:
        """What the hidden model says ``scorer``'s policy, as deployed, earns in acceptance
        on the decisions its off-policy estimate was computed from: the estimand, so the
        estimate's distance to it is the estimator's own error."""
        decisions = list(read_stream(self.client, keys.DECISION_LOG, b"d"))
        exploration = self.catalog.exploration
        values = []
        for entry in holdout_decisions(decisions, until, TrainingConfig().holdout):
            contexts = contexts_from_logs([entry], _unrewarded, self.schema, self.catalog)
            if not contexts:
                continue
            context = contexts[0]
            truth = _expected(entry, self.world, self.catalog)
            offers = [self.catalog.by_id[o] for o in context.candidates]
            priority = model_propensities(context, scorer, self.catalog) * np.array(
                [o.value * o.lever for o in offers]
            )
            explores = exploration.applies(context.channel, context.placement)
            p = slot_probabilities(priority, exploration if explores else GREEDY)
            values.append(float(p @ np.array([truth[o] for o in context.candidates])))
        return float(np.mean(values)) if values else float("nan")


def _unrewarded(decision: Mapping[str, Any], offer_id: str) -> bool:
    return False


def table(results: Sequence[DayResult]) -> str:
    """One line per day, then how far each off-policy estimate was from what its policy
    then realised, and from its own estimand (the policy's true value, by the hidden
    model, on the decisions the estimate was computed from)."""
    lines = [
        "day  decisions  served  greedy  oracle  random  value-only  served/oracle"
        "  greedy/oracle  realised  acceptance  expected  promoted  OPE of tomorrow's acceptance",
    ]
    for r in results:
        ope = str(r.ope_next) if r.ope_next else "-"
        lines.append(
            f"{r.day:>3}  {r.decisions:>9}  {r.policy:6.2f}  {r.greedy:6.2f}  {r.oracle:6.2f}"
            f"  {r.random:6.2f}  {r.value_only:10.2f}  {_share(r.policy, r.oracle):>13}"
            f"  {_share(r.greedy, r.oracle):>13}  {r.realised:8.2f}  {r.acceptance:10.4f}"
            f"  {r.expected_acceptance:8.4f}  {'yes' if r.promoted else 'no':>8}  {ope}"
        )
    for name, attribute in (("SNIPS", "ope_next"), ("DR", "ope_next_dr")):
        pairs = [
            (estimate, a, b)
            for a, b in itertools.pairwise(results)
            if (estimate := getattr(a, attribute)) is not None and b.acceptance
        ]
        if not pairs:
            continue
        realised = [abs(e.value - b.acceptance) / b.acceptance for e, _, b in pairs]
        covered = sum(e.low <= b.acceptance <= e.high for e, _, b in pairs)
        own = [abs(e.value - a.ope_truth) / a.ope_truth for e, a, _ in pairs if a.ope_truth]
        lines.append(
            f"{name} estimate of the next day's acceptance: off the realised by mean"
            f" {np.mean(realised):.1%}, worst {max(realised):.1%} (inside its 95% interval"
            f" {covered} of {len(pairs)} days)"
            + (
                f"; off its true value on the decisions it was estimated from by mean"
                f" {np.mean(own):.1%}, worst {max(own):.1%}"
                if own
                else ""
            )
        )
    return "\n".join(lines)


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def write_report(results: Sequence[DayResult], path: Path) -> None:
    """An HTML page with the table and an SVG chart of value per decision by day."""
    series = {
        "served": ([r.policy for r in results], "#1f6feb"),
        "greedy": ([r.greedy for r in results], "#8250df"),
        "oracle": ([r.oracle for r in results], "#1a7f37"),
        "value-only": ([r.value_only for r in results], "#9a6700"),
        "random": ([r.random for r in results], "#b42318"),
    }
    width, height, pad = 640, 320, 40
    top = max(max(v) for v, _ in series.values()) * 1.1 or 1.0
    days = len(results)

    def point(i: int, v: float) -> str:
        x = pad + (width - 2 * pad) * (i / max(days - 1, 1))
        y = height - pad - (height - 2 * pad) * (v / top)
        return f"{x:.1f},{y:.1f}"

    lines = []
    for name, (values, color) in series.items():
        points = " ".join(point(i, v) for i, v in enumerate(values))
        lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        lines.append(
            f'<text x="{width - pad + 4}" y="{point(days - 1, values[-1]).split(",")[1]}" '
            f'fill="{color}" font-size="12">{html.escape(name)}</text>'
        )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 80}" height="{height}">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}"'
        ' stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="{pad}" y="{pad - 10}" font-size="12">value per decision (max {top:.1f})</text>'
        + "".join(lines)
        + "</svg>"
    )
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>Arbiter simulation</title>"
        "<body style='font-family:system-ui'><h1>Arbiter: the closed loop, by day</h1>"
        f"{svg}<pre>{html.escape(table(results))}</pre></body>"
    )


def exploring_catalog(
    path: Path, policy: str, *, epsilon: float = 0.1, temperature: float = 0.2
) -> Path:
    """Writes the demo catalog to ``path``, exploring by ``policy`` (epsilon or softmax)."""
    from engine.settings import DEFAULTS

    path.write_text(
        (DEFAULTS / "catalog.toml")
        .read_text()
        .replace('policy = "greedy"', f'policy = "{policy}"', 1)
        .replace("epsilon = 0.1", f"epsilon = {epsilon}", 1)
        .replace("temperature = 0.2", f"temperature = {temperature}", 1)
    )
    return path


def run(
    workdir: Path,
    *,
    days: int,
    customers_per_day: int,
    world_size: int,
    policy: str = "epsilon",
    epsilon: float = 0.1,
    temperature: float = 0.2,
    progress: bool = True,
) -> list[DayResult]:
    """The whole loop on a fresh embedded Redis and a server of its own, exploring with
    ``policy`` (epsilon or softmax); writes ``report.html`` and ``days.csv`` into
    ``workdir``."""
    import shutil

    from engine.settings import ServerSettings
    from feature_store.embedded import EmbeddedRedis
    from feature_store.loader import load_profiles
    from training.job import train_demo
    from training.world import generate

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    catalog = exploring_catalog(
        workdir / "catalog.toml", policy, epsilon=epsilon, temperature=temperature
    )
    trainer = TrainerSettings(
        data_dir=workdir,
        catalog_path=catalog,
        demo_customers=world_size,
        train_rows=30_000,
        attribution_hours=0.0001,  # outcomes arrive within seconds of their decision
    )
    world = generate(world_size, trainer.world_seed)
    with EmbeddedRedis() as server_redis:
        client = redis.Redis.from_url(server_redis.url)
        load_profiles(client, load_definitions(trainer).schema, world.profiles())
        first = train_demo(trainer, progress=False)  # day 0: a model from simulated logs
        print(
            f"first model {first.model.version} (simulated logs),"
            f" AUC {first.model.metrics['auc']:.3f}"
        )
        settings = ServerSettings(
            data_dir=workdir, catalog_path=catalog, port=0, reload_seconds=0.0
        )
        server = BackgroundServer(settings, server_redis.url)
        try:
            simulation = Simulation(server, client, world, trainer)
            results = []
            print(table([]), flush=True)
            for day in range(1, days + 1):
                result = simulation.retrain(
                    simulation.run_day(day, customers_per_day, progress=progress)
                )
                results.append(result)
                print(table(results).splitlines()[len(results)], flush=True)
        finally:
            server.stop()
            client.close()
    summary = table(results).splitlines()[len(results) + 1 :]
    print("\n".join(summary))
    write_report(results, workdir / "report.html")
    (workdir / "days.csv").write_text(
        "day,model,decisions,served,greedy,oracle,random,value_only,realised,acceptance,"
        "expected_acceptance,promoted,ope_next,ope_next_dr,ope_truth\n"
        + "".join(
            f"{r.day},{r.model_version},{r.decisions},{r.policy:.4f},{r.greedy:.4f},"
            f"{r.oracle:.4f},{r.random:.4f},{r.value_only:.4f},{r.realised:.4f},"
            f"{r.acceptance:.4f},{r.expected_acceptance:.4f},{r.promoted},"
            f"{r.ope_next.value if r.ope_next else ''},"
            f"{r.ope_next_dr.value if r.ope_next_dr else ''},"
            f"{'' if r.ope_truth is None else r.ope_truth}\n"
            for r in results
        )
    )
    print(f"report: {workdir / 'report.html'}")
    return results
