"""`arbiter whatif` checked against the simulated truth.

Days of traffic under the running catalog fill the logs; then, for each change (a lever,
a cap, a rule, a volume limit, a new offer), the what-if estimate from those logs is set beside two
truths: the changed stack's value per decision on the same logged decisions by the hidden
response model (what the estimate estimates), and the value it realises when it serves
the same days live: the same world from the same start, the same customers coming with
the same browsing, the same first model, the changed catalog in the service. Contact
histories then follow what the changed stack showed, as they would have.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from engine.core.arbitration import DEFAULT_EPSILON
from engine.core.catalog import Catalog, load_catalog
from feature_store.log_reader import read_logs
from training import whatif
from training.evaluation import Estimate
from training.simulation import Served, stack
from training.simulation.oracle import expected_values
from training.simulation.traffic import Simulation

Change = Callable[[dict[str, Any]], None]  # edits a catalog document in place


def _offer(doc: dict[str, Any], offer_id: str) -> dict[str, Any]:
    return next(o for o in doc["offer"] if o["id"] == offer_id)


def lever(offer_id: str, value: float) -> Change:
    def change(doc: dict[str, Any]) -> None:
        _offer(doc, offer_id)["lever"] = value

    return change


def cap(days: int, most: int) -> Change:
    def change(doc: dict[str, Any]) -> None:
        doc["contact_policy"]["offer_defaults"]["caps"] = [{"days": days, "max": most}]

    return change


def rule(offer_id: str, audience: str) -> Change:
    """The offer's audience narrowed by ``audience`` (and its own rule, if it has one)."""

    def change(doc: dict[str, Any]) -> None:
        offer = _offer(doc, offer_id)
        own = offer.get("audience")
        offer["audience"] = f"({own}) and ({audience})" if own else audience

    return change


def volume(offer_id: str, per_day: int) -> Change:
    """At most ``per_day`` contacts of the offer a day over the whole customer base."""

    def change(doc: dict[str, Any]) -> None:
        _offer(doc, offer_id).setdefault("policy", {})["volume"] = [{"days": 1, "max": per_day}]

    return change


def new_offer(offer_id: str, like: str, value: float) -> Change:
    def change(doc: dict[str, Any]) -> None:
        offer = copy.deepcopy(_offer(doc, like))
        offer.update(id=offer_id, name=f"{offer['name']} (new)", value=value)
        doc["offer"].append(offer)

    return change


# The demo catalog's changes checked by default: one of each kind.
CHANGES: Mapping[str, Change] = {
    "lever: family_plan x2.5": lever("family_plan", 2.5),
    "cap: 1 impression a week per offer (was 3)": cap(7, 1),
    "rule: fibre_broadband only to customers of 2+ years": rule(
        "fibre_broadband", "tenure_months >= 24"
    ),
    "new offer: a copy of device_upgrade_5g worth 400": new_offer(
        "device_upgrade_pro", "device_upgrade_5g", 400.0
    ),
}


@dataclass(frozen=True)
class Checked:
    change: str
    result: whatif.Result
    estimand: float  # the changed stack's true value on the logged decisions
    live: float  # its value per decision serving a day live (hidden model)

    def error(self, estimator: str = "dr", against: str = "live") -> float:
        e: Estimate = self.result.changed[estimator]
        truth = self.live if against == "live" else self.estimand
        return abs(e.value - truth) / truth if truth else float("nan")


def estimand(served: Served, result: whatif.Result, catalog_path: Path) -> float:
    """The hidden model's value per decision of the changed stack's replayed choices."""
    names = served.definitions.schema.names
    catalog = load_catalog(catalog_path, frozenset(names))
    values = []
    for logged, replayed in result.replays:
        if not replayed.candidates:
            values.append(0.0)
            continue
        truth = expected_values(
            logged.entry, served.world, catalog, names, list(replayed.candidates)
        )
        worth = np.array([truth[o] * catalog.by_id[o].value for o in replayed.candidates])
        values.append(float(replayed.probability @ worth))
    return float(np.mean(values))


def check(
    workdir: Path,
    *,
    days: int,
    customers_per_day: int,
    world_size: int,
    changes: Mapping[str, Change] = CHANGES,
    seed: int = 1,
    policy: str = "softmax",
    epsilon: float = DEFAULT_EPSILON,
    first_rows: int = 30_000,
) -> tuple[float, list[Checked]]:
    """``days`` of logs under the running catalog exploring by ``policy`` (their value
    per decision is the first result), then each change estimated from them and served
    over the same days."""
    world: dict[str, Any] = {"world_size": world_size, "seed": seed, "first_rows": first_rows}
    with stack(workdir / "logged", policy=policy, epsilon=epsilon, **world) as served:
        logged_value = _serve(served, days, customers_per_day, seed)
        decisions, outcomes = read_logs(served.client)
        scorer = served.server.application.core.scorer
        base_text = served.trainer.catalog_path.read_text()
        base = served.server.application.core.catalog
        names = frozenset(served.definitions.schema.names)
        estimates: list[tuple[str, Path, whatif.Result, float]] = []
        for name, change in changes.items():
            doc = tomllib.loads(base_text)
            change(doc)
            path = workdir / f"changed-{len(estimates)}.toml"
            path.write_text(tomli_w.dumps(doc))
            changed = load_catalog(path, names)
            result = whatif.evaluate(
                decisions, outcomes, served.definitions.schema, (base, scorer), (changed, scorer)
            )
            estimates.append((name, path, result, estimand(served, result, path)))
    out = []
    for i, (name, path, result, truth) in enumerate(estimates):
        live = float("nan")
        if not result.refused:  # served only where there is an estimate to check
            rerun_at = workdir / f"live-{i}"
            with stack(rerun_at, policy=policy, epsilon=epsilon, **world) as rerun:
                rerun.trainer.catalog_path.write_text(path.read_text())
                rerun.server.run(rerun.server.reloader.check())
                live = _serve(rerun, days, customers_per_day, seed, load_catalog(path, names))
        out.append(Checked(name, result, truth, live))
    return logged_value, out


def _serve(
    served: Served, days: int, customers: int, seed: int, catalog: Catalog | None = None
) -> float:
    """``days`` of traffic, no retraining; the value per decision by the hidden model
    (valued with ``catalog``'s offers: a new offer's too)."""
    simulation = Simulation(served.server, served.client, served.world, served.trainer, seed=seed)
    if catalog is not None:
        simulation.catalog = catalog
    results = [simulation.run_day(day, customers) for day in range(1, days + 1)]
    total = sum(r.decisions for r in results)
    return sum(r.policy * r.decisions for r in results) / max(total, 1)


def table(checked: list[Checked]) -> str:
    lines = [
        "change | what-if DR [95%] | SNIPS [95%] | true on the logged decisions | live day"
        " | DR off live | DR off its estimand | live inside DR's interval"
    ]
    for c in checked:
        r = c.result
        if r.refused:
            lines.append(f"{c.change} | refused: {r.refused}")
            continue
        lines.append(
            f"{c.change} | {r.changed['dr']} | {r.changed['snips']} | {c.estimand:.3f}"
            f" | {c.live:.3f} | {c.error('dr', 'live'):.1%} | {c.error('dr', 'estimand'):.1%}"
            f" | {'yes' if r.changed['dr'].low <= c.live <= r.changed['dr'].high else 'no'}"
        )
    return "\n".join(lines)
