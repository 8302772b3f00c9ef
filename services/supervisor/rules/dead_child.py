"""`dead_child`: a PENDING parent awaiting a child DBOS will never finish (the seed's limbo).

On DBOS < 2.12 a parent awaiting a child in MAX_RECOVERY_ATTEMPTS_EXCEEDED (or CANCELLED)
polls forever. When such a parent has made no progress (no status change, no step, no child
change) for the stall timeout, it is failed with ERROR naming the child, and its
deduplication ID released: what DBOS 2.12+ does by itself.
"""

from __future__ import annotations

from services.supervisor.observe import Snapshot, WorkflowRow
from services.supervisor.rules.base import Action, Guard, Verdict, no_match
from services.supervisor.settings import RuleSettings

NAME = "dead_child"


def evaluate(wf: WorkflowRow, snap: Snapshot, settings: RuleSettings) -> Verdict:
    if wf.status != "PENDING":
        return no_match(NAME, wf, f"status is {wf.status}, not PENDING")
    children = snap.dead_children.get(wf.workflow_id, ())
    if not children:
        return no_match(NAME, wf, "no child in MAX_RECOVERY_ATTEMPTS_EXCEEDED or CANCELLED")
    last_step = snap.last_step_ms.get(wf.workflow_id, 0)
    last_progress = max(wf.updated_at, last_step, *(c.updated_at for c in children))
    idle = snap.now_ms - last_progress
    child = children[0]
    evidence = {
        "dead_children": [{"workflow_id": c.child_id, "status": c.status} for c in children],
        "last_progress_ms": last_progress,
        "idle_ms": idle,
        "stall_timeout_ms": settings.stall_timeout_ms,
    }
    if idle <= settings.stall_timeout_ms:
        return no_match(
            NAME,
            wf,
            f"child {child.child_id} is {child.status} but the parent progressed {idle} ms ago",
            **evidence,
        )
    message = (
        f"Awaited workflow {child.child_id} is {child.status}: it will never complete "
        f"(released by the limbo supervisor after {idle} ms without progress)"
    )
    return Verdict(
        rule=NAME,
        workflow=wf,
        matched=True,
        action=Action.FAIL,
        reason=f"awaits child {child.child_id} ({child.status}); no progress for {idle} ms",
        evidence=evidence,
        guard=Guard(
            dead_child=child.child_id, dead_child_status=child.status, last_step_ms=last_step
        ),
        error_message=message,
    )
