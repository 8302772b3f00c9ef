"""The rules as pure functions: observed rows in, verdict out, no database."""

from __future__ import annotations

from typing import Any

from services.supervisor.model import (
    Action,
    ChildRow,
    ExecutorRow,
    ExecutorState,
    RegistryEntry,
    Snapshot,
    Verdict,
    WorkflowRow,
)
from services.supervisor.rules import RuleSettings, dead_child, decide, evaluate, explain
from services.supervisor.rules import exhausted as exhausted_rule
from services.supervisor.rules import orphaned as orphaned_rule
from services.supervisor.rules import stalled as stalled_rule
from services.supervisor.rules import version_orphaned as version_rule
from services.supervisor.rules.base import Rule

NOW = 10_000_000
SETTINGS = RuleSettings.build(stall_timeout_ms=30_000, version_orphan_after_ms=60_000)


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
        "state": ExecutorState.ALIVE,
        "incarnation": f"inc-{executor_id}",
        "lock_held": True,
        "started_at_ms": NOW - 3_600_000,
        "last_seen_ms": NOW - 200,
        "lease_expires_ms": NOW + 4_800,
    }
    return ExecutorRow(**{**base, **kw})


def dead(executor_id: str = "exec-a", since_ms: int = NOW - 50_000, **kw: Any) -> ExecutorRow:
    """An executor the contract reads as lost since `since_ms`."""
    return executor(
        executor_id,
        state=ExecutorState.LOST,
        lock_held=False,
        last_seen_ms=since_ms - 1_000,
        session_lost_seen_ms=since_ms,
        dead_since_ms=since_ms,
        **kw,
    )


def snap(*executors: ExecutorRow, **kw: Any) -> Snapshot:
    return Snapshot(now_ms=NOW, executors={e.executor_id: e for e in executors}, **kw)


def ev(
    rule: Rule[Any], row: WorkflowRow, s: Snapshot, settings: RuleSettings = SETTINGS
) -> Verdict:
    return evaluate(rule, row, s, settings)


exhausted, orphaned = exhausted_rule.RULE, orphaned_rule.RULE
stalled, version_orphaned = stalled_rule.RULE, version_rule.RULE
DEAD_CHILD = dead_child.RULE

# -- exhausted ---------------------------------------------------------------------------


def test_exhausted_matches_beyond_max_plus_one_from_registry() -> None:
    registry = (RegistryEntry("app", "1", "job", 2),)
    verdict = ev(exhausted, wf(recovery_attempts=4), snap(registry=registry))
    assert verdict.matched
    assert verdict.action is Action.DEAD_LETTER
    assert verdict.evidence["max_recovery_attempts"] == 2
    assert verdict.evidence["limit_source"] == "registry"


def test_exhausted_does_not_match_at_max_plus_one() -> None:
    registry = (RegistryEntry("app", "1", "job", 2),)
    assert not ev(exhausted, wf(recovery_attempts=3), snap(registry=registry)).matched


def test_exhausted_uses_dbos_default_for_unpublished_names() -> None:
    assert not ev(exhausted, wf(recovery_attempts=101), snap()).matched
    assert ev(exhausted, wf(recovery_attempts=102), snap()).matched


def test_exhausted_override_wins_and_none_means_unlimited() -> None:
    registry = (RegistryEntry("app", "1", "job", 2),)
    unlimited = SETTINGS.with_values(max_recovery_overrides={"job": None})
    assert not ev(exhausted, wf(recovery_attempts=1000), snap(registry=registry), unlimited).matched
    tight = SETTINGS.with_values(max_recovery_overrides={"job": 0})
    assert ev(exhausted, wf(recovery_attempts=2), snap(), tight).matched


def test_exhausted_registry_of_other_version_takes_most_permissive() -> None:
    registry = (RegistryEntry("app", "2", "job", 2), RegistryEntry("app", "3", "job", 5))
    verdict = ev(exhausted, wf(recovery_attempts=5), snap(registry=registry))
    assert not verdict.matched
    assert verdict.evidence["max_recovery_attempts"] == 5


def test_exhausted_registry_of_another_application_does_not_count() -> None:
    # A Python app publishes `job`; the TypeScript app's `job` rows, unpublished, get 100.
    registry = (RegistryEntry("py-app", "1", "job", 2),)
    row = wf(recovery_attempts=5, application_name="ts-app")
    verdict = ev(exhausted, row, snap(registry=registry))
    assert not verdict.matched
    assert verdict.evidence["max_recovery_attempts"] == 100
    assert verdict.evidence["limit_source"] == "DBOS default"


def test_exhausted_applies_to_enqueued_but_not_terminal() -> None:
    registry = (RegistryEntry("app", "1", "job", 0),)
    s = snap(registry=registry)
    assert ev(exhausted, wf(status="ENQUEUED", recovery_attempts=2), s).matched
    assert not ev(exhausted, wf(status="SUCCESS", recovery_attempts=9), s).matched


# -- orphaned: the liveness reading ------------------------------------------------------


def test_orphaned_never_matches_a_live_executor() -> None:
    verdict = ev(orphaned, wf(), snap(executor()))
    assert not verdict.matched
    assert "alive" in verdict.reason


def test_orphaned_suspect_executor_counts_as_alive() -> None:
    """Lock free for less than the grace: it may be reconnecting, so it is alive."""
    suspect = executor(state=ExecutorState.SUSPECT, lock_held=False, session_lost_seen_ms=NOW)
    assert not ev(orphaned, wf(), snap(suspect)).matched


def test_orphaned_dead_executor_reenqueues_with_the_guard_it_assumed() -> None:
    verdict = ev(orphaned, wf(), snap(dead()))
    assert verdict.matched
    assert verdict.action is Action.REENQUEUE
    assert verdict.guard["holder"] == "dead"
    assert verdict.guard["incarnation"] == "inc-exec-a"
    assert verdict.guard["claimed_at"] == NOW - 100_000


def test_orphaned_every_dead_state_counts() -> None:
    for state in (ExecutorState.LOST, ExecutorState.EXPIRED, ExecutorState.STOPPED):
        gone = executor(state=state, lock_held=False, dead_since_ms=NOW - 50_000)
        assert ev(orphaned, wf(), snap(gone)).action is Action.REENQUEUE, state


def test_orphaned_a_claim_after_the_death_waits_for_newer_evidence() -> None:
    """Handed over once: a claim made after the last evidence of death is not handed over
    on that evidence (the bug of the repeated handovers), only after the stall timeout."""
    gone = dead(since_ms=NOW - 50_000)
    reclaimed = wf(updated_at=NOW - 10_000, started_at_ms=NOW - 10_000)
    verdict = ev(orphaned, reclaimed, snap(gone))
    assert not verdict.matched
    assert "claimed after" in verdict.reason
    long_ago = wf(updated_at=NOW - 45_000, started_at_ms=NOW - 45_000)
    late = snap(dead(since_ms=NOW - 50_000))
    assert ev(orphaned, long_ago, late).action is Action.REENQUEUE  # idle 45 s > 30 s


def test_orphaned_vetoed_by_a_fresh_step_checkpoint() -> None:
    checkpointed = wf(last_checkpoint_ms=NOW - 300)
    verdict = ev(orphaned, checkpointed, snap(dead()))
    assert not verdict.matched
    assert "progressed" in verdict.reason


def test_orphaned_vetoed_by_the_executor_progressing_elsewhere() -> None:
    for s in (
        snap(dead(), executor_claimed_ms={"exec-a": NOW - 200}),
        snap(dead(), executor_checkpoint_ms={"exec-a": NOW - 200}),
    ):
        verdict = ev(orphaned, wf(), s)
        assert not verdict.matched
        assert "claimed or checkpointed" in verdict.reason
    # The control: the same snapshots with that progress out of the window hand it over.
    stale = snap(dead(), executor_claimed_ms={"exec-a": NOW - 60_000})
    assert ev(orphaned, wf(), stale).matched


def test_orphaned_listed_by_a_live_incarnation_is_never_touched() -> None:
    lister = executor("exec-b", running=frozenset({"w1"}), report_at_ms=NOW - 100)
    verdict = ev(orphaned, wf(), snap(dead(), lister))
    assert not verdict.matched
    assert "reports running it" in verdict.reason


def test_orphaned_live_executor_whose_report_omits_the_row() -> None:
    """#804: the executor lives (another incarnation, or a draining process) but does not
    run the row: orphaned once a report made past the grace after the claim omits it."""
    reporting = executor(running=frozenset({"other"}), report_at_ms=NOW - 100)
    verdict = ev(orphaned, wf(), snap(reporting))
    assert verdict.matched
    assert verdict.guard["holder"] == "not_listed"
    fresh_claim = wf(updated_at=NOW - 2_000, started_at_ms=NOW - 2_000)
    assert not ev(orphaned, fresh_claim, snap(reporting)).matched  # within the report grace
    silent = executor(running=None)
    assert not ev(orphaned, wf(), snap(silent)).matched  # no report: the lease speaks


def test_orphaned_dead_letters_without_attempts_left() -> None:
    registry = (RegistryEntry("app", "1", "job", 2),)
    s = snap(dead(), registry=registry)
    assert ev(orphaned, wf(recovery_attempts=3), s).action is Action.DEAD_LETTER
    assert ev(orphaned, wf(recovery_attempts=2), s).action is Action.REENQUEUE


def test_orphaned_leaves_unregistered_executors_to_stalled() -> None:
    assert not ev(orphaned, wf(), snap()).matched


def test_orphaned_ignores_enqueued() -> None:
    assert not ev(orphaned, wf(status="ENQUEUED"), snap(dead())).matched


# -- stalled (opt-in): judged by progress --------------------------------------------------


def test_stalled_hands_over_an_unregistered_executors_idle_row() -> None:
    verdict = ev(stalled, wf(), snap())
    assert verdict.matched
    assert verdict.action is Action.REENQUEUE


def test_stalled_never_judges_by_the_claims_age_alone() -> None:
    """An old claim with fresh step checkpoints is alive (the bug of the stall re-enqueues)."""
    progressing = wf(
        updated_at=NOW - 600_000, started_at_ms=NOW - 600_000, last_checkpoint_ms=NOW - 900
    )
    assert not ev(stalled, progressing, snap()).matched
    busy = snap(executor_checkpoint_ms={"exec-a": NOW - 5_000})
    assert not ev(stalled, wf(), busy).matched


def test_stalled_per_name_timeout_for_long_steps() -> None:
    long_steps = SETTINGS.with_values(per_name_ms={"job": 3_600_000})
    assert not ev(stalled, wf(), snap(), long_steps).matched
    assert ev(stalled, wf(name="other"), snap(), long_steps).matched


def test_stalled_leaves_registered_executors_to_the_contract() -> None:
    assert not ev(stalled, wf(), snap(dead())).matched
    assert "not_listed" not in ev(stalled, wf(), snap(executor())).reason


def test_stalled_is_off_by_default() -> None:
    assert "stalled" not in RuleSettings().enabled
    assert decide(snap(workflows=(wf(),)), RuleSettings()) == []


# -- dead_child --------------------------------------------------------------------------


def _children(status: str = "MAX_RECOVERY_ATTEMPTS_EXCEEDED", at: int = NOW - 90_000) -> Any:
    return {"w1": (ChildRow("w1", "w1-1", status, at),)}


def test_dead_child_fails_a_stalled_parent_naming_the_child() -> None:
    verdict = ev(DEAD_CHILD, wf(), snap(executor(), dead_children=_children()))
    assert verdict.matched
    assert verdict.action is Action.FAIL
    assert verdict.error_message is not None
    assert "w1-1" in verdict.error_message
    assert verdict.guard["dead_child"] == "w1-1"


def test_dead_child_cancelled_child_counts() -> None:
    assert ev(DEAD_CHILD, wf(), snap(dead_children=_children("CANCELLED"))).matched


def test_dead_child_waits_while_parent_progresses() -> None:
    recent_step = wf(last_checkpoint_ms=NOW - 1_000)
    assert not ev(DEAD_CHILD, recent_step, snap(dead_children=_children())).matched
    assert not ev(DEAD_CHILD, wf(), snap(dead_children=_children(at=NOW - 1_000))).matched
    assert not ev(DEAD_CHILD, wf(), snap()).matched


# -- version_orphaned --------------------------------------------------------------------


def _old_and_new() -> tuple[ExecutorRow, ExecutorRow]:
    old = executor(
        "old",
        application_version="1",
        state=ExecutorState.STOPPED,
        lock_held=False,
        dead_since_ms=NOW - 120_000,
    )
    return old, executor("new", application_version="2")


def test_version_orphaned_alerts_by_default() -> None:
    verdict = ev(version_orphaned, wf(status="ENQUEUED"), snap(*_old_and_new()))
    assert verdict.matched
    assert verdict.action is Action.ALERT
    assert not verdict.changes_row


def test_version_orphaned_policies() -> None:
    old, new = _old_and_new()
    s = snap(old, new)
    dead_letter = SETTINGS.with_values(version_orphan_policy="dead_letter")
    assert ev(version_orphaned, wf(status="ENQUEUED"), s, dead_letter).action is Action.DEAD_LETTER
    upgrade = SETTINGS.with_values(version_orphan_policy="upgrade")
    verdict = ev(version_orphaned, wf(status="ENQUEUED"), s, upgrade)
    assert verdict.action is Action.UPGRADE
    assert verdict.target_version == "2"
    # No live version at all: nothing to upgrade to, so only an alert.
    assert ev(version_orphaned, wf(status="ENQUEUED"), snap(old), upgrade).action is Action.ALERT


def test_version_orphaned_not_before_the_configured_time() -> None:
    recently = executor(
        "old", application_version="1", state=ExecutorState.EXPIRED, dead_since_ms=NOW - 30_000
    )
    assert not ev(version_orphaned, wf(status="ENQUEUED"), snap(recently)).matched


def test_version_orphaned_not_while_version_is_live() -> None:
    live = executor("other", application_version="1")
    assert not ev(version_orphaned, wf(status="ENQUEUED"), snap(live)).matched


def test_version_orphaned_unknown_version_left_alone() -> None:
    assert not ev(version_orphaned, wf(status="ENQUEUED"), snap()).matched


def test_version_orphaned_versionless_rows_left_alone() -> None:
    old, _ = _old_and_new()
    row = wf(status="ENQUEUED", application_version=None)
    assert not ev(version_orphaned, row, snap(old)).matched


def test_version_orphaned_other_application_does_not_count() -> None:
    """A live executor of the same version but another application runs none of its rows."""
    old, _ = _old_and_new()
    stranger = executor("stranger", application_name="other-app", application_version="1")
    assert ev(version_orphaned, wf(status="ENQUEUED"), snap(old, stranger)).matched


# -- the set of rules ------------------------------------------------------------------


def test_decide_first_match_wins_and_disabled_rules_are_skipped() -> None:
    registry = (RegistryEntry("app", "1", "job", 2),)
    row = wf(recovery_attempts=9)
    s = snap(dead(), workflows=(row,), registry=registry)
    [verdict] = decide(s, SETTINGS)
    assert verdict.rule == "exhausted"
    [verdict] = decide(s, RuleSettings.build({"orphaned"}))
    assert verdict.rule == "orphaned"
    assert decide(s, RuleSettings.build(frozenset())) == []


def test_explain_gives_every_rule_a_reason() -> None:
    s = snap(executor(), workflows=(wf(),))
    verdicts = explain(wf(), s, RuleSettings.build({"orphaned"}))
    assert [v.rule for v in verdicts] == [
        "exhausted",
        "dead_child",
        "orphaned",
        "stalled",
        "version_orphaned",
    ]
    assert all(not v.matched and v.reason for v in verdicts)
    assert verdicts[0].reason == "rule is switched off"


def test_live_workflows_match_nothing() -> None:
    """A normally running PENDING workflow and a queued one: no rule matches either."""
    registry = (RegistryEntry("app", "1", "job", 2),)
    running = wf(recovery_attempts=1, updated_at=NOW - 1_000, started_at_ms=NOW - 1_000)
    queued = wf(workflow_id="w2", status="ENQUEUED", executor_id=None, recovery_attempts=0)
    s = snap(executor(), workflows=(running, queued), registry=registry)
    assert decide(s, SETTINGS) == []
    everything = RuleSettings.build(
        {"exhausted", "dead_child", "orphaned", "stalled", "version_orphaned"}
    )
    assert decide(s, everything.with_values(stall_timeout_ms=30_000)) == []
