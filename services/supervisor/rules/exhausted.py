"""`exhausted`: a PENDING or ENQUEUED workflow that used up its recovery attempts.

DBOS dead-letters a workflow when an execution would make `recovery_attempts` exceed
`max_recovery_attempts + 1`; a row past that bound that is still in flight is one DBOS
failed to dead-letter (e.g. 2.8's recovery thread stopped at the first such workflow).
"""

from __future__ import annotations

from services.supervisor.observe import Snapshot, WorkflowRow
from services.supervisor.rules.base import Action, Verdict, max_attempts_for, no_match
from services.supervisor.settings import RuleSettings

NAME = "exhausted"


def evaluate(wf: WorkflowRow, snap: Snapshot, settings: RuleSettings) -> Verdict:
    if wf.status not in ("PENDING", "ENQUEUED"):
        return no_match(NAME, wf, f"status is {wf.status}, not PENDING or ENQUEUED")
    limit, source = max_attempts_for(wf, snap, settings)
    attempts = wf.recovery_attempts or 0
    evidence = {
        "recovery_attempts": attempts,
        "max_recovery_attempts": limit,
        "limit_source": source,
    }
    if limit is None:
        return no_match(NAME, wf, f"unlimited recovery attempts ({source})", **evidence)
    if attempts <= limit + 1:
        return no_match(
            NAME,
            wf,
            f"recovery_attempts {attempts} <= max_recovery_attempts + 1 = {limit + 1}",
            **evidence,
        )
    return Verdict(
        rule=NAME,
        workflow=wf,
        matched=True,
        action=Action.DEAD_LETTER,
        reason=(
            f"recovery_attempts {attempts} > max_recovery_attempts + 1 = {limit + 1} ({source})"
        ),
        evidence=evidence,
    )
