"""`stalled` (opt-in): a PENDING workflow of an app that does not take part in the liveness
contract, judged by progress, never by the age of its claim.

Such an app's executors never register, so nothing says whether they live. A row is
handed over (re-enqueued as DBOS 3.x recovery does, or dead-lettered with no attempt
left) only when neither it nor any other PENDING row of its executor shows progress (a
claim, an update, a step checkpoint) for the stall timeout, per workflow name when its
single steps are long (`SUPERVISOR_STALL_TIMEOUTS=report=3600`). Off by default: a
workflow blocked in one long step, or sleeping durably, is indistinguishable from a dead
one; enable it only where that timeout is longer than any step or sleep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from services.shared.config import env_field
from services.supervisor.model import Action, Snapshot, Status, Verdict, WorkflowRow
from services.supervisor.model.schema import DbosSchema
from services.supervisor.rules import liveness
from services.supervisor.rules.attempts import hand_over
from services.supervisor.rules.base import (
    CommonSettings,
    GuardColumn,
    PrefilterContext,
    Rule,
    Signal,
    SqlParams,
    stall_timeout_field,
)
from services.supervisor.rules.liveness import HolderState


@dataclass(frozen=True)
class StalledConfig:
    stall_timeout_ms: int = stall_timeout_field()
    per_name_ms: dict[str, int | None] = env_field(
        "SUPERVISOR_STALL_TIMEOUTS",
        {},
        "name_map_seconds_ms",
        "per-name stall timeouts for `stalled`, seconds: `report=3600,etl=600`",
        shown_default="",
    )

    def timeout_for(self, name: str | None) -> int:
        value = self.per_name_ms.get(name or "")
        return self.stall_timeout_ms if value is None else value

    @property
    def smallest_ms(self) -> int:
        values = [v for v in self.per_name_ms.values() if v is not None]
        return min([self.stall_timeout_ms, *values])


class Stalled(Rule[StalledConfig]):
    name = "stalled"
    summary = "PENDING of an unregistered executor, no progress for the stall timeout: handed over"
    statuses = (Status.PENDING,)
    reads = frozenset(
        {Signal.EXECUTORS, Signal.REGISTRY, Signal.CHECKPOINTS, Signal.EXECUTOR_PROGRESS}
    )
    actions: ClassVar[frozenset[Action]] = frozenset({Action.REENQUEUE, Action.DEAD_LETTER})
    config_type = StalledConfig
    default_enabled = False
    guard_columns = (*liveness.PROGRESS_GUARD_COLUMNS, GuardColumn("holder", "text"))

    def evaluate(
        self, wf: WorkflowRow, snap: Snapshot, common: CommonSettings, config: StalledConfig
    ) -> Verdict:
        if wf.status != Status.PENDING:
            return self.no_match(wf, f"status is {wf.status}, not PENDING")
        found = liveness.holder(wf, snap, report_grace_ms=0)
        if found.state is not HolderState.UNREGISTERED:
            return self.no_match(wf, f"{found.why}: judged by the liveness contract")
        timeout = config.timeout_for(wf.name)
        evidence: dict[str, Any] = {
            "executor_id": wf.executor_id,
            "holder": found.state.value,
            "stall_timeout_ms": timeout,
            "idle_ms": snap.now_ms - wf.last_progress_ms,
        }
        veto = liveness.fresh_evidence(wf, snap, timeout, executor_wide=True)
        if veto is not None:
            return self.no_match(wf, f"{found.why}; {veto}", **evidence)
        why = (
            f"{found.why}; neither it nor any PENDING row of its executor progressed for "
            f"{timeout} ms"
        )
        guard = {**liveness.progress_guard_values(wf, snap), "holder": found.state.value}
        return hand_over(self, wf, snap, common, why, evidence, guard)

    def prefilter(
        self,
        status: Status,
        p: SqlParams,
        ctx: PrefilterContext,
        common: CommonSettings,
        config: StalledConfig,
    ) -> str:
        if status != Status.PENDING:
            return "FALSE"
        registered = p("registered_executors", liveness.registered_ids(ctx.snap), "text[]")
        before = p("stalled_before", ctx.now_ms - config.smallest_ms, "bigint")
        return (
            f"((ws.executor_id IS NULL OR NOT ws.executor_id = ANY({registered})) "
            f"AND {liveness.claimed_sql()} < {before})"
        )

    def guard(self, schema: DbosSchema) -> str:
        return liveness.unregistered_guard_sql(schema)

    def ctes(self, schema: DbosSchema) -> tuple[str, ...]:
        return (liveness.executor_progress_cte(schema),)


RULE = Stalled()
