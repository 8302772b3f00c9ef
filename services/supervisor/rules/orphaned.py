"""`orphaned`: a PENDING workflow whose executor is gone, so DBOS will never recover it.

DBOS recovers a PENDING row only in a process with the same executor ID and application
version. When the executor stops heartbeating, marked itself stopped, or came back as a new
incarnation after the claim, the row is handed over the way DBOS 3.x recovery does it
(re-enqueued, dedup ID and attempts kept), or dead-lettered if it has no attempt left.
"""

from __future__ import annotations

from services.supervisor.observe import Snapshot, WorkflowRow
from services.supervisor.rules.base import (
    Action,
    Guard,
    Verdict,
    executor_alive,
    executor_evidence,
    holder_state,
    max_attempts_for,
    no_match,
    same_application,
)
from services.supervisor.settings import RuleSettings

NAME = "orphaned"


def evaluate(wf: WorkflowRow, snap: Snapshot, settings: RuleSettings) -> Verdict:
    if wf.status != "PENDING":
        return no_match(NAME, wf, f"status is {wf.status}, not PENDING")
    executor = snap.executors.get(wf.executor_id or "")
    state, why = holder_state(wf, snap, settings)
    evidence = {"executor_id": wf.executor_id, **executor_evidence(executor, snap)}
    if state == "alive":
        return no_match(NAME, wf, why, **evidence)
    if state == "unknown":
        stalled = snap.now_ms - wf.claimed_at
        if not settings.assume_unknown_executors_dead:
            return no_match(NAME, wf, f"{why}; left to the other rules", **evidence)
        if stalled <= settings.stall_timeout_ms:
            return no_match(
                NAME, wf, f"{why}; claimed {stalled} ms ago, within the stall timeout", **evidence
            )
        why = f"{why} and the claim is {stalled} ms old (unknown executors assumed dead)"
    limit, source = max_attempts_for(wf, snap, settings)
    attempts = wf.recovery_attempts or 0
    key = ("successors", wf.application_version, wf.application_name)
    if key not in snap.memo:
        snap.memo[key] = sorted(
            e.executor_id
            for e in snap.executors.values()
            if executor_alive(e, snap, settings)
            and e.application_version == wf.application_version
            and same_application(e, wf)
        )
    successors: list[str] = snap.memo[key]
    evidence.update(
        recovery_attempts=attempts,
        max_recovery_attempts=limit,
        limit_source=source,
        live_executors_of_version=successors,
    )
    guard = Guard(executor_not_holding=wf.executor_id, claimed_at=wf.claimed_at)
    # Re-enqueued, the next dequeue counts one more attempt; DBOS dead-letters past max + 1.
    if limit is not None and attempts + 1 > limit + 1:
        return Verdict(
            rule=NAME,
            workflow=wf,
            matched=True,
            action=Action.DEAD_LETTER,
            reason=f"{why}; no recovery attempt left ({attempts} of max {limit} + 1)",
            evidence=evidence,
            guard=guard,
        )
    return Verdict(
        rule=NAME,
        workflow=wf,
        matched=True,
        action=Action.REENQUEUE,
        reason=f"{why}; handed over to a live executor of version {wf.application_version!r}",
        evidence=evidence,
        guard=guard,
    )
