"""Life-cycle stage derivation: ordered, configurable rules over features and context."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigurationError
from common.vocabulary import STAGES
from engine.core.expression import Env, Expression, compile_expression

OVERRIDE_KEY = "stage"  # context key that overrides the derived stage


@dataclass(frozen=True, slots=True)
class StageRule:
    stage: str
    when: Expression
    reason: str


@dataclass(frozen=True)
class StageRules:
    rules: tuple[StageRule, ...]
    default: str = "consideration"

    def derive(self, env: Env, context: dict[str, str] | None = None) -> tuple[str, str]:
        """(stage, why). A valid ``context["stage"]`` wins; else the first matching rule."""
        if context:
            override = context.get(OVERRIDE_KEY, "")
            if override in STAGES:
                return override, "set by the request context"
        for rule in self.rules:
            if rule.when.test(env):
                return rule.stage, rule.reason
        return self.default, "no stage rule matched"


def parse_stage_rules(text: str, feature_names: frozenset[str]) -> StageRules:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"stage rules: {exc}") from exc
    default = str(doc.get("default", "consideration"))
    rules = []
    for raw in doc.get("rule", []):
        stage = str(raw.get("stage", ""))
        if stage not in STAGES or default not in STAGES:
            raise ConfigurationError(f"stage rules: unknown stage {stage or default!r}")
        when = compile_expression(str(raw.get("when", "")), feature_names)
        rules.append(StageRule(stage, when, str(raw.get("reason", when.source))))
    return StageRules(tuple(rules), default)


def load_stage_rules(path: Path, feature_names: frozenset[str]) -> StageRules:
    try:
        return parse_stage_rules(path.read_text(), feature_names)
    except OSError as exc:
        raise ConfigurationError(f"cannot read stage rules {path}: {exc}") from exc
