"""The rules, in the order they are tried: the first that matches a workflow decides."""

from __future__ import annotations

from collections.abc import Callable

from services.supervisor.observe import Snapshot, WorkflowRow
from services.supervisor.rules import dead_child, exhausted, orphaned, version_orphaned
from services.supervisor.rules.base import RELEASES_DEDUP, Action, Guard, Verdict, no_match
from services.supervisor.settings import RuleSettings

Rule = Callable[[WorkflowRow, Snapshot, RuleSettings], Verdict]

# Most specific diagnosis first: an exhausted row is dead-lettered whoever holds it; a parent
# stuck on a dead child is failed rather than handed to an executor that would wait again.
RULES: tuple[tuple[str, Rule], ...] = (
    (exhausted.NAME, exhausted.evaluate),
    (dead_child.NAME, dead_child.evaluate),
    (orphaned.NAME, orphaned.evaluate),
    (version_orphaned.NAME, version_orphaned.evaluate),
)

__all__ = ["RELEASES_DEDUP", "RULES", "Action", "Guard", "Verdict", "decide", "explain"]


def explain(wf: WorkflowRow, snap: Snapshot, settings: RuleSettings) -> list[Verdict]:
    """Every rule's verdict on one workflow, in order (disabled rules say so)."""
    verdicts = []
    for name, rule in RULES:
        if name not in settings.enabled:
            verdicts.append(no_match(name, wf, "rule is switched off"))
        else:
            verdicts.append(rule(wf, snap, settings))
    return verdicts


def decide(snap: Snapshot, settings: RuleSettings) -> list[Verdict]:
    """The deciding verdict for every workflow some enabled rule matches, oldest first."""
    decided = []
    for wf in snap.workflows:
        for name, rule in RULES:
            if name not in settings.enabled:
                continue
            verdict = rule(wf, snap, settings)
            if verdict.matched:
                decided.append(verdict)
                break
    return decided
