"""Live swap: the running service picks up a newly promoted model, or a changed catalog or
stage rules, without a restart and without failing a call.

A task checks, every ``ARBITER_RELOAD_SECONDS`` (and on SIGHUP), the promoted model
version (first brought in from the shared registry when there is one: registry.py) and
the content of the catalog and stage-rule files. On a change it builds a
complete new DecisionCore off the event loop (in a thread) and replaces ``Application.core``
in one assignment; a call already running keeps the core it started with. A model or
catalog that cannot be used is logged and skipped, and the current core keeps serving.
The feature schema is not reloaded: a schema change needs the profiles reloaded too, so
it takes a restart.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from common.errors import ArbiterError
from engine.adapters import artifact, compiled
from engine.adapters.lightgbm_scorer import LightGBMScorer
from engine.core.catalog import load_catalog
from engine.core.decision import DecisionCore
from engine.core.lifecycle import load_stage_rules
from engine.core.model_input import model_feature_names
from engine.core.schema import FeatureSchema
from engine.core.scoring import Scorer, ValueOnlyScorer
from engine.service import metrics
from engine.service.application import Application
from engine.service.registry import SharedModels
from engine.settings import Definitions, ServerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """What a core is built from."""

    model_version: str | None
    catalog_sha256: str
    lifecycle_sha256: str
    challenger: tuple[str, float] | None = None
    compiled: str = ""  # the promoted model's compiled.json: `arbiter compile` reloads


def build_cores(
    definitions: Definitions, settings: ServerSettings, *, starting: bool = False
) -> tuple[DecisionCore, tuple[DecisionCore, float] | None]:
    """The champion's core, and the challenger's with its share when a challenge is on.

    ``starting``: a promoted model or challenger that cannot be used does not stop the
    start; the last good version (or value-only) serves instead, with an error logged. A
    reload raises instead, and the running core keeps serving."""
    schema = definitions.schema
    if starting:
        scorer = start_scorer(settings.model_dir, schema)
    else:
        scorer = load_scorer(settings.model_dir, schema)
    champion = build_core(definitions, scorer, settings)
    challenge = artifact.challenger(settings.model_dir)
    if challenge is None:
        return champion, None
    version, share = challenge
    try:
        challenger = load_scorer(settings.model_dir, schema, version)
    except ArbiterError as exc:
        if not starting:
            raise
        log.error("NOT serving challenger %s: %s", version, exc)
        return champion, None
    return champion, (build_core(definitions, challenger, settings), share)


def start_scorer(model_dir: Path, schema: FeatureSchema) -> Scorer:
    """The promoted model; if it cannot be used, the newest saved version that can, else
    value-only: a corrupt promotion must not keep the service from starting."""
    try:
        return load_scorer(model_dir, schema)
    except ArbiterError as exc:
        log.error("the promoted model cannot be served (%s); looking for the last good one", exc)
    promoted = artifact.current_version(model_dir)
    for candidate in reversed(artifact.versions(model_dir, skip_unreadable=True)):
        if candidate.version == promoted:
            continue
        try:
            scorer = load_scorer(model_dir, schema, candidate.version)
        except ArbiterError:
            continue
        log.error("SERVING %s INSTEAD OF THE PROMOTED %s", candidate.version, promoted)
        return scorer
    log.error("SERVING VALUE-ONLY: no saved model can be served")
    return ValueOnlyScorer()


def load_scorer(model_dir: Path, schema: FeatureSchema, version: str | None = None) -> Scorer:
    """The promoted model, checked against the schema; the value-only baseline if none.

    Raises ArtifactMismatch for a model trained on other features.
    """
    if version is None and artifact.current_version(model_dir) is None:
        log.warning("no promoted model in %s: ranking by value only", model_dir)
        return ValueOnlyScorer()
    model = artifact.load(model_dir, version)
    model.check_features(model_feature_names(schema))
    return LightGBMScorer(model)


def build_core(definitions: Definitions, scorer: Scorer, settings: ServerSettings) -> DecisionCore:
    return DecisionCore(
        definitions.schema,
        definitions.catalog,
        definitions.stage_rules,
        scorer,
        one_per_category=settings.one_per_category,
    )


def serving_metrics(application: Application) -> None:
    """``arbiter_model_info``: the versions the application serves now."""
    core, challenger = application.core, application.challenger
    metrics.serving(
        {
            "champion": (core.scorer.version, core.catalog.version),
            "challenger": None
            if challenger is None
            else (challenger[0].scorer.version, challenger[0].catalog.version),
        }
    )


class Reloader:
    def __init__(
        self,
        application: Application,
        settings: ServerSettings,
        shared: SharedModels | None = None,
    ) -> None:
        self._application = application
        self._settings = settings
        self._shared = shared  # a model registry every replica sees, when configured
        serving_metrics(application)
        self._current = self._source()
        self._refused: Source | None = None
        self.reloads = 0

    def _synced_source(self) -> Source:
        """The sources once the registry's promotions are in the local folder (launch
        synced it before the first build, so the constructor's ``_source`` does not)."""
        if self._shared is not None:
            self._shared.sync()
        return self._source()

    def _source(self) -> Source:
        def digest(path: Path) -> str:
            try:
                return compiled.digest(path)
            except OSError:  # missing or unreadable: a change all the same
                return ""

        model_dir = self._settings.model_dir
        version = artifact.current_version(model_dir)
        return Source(
            version,
            digest(self._settings.catalog_path),
            digest(self._settings.lifecycle_path),
            artifact.challenger(model_dir),
            digest(model_dir / version / compiled.META) if version else "",
        )

    def _build(self, source: Source) -> tuple[DecisionCore, tuple[DecisionCore, float] | None]:
        """The new cores; a catalog or stage-rule file that did not change is not parsed
        again (the build runs beside calls in flight: it should hold the GIL briefly)."""
        core = self._application.core
        names = frozenset(core.schema.names)
        definitions = Definitions(
            schema=core.schema,
            catalog=core.catalog
            if source.catalog_sha256 == self._current.catalog_sha256
            else load_catalog(self._settings.catalog_path, names),
            stage_rules=core.stage_rules
            if source.lifecycle_sha256 == self._current.lifecycle_sha256
            else load_stage_rules(self._settings.lifecycle_path, names),
        )
        current = self._current
        unchanged = (current.model_version, current.challenger, current.compiled)
        if (source.model_version, source.challenger, source.compiled) == unchanged:
            # Same models: keep the scorers serving now (also a fallback chosen at start).
            champion = build_core(definitions, core.scorer, self._settings)
            running = self._application.challenger
            if running is None:
                return champion, None
            challenger = build_core(definitions, running[0].scorer, self._settings)
            return champion, (challenger, running[1])
        return build_cores(definitions, self._settings)

    async def check(self) -> bool:
        """Swaps in a new core when its sources changed; True when it did."""
        source = await asyncio.to_thread(self._synced_source)
        if source in (self._current, self._refused):
            return False
        try:
            core, challenger = await asyncio.to_thread(self._build, source)
        except Exception as exc:  # refused until a file changes: logged once, not per tick
            log.error(
                "not reloading, still serving model %s: %s",
                self._application.core.scorer.version,
                exc,
            )
            self._refused = source
            return False
        layer = self._application.layer  # the online layer serving now, in the new cores
        core.adaptive = core.layer_view(layer)
        if challenger is not None:
            challenger[0].adaptive = challenger[0].layer_view(layer)
        self._application.challenger = challenger
        self._application.core = core
        self._current = source
        self.reloads += 1
        serving_metrics(self._application)
        log.info("reloaded: model %s, catalog %s", core.scorer.version, core.catalog.version)
        return True

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except Exception:  # keep watching whatever happened
                log.exception("reload check failed")
