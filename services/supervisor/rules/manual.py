"""`manual`: an operator's release of one workflow (CLI, admin API, console), guarded and
audited like any decision. Not swept: the operating layer builds its verdicts.

Without `force`, a PENDING row is released only when no live executor could be running it:
its executor is not live, or is live, reports its work, and a report made more than the
report grace after the claim omits it. With `force` the operator takes that on.
"""

from __future__ import annotations

from typing import ClassVar

from services.supervisor.model import Action, Snapshot, Status, Verdict, WorkflowRow
from services.supervisor.model.schema import DbosSchema
from services.supervisor.rules import liveness
from services.supervisor.rules.base import (
    CommonSettings,
    GuardColumn,
    NoConfig,
    PrefilterContext,
    Rule,
    SqlParams,
)
from services.supervisor.rules.liveness import HolderState

ACTIONS = (Action.DEAD_LETTER, Action.CANCEL, Action.REENQUEUE)
REPORT_GRACE_MS = 5_000
# Holder states in which a PENDING row may be released without force.
RELEASABLE = frozenset(
    {
        HolderState.DEAD,
        HolderState.DEAD_BEFORE_CLAIM,
        HolderState.NOT_LISTED,
        HolderState.UNREGISTERED,
    }
)


class ManualRelease(Rule[NoConfig]):
    name = "manual"
    summary = "an operator's release, with a reason"
    statuses = (Status.PENDING, Status.ENQUEUED)
    reads = frozenset()
    actions: ClassVar[frozenset[Action]] = frozenset(ACTIONS)
    may_override_listing = True
    guard_columns = (
        GuardColumn("force", "boolean"),
        GuardColumn("claimed_at", "bigint"),
        GuardColumn("report_grace_ms", "bigint"),
    )

    def holder(self, wf: WorkflowRow, snap: Snapshot) -> liveness.Holder:
        return liveness.holder(wf, snap, REPORT_GRACE_MS)

    def verdict(
        self, wf: WorkflowRow, action: Action, reason: str, evidence: dict[str, object], force: bool
    ) -> Verdict:
        return self.match(
            wf,
            action,
            f"released by hand: {reason}",
            evidence,
            {"force": force, "claimed_at": wf.claimed_at, "report_grace_ms": REPORT_GRACE_MS},
        )

    def evaluate(
        self, wf: WorkflowRow, snap: Snapshot, common: CommonSettings, config: NoConfig
    ) -> Verdict:
        raise NotImplementedError("manual releases are built by the operating layer")

    def prefilter(
        self,
        status: Status,
        p: SqlParams,
        ctx: PrefilterContext,
        common: CommonSettings,
        config: NoConfig,
    ) -> str:
        return "FALSE"

    def guard(self, schema: DbosSchema) -> str:
        could_run = (
            "EXISTS (SELECT 1 FROM holders l WHERE l.executor_id = ws.executor_id "
            "AND l.state IN ('alive', 'suspect') AND (NOT l.reports "
            f"OR {liveness.ms('l.report_at')} <= o.claimed_at + o.report_grace_ms))"
        )
        return f"(o.force OR ws.status <> {Status.PENDING.sql} OR NOT {could_run})"


RULE = ManualRelease()
