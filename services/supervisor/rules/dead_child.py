"""`dead_child`: a PENDING parent awaiting a child DBOS will never finish (the seed's limbo).

On DBOS < 2.12 a parent awaiting a child in MAX_RECOVERY_ATTEMPTS_EXCEEDED (or CANCELLED)
polls forever. When such a parent has made no progress (no status change, no step, no child
change) for the stall timeout, it is failed with ERROR naming the child, and its
deduplication ID released: what DBOS 2.12+ does by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.supervisor.model import DEAD_CHILD, Action, Snapshot, Status, Verdict, WorkflowRow
from services.supervisor.model.schema import DbosSchema
from services.supervisor.model.status import sql_list
from services.supervisor.rules.base import (
    CommonSettings,
    GuardColumn,
    PrefilterContext,
    Rule,
    Signal,
    SqlParams,
    stall_timeout_field,
)
from services.supervisor.rules.liveness import claimed_sql, newer_checkpoint_sql


@dataclass(frozen=True)
class DeadChildConfig:
    stall_timeout_ms: int = stall_timeout_field()


def has_dead_child_sql(schema: DbosSchema, parent: str) -> str:
    """A dead child of the row, by one index probe: by parent_workflow_id where the schema
    has it (3.x: every child DBOS 3 starts carries it; a 3.x parent awaiting a dead child
    fails by itself, so only children started before an upgrade could be missed, and their
    parents are recovered, hence failed, by DBOS 3), else among the parent's steps (2.8).
    The same definition as `store.reads.dead_children_query`."""
    dead = sql_list(DEAD_CHILD)
    if schema.has("parent_workflow_id"):
        return (
            f"EXISTS (SELECT 1 FROM {schema.workflow_status} c "
            f"WHERE c.parent_workflow_id = {parent}.workflow_uuid AND c.status IN {dead})"
        )
    # OFFSET 0: probe per row by key, never a hash of all the steps ever recorded.
    return (
        f"EXISTS (SELECT 1 FROM {schema.operation_outputs} s "
        f"JOIN {schema.workflow_status} c ON c.workflow_uuid = s.child_workflow_id "
        f"WHERE s.workflow_uuid = {parent}.workflow_uuid AND c.status IN {dead} OFFSET 0)"
    )


class DeadChild(Rule[DeadChildConfig]):
    name = "dead_child"
    summary = "a PENDING parent awaiting a dead child, idle for the stall timeout: ERROR"
    statuses = (Status.PENDING,)
    reads = frozenset({Signal.DEAD_CHILDREN, Signal.CHECKPOINTS})
    actions: ClassVar[frozenset[Action]] = frozenset({Action.FAIL})
    config_type = DeadChildConfig
    guard_columns = (
        GuardColumn("dead_child", "text"),
        GuardColumn("dead_child_status", "text"),
        GuardColumn("last_checkpoint", "bigint"),
    )

    def evaluate(
        self, wf: WorkflowRow, snap: Snapshot, common: CommonSettings, config: DeadChildConfig
    ) -> Verdict:
        if wf.status != Status.PENDING:
            return self.no_match(wf, f"status is {wf.status}, not PENDING")
        children = snap.dead_children.get(wf.workflow_id, ())
        if not children:
            return self.no_match(wf, "no child in MAX_RECOVERY_ATTEMPTS_EXCEEDED or CANCELLED")
        last_progress = max(wf.last_progress_ms, *(c.updated_at for c in children))
        idle = snap.now_ms - last_progress
        child = children[0]
        evidence = {
            "dead_children": [{"workflow_id": c.child_id, "status": c.status} for c in children],
            "last_progress_ms": last_progress,
            "idle_ms": idle,
            "stall_timeout_ms": config.stall_timeout_ms,
        }
        if idle <= config.stall_timeout_ms:
            return self.no_match(
                wf,
                f"child {child.child_id} is {child.status} but the parent progressed {idle} ms ago",
                **evidence,
            )
        message = (
            f"Awaited workflow {child.child_id} is {child.status}: it will never complete "
            f"(released by the limbo supervisor after {idle} ms without progress)"
        )
        return self.match(
            wf,
            Action.FAIL,
            f"awaits child {child.child_id} ({child.status}); no progress for {idle} ms",
            evidence,
            guard={
                "dead_child": child.child_id,
                "dead_child_status": child.status,
                "last_checkpoint": wf.last_checkpoint_ms,
            },
            error_message=message,
        )

    def prefilter(
        self,
        status: Status,
        p: SqlParams,
        ctx: PrefilterContext,
        common: CommonSettings,
        config: DeadChildConfig,
    ) -> str:
        """Unchanged for the stall timeout, with a dead child (index probes per row)."""
        if status != Status.PENDING:
            return "FALSE"
        schema = ctx.schema
        before = p("stall_before", ctx.now_ms - config.stall_timeout_ms, "bigint")
        return f"({claimed_sql()} < {before} AND {has_dead_child_sql(schema, 'ws')})"

    def guard(self, schema: DbosSchema) -> str:
        """The child is still dead, and the parent wrote no step since the observation."""
        return (
            f"EXISTS (SELECT 1 FROM {schema.workflow_status} c "
            f"WHERE c.workflow_uuid = o.dead_child AND c.status = o.dead_child_status) "
            f"AND NOT {newer_checkpoint_sql(schema, 'ws', 'o.last_checkpoint')}"
        )


RULE = DeadChild()
