"""`arbiter whatif`: what a changed catalog (rules, caps, levers, values, offers added or
removed) and model would have earned on the logged traffic, before it ships.
(Over 400 lines: the replay, its estimators and its report: one command.)

Every logged decision is replayed through the changed stack as it was served: the same
customer features, channel, placement, stage and moment; the changed catalog's rules
give the eligible offers, its contact policy filters them against the customer's contact
history as the logs record it (the offers made before, the accepts that suppress, the
declines that start a cool-down), the model scores what is left and the changed values
and levers rank it, with the changed catalog's exploration. The changed policy's
probability of the first-slot offer the log shows taken, against the probability the
logging policy had of it, gives SNIPS and doubly robust estimates of value per decision
(accepted x the offer's value), with 95% intervals, beside the same for the stack as it
runs and the value the logs realised.

Where the logs cannot support an estimate it is refused, with the reason: too few
decisions, or too much of the changed policy's choice on offers the logging policy could
not have shown there (a new offer, an offer the old rules or caps kept out, one it had no
chance of choosing where it does not explore): importance weighting sees nothing of
those, and the estimate would be the reward model's guess.

Volume limits over the whole customer base are replayed in the order the decisions were
made: each limit's use in its period is what the replayed policy would have contacted so
far (its first-slot choice probabilities summed), and an offer or channel at its limit is
kept out from there, as the service keeps it out; the report says how often.

Limits, said in the report: the history is the logged one (a changed cap would also have
changed what customers saw afterwards), profile attributes are not in the log (rules on
``attr.`` see none), and only decisions logged under the running catalog version replay
(their logging probabilities are that catalog's).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.vocabulary import POSITIVE_OUTCOMES
from engine.core.arbitration import GREEDY, slot_probabilities
from engine.core.catalog import Catalog, Offer
from engine.core.contact_policy import allowed
from engine.core.contact_rules import COOLDOWN_OUTCOMES, VOLUME_REACHED, Volume
from engine.core.customer import Contact, CustomerRecord
from engine.core.decision import DecisionRequest, rule_env
from engine.core.eligibility import Situation, eligible_offers
from engine.core.model_input import ServedInputs, build_matrix
from engine.core.schema import FeatureSchema
from engine.core.scoring import Scorer
from training.evaluation import Estimate, doubly_robust, mean_interval, snips

MIN_DECISIONS = 200
MAX_UNSUPPORTED = 0.10  # of the changed policy's choice, on offers the logs cannot show
MIN_EFFECTIVE = 100  # effective sample size of the importance weights


@dataclass(frozen=True)
class Replayed:
    """One logged decision under a stack: its candidates and first-slot probabilities."""

    candidates: tuple[str, ...]
    probability: np.ndarray  # the stack's probability of each candidate, first slot
    propensity: np.ndarray  # the stack's model, per candidate


@dataclass(frozen=True)
class Logged:
    """One logged decision, as the replay needs it."""

    entry: Mapping[str, Any]
    served: ServedInputs
    record: CustomerRecord  # the contact history the logs show before it
    action: str
    probability: float  # the logging policy's, of ``action``
    accepted: bool


@dataclass(frozen=True)
class Result:
    decisions: int
    skipped: Mapping[str, int]
    logged: Estimate  # value per decision the logs realised
    current: Mapping[str, Estimate]  # snips, dr: the stack as it runs, replayed
    changed: Mapping[str, Estimate]
    unsupported: float  # mean share of the changed choice the logs cannot show
    unsupported_offers: Mapping[str, float]  # offer -> its part of that share
    effective_sample: float
    refused: str = ""  # why there is no estimate, or ""
    fidelity: float = 1.0  # share of decisions whose logged candidates the replay rebuilds
    # offer:<id> or channel:<name> -> the replayed decisions the changed stack's volume
    # limits kept it out of
    volume_bound: Mapping[str, int] = field(default_factory=dict)
    replays: Sequence[tuple[Logged, Replayed]] = field(default=(), repr=False)


def history(
    decisions: Sequence[Mapping[str, Any]],
    outcomes: Iterable[Mapping[str, Any]],
    positive: frozenset[str] = POSITIVE_OUTCOMES,
) -> tuple[dict[tuple[str, str], bool], dict[str, list[tuple[float, str, str]]]]:
    """(accepted (decision, offer) pairs, per customer their outcome events in time
    order: (when, offer, outcome))."""
    by_decision = {d["decision_id"]: d for d in decisions}
    accepted: dict[tuple[str, str], bool] = {}
    events: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    for o in outcomes:
        d = by_decision.get(o["decision_id"])
        if d is None:
            continue
        if o["outcome"] in positive:
            accepted[(o["decision_id"], o["offer_id"])] = True
        at = float(o.get("occurred_at") or o.get("ts") or d["ts"])
        events[d["customer_id"]].append((at, o["offer_id"], o["outcome"]))
    for e in events.values():
        e.sort()
    return accepted, events


def logged_decisions(
    decisions: Iterable[Mapping[str, Any]],
    outcomes: Iterable[Mapping[str, Any]],
    schema: FeatureSchema,
    catalog: Catalog,
    skipped: dict[str, int],
) -> list[Logged]:
    """The decisions that can be replayed, each with the contact history before it."""
    ordered = sorted(decisions, key=lambda d: d["ts"])
    accepted, events = history(ordered, outcomes)
    made: dict[str, list[Contact]] = defaultdict(list)
    out = []
    for d in ordered:
        prior = tuple(made[d["customer_id"]])
        for a in d["actions"]:
            made[d["customer_id"]].append(
                Contact(d["decision_id"], a["offer_id"], d.get("channel", ""), d["ts"])
            )
        why = ""
        if not d["actions"]:
            why = "no offer made"
        elif d.get("degraded"):
            why = "degraded (fallback) answer"
        elif d.get("catalog_version") != catalog.version:
            why = "logged under another catalog version"
        served = None if why else ServedInputs.from_log(d, schema.names)
        if not why and served is None:
            why = "logged with another feature schema"
        if why or served is None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        held: dict[str, float] = {}
        cooldowns: dict[str, float] = {}
        for at, offer_id, outcome in events.get(d["customer_id"], ()):
            if at >= d["ts"]:
                break
            offer = catalog.by_id.get(offer_id)
            if outcome in POSITIVE_OUTCOMES:
                held[offer_id] = at
            elif outcome in COOLDOWN_OUTCOMES and offer is not None:
                cooldowns[offer_id] = at + offer.policy.cooldown_seconds
        record = CustomerRecord(
            customer_id=d["customer_id"],
            known=True,
            batch=np.zeros(0, dtype=np.float32),
            attributes={},
            realtime={},
            contacts=prior,
            cooldowns=cooldowns,
            held=held,
        )
        first = d["actions"][0]
        out.append(
            Logged(
                entry=d,
                served=served,
                record=record,
                action=first["offer_id"],
                probability=float(first["probability"]),
                accepted=accepted.get((d["decision_id"], first["offer_id"]), False),
            )
        )
    return out


def replays(
    logged: Sequence[Logged],
    catalog: Catalog,
    scorer: Scorer,
    names: tuple[str, ...],
    bound: dict[str, int] | None = None,
) -> list[Replayed]:
    """Each logged decision replayed by ``catalog`` and ``scorer``. With volume limits in
    the catalog, in the order they were made: each limit's counter of the period holds the
    contacts the replayed policy would have made in it so far (its choice probabilities
    summed, the first slot's), and once that reaches the limit the offer (or the channel)
    is kept out, as the service does. ``bound`` counts, per ``offer:<id>`` or
    ``channel:<name>``, the decisions a limit kept it out of."""
    policy = catalog.contact_policy
    if not policy.channel_volume and not any(o.policy.volume for o in catalog.offers):
        return [replay(g, catalog, scorer, names) for g in logged]
    used: dict[str, float] = defaultdict(float)
    out: list[Replayed | None] = [None] * len(logged)
    for i in sorted(range(len(logged)), key=lambda i: float(logged[i].entry["ts"])):
        g = logged[i]
        now = float(g.entry["ts"])
        r = out[i] = replay(g, catalog, scorer, names, volume=used, bound=bound)
        if not r.candidates:
            continue
        for cap in policy.channel_volume.get(g.served.channel, ()):
            used[Volume.counter(Volume.channel(g.served.channel), cap, now)] += 1.0
        for offer_id, chance in zip(r.candidates, r.probability.tolist(), strict=True):
            for cap in catalog.by_id[offer_id].policy.volume:
                used[Volume.counter(Volume.offer(offer_id), cap, now)] += chance
    return [r for r in out if r is not None]


def replay(
    logged: Logged,
    catalog: Catalog,
    scorer: Scorer,
    names: tuple[str, ...],
    volume: Mapping[str, float] | None = None,
    bound: dict[str, int] | None = None,
) -> Replayed:
    """The first slot of ``logged``'s decision as ``catalog`` and ``scorer`` make it;
    ``volume``: the volume counters' use then (``replays``)."""
    d, served = logged.entry, logged.served
    now = float(d["ts"])
    placement = d.get("placement", "")
    request = DecisionRequest(
        customer_id=d["customer_id"],
        channel=served.channel,
        placement=placement,
        context=d.get("context") or {},
    )
    env = rule_env(names, served.features, {}, request)
    env["stage"] = served.stage
    eligible = eligible_offers(
        catalog, Situation(served.channel, placement, served.stage, now), env
    )
    kept, excluded = allowed(
        catalog.contact_policy, served.channel, eligible, logged.record, now, {}, volume
    )
    if bound is not None:
        for offer_id, why in excluded.items():
            if why.startswith(VOLUME_REACHED):
                subject = f"channel:{served.channel}" if offer_id == "*" else f"offer:{offer_id}"
                bound[subject] = bound.get(subject, 0) + 1
    if not kept:
        return Replayed((), np.zeros(0), np.zeros(0))
    vocabulary = scorer.vocabulary
    assert vocabulary is not None, "a what-if needs a model"
    propensity = scorer.predict(build_matrix(served, kept, vocabulary))
    priority = propensity * np.array([o.value * o.lever for o in kept])
    explores = catalog.exploration.applies(served.channel, placement)
    p = slot_probabilities(priority, catalog.exploration if explores else GREEDY)
    return Replayed(tuple(o.offer_id for o in kept), p, propensity)


def evaluate(
    decisions: Iterable[Mapping[str, Any]],
    outcomes: Iterable[Mapping[str, Any]],
    schema: FeatureSchema,
    current: tuple[Catalog, Scorer],
    changed: tuple[Catalog, Scorer],
) -> Result:
    """The changed stack's value per decision on the logged traffic, beside the current
    stack's (``current``: the catalog the decisions were logged under, and its model)."""
    names = tuple(schema.names)
    skipped: dict[str, int] = {}
    logged = logged_decisions(decisions, outcomes, schema, current[0], skipped)
    n = len(logged)
    if n == 0:
        return _refused(n, skipped, "no logged decision can be replayed")

    bound: dict[str, int] = {}

    def estimates(catalog: Catalog, scorer: Scorer) -> tuple[dict[str, Estimate], Any]:
        replayed = replays(logged, catalog, scorer, names, bound if catalog is changed[0] else None)
        reward = np.array(
            [
                g.accepted * (catalog.by_id[g.action].value if g.action in catalog.by_id else 0.0)
                for g in logged
            ]
        )
        logged_p = np.array([g.probability for g in logged])
        target = np.array(
            [
                r.probability[r.candidates.index(g.action)] if g.action in r.candidates else 0.0
                for g, r in zip(logged, replayed, strict=True)
            ]
        )
        values = [np.array([catalog.by_id[o].value for o in r.candidates]) for r in replayed]
        q_target = np.array(
            [
                float(r.probability @ (r.propensity * v)) if r.candidates else 0.0
                for r, v in zip(replayed, values, strict=True)
            ]
        )
        q_logged = np.array(
            [
                float(r.propensity[r.candidates.index(g.action)] * v[r.candidates.index(g.action)])
                if g.action in r.candidates
                else _predicted(g, catalog, scorer)
                for g, r, v in zip(logged, replayed, values, strict=True)
            ]
        )
        return {
            "snips": snips(reward, logged_p, target),
            "dr": doubly_robust(reward, logged_p, target, q_logged, q_target),
        }, (replayed, target / logged_p)

    now_estimates, (now_replays, _) = estimates(*current)
    new_estimates, (new_replays, weights) = estimates(*changed)
    fidelity = float(
        np.mean(
            [
                set(r.candidates) == {c[0] for c in g.entry["candidates"]}
                for g, r in zip(logged, now_replays, strict=True)
            ]
        )
    )
    unsupported_by: dict[str, float] = defaultdict(float)
    for g, r in zip(logged, new_replays, strict=True):
        could = logging_probabilities(g.entry, current[0])
        for o, p in zip(r.candidates, r.probability.tolist(), strict=True):
            if could.get(o, 0.0) <= 0 and p > 0:
                unsupported_by[o] += p / n
    unsupported = float(sum(unsupported_by.values()))
    effective = float(weights.sum() ** 2 / max((weights**2).sum(), 1e-12))
    logged_value = mean_interval(
        np.array([g.accepted * current[0].by_id[g.action].value for g in logged])
    )
    refused = ""
    if n < MIN_DECISIONS:
        refused = f"only {n} logged decisions can be replayed (at least {MIN_DECISIONS})"
    elif unsupported > MAX_UNSUPPORTED:
        top = sorted(unsupported_by.items(), key=lambda kv: -kv[1])[:3]
        never = {o for o, _ in top if o not in current[0].by_id}
        refused = (
            f"{unsupported:.0%} of the changed policy's choices would be offers the logged"
            " policy could not show there ("
            + ", ".join(
                f"{o} {share:.0%}{', a new offer never logged' if o in never else ''}"
                for o, share in top
            )
            + f"; at most {MAX_UNSUPPORTED:.0%}): the logs say nothing of them; run it as a"
            " challenger on a share of customers instead"
        )
    elif effective < MIN_EFFECTIVE:
        refused = (
            f"the changed policy agrees with the logged choices too rarely: an effective"
            f" sample of {effective:.0f} decisions (at least {MIN_EFFECTIVE})"
        )
    return Result(
        decisions=n,
        skipped=skipped,
        logged=logged_value,
        current=now_estimates,
        changed={} if refused else new_estimates,
        unsupported=unsupported,
        unsupported_offers=dict(unsupported_by),
        effective_sample=effective,
        refused=refused,
        fidelity=fidelity,
        volume_bound=bound,
        replays=list(zip(logged, new_replays, strict=True)),
    )


def logging_probabilities(entry: Mapping[str, Any], catalog: Catalog) -> dict[str, float]:
    """The first-slot probability the logging policy had of each logged candidate: its
    logged propensity x value x lever, with the catalog's exploration (greedy where it
    does not explore: then every candidate but the best had none)."""
    candidates = entry["candidates"]
    offers = [catalog.by_id.get(c[0]) for c in candidates]
    if any(o is None for o in offers):
        return {}
    priority = np.array(
        [c[1] * o.value * o.lever for c, o in zip(candidates, offers, strict=True) if o]
    )
    explores = catalog.exploration.applies(entry.get("channel", ""), entry.get("placement", ""))
    p = slot_probabilities(priority, catalog.exploration if explores else GREEDY)
    return {c[0]: float(q) for c, q in zip(candidates, p.tolist(), strict=True)}


def _predicted(logged: Logged, catalog: Catalog, scorer: Scorer) -> float:
    """The reward model's value of the logged action where the changed stack would not
    make it (removed, or kept out by its rules or caps)."""
    offer: Offer | None = catalog.by_id.get(logged.action)
    if offer is None or scorer.vocabulary is None:
        return 0.0
    p = scorer.predict(build_matrix(logged.served, [offer], scorer.vocabulary))
    return float(p[0] * offer.value)


def _refused(n: int, skipped: Mapping[str, int], why: str) -> Result:
    nothing = Estimate(float("nan"), float("nan"), float("nan"))
    return Result(n, skipped, nothing, {}, {}, 0.0, {}, 0.0, refused=why, fidelity=0.0)


def text(r: Result) -> str:
    lines = [
        f"replayed {r.decisions} logged decisions"
        + (
            " (left out: " + ", ".join(f"{k} {v}" for k, v in sorted(r.skipped.items())) + ")"
            if r.skipped
            else ""
        ),
        f"the current stack rebuilds the logged candidates of {r.fidelity:.1%} of them",
        "value per decision, 95% interval:",
        f"  logged (realised)    {r.logged}",
    ]
    for name in ("snips", "dr"):
        if name in r.current:
            lines.append(f"  current, {name:5s}       {r.current[name]}")
    if r.refused:
        lines.append(f"changed: NO ESTIMATE: {r.refused}")
    else:
        for name in ("snips", "dr"):
            lines.append(f"  changed, {name:5s}       {r.changed[name]}")
        now, new = r.current["dr"].value, r.changed["dr"].value
        lines.append(
            f"change in value per decision (DR): {new - now:+.3f}"
            + (f" ({(new - now) / now:+.1%})" if now else "")
        )
        lines.append(
            f"support: {r.unsupported:.1%} of the changed choices on offers the logs could not"
            f" show there; effective sample {r.effective_sample:.0f} decisions"
        )
    if r.volume_bound:
        lines.append(
            "volume limits of the changed catalog kept out: "
            + ", ".join(f"{k} in {v} decisions" for k, v in sorted(r.volume_bound.items()))
            + " (each limit's use: the replayed choices' probabilities summed in its period)"
        )
    lines.append("replayed against the logged contact history; rules on attr.* see no attributes")
    return "\n".join(lines)


def write_report(r: Result, path: Path, title: str = "What if") -> None:
    """The what-if as HTML: each stack's estimates with their intervals against the
    value the logs realised, and the text report."""
    from training import figures

    sections = []
    rows = [(f"current stack, {k.upper()}", e) for k, e in r.current.items()]
    rows += [(f"changed stack, {k.upper()}", e) for k, e in r.changed.items()]
    if rows:
        sections.append(
            (
                "Value per decision on the logged traffic",
                figures.estimates_against_truth(
                    [label for label, _ in rows],
                    [(e.value, e.low, e.high) for _, e in rows],
                    {"logged (realised)": [r.logged.value] * len(rows)},
                    "value per decision",
                    "Estimates, 95% intervals"
                    + (" (the changed stack: refused)" if r.refused else ""),
                ),
            )
        )
    path.write_text(figures.page(title, sections, text(r)))
