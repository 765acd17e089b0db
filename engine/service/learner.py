"""The learner: the online layer (engine/core/adaptive.py) learnt from every answer.
(Over 400 lines: the learner's reading, learning and publishing are the parts of one
transaction, and read best in one place.)

A process of its own (started and watched by the server: learner_process.py; or
`arbiter learn`), one at a time across replicas (a lock in Redis). Every tick it reads
the decision and outcome logs from where it stopped, and turns each action of a served
(not degraded) decision into an example once its answer is known, as training does
(common/reward.py): a positive answer (accept, convert) at once; a terminal one (decline,
dismiss) at once; none, when its channel's reward window has passed. Each example updates
its offer's posterior under the model that served it (``adaptive.learn``); a customer
weighs in at most ``customer_examples`` examples and ``customer_positives`` positives a
day (a bot accepting everything moves nothing past them).

Each example counts once. The posteriors, the positions in the logs and the tick's time
are published in one write, with the customers' weights, so that a learner that stops
loses nothing and repeats nothing: a new one reads the logs back over the longest reward
window to find which decisions still wait (those read but neither answered nor past
their window at the last publication) and goes on from the positions.

An answer read before its decision (the log writer batches) waits for it up to
``EARLY_SECONDS``. A new model version starts from the prior its evidence justifies (the
same ``adaptive.prior`` serving uses, from the evidence each replica publishes for the
models it serves); the posteriors of models no decision has come from for a day are
dropped.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from common.errors import FeatureStoreUnavailable
from common.reward import RewardWindows
from common.vocabulary import POSITIVE_OUTCOMES, TERMINAL_OUTCOMES
from engine.core import adaptive
from feature_store import keys, log_codec
from feature_store.redis_client import SyncClient, translated

log = logging.getLogger(__name__)
EARLY_SECONDS = 600.0  # an answer waits this long for its decision to be logged
EVIDENCE_SECONDS = 60.0  # an example waits this long for its model's evidence
MODEL_IDLE_SECONDS = 86_400.0  # a model no decision came from for this long is dropped
SNAPSHOT_SECONDS = 300.0  # a publication is kept for rollback this often
PAGE = 2000
Key = tuple[str, str]  # (decision id, offer id)


@dataclass(frozen=True, slots=True)
class Waiting:
    """An action that waits for its answer."""

    model: str
    offer: str
    customer: str
    logit: float  # the batch model's log-odds for the offer, as served
    due: float  # when no answer means "no response"
    features: np.ndarray | None = None  # the customer's as served (schema order), float32
    names_id: str = ""  # the fingerprint of the schema they are in


@dataclass(frozen=True)
class ModelInfo:
    """What the replicas serving a model published of it: evidence and context."""

    evidence: adaptive.ModelEvidence
    context: adaptive.Context

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ModelInfo:
        context = raw.get("context")
        return cls(
            adaptive.evidence_from(raw.get("offers")),
            adaptive.Context.from_json(context) if context else adaptive.NO_CONTEXT,
        )


UNKNOWN_MODEL = ModelInfo({}, adaptive.NO_CONTEXT)


@dataclass
class Position:
    """Where the learner is: the last entry read of each log shard, and the time of the
    tick that published it."""

    decisions: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    tick: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"decisions": self.decisions, "outcomes": self.outcomes, "tick": self.tick}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Position:
        return cls(dict(raw.get("decisions", {})), dict(raw.get("outcomes", {})), raw["tick"])


@dataclass
class Published:
    """The layer as published, with the learner's position and counts."""

    layer: adaptive.Layer
    position: Position
    examples: int = 0  # examples learnt, ever
    seen: dict[str, float] = field(default_factory=dict)  # model -> last decision time
    snapshot: float = 0.0  # when the last publication was kept for rollback

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "layer": self.layer.to_json(),
                "position": self.position.to_json(),
                "examples": self.examples,
                "seen": self.seen,
                "snapshot": self.snapshot,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Published:
        raw = orjson.loads(data)
        return cls(
            adaptive.Layer.from_json(raw["layer"]),
            Position.from_json(raw["position"]),
            int(raw.get("examples", 0)),
            dict(raw.get("seen", {})),
            float(raw.get("snapshot", 0.0)),
        )


def read_published(client: SyncClient) -> Published | None:
    with translated("reading the online layer", quiet=True):
        data = client.hget(keys.LAYER, keys.LAYER_DOC)
    return None if data is None else Published.from_json(data)  # type: ignore[arg-type]


def kept(client: SyncClient) -> list[adaptive.Layer]:
    """The publications kept for rollback, newest first."""
    with translated("reading the online layer's history", quiet=True):
        raw = client.lrange(keys.LAYER_HISTORY, 0, -1)
    return [adaptive.Layer.from_json(orjson.loads(r)) for r in raw]


def rolled_back(client: SyncClient, current: adaptive.Layer, asked: str) -> adaptive.Layer:
    """``current``'s posteriors replaced by those of the publication ``asked`` for ("last":
    the newest kept before it), under the next number; ``current`` if none matches."""
    for layer in kept(client):
        if layer.version < current.version and asked in ("last", str(layer.version)):
            log.warning("learner: the online layer rolled back to publication %d", layer.version)
            return adaptive.Layer(current.version + 1, current.updated, layer.models)
    log.error("learner: no kept publication %s to roll back to", asked)
    return current


def ask_rollback(client: SyncClient, to: int | None = None) -> None:
    """Asks the learner to roll the layer back at its next tick (``to``: that version,
    else the newest kept publication)."""
    with translated("asking for a rollback", quiet=True):
        client.hset(keys.LAYER, keys.LAYER_ROLLBACK, "last" if to is None else str(to))


def as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _entries(client: SyncClient, stream: str, after: str, until: str = "+") -> Iterator[Any]:
    """(entry id, fields) of ``stream`` after ``after`` (exclusive) up to ``until``."""
    start = f"({after}" if after not in ("-", "0") else "-"
    while True:
        with translated(f"reading {stream}", quiet=True):
            page = client.xrange(stream, min=start, max=until, count=PAGE)
        yield from page  # type: ignore[misc]
        if len(page) < PAGE:  # type: ignore[arg-type]
            return
        start = f"({page[-1][0].decode()}"  # type: ignore[index,union-attr]


class Learner:
    def __init__(
        self,
        client: SyncClient,
        windows: RewardWindows,
        *,
        customer_examples: float = 50.0,
        customer_positives: float = 3.0,
        lock_seconds: float = 10.0,
        categories: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        """``categories``: each catalog offer's category, now (a new offer starts at its
        category's level; None: every offer at no correction)."""
        self.client = client
        self._categories = categories or dict
        self.windows = windows
        self.customer_examples = customer_examples
        self.customer_positives = customer_positives
        self.lock_seconds = lock_seconds
        self._token = secrets.token_hex(8)
        self._waiting: dict[Key, Waiting] = {}
        self._early: dict[Key, tuple[int, float]] = {}  # answer read before its decision
        self._state: Published | None = None  # what this learner published last
        self._evidence: dict[str, ModelInfo] = {}
        self._deferred: list[tuple[Waiting, int, float]] = []  # waiting for evidence
        self.applied = 0  # examples this learner applied

    # -- the lock ----------------------------------------------------------------------
    def holds_lock(self) -> bool:
        """Takes or keeps the learner's lock; False while another learner holds it."""
        ms = int(self.lock_seconds * 1000)
        with translated("taking the learner's lock", quiet=True):
            if self.client.set(keys.LEARNER_LOCK, self._token, nx=True, px=ms):
                return True
            if self.client.get(keys.LEARNER_LOCK) == self._token.encode():
                self.client.pexpire(keys.LEARNER_LOCK, ms)
                return True
        return False

    def release(self) -> None:
        with translated("releasing the learner's lock", quiet=True):
            if self.client.get(keys.LEARNER_LOCK) == self._token.encode():
                self.client.delete(keys.LEARNER_LOCK)

    # -- a tick ------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> int:
        """Reads what the logs gained, learns from the answers now known and publishes;
        the number of examples learnt."""
        now = time.time() if now is None else now
        with translated("reading the online layer", quiet=True):
            data, asked = self.client.hmget(keys.LAYER, [keys.LAYER_DOC, keys.LAYER_ROLLBACK])
        published = None if data is None else Published.from_json(as_bytes(data))
        if self._state is None or published is None:
            self._state = published or Published(adaptive.EMPTY, Position(tick=now))
            self._recover(self._state.position)
        elif published.layer.version != self._state.layer.version:
            # another learner published since: its posteriors (the position is ours)
            self._state.layer = published.layer
        state = self._state
        if asked is not None:
            state.layer = rolled_back(self.client, state.layer, as_bytes(asked).decode())
        examples: list[tuple[Waiting, int]] = []
        self._read_decisions(state, now)
        self._read_outcomes(state, examples)
        self._match_early(examples, now)
        for key, waiting in list(self._waiting.items()):
            if waiting.due <= now:
                del self._waiting[key]
                examples.append((waiting, 0))
        self._publish(state, examples, now, rollback_done=asked is not None)
        return len(examples)

    def _read_decisions(self, state: Published, now: float) -> None:
        for shard in range(keys.LOG_SHARDS):
            stream = keys.decision_log(shard)
            after = state.position.decisions.get(str(shard), "-")
            for entry_id, fields in _entries(self.client, stream, after):
                state.position.decisions[str(shard)] = entry_id.decode()
                self._hold(log_codec.decode_decision(fields), state)

    def _hold(self, decision: Mapping[str, Any], state: Published | None) -> list[Key]:
        """The decision's actions, waiting for their answers; their keys."""
        if decision.get("degraded") or not decision.get("actions"):
            return []
        model = str(decision.get("model_version", ""))
        if state is not None:
            state.seen[model] = max(state.seen.get(model, 0.0), float(decision["ts"]))
        base = {c[0]: float(c[1]) for c in decision.get("candidates", ())}
        due = float(decision["ts"]) + self.windows.wait(decision.get("channel", ""))
        logged = decision.get("features")
        # float32: ~100 bytes a waiting action (a web half hour at 1,000 decisions/s: 1.8M)
        features = np.array(logged, dtype=np.float32) if isinstance(logged, list) else None
        names_id = str(decision.get("feature_names", ""))
        held = []
        for action in decision["actions"]:
            offer = action["offer_id"]
            p = min(max(base.get(offer, math.nan), 1e-6), 1 - 1e-6)
            if math.isnan(p):
                continue
            key = (decision["decision_id"], offer)
            self._waiting[key] = Waiting(
                model,
                offer,
                decision["customer_id"],
                math.log(p / (1 - p)),
                due,
                features,
                names_id,
            )
            held.append(key)
        return held

    def _read_outcomes(self, state: Published, examples: list[tuple[Waiting, int]]) -> None:
        for shard in range(keys.LOG_SHARDS):
            stream = keys.outcome_log(shard)
            after = state.position.outcomes.get(str(shard), "-")
            for entry_id, fields in _entries(self.client, stream, after):
                state.position.outcomes[str(shard)] = entry_id.decode()
                answer = self._answer(log_codec.decode_outcome(fields))
                if answer is None:
                    continue
                key, reward = answer
                waiting = self._waiting.pop(key, None)
                if waiting is not None:
                    examples.append((waiting, reward))
                elif key not in self._early:
                    self._early[key] = (reward, time.time())

    @staticmethod
    def _answer(outcome: Mapping[str, Any]) -> tuple[Key, int] | None:
        kind = outcome.get("outcome")
        if kind not in TERMINAL_OUTCOMES:
            return None  # impressions and clicks say nothing final
        return (outcome["decision_id"], outcome["offer_id"]), int(kind in POSITIVE_OUTCOMES)

    def _match_early(self, examples: list[tuple[Waiting, int]], now: float) -> None:
        for key, (reward, read_at) in list(self._early.items()):
            waiting = self._waiting.pop(key, None)
            if waiting is not None:
                examples.append((waiting, reward))
                del self._early[key]
            elif time.time() - read_at > EARLY_SECONDS:
                del self._early[key]

    def _recover(self, position: Position) -> None:
        """After a start: the actions read before the last publication that still wait
        (neither answered nor past their window then), and the answers read before their
        decisions. Nothing here is learnt: it was, or it waits."""
        self._waiting.clear()
        self._early.clear()
        if not position.decisions and not position.outcomes:
            return
        horizon = position.tick - max(self.windows.seconds.values()) - 60.0
        start = f"{max(int(horizon * 1000), 0)}-0"
        held: list[Key] = []
        for shard, last in position.decisions.items():
            for _, fields in _entries(self.client, keys.decision_log(int(shard)), start, last):
                held.extend(self._hold(log_codec.decode_decision(fields), None))
        answered: dict[Key, int] = {}
        for shard, last in position.outcomes.items():
            for _, fields in _entries(self.client, keys.outcome_log(int(shard)), start, last):
                answer = self._answer(log_codec.decode_outcome(fields))
                if answer is not None:
                    answered.setdefault(*answer)
        for key in held:
            waiting = self._waiting[key]
            if key in answered or waiting.due <= position.tick:
                del self._waiting[key]
        now = time.time()
        self._early = {k: (r, now) for k, r in answered.items() if k not in set(held)}
        log.info("learner: %d actions wait for their answers", len(self._waiting))

    # -- learning and publishing ---------------------------------------------------------
    def _weights(
        self, examples: list[tuple[Waiting, int]], now: float
    ) -> tuple[np.ndarray, str, dict[str, float]]:
        """Each example's weight under the customers' daily shares; the day's key and the
        customers' counts with these examples."""
        day = keys.learner_weights(int(now // 86_400))
        customers = sorted({w.customer for w, _ in examples})
        fields = [f"{c}|{k}" for c in customers for k in ("e", "p")]
        with translated("reading the customers' weights", quiet=True):
            used = self.client.hmget(day, fields) if fields else []
        spent = {f: float(v or 0) for f, v in zip(fields, used, strict=True)}
        weights = np.zeros(len(examples))
        for i, (waiting, reward) in enumerate(examples):
            e, p = f"{waiting.customer}|e", f"{waiting.customer}|p"
            if spent[e] >= self.customer_examples:
                continue
            if reward and spent[p] >= self.customer_positives:
                continue
            weights[i] = 1.0
            spent[e] += 1
            spent[p] += reward
        return weights, day, {f: spent[f] for f in fields}

    def _ready(self, examples: list[tuple[Waiting, int]], now: float) -> list[tuple[Waiting, int]]:
        """The examples whose model's evidence is known; the others wait for it (a replica
        publishes it within a second of serving a model) up to ``EVIDENCE_SECONDS``, then
        start from the priors of a model that knows no offer."""
        held = [(w, r, since) for w, r, since in self._deferred]
        held += [(w, r, now) for w, r in examples]
        ready, self._deferred = [], []
        for waiting, reward, since in held:
            if self._model_info(waiting.model) is not None or now - since > EVIDENCE_SECONDS:
                ready.append((waiting, reward))
            else:
                self._deferred.append((waiting, reward, since))
        return ready

    def _publish(
        self,
        state: Published,
        examples: list[tuple[Waiting, int]],
        now: float,
        *,
        rollback_done: bool = False,
    ) -> None:
        examples = self._ready(examples, now)
        weights, day, spent = self._weights(examples, now) if examples else (np.zeros(0), "", {})
        models = {m: dict(cells) for m, cells in state.layer.models.items()}
        for model in state.seen:
            if model not in models:
                models[model] = self._carried(model, models)
        self._learn(models, examples, weights)
        for model, last in list(state.seen.items()):
            if now - last > MODEL_IDLE_SECONDS:
                del state.seen[model]
                models.pop(model, None)
        previous = state.layer
        state.layer = adaptive.Layer(previous.version + 1, now, models)
        state.position.tick = now
        learnt = int((weights > 0).sum())
        state.examples += learnt
        keep = now - state.snapshot >= SNAPSHOT_SECONDS and bool(previous.models)
        if keep:
            state.snapshot = now
        doc = state.to_json()
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            keys.LAYER, mapping={keys.LAYER_VERSION: state.layer.version, keys.LAYER_DOC: doc}
        )
        if rollback_done:  # (one asked again since this tick read it is the same ask)
            pipe.hdel(keys.LAYER, keys.LAYER_ROLLBACK)
        if keep:
            pipe.lpush(keys.LAYER_HISTORY, orjson.dumps(previous.to_json()))
            pipe.ltrim(keys.LAYER_HISTORY, 0, keys.LAYER_HISTORY_KEPT - 1)
        if day:
            for f, value in spent.items():
                pipe.hset(day, f, value)
            pipe.expire(day, 2 * 86_400)
        with translated("publishing the online layer", quiet=True):
            pipe.execute()
        self.applied += learnt

    def _learn(
        self,
        models: dict[str, dict[str, adaptive.Cell]],
        examples: list[tuple[Waiting, int]],
        weights: np.ndarray,
    ) -> None:
        """Each offer's posterior under each model, updated by its examples."""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (waiting, _) in enumerate(examples):
            groups.setdefault((waiting.model, waiting.offer), []).append(i)
        categories = self._categories()
        for (model, offer), rows in groups.items():
            cells = models.setdefault(model, {})
            info = self._model_info(model) or UNKNOWN_MODEL
            k = len(info.context)
            cell = cells.get(offer)
            if cell is None or len(cell.mean) != 2 + k:
                cell = adaptive.starting(offer, categories, cells, info.evidence, k)
            cells[offer] = adaptive.learn(
                cell,
                np.array([examples[i][0].logit for i in rows]),
                np.array([examples[i][1] for i in rows]),
                weights[rows],
                self._contexts([examples[i][0] for i in rows], info.context),
            )

    def _carried(
        self, model: str, models: Mapping[str, Mapping[str, adaptive.Cell]]
    ) -> dict[str, adaptive.Cell]:
        """A promoted model's first posteriors: the layer's corrections of the champion it
        replaced, less what the new model learnt of them (the trainer's hand-over:
        training/retrain.py ``carried``), as sure as they were; none without a hand-over
        (the model's priors from its evidence then)."""
        with translated("reading the layer's hand-over", quiet=True):
            raw = self.client.hget(keys.LAYER_CARRY, model)
        if raw is None:
            return {}
        carry = orjson.loads(raw)
        before = models.get(str(carry.get("from", "")), {})
        moved = carry.get("offers", {})
        out = {}
        for offer, cell in before.items():
            shift = float(moved.get(offer, 0.0))
            out[offer] = adaptive.Cell(
                (cell.mean[0] - shift, cell.mean[1]), cell.precision
            ).bounded()
        if out:
            log.info("learner: model %s takes over %d offers' corrections", model, len(out))
        return out

    @staticmethod
    def _contexts(examples: list[Waiting], context: adaptive.Context) -> np.ndarray:
        """The examples' context rows; a customer logged under another schema (or before
        the features were logged as a list) is taken as average (zeros)."""
        rows = np.zeros((len(examples), len(context)))
        if len(context):
            for i, w in enumerate(examples):
                if w.features is not None and w.names_id == context.names_id:
                    rows[i] = context.vector(w.features.astype(np.float64))
        return rows

    def _model_info(self, model: str) -> ModelInfo | None:
        """What ``model`` learnt of each offer and its context features, as its serving
        replicas published them; None while none has."""
        if model not in self._evidence:
            with translated("reading a model's evidence", quiet=True):
                raw = self.client.hget(keys.LAYER_EVIDENCE, model)
            if raw is None:
                return None  # not published yet: asked again next time
            self._evidence[model] = ModelInfo.from_json(orjson.loads(raw))
        return self._evidence[model]

    def run(self, interval: float, *, stop: Any = None) -> None:
        """Ticks every ``interval`` seconds while holding the lock (waits for it
        otherwise), until ``stop()`` is true; a failing tick is logged and retried."""
        down: float | None = None  # since when Redis has been unavailable
        while stop is None or not stop():
            try:
                if self.holds_lock():
                    self.tick()
                else:
                    self._state = None  # another learner is on: read its state when back
            except FeatureStoreUnavailable as exc:  # one line when it goes, one when back
                if down is None:
                    log.warning("learner: paused, Redis unavailable (%s)", exc)
                    down = time.monotonic()
                self._state = None
            except Exception:
                log.exception("learner: tick failed; trying again")
                self._state = None
            else:
                if down is not None:
                    log.warning("learner: learning again after %.1f s", time.monotonic() - down)
                    down = None
            time.sleep(interval)
