"""A simulated day of traffic against the real service: customers browse
(``RecordEvent``), get a decision (``Decide``) and answer as the hidden response model
says (``ReportOutcome``); between days the loop retrains and promotes."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from tqdm import tqdm

from arbiter.v1 import common_pb2, decision_pb2, profile_pb2
from engine.adapters.lightgbm_scorer import LightGBMScorer
from engine.api import proto
from engine.api.server import BackgroundServer
from engine.core.model_input import ServedInputs
from engine.settings import load_definitions
from feature_store import keys, scripts
from feature_store.log_reader import read_decisions
from feature_store.redis_client import SyncClient, translated
from training.job import train_from_logs
from training.settings import TrainerSettings
from training.simulation.oracle import expected_values, true_acceptance
from training.simulation.peers import Peer
from training.simulation.report import DayResult, PeerDay
from training.world import TOPICS, World

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
    ) -> None:
        """``peers``: policies that choose among each decision's candidates beside the
        served one, scored and answered in the same world (training/simulation/peers.py)."""
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
        with translated("forgetting yesterday's browsing"):
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
        entries = read_decisions(self.client)[self._logged :]
        self._logged += len(entries)
        policy, greedy, oracle, random, value_only = [], [], [], [], []
        chance, realised, accepted = [], 0.0, 0
        calibration: list[tuple[float, float]] = []
        peer_value: dict[str, list[float]] = {name: [] for name in self.peers}
        peer_chance: dict[str, list[float]] = {name: [] for name in self.peers}
        peer_accepted = dict.fromkeys(self.peers, 0)
        for entry in entries:
            if not entry["actions"]:
                continue
            truth = expected_values(entry, self.world, self.catalog, self.schema.names)
            value = {o: self.catalog.by_id[o].value for o in truth}
            action = entry["actions"][0]["offer_id"]
            policy.append(truth[action] * value[action])
            chance.append(truth[action])
            calibration.append((float(entry["actions"][0]["propensity"]), truth[action]))
            # the model's own greedy choice: the highest propensity x value x lever
            best_priority = max(
                entry["candidates"],
                key=lambda c: c[1] * value[c[0]] * self.catalog.by_id[c[0]].lever,
            )[0]
            greedy.append(truth[best_priority] * value[best_priority])
            oracle.append(max(truth[o] * value[o] for o in truth))
            random.append(float(np.mean([truth[o] * value[o] for o in truth])))
            best = max(truth, key=lambda o: value[o] * self.catalog.by_id[o].lever)
            value_only.append(truth[best] * value[best])
            self._report(entry, action, "impression")
            draw = self._answers.random()  # the customer's answer, the same for every policy
            if draw < truth[action]:
                self._report(entry, action, "accept")
                realised += value[action]
                accepted += 1
            if self.peers:
                served = ServedInputs.from_log(entry, self.schema.names)
                assert served is not None, "a decision logged with another feature schema"
                candidates = [c[0] for c in entry["candidates"]]
                for name, peer in self.peers.items():
                    choice = peer.choose(served, candidates, self._peer_rng)
                    took = draw < truth[choice.offer_id]
                    peer.learn(served, candidates, choice, value[choice.offer_id] if took else 0.0)
                    peer_value[name].append(truth[choice.offer_id] * value[choice.offer_id])
                    peer_chance[name].append(truth[choice.offer_id])
                    peer_accepted[name] += took
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
            calibration=tuple(calibration),
            peers={
                name: PeerDay(
                    mean(peer_value[name]), peer_accepted[name] / n, mean(peer_chance[name])
                )
                for name in self.peers
            },
        )

    def _report(self, entry: Mapping[str, Any], offer_id: str, outcome: str) -> None:
        self.server.decisions.ReportOutcome(
            decision_pb2.ReportOutcomeRequest(
                decision_id=entry["decision_id"],
                customer_id=entry["customer_id"],
                offer_id=offer_id,
                outcome=proto.outcome(outcome),
                # the customer answers right after seeing it (inside the attribution window)
                occurred_at=outcome_timestamp(entry["ts"] + 0.1),
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
                else self.server.application.core.scorer
            )
            until = float(outcome.model.training["until"]) - self.settings.attribution_hours * 3600
            truth = true_acceptance(
                self.client,
                self.world,
                self.catalog,
                self.schema,
                scorer,
                until,
                self.settings.holdout,
            )
        return DayResult(
            **{
                **result.__dict__,
                "next_model": outcome.model.version,
                "promoted": outcome.promoted,
                "why": outcome.why,
                "ope_next": snips,
                "ope_next_dr": dr,
                "ope_truth": truth,
            }
        )
