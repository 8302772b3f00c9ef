"""The registry of rules, in the order they are tried: the first that matches decides.

Adding a rule is one module (see docs/CONVENTIONS.md) and one line here: its name, its
settings, its metrics labels and its place in the documentation all derive from this list.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from services.supervisor.model import Snapshot, Verdict, WorkflowRow
from services.supervisor.rules import (
    dead_child,
    exhausted,
    manual,
    orphaned,
    stalled,
    version_orphaned,
)
from services.supervisor.rules.base import CommonSettings, Rule

# Most specific diagnosis first: an exhausted row is dead-lettered whoever holds it; a parent
# stuck on a dead child is failed rather than handed to an executor that would wait again.
RULES: tuple[Rule[Any], ...] = (
    exhausted.RULE,
    dead_child.RULE,
    orphaned.RULE,
    stalled.RULE,
    version_orphaned.RULE,
)
BY_NAME: Mapping[str, Rule[Any]] = {rule.name: rule for rule in RULES}
RULE_NAMES: tuple[str, ...] = tuple(BY_NAME)
DEFAULT_ENABLED = frozenset(rule.name for rule in RULES if rule.default_enabled)


@dataclass(frozen=True)
class RuleSettings:
    """Which rules run, and each one's settings (its own `config_type`)."""

    enabled: frozenset[str] = DEFAULT_ENABLED
    common: CommonSettings = field(default_factory=CommonSettings)
    configs: Mapping[str, Any] = field(
        default_factory=lambda: {rule.name: rule.config_type() for rule in RULES}
    )

    def config(self, rule: Rule[Any]) -> Any:
        return self.configs.get(rule.name) or rule.config_type()

    def active(self) -> list[Rule[Any]]:
        return [rule for rule in RULES if rule.name in self.enabled]

    @classmethod
    def build(cls, enabled: Iterable[str] | None = None, **values: Any) -> RuleSettings:
        """Defaults, with each keyword set on every settings object that has such a field
        (`stall_timeout_ms=5000` sets it for every rule that reads a stall timeout)."""
        settings = cls() if enabled is None else cls(enabled=frozenset(enabled))
        return settings.with_values(**values)

    def with_values(self, **values: Any) -> RuleSettings:
        unknown = set(values)
        common = self.common
        names = {f.name for f in fields(CommonSettings)}
        if names & set(values):
            common = replace(common, **{k: v for k, v in values.items() if k in names})
            unknown -= names
        configs = dict(self.configs)
        for rule in RULES:
            config = self.config(rule)
            own = {f.name for f in fields(config)} & set(values)
            if own:
                configs[rule.name] = replace(config, **{k: values[k] for k in own})
                unknown -= own
        if unknown:
            raise TypeError(f"no rule has the setting(s) {', '.join(sorted(unknown))}")
        return replace(self, common=common, configs=configs)


def guard_rule(name: str) -> Rule[Any]:
    """The rule whose guard protects a verdict of that name (the swept ones, or `manual`)."""
    if name == manual.RULE.name:
        return manual.RULE
    return BY_NAME[name]


def evaluate(rule: Rule[Any], wf: WorkflowRow, snap: Snapshot, settings: RuleSettings) -> Verdict:
    return _evaluate(rule, wf, snap, settings.common, settings.config(rule))


def _evaluate(
    rule: Rule[Any], wf: WorkflowRow, snap: Snapshot, common: CommonSettings, config: Any
) -> Verdict:
    # A row a live incarnation reports running is never touched, whatever the rule: the
    # store's guard restates it for every write.
    if wf.workflow_id in snap.listed and not rule.may_override_listing:
        return rule.no_match(wf, "a live executor reports running it: never touched")
    return rule.evaluate(wf, snap, common, config)


def explain(wf: WorkflowRow, snap: Snapshot, settings: RuleSettings) -> list[Verdict]:
    """Every rule's verdict on one workflow, in order (disabled rules say so)."""
    verdicts = []
    for rule in RULES:
        if rule.name not in settings.enabled:
            verdicts.append(rule.no_match(wf, "rule is switched off"))
        else:
            verdicts.append(evaluate(rule, wf, snap, settings))
    return verdicts


def decide_each(snap: Snapshot, settings: RuleSettings) -> Iterator[Verdict]:
    """The deciding verdict for every workflow some enabled rule matches, oldest first, one
    at a time (a sweep acts on the first ones while it decides the rest)."""
    active = [(rule, settings.config(rule)) for rule in settings.active()]
    common = settings.common
    for wf in snap.workflows:
        for rule, config in active:
            if wf.status not in rule.statuses:
                continue
            verdict = _evaluate(rule, wf, snap, common, config)
            if verdict.matched:
                yield verdict
                break


def decide(snap: Snapshot, settings: RuleSettings) -> list[Verdict]:
    """Every deciding verdict (`decide_each`), oldest first."""
    return list(decide_each(snap, settings))


__all__ = [
    "BY_NAME",
    "DEFAULT_ENABLED",
    "RULES",
    "RULE_NAMES",
    "RuleSettings",
    "decide",
    "decide_each",
    "evaluate",
    "explain",
    "guard_rule",
]
