"""`version_orphaned`: in-flight workflows of an application version nobody runs any more.

DBOS dequeues (and recovers) a row only in a process of the row's application version. When
no live executor of that version has been seen for `SUPERVISOR_VERSION_ORPHAN_AFTER`, the
deployment's policy applies: `alert` (metric and log only), `dead_letter`, or `upgrade` (move
the row to the newest live version of the application, the open equivalent of DBOS's
enterprise auto-upgrade).
"""

from __future__ import annotations

from services.supervisor.observe import Snapshot, WorkflowRow
from services.supervisor.rules.base import (
    Action,
    Guard,
    Verdict,
    executor_alive,
    holder_state,
    no_match,
    same_application,
)
from services.supervisor.settings import RuleSettings

NAME = "version_orphaned"


def newest_live_version(wf: WorkflowRow, snap: Snapshot, settings: RuleSettings) -> str | None:
    """The version of the most recently started live executor of the same application."""
    live = [
        e
        for e in snap.executors.values()
        if executor_alive(e, snap, settings) and same_application(e, wf)
    ]
    if not live:
        return None
    return max(live, key=lambda e: (e.started_at_ms, e.application_version)).application_version


def evaluate(wf: WorkflowRow, snap: Snapshot, settings: RuleSettings) -> Verdict:
    if wf.status not in ("PENDING", "ENQUEUED"):
        return no_match(NAME, wf, f"status is {wf.status}, not PENDING or ENQUEUED")
    version = wf.application_version
    if version is None:
        return no_match(NAME, wf, "no application version: any latest-version executor takes it")
    if wf.status == "PENDING":
        state, why = holder_state(wf, snap, settings)
        if state == "alive":
            return no_match(NAME, wf, why)
    of_version = [
        e
        for e in snap.executors.values()
        if e.application_version == version and same_application(e, wf)
    ]
    if any(executor_alive(e, snap, settings) for e in of_version):
        return no_match(NAME, wf, f"version {version!r} has a live executor")
    if of_version:
        last_live = max(e.stopped_at_ms or e.last_seen_ms for e in of_version)
    elif settings.assume_unknown_executors_dead:
        last_live = wf.updated_at
    else:
        return no_match(NAME, wf, f"no executor of version {version!r} ever heartbeated here")
    dead_for = snap.now_ms - last_live
    evidence = {
        "application_version": version,
        "version_dead_for_ms": dead_for,
        "after_ms": settings.version_orphan_after_ms,
        "policy": settings.version_orphan_policy,
    }
    if dead_for <= settings.version_orphan_after_ms:
        return no_match(
            NAME,
            wf,
            f"version {version!r} without a live executor for only {dead_for} ms",
            **evidence,
        )
    reason = f"version {version!r} has had no live executor for {dead_for} ms"
    guard = Guard(version_not_live=version)
    if wf.status == "PENDING":
        guard = Guard(
            version_not_live=version, executor_not_holding=wf.executor_id, claimed_at=wf.claimed_at
        )
    policy = settings.version_orphan_policy
    if policy == "dead_letter":
        return Verdict(NAME, wf, True, reason, Action.DEAD_LETTER, evidence, guard)
    if policy == "upgrade":
        target = newest_live_version(wf, snap, settings)
        if target is not None and target != version:
            evidence["target_version"] = target
            return Verdict(
                NAME, wf, True, f"{reason}; moved to {target!r}", Action.UPGRADE, evidence, guard,
                target_version=target,
            )  # fmt: skip
        reason = f"{reason}; no live version to upgrade to"
    return Verdict(NAME, wf, True, reason, Action.ALERT, evidence)
