"""`orphaned`: a PENDING workflow whose executor is gone, so DBOS will never recover it.

DBOS recovers a PENDING row only in a process with the same executor ID and application
version. When the process holding the row is dead by the liveness contract (its session
lock gone for the grace, its lease over, or stopped) since after it claimed the row, or it
is alive and its work report omits the row, the row is handed over as DBOS 3.x recovery
does it: re-enqueued with dedup ID and attempts kept and the fencing token (owner_xid)
cleared, so a zombie's next checkpoint fails instead of racing the new owner. With no
attempt left it is dead-lettered. See rules/liveness.py for the reading and its vetoes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from services.shared.config import env_field
from services.supervisor.model import (
    Action,
    ExecutorRow,
    Snapshot,
    Status,
    Verdict,
    WorkflowRow,
)
from services.supervisor.model.schema import DbosSchema
from services.supervisor.rules import liveness
from services.supervisor.rules.attempts import hand_over
from services.supervisor.rules.base import (
    CommonSettings,
    PrefilterContext,
    Rule,
    Signal,
    SqlParams,
    stall_timeout_field,
)
from services.supervisor.rules.liveness import HolderState


@dataclass(frozen=True)
class OrphanedConfig:
    report_grace_ms: int = env_field(
        "SUPERVISOR_REPORT_GRACE",
        5_000,
        "seconds_ms",
        "how long after a claim a live executor's work report must list the workflow",
        minimum=0.5,
    )
    stall_timeout_ms: int = stall_timeout_field()


def live_executors_of_version(wf: WorkflowRow, snap: Snapshot) -> list[str]:
    """Who can take the row over (evidence); the same for every row of a version, so
    computed once per snapshot (a mass release asks 10,000 times)."""
    key = ("live_of_version", wf.application_version, wf.application_name)
    if key not in snap.memo:
        snap.memo[key] = sorted(
            e.executor_id
            for e in snap.live_executors()
            if e.application_version == wf.application_version
            and (wf.application_name is None or e.application_name == wf.application_name)
        )
    found: list[str] = snap.memo[key]
    return found


def executor_evidence(executor: ExecutorRow, snap: Snapshot) -> dict[str, Any]:
    """The holder's evidence, the same for each of its rows: built once per snapshot."""
    key = ("executor_evidence", executor.executor_id)
    if key not in snap.memo:
        snap.memo[key] = executor.evidence(snap.now_ms)
    found: dict[str, Any] = snap.memo[key]
    return found


class Orphaned(Rule[OrphanedConfig]):
    name = "orphaned"
    summary = "PENDING whose holder is dead since the claim, or alive without it: handed over"
    statuses = (Status.PENDING,)
    reads = frozenset(
        {Signal.EXECUTORS, Signal.REGISTRY, Signal.CHECKPOINTS, Signal.EXECUTOR_PROGRESS}
    )
    actions: ClassVar[frozenset[Action]] = frozenset({Action.REENQUEUE, Action.DEAD_LETTER})
    config_type = OrphanedConfig
    guard_columns = liveness.GUARD_COLUMNS

    def evaluate(
        self, wf: WorkflowRow, snap: Snapshot, common: CommonSettings, config: OrphanedConfig
    ) -> Verdict:
        if wf.status != Status.PENDING:
            return self.no_match(wf, f"status is {wf.status}, not PENDING")
        found = liveness.holder(wf, snap, config.report_grace_ms)
        executor = found.executor
        evidence: dict[str, Any] = {
            "executor_id": wf.executor_id,
            "holder": found.state.value,
            **({} if executor is None else executor_evidence(executor, snap)),
        }
        if found.state in (HolderState.LISTED, HolderState.ALIVE, HolderState.UNREGISTERED):
            return self.no_match(wf, found.why, **evidence)
        assert executor is not None
        why = found.why
        if found.state is HolderState.DEAD_BEFORE_CLAIM:
            idle = snap.now_ms - wf.last_progress_ms
            if idle <= config.stall_timeout_ms:
                return self.no_match(
                    wf,
                    f"{why}; waiting for evidence of death newer than the claim "
                    f"(or {config.stall_timeout_ms} ms without progress; {idle} ms so far)",
                    **evidence,
                )
            why = f"{why}, and it made no progress for {idle} ms since"
        veto = liveness.fresh_evidence(
            wf,
            snap,
            executor.grace_ms,
            executor_wide=found.state is not HolderState.NOT_LISTED,
        )
        if veto is not None:
            return self.no_match(wf, f"{why}; but {veto}", **evidence)
        evidence["live_executors_of_version"] = live_executors_of_version(wf, snap)
        guard = liveness.guard_values(wf, snap, found, config.report_grace_ms)
        return hand_over(self, wf, snap, common, why, evidence, guard)

    def prefilter(
        self,
        status: Status,
        p: SqlParams,
        ctx: PrefilterContext,
        common: CommonSettings,
        config: OrphanedConfig,
    ) -> str:
        if status != Status.PENDING:
            return "FALSE"
        return liveness.prefilter_sql(p, ctx, config.report_grace_ms)

    def reads_every_pending_row_of(self, ctx: PrefilterContext) -> frozenset[str]:
        return liveness.fully_read_executors(ctx)

    def guard(self, schema: DbosSchema) -> str:
        return liveness.guard_sql(schema)

    def ctes(self, schema: DbosSchema) -> tuple[str, ...]:
        return (liveness.executor_progress_cte(schema),)


RULE = Orphaned()
