"""The rules as pure functions: observed rows in, verdict out, no database."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from services.supervisor.observe import (
    ChildRow,
    ExecutorRow,
    RegistryEntry,
    Snapshot,
    WorkflowRow,
)
from services.supervisor.rules import (
    Action,
    dead_child,
    decide,
    exhausted,
    explain,
    orphaned,
    version_orphaned,
)
from services.supervisor.settings import RuleSettings

NOW = 10_000_000
SETTINGS = RuleSettings(stall_timeout_ms=30_000, version_orphan_after_ms=60_000)


def wf(**kw: Any) -> WorkflowRow:
    base: dict[str, Any] = {
        "workflow_id": "w1",
        "status": "PENDING",
        "name": "job",
        "executor_id": "exec-a",
        "application_version": "1",
        "recovery_attempts": 1,
        "queue_name": "q",
        "deduplication_id": "d1",
        "created_at": NOW - 120_000,
        "updated_at": NOW - 100_000,
        "started_at_ms": NOW - 100_000,
        "application_name": "app",
    }
    return WorkflowRow(**{**base, **kw})


def executor(executor_id: str = "exec-a", **kw: Any) -> ExecutorRow:
    base: dict[str, Any] = {
        "executor_id": executor_id,
        "application_name": "app",
        "application_version": "1",
        "started_at_ms": NOW - 3_600_000,
        "last_seen_ms": NOW - 1_000,
        "stopped_at_ms": None,
    }
    return ExecutorRow(**{**base, **kw})


def snap(*executors: ExecutorRow, **kw: Any) -> Snapshot:
    return Snapshot(now_ms=NOW, executors={e.executor_id: e for e in executors}, **kw)


# -- exhausted ---------------------------------------------------------------------------


def test_exhausted_matches_beyond_max_plus_one_from_registry() -> None:
    registry = (RegistryEntry("app", "1", "job", 2),)
    verdict = exhausted.evaluate(wf(recovery_attempts=4), snap(registry=registry), SETTINGS)
    assert verdict.matched
    assert verdict.action is Action.DEAD_LETTER
    assert verdict.evidence["max_recovery_attempts"] == 2
    assert verdict.evidence["limit_source"] == "registry"


def test_exhausted_does_not_match_at_max_plus_one() -> None:
    registry = (RegistryEntry("app", "1", "job", 2),)
    verdict = exhausted.evaluate(wf(recovery_attempts=3), snap(registry=registry), SETTINGS)
    assert not verdict.matched


def test_exhausted_uses_dbos_default_for_unpublished_names() -> None:
    assert not exhausted.evaluate(wf(recovery_attempts=101), snap(), SETTINGS).matched
    assert exhausted.evaluate(wf(recovery_attempts=102), snap(), SETTINGS).matched


def test_exhausted_override_wins_and_none_means_unlimited() -> None:
    registry = (RegistryEntry("app", "1", "job", 2),)
    unlimited = replace(SETTINGS, max_recovery_overrides={"job": None})
    assert not exhausted.evaluate(
        wf(recovery_attempts=1000), snap(registry=registry), unlimited
    ).matched
    tight = replace(SETTINGS, max_recovery_overrides={"job": 0})
    assert exhausted.evaluate(wf(recovery_attempts=2), snap(), tight).matched


def test_exhausted_registry_of_other_version_takes_most_permissive() -> None:
    registry = (RegistryEntry("app", "2", "job", 2), RegistryEntry("app", "3", "job", 5))
    verdict = exhausted.evaluate(wf(recovery_attempts=5), snap(registry=registry), SETTINGS)
    assert not verdict.matched
    assert verdict.evidence["max_recovery_attempts"] == 5


def test_exhausted_applies_to_enqueued_but_not_terminal() -> None:
    registry = (RegistryEntry("app", "1", "job", 0),)
    assert exhausted.evaluate(
        wf(status="ENQUEUED", recovery_attempts=2), snap(registry=registry), SETTINGS
    ).matched
    assert not exhausted.evaluate(
        wf(status="SUCCESS", recovery_attempts=9), snap(registry=registry), SETTINGS
    ).matched


# -- orphaned ----------------------------------------------------------------------------


def test_orphaned_never_matches_a_heartbeating_executor() -> None:
    verdict = orphaned.evaluate(wf(), snap(executor()), SETTINGS)
    assert not verdict.matched
    assert "alive" in verdict.reason


def test_orphaned_stale_heartbeat_reenqueues() -> None:
    verdict = orphaned.evaluate(wf(), snap(executor(last_seen_ms=NOW - 7_000)), SETTINGS)
    assert verdict.matched
    assert verdict.action is Action.REENQUEUE
    assert verdict.guard.executor_not_holding == "exec-a"


def test_orphaned_heartbeat_within_timeout_is_alive() -> None:
    assert not orphaned.evaluate(wf(), snap(executor(last_seen_ms=NOW - 6_000)), SETTINGS).matched


def test_orphaned_stopped_executor() -> None:
    stopped = executor(last_seen_ms=NOW - 100, stopped_at_ms=NOW - 100)
    assert orphaned.evaluate(wf(), snap(stopped), SETTINGS).action is Action.REENQUEUE


def test_orphaned_executor_restarted_after_claim() -> None:
    restarted = executor(application_version="2", started_at_ms=NOW - 10_000)
    verdict = orphaned.evaluate(wf(), snap(restarted), SETTINGS)
    assert verdict.matched
    assert "restarted" in verdict.reason


def test_orphaned_claim_by_current_incarnation_is_alive() -> None:
    fresh = executor(started_at_ms=NOW - 10_000)
    claimed = wf(updated_at=NOW - 5_000, started_at_ms=NOW - 5_000)
    assert not orphaned.evaluate(claimed, snap(fresh), SETTINGS).matched


def test_orphaned_dead_letters_without_attempts_left() -> None:
    registry = (RegistryEntry("app", "1", "job", 2),)
    dead = executor(last_seen_ms=NOW - 60_000)
    verdict = orphaned.evaluate(wf(recovery_attempts=3), snap(dead, registry=registry), SETTINGS)
    assert verdict.action is Action.DEAD_LETTER
    verdict = orphaned.evaluate(wf(recovery_attempts=2), snap(dead, registry=registry), SETTINGS)
    assert verdict.action is Action.REENQUEUE


def test_orphaned_leaves_unknown_executors_unless_configured() -> None:
    assert not orphaned.evaluate(wf(), snap(), SETTINGS).matched
    assume = replace(SETTINGS, assume_unknown_executors_dead=True)
    assert orphaned.evaluate(wf(), snap(), assume).matched
    recent = wf(updated_at=NOW - 1_000, started_at_ms=NOW - 1_000)
    assert not orphaned.evaluate(recent, snap(), assume).matched


def test_orphaned_ignores_enqueued() -> None:
    dead = executor(last_seen_ms=NOW - 60_000)
    assert not orphaned.evaluate(wf(status="ENQUEUED"), snap(dead), SETTINGS).matched


# -- dead_child --------------------------------------------------------------------------


def _children(status: str = "MAX_RECOVERY_ATTEMPTS_EXCEEDED", at: int = NOW - 90_000) -> Any:
    return {"w1": (ChildRow("w1", "w1-1", status, at),)}


def test_dead_child_fails_a_stalled_parent_naming_the_child() -> None:
    verdict = dead_child.evaluate(wf(), snap(executor(), dead_children=_children()), SETTINGS)
    assert verdict.matched
    assert verdict.action is Action.FAIL
    assert verdict.error_message is not None
    assert "w1-1" in verdict.error_message
    assert verdict.guard.dead_child == "w1-1"


def test_dead_child_cancelled_child_counts() -> None:
    verdict = dead_child.evaluate(wf(), snap(dead_children=_children("CANCELLED")), SETTINGS)
    assert verdict.matched


def test_dead_child_waits_while_parent_progresses() -> None:
    recent_step = snap(dead_children=_children(), last_step_ms={"w1": NOW - 1_000})
    assert not dead_child.evaluate(wf(), recent_step, SETTINGS).matched
    recent_child = snap(dead_children=_children(at=NOW - 1_000))
    assert not dead_child.evaluate(wf(), recent_child, SETTINGS).matched
    assert not dead_child.evaluate(wf(), snap(), SETTINGS).matched


# -- version_orphaned --------------------------------------------------------------------


def test_version_orphaned_alerts_by_default() -> None:
    old = executor("old", application_version="1", last_seen_ms=NOW - 120_000)
    new = executor("new", application_version="2")
    verdict = version_orphaned.evaluate(wf(status="ENQUEUED"), snap(old, new), SETTINGS)
    assert verdict.matched
    assert verdict.action is Action.ALERT
    assert not verdict.changes_row


def test_version_orphaned_policies() -> None:
    old = executor("old", application_version="1", last_seen_ms=NOW - 120_000)
    new = executor("new", application_version="2")
    s = snap(old, new)
    dead_letter = replace(SETTINGS, version_orphan_policy="dead_letter")
    assert (
        version_orphaned.evaluate(wf(status="ENQUEUED"), s, dead_letter).action
        is Action.DEAD_LETTER
    )
    upgrade = replace(SETTINGS, version_orphan_policy="upgrade")
    verdict = version_orphaned.evaluate(wf(status="ENQUEUED"), s, upgrade)
    assert verdict.action is Action.UPGRADE
    assert verdict.target_version == "2"
    # No live version at all: nothing to upgrade to, so only an alert.
    assert (
        version_orphaned.evaluate(wf(status="ENQUEUED"), snap(old), upgrade).action is Action.ALERT
    )


def test_version_orphaned_not_before_the_configured_time() -> None:
    recently = executor("old", application_version="1", last_seen_ms=NOW - 30_000)
    assert not version_orphaned.evaluate(wf(status="ENQUEUED"), snap(recently), SETTINGS).matched


def test_version_orphaned_not_while_version_is_live() -> None:
    live = executor("other", application_version="1")
    assert not version_orphaned.evaluate(wf(status="ENQUEUED"), snap(live), SETTINGS).matched


def test_version_orphaned_unknown_version_left_alone() -> None:
    assert not version_orphaned.evaluate(wf(status="ENQUEUED"), snap(), SETTINGS).matched


def test_version_orphaned_versionless_rows_left_alone() -> None:
    old = executor("old", application_version="1", last_seen_ms=NOW - 120_000)
    row = wf(status="ENQUEUED", application_version=None)
    assert not version_orphaned.evaluate(row, snap(old), SETTINGS).matched


# -- the set of rules ------------------------------------------------------------------


def test_decide_first_match_wins_and_disabled_rules_are_skipped() -> None:
    registry = (RegistryEntry("app", "1", "job", 2),)
    dead = executor(last_seen_ms=NOW - 60_000)
    row = wf(recovery_attempts=9)
    s = snap(dead, workflows=(row,), registry=registry)
    [verdict] = decide(s, SETTINGS)
    assert verdict.rule == "exhausted"
    only_orphaned = replace(SETTINGS, enabled=frozenset({"orphaned"}))
    [verdict] = decide(s, only_orphaned)
    assert verdict.rule == "orphaned"
    assert decide(s, replace(SETTINGS, enabled=frozenset())) == []


def test_explain_gives_every_rule_a_reason() -> None:
    s = snap(executor(), workflows=(wf(),))
    verdicts = explain(wf(), s, replace(SETTINGS, enabled=frozenset({"orphaned"})))
    assert [v.rule for v in verdicts] == ["exhausted", "dead_child", "orphaned", "version_orphaned"]
    assert all(not v.matched and v.reason for v in verdicts)
    assert verdicts[0].reason == "rule is switched off"


def test_live_workflows_match_nothing() -> None:
    """A normally running PENDING workflow and a queued one: no rule matches either."""
    registry = (RegistryEntry("app", "1", "job", 2),)
    running = wf(recovery_attempts=1, updated_at=NOW - 1_000, started_at_ms=NOW - 1_000)
    queued = wf(workflow_id="w2", status="ENQUEUED", executor_id=None, recovery_attempts=0)
    s = snap(executor(), workflows=(running, queued), registry=registry)
    assert decide(s, SETTINGS) == []
