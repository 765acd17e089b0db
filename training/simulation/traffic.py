"""A simulated day of traffic against the real service: customers browse
(``RecordEvent``), get a decision (``Decide``) and answer as the hidden response model
says (``ReportOutcome``); between days the loop retrains and promotes."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from tqdm import tqdm

from arbiter.v1 import common_pb2, decision_pb2, profile_pb2
from common import backoff
from common.errors import ConfigurationError
from common.reward import RewardWindows
from engine.adapters.lightgbm_scorer import LightGBMScorer
from engine.api import proto
from engine.api.background import BackgroundServer
from engine.core.model_input import ServedInputs
from engine.service.learner import Learner
from engine.settings import load_definitions
from feature_store import keys, log_codec, scripts
from feature_store.log_reader import log_order, read_decisions, read_entries
from feature_store.redis_client import SyncClient, translated
from training.retrain import train_from_logs
from training.settings import TrainerSettings
from training.simulation.oracle import expected_values, true_value
from training.simulation.peers import Peer
from training.simulation.report import DayResult, PeerDay, Retrain
from training.world import INTEREST_VIEW_SHARE, TOPICS, World

# Longer than an outcome's idempotency lease (10 s, feature_store/redis_store.py)
REPORT_RETRY_SECONDS = 20.0
_BROWSING = (keys.REALTIME, keys.WINDOWS, keys.SESSION, keys.EVENTS)
_DAY = 86_400


def outcome_timestamp(seconds: float) -> Timestamp:
    return Timestamp(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))


def age_contact_state(client: SyncClient, customer_ids: Sequence[str], seconds: float) -> None:
    """Moves the customers' contacts and cool-down ends ``seconds`` back in time, so caps
    over days and cool-downs run out as if that time had passed (an acceptance keeps
    suppressing its offer: that does not run out)."""
    age = client.register_script(scripts.AGE)
    pipe = client.pipeline(transaction=False)
    for cid in customer_ids:
        age(
            keys=[keys.customer_key(cid, keys.CONTACTS), keys.customer_key(cid, keys.POLICY)],
            args=[seconds],
            client=pipe,
        )
    with translated("ageing contact state"):
        pipe.execute()


class Simulation:
    def __init__(
        self,
        server: BackgroundServer,
        client: SyncClient,
        world: World,
        settings: TrainerSettings,
        *,
        seed: int = 1,
        peers: Mapping[str, Peer] | None = None,
        learn_every: int = 0,
    ) -> None:
        """``peers``: policies that choose among each decision's candidates beside the
        served one, scored and answered in the same world (training/simulation/peers.py);
        ``learn_every``: decisions between the online learner's ticks (0: no learner)."""
        self.server = server
        self.client = client
        self.world = world
        self.settings = settings
        definitions = load_definitions(settings)
        self.catalog = definitions.catalog
        self.schema = definitions.schema
        self.rng = np.random.default_rng(seed)  # the traffic: who comes, what they browse
        # The customers' answers, drawn apart: a changed stack answered differently does
        # not change who comes next (whatif_check reruns the same days).
        self._answers = np.random.default_rng(seed + 7_919)
        self.peers = dict(peers or {})
        self._peer_rng = np.random.default_rng(seed + 1_000_003)  # the traffic stays the same
        self._read: dict[str, str] = {}  # decision-log stream -> the last entry read
        self._events = 0
        self.windows = RewardWindows.of(settings.reward_window_minutes, settings.attribution_hours)
        # The online layer's learner, ticked every ``learn_every`` decisions (None: off)
        self.learner = Learner(client, self.windows) if learn_every else None
        self.learn_every = learn_every
        # Each decision's served offer and the oracle's best, and where each day starts
        self.trace: list[tuple[str, str]] = []
        # and, decision by decision, the expected value (by the hidden model) of the served
        # offer, of the model's greedy choice and of the oracle's best (decisions.csv)
        self.values: list[tuple[float, float, float]] = []
        self._visited: set[int] = set()  # the customers who came: the only ones with state
        self.day_starts: dict[int, int] = {}

    def _browse(self, index: int) -> None:
        interest = TOPICS[int(self.world.interest[index])]
        for _ in range(int(self.rng.poisson(1.5))):
            topic = (
                interest
                if self.rng.random() < INTEREST_VIEW_SHARE
                else TOPICS[int(self.rng.integers(len(TOPICS)))]
            )
            self._events += 1
            request = profile_pb2.RecordEventRequest(
                customer_id=self.world.customer_id(index),
                channel=common_pb2.CHANNEL_WEB,
                event_type="product_view",
                attributes={"category": topic},
            )
            key = (("idempotency-key", f"sim-event-{self._events}"),)
            _retried(partial(self.server.profiles.RecordEvent, request, timeout=5, metadata=key))

    def _new_day(self) -> None:
        """Simulated days last minutes: let a day pass. Yesterday's browsing would still be
        inside the real-time windows: forget it; contacts and cool-downs age by a day. Only
        the customers who came have any (50,000 of them took 1.5 s a day)."""
        customers = [self.world.customer_id(i) for i in sorted(self._visited)]
        pipe = self.client.pipeline(transaction=False)
        for cid in customers:
            pipe.delete(*(keys.customer_key(cid, k) for k in _BROWSING))
        with translated("forgetting yesterday's browsing"):
            pipe.execute()
        age_contact_state(self.client, customers, _DAY)

    def run_day(
        self, day: int, customers: int, *, progress: bool = False, retrains: int = 0
    ) -> DayResult:
        """A day of ``customers``, each answering at once. With ``retrains``, the loop
        retrains that many times, evenly spaced, the last after the day's final answers."""
        self._new_day()
        self.day_starts[day] = len(self.trace)
        chosen = self.rng.choice(self.world.size, size=customers, replace=False)
        self._visited.update(chosen.tolist())
        tally = _Tally(list(self.peers))
        done: list[Retrain] = []
        bar = tqdm(total=customers, disable=not progress, desc=f"day {day}", unit="customers")
        for part in np.array_split(chosen, max(retrains, 1)):
            step = self.learn_every or len(part)
            for chunk in [part[i : i + step] for i in range(0, len(part), step)]:
                for index in chunk.tolist():
                    self._browse(index)
                    response = self.server.decisions.Decide(
                        decision_pb2.DecideRequest(
                            customer_id=self.world.customer_id(index),
                            channel=common_pb2.CHANNEL_WEB,
                            placement="home_hero",
                        ),
                        timeout=5,
                    )
                    tally.version = response.model_version
                    bar.update()
                self.server.flush_log()
                self._answer(self._new_decisions(), tally)
                self.learn()
            if retrains:
                done.append(self.retrain(len(tally.policy)))
        bar.close()
        return tally.result(day, tuple(done))

    def write_decisions(self, path: Path) -> None:
        """Every decision's day, served offer, the oracle's best, and the expected values
        of the served offer, the model's greedy choice and the oracle's (diagnostics: where
        in a day the value was lost)."""
        starts = sorted(self.day_starts.items(), key=lambda item: item[1])
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["day", "served", "oracle_best", "served_value", "greedy", "oracle"])
            for i, ((served, best), values) in enumerate(zip(self.trace, self.values, strict=True)):
                day = max(d for d, start in starts if start <= i)
                writer.writerow([day, served, best, *(round(v, 4) for v in values)])

    def _new_decisions(self) -> list[Any]:
        """The decisions logged since the last call, oldest first."""
        read = []
        for key in keys.decision_logs():
            for entry_id, entry in read_entries(
                self.client, key, log_codec.decode_decision, after=self._read.get(key, "")
            ):
                self._read[key] = entry_id.decode()
                read.append((log_order(entry_id, entry), entry))
        return [entry for _, entry in sorted(read, key=lambda pair: pair[0])]

    def learn(self) -> None:
        """The online learner's tick once the answers so far have matured; the new layer
        served at once (the replicas' watch, run now rather than within the second)."""
        if self.learner is None:
            return
        time.sleep(self.windows.wait("web") + 0.02)
        self.learner.tick()
        watch = self.server.running.layer_watch
        if watch is not None:
            self.server.run(watch.check())

    def add_offer(self, text: str) -> None:
        """Appends ``text`` (TOML offers) to the served catalog and swaps it in."""
        path = self.settings.catalog_path
        path.write_text(path.read_text() + text)
        self.server.run(self.server.reloader.check())
        definitions = load_definitions(self.settings)
        self.catalog = definitions.catalog
        for peer in self.peers.values():
            peer.offers(self.catalog)

    def _answer(self, entries: Sequence[Mapping[str, Any]], tally: _Tally) -> None:
        """Each decision answered as the hidden model says, the peers choosing among the
        same candidates; what each policy earns, by the hidden model, into ``tally``."""
        for entry in entries:
            if not entry["actions"]:
                continue
            truth = expected_values(entry, self.world, self.catalog, self.schema.names)
            value = {o: self.catalog.by_id[o].value for o in truth}
            action = entry["actions"][0]["offer_id"]
            tally.policy.append(truth[action] * value[action])
            tally.chance.append(truth[action])
            tally.calibration.append((float(entry["actions"][0]["propensity"]), truth[action]))
            # the model's own greedy choice: the highest propensity x value x lever
            best_priority = max(
                entry["candidates"],
                key=lambda c: c[1] * value[c[0]] * self.catalog.by_id[c[0]].lever,
            )[0]
            tally.greedy.append(truth[best_priority] * value[best_priority])
            tally.oracle.append(max(truth[o] * value[o] for o in truth))
            self.trace.append((action, max(truth, key=lambda o: truth[o] * value[o])))
            self.values.append((tally.policy[-1], tally.greedy[-1], tally.oracle[-1]))
            tally.random.append(float(np.mean([truth[o] * value[o] for o in truth])))
            best = max(truth, key=lambda o: value[o] * self.catalog.by_id[o].lever)
            tally.value_only.append(truth[best] * value[best])
            self._report(entry, action, "impression")
            draw = self._answers.random()  # the customer's answer, the same for every policy
            if draw < truth[action]:
                self._report(entry, action, "accept")
                tally.realised += value[action]
                tally.accepted += 1
            if self.peers:
                served = ServedInputs.from_log(entry, self.schema.names)
                assert served is not None, "a decision logged with another feature schema"
                candidates = [c[0] for c in entry["candidates"]]
                for name, peer in self.peers.items():
                    choice = peer.choose(served, candidates, self._peer_rng)
                    took = draw < truth[choice.offer_id]
                    peer.learn(served, candidates, choice, value[choice.offer_id] if took else 0.0)
                    tally.peer_value[name].append(truth[choice.offer_id] * value[choice.offer_id])
                    tally.peer_chance[name].append(truth[choice.offer_id])
                    tally.peer_accepted[name] += took

    def _report(self, entry: Mapping[str, Any], offer_id: str, outcome: str) -> None:
        """Reported as a careful client does: with an idempotency key, again while the
        service answers UNAVAILABLE."""
        request = decision_pb2.ReportOutcomeRequest(
            decision_id=entry["decision_id"],
            customer_id=entry["customer_id"],
            offer_id=offer_id,
            outcome=proto.outcome(outcome),
            # the customer answers right after seeing it (inside the attribution window)
            occurred_at=outcome_timestamp(entry["ts"] + 0.1),
            idempotency_key=f"{entry['decision_id']}:{offer_id}:{outcome}",
        )
        _retried(lambda: self.server.decisions.ReportOutcome(request, timeout=5))

    def retrain(self, served_today: int = 0) -> Retrain:
        """A scheduled retrain (training/retrain.py) once the answers so far have matured;
        a promoted model is swapped in. Measured against the truth: the true value lift
        of the new model's policy over the serving one on the decisions it was judged on."""
        time.sleep(self.windows.wait("web") + 0.05)
        scorer = self.server.application.core.scorer
        champion = scorer if isinstance(scorer, LightGBMScorer) else None
        cutoff = float(champion.artifact.training.get("until", 0.0)) if champion else 0.0
        try:
            outcome, _ = train_from_logs(self.settings, self.client)
        except ConfigurationError as exc:  # nothing new enough to judge on yet
            return Retrain(served_today, "", False, str(exc))
        if outcome.promoted:
            self.server.run(self.server.reloader.check())
        true_lift = None
        if outcome.lift is not None and champion is not None:
            judged = [d for d in read_decisions(self.client) if d["ts"] > cutoff and d["actions"]]
            new = LightGBMScorer(outcome.model)
            true_lift = true_value(judged, self.world, self.catalog, self.schema, new) - (
                true_value(judged, self.world, self.catalog, self.schema, champion)
            )
        return Retrain(
            served_today,
            outcome.model.version,
            outcome.promoted,
            outcome.why,
            outcome.lift.difference if outcome.lift else None,
            true_lift,
        )


def _retried(call: Callable[[], object]) -> None:
    """``call`` (safe to repeat: it carries an idempotency key), again while the service
    answers UNAVAILABLE (a busy machine's Redis timing out a write), for up to
    REPORT_RETRY_SECONDS: a report cut off after taking its idempotency lease is answered
    "still being recorded; retry" until the lease lapses."""
    until = time.monotonic() + REPORT_RETRY_SECONDS
    step = 0
    while True:
        try:
            call()
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > until:
                raise
            step += 1
            time.sleep(backoff.jittered(step, 0.1, 1.0))


class _Tally:
    """What each policy earned over a day, decision by decision."""

    def __init__(self, peers: Sequence[str]) -> None:
        self.version = ""
        self.policy: list[float] = []
        self.greedy: list[float] = []
        self.oracle: list[float] = []
        self.random: list[float] = []
        self.value_only: list[float] = []
        self.chance: list[float] = []
        self.calibration: list[tuple[float, float]] = []
        self.realised = 0.0
        self.accepted = 0
        self.peer_value: dict[str, list[float]] = {name: [] for name in peers}
        self.peer_chance: dict[str, list[float]] = {name: [] for name in peers}
        self.peer_accepted = dict.fromkeys(peers, 0)

    def result(self, day: int, retrains: tuple[Retrain, ...]) -> DayResult:
        n = max(len(self.policy), 1)

        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else 0.0

        return DayResult(
            day=day,
            model_version=self.version,
            decisions=len(self.policy),
            policy=mean(self.policy),
            greedy=mean(self.greedy),
            oracle=mean(self.oracle),
            random=mean(self.random),
            value_only=mean(self.value_only),
            realised=self.realised / n,
            acceptance=self.accepted / n,
            expected_acceptance=mean(self.chance),
            calibration=tuple(self.calibration),
            retrains=retrains,
            peers={
                name: PeerDay(
                    mean(self.peer_value[name]),
                    self.peer_accepted[name] / n,
                    mean(self.peer_chance[name]),
                )
                for name in self.peer_value
            },
        )
