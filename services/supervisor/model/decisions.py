"""What a rule decides (a Verdict) and what became of it (an Outcome)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import msgspec

from services.supervisor.model.rows import WorkflowRow


class Action(StrEnum):
    # status MAX_RECOVERY_ATTEMPTS_EXCEEDED, dedup ID and queue released (DBOS's dead-letter)
    DEAD_LETTER = "dead_letter"
    # back to ENQUEUED, dedup ID and attempts kept, fencing token cleared (DBOS 3.x recovery)
    REENQUEUE = "reenqueue"
    # status ERROR with a message, dedup ID released (what DBOS 2.12+ does for a dead child)
    FAIL = "fail"
    # application_version moved to the newest live version (PENDING rows also re-enqueued)
    UPGRADE = "upgrade"
    # status CANCELLED, dedup ID and queue released (DBOS's cancel; operators only)
    CANCEL = "cancel"
    # nothing changes: metric and log only
    ALERT = "alert"

    @property
    def releases_dedup(self) -> bool:
        return self in (Action.DEAD_LETTER, Action.FAIL, Action.CANCEL)

    @property
    def changes_row(self) -> bool:
        return self is not Action.ALERT


class OutcomeKind(StrEnum):
    APPLIED = "applied"
    SKIPPED = "skipped"  # the row moved on, or was locked: the guard did not hold
    DRY_RUN = "dry_run"
    ALERTED = "alerted"  # an ALERT verdict, logged and counted


# Structs, as the rows are (model/rows.py): a mass release builds 30,000 verdicts.
class Verdict(msgspec.Struct, frozen=True):
    """One rule's judgement of one observed workflow.

    `guard` holds what the decision assumed beyond the row itself, by the name of the
    rule's guard column; the store restates it in the UPDATE's WHERE clause.
    """

    rule: str
    workflow: WorkflowRow
    matched: bool
    reason: str
    action: Action | None = None
    evidence: Mapping[str, Any] = {}
    guard: Mapping[str, Any] = {}
    target_version: str | None = None  # UPGRADE
    error_message: str | None = None  # FAIL

    @property
    def workflow_id(self) -> str:
        return self.workflow.workflow_id

    @property
    def changes_row(self) -> bool:
        return self.matched and self.action is not None and self.action.changes_row

    def describe(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "rule": self.rule,
            "matched": self.matched,
            "action": None if self.action is None else self.action.value,
            "reason": self.reason,
            "evidence": dict(self.evidence),
        }


class Outcome(msgspec.Struct, frozen=True):
    verdict: Verdict
    outcome: OutcomeKind
    dedup_id_released: str | None
    reason: str
    audit_id: int | None
    current: Mapping[str, Any] | None = None  # the row as found, when skipped
    # In a dry run: whether the guarded UPDATE would have matched the row at that instant.
    guard_held: bool | None = None

    def describe(self) -> dict[str, Any]:
        return {
            **self.verdict.describe(),
            "outcome": self.outcome.value,
            "dedup_id_released": self.dedup_id_released,
            "outcome_reason": self.reason,
            "audit_id": self.audit_id,
            **({"current": dict(self.current)} if self.current is not None else {}),
            **({"guard_held": self.guard_held} if self.guard_held is not None else {}),
        }
