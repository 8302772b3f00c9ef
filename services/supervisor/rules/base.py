"""What every rule shares: the verdict type, the actions, and the liveness reading.

Rules are pure: a rule is a function of one observed workflow, the snapshot it was read in,
and the settings. No I/O, no clock: time is the snapshot's database time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services.supervisor.observe import ExecutorRow, Snapshot, WorkflowRow
from services.supervisor.settings import RuleSettings


class Action(StrEnum):
    # status MAX_RECOVERY_ATTEMPTS_EXCEEDED, dedup ID and queue released (DBOS's dead-letter)
    DEAD_LETTER = "dead_letter"
    # back to ENQUEUED, dedup ID and attempts kept (DBOS 3.x recovery)
    REENQUEUE = "reenqueue"
    # status ERROR with a message, dedup ID released (what DBOS 2.12+ does for a dead child)
    FAIL = "fail"
    # application_version moved to the newest live version (PENDING rows also re-enqueued)
    UPGRADE = "upgrade"
    # status CANCELLED, dedup ID and queue released (DBOS's cancel; operators only)
    CANCEL = "cancel"
    # nothing changes: metric and log only
    ALERT = "alert"


# Actions that free the deduplication ID the workflow holds.
RELEASES_DEDUP = frozenset({Action.DEAD_LETTER, Action.FAIL, Action.CANCEL})


@dataclass(frozen=True)
class Guard:
    """What the decision assumed beyond the row itself; actions turn it into SQL."""

    # The executor had no live incarnation that could hold a claim made at `claimed_at`.
    executor_not_holding: str | None = None
    claimed_at: int | None = None
    # No live executor of this application version.
    version_not_live: str | None = None
    # This child is still in this status, and the parent wrote no step after `last_step_ms`.
    dead_child: str | None = None
    dead_child_status: str | None = None
    last_step_ms: int | None = None


@dataclass(frozen=True)
class Verdict:
    rule: str
    workflow: WorkflowRow
    matched: bool
    reason: str
    action: Action | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    guard: Guard = field(default_factory=Guard)
    target_version: str | None = None  # UPGRADE
    error_message: str | None = None  # FAIL

    @property
    def workflow_id(self) -> str:
        return self.workflow.workflow_id

    @property
    def changes_row(self) -> bool:
        return self.matched and self.action is not None and self.action is not Action.ALERT

    def describe(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "rule": self.rule,
            "matched": self.matched,
            "action": None if self.action is None else self.action.value,
            "reason": self.reason,
            "evidence": self.evidence,
        }


def no_match(rule: str, wf: WorkflowRow, reason: str, **evidence: Any) -> Verdict:
    return Verdict(rule=rule, workflow=wf, matched=False, reason=reason, evidence=evidence)


def executor_alive(executor: ExecutorRow, snap: Snapshot, settings: RuleSettings) -> bool:
    """Heartbeating, and not marked stopped."""
    return (
        executor.stopped_at_ms is None
        and snap.now_ms - executor.last_seen_ms <= settings.executor_timeout_ms
    )


def executor_evidence(executor: ExecutorRow | None, snap: Snapshot) -> dict[str, Any]:
    if executor is None:
        return {"executor_known": False}
    return {
        "executor_known": True,
        "executor_version": executor.application_version,
        "heartbeat_age_ms": snap.now_ms - executor.last_seen_ms,
        "executor_stopped": executor.stopped_at_ms is not None,
        "executor_started_at": executor.started_at_ms,
    }


def holder_state(wf: WorkflowRow, snap: Snapshot, settings: RuleSettings) -> tuple[str, str]:
    """Whether the process that claimed this PENDING row can still be running it.

    Returns (state, explanation), state one of:
    - "alive": its executor heartbeats and has not restarted since the claim;
    - "dead": heartbeat older than the timeout, marked stopped, or the executor restarted
      (a new incarnation, possibly of another version) after the claim;
    - "unknown": the executor never heartbeated here (an app that does not heartbeat).
    """
    executor = snap.executors.get(wf.executor_id or "")
    if executor is None:
        return "unknown", f"executor {wf.executor_id!r} never heartbeated"
    if executor.stopped_at_ms is not None:
        return "dead", f"executor {wf.executor_id!r} marked itself stopped"
    age = snap.now_ms - executor.last_seen_ms
    if age > settings.executor_timeout_ms:
        return "dead", (
            f"executor {wf.executor_id!r} last heartbeat {age} ms ago "
            f"(timeout {settings.executor_timeout_ms} ms)"
        )
    if executor.started_at_ms > wf.claimed_at + settings.restart_tolerance_ms:
        return "dead", (
            f"executor {wf.executor_id!r} restarted (as version "
            f"{executor.application_version!r}) after this workflow was claimed"
        )
    return "alive", f"executor {wf.executor_id!r} is alive (heartbeat {age} ms ago)"


def max_attempts_for(
    wf: WorkflowRow, snap: Snapshot, settings: RuleSettings
) -> tuple[int | None, str]:
    """The workflow name's max_recovery_attempts and where it came from.

    Settings overrides win; then the registry (the exact application and version first, else
    the most permissive value published for the name by any version); else DBOS's default.
    """
    name = wf.name or ""
    if name in settings.max_recovery_overrides:
        return settings.max_recovery_overrides[name], "settings override"
    key = ("max_attempts", name, wf.application_version, wf.application_name)
    if key not in snap.memo:
        snap.memo[key] = _max_attempts_from_registry(wf, name, snap, settings)
    result: tuple[int | None, str] = snap.memo[key]
    return result


def _max_attempts_from_registry(
    wf: WorkflowRow, name: str, snap: Snapshot, settings: RuleSettings
) -> tuple[int | None, str]:
    published = [entry for entry in snap.registry if entry.workflow_name == name]
    exact = [
        entry
        for entry in published
        if entry.application_version == wf.application_version
        and (wf.application_name is None or entry.application_name == wf.application_name)
    ]
    chosen = exact or published
    if chosen:
        values = [entry.max_recovery_attempts for entry in chosen]
        source = "registry" if exact else "registry (other version)"
        if any(value is None for value in values):
            return None, source
        return max(v for v in values if v is not None), source
    return settings.default_max_recovery_attempts, "DBOS default"


def live_versions(snap: Snapshot, settings: RuleSettings) -> list[ExecutorRow]:
    return [e for e in snap.executors.values() if executor_alive(e, snap, settings)]


def same_application(executor: ExecutorRow, wf: WorkflowRow) -> bool:
    return wf.application_name is None or executor.application_name == wf.application_name
