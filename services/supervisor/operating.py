"""Operating the supervisor by hand: what is in limbo and why, one workflow explained, a
release with a reason, the audit trail. One layer, with one set of payloads, for the CLI,
the admin API and the console.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.supervisor.leadership import LOCK_NAME
from services.supervisor.model import (
    IN_FLIGHT,
    Action,
    ExecutorRow,
    ExecutorState,
    Outcome,
    Snapshot,
    Status,
    Verdict,
)
from services.supervisor.model.schema import DbosSchema
from services.supervisor.rules import RULE_NAMES, decide, explain, manual
from services.supervisor.settings import Settings
from services.supervisor.store import audit as audit_store
from services.supervisor.store import executors as executor_store
from services.supervisor.store import history as history_store
from services.supervisor.store import reads
from services.supervisor.store import supervisors as supervisor_store
from services.supervisor.store.audit import AuditFilter
from services.supervisor.store.reads import observe, observe_one
from services.supervisor.sweeping import Sweeper, SweepReport

MANUAL_ACTIONS: tuple[Action, ...] = manual.ACTIONS
# What each hand release writes (the operator reads it before confirming).
MANUAL_EFFECTS: dict[Action, str] = {
    Action.DEAD_LETTER: (
        "status MAX_RECOVERY_ATTEMPTS_EXCEEDED; its deduplication ID and queue slot released "
        "(DBOS's dead-letter)"
    ),
    Action.CANCEL: "status CANCELLED; its deduplication ID and queue slot released (DBOS's cancel)",
    Action.REENQUEUE: (
        "handed over: back to ENQUEUED for a live executor, deduplication ID and attempts kept "
        "(DBOS's recovery)"
    ),
}
# Every outcome an audit row can have, every action it can name, every rule: the audit
# page's filter choices.
AUDIT_OUTCOMES = ("applied", "skipped", "dry_run")
AUDIT_ACTIONS = tuple(a.value for a in Action if a is not Action.ALERT)
AUDIT_RULES = (*RULE_NAMES, manual.RULE.name)
# Executors as the console groups them: the contract's states, read for a person.
EXECUTOR_GROUPS: dict[ExecutorState, str] = {
    ExecutorState.ALIVE: "alive",
    ExecutorState.SUSPECT: "alive",  # lease valid; its session is reconnecting
    ExecutorState.EXPIRED: "fenced",  # lease over: if its process still runs, it fenced itself
    ExecutorState.LOST: "dead",  # session gone for the grace: process gone (or cut off, fenced)
    ExecutorState.STOPPED: "dead",  # stopped gracefully with nothing running
}


def iso_ms(epoch_ms: int | None) -> str | None:
    """Epoch milliseconds (database time) as ISO 8601 in UTC."""
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


class WorkflowNotFound(LookupError):
    pass


class NotReleasable(RuntimeError):
    """A hand release that would be wrong (terminal row, or a live executor without force)."""


@dataclass(frozen=True)
class Candidates:
    snapshot: Snapshot
    verdicts: list[Verdict]

    def describe(self) -> dict[str, Any]:
        return {
            "observed": len(self.snapshot.workflows),
            "truncated": self.snapshot.truncated,
            "candidates": [v.describe() for v in self.verdicts],
        }


@dataclass(frozen=True)
class Explanation:
    snapshot: Snapshot
    verdicts: list[Verdict]

    @property
    def workflow(self) -> Any:
        return self.snapshot.workflows[0]

    @property
    def decision(self) -> Verdict | None:
        return next((v for v in self.verdicts if v.matched), None)

    def describe(self) -> dict[str, Any]:
        wf = self.workflow
        decision = self.decision
        holder = manual.RULE.holder(wf, self.snapshot) if wf.status == Status.PENDING else None
        executor = self.snapshot.executors.get(wf.executor_id or "")
        return {
            "workflow": {"workflow_id": wf.workflow_id, **wf.evidence()},
            "holder": None if holder is None else {"state": holder.state.value, "why": holder.why},
            "executor": None if executor is None else executor.evidence(self.snapshot.now_ms),
            "dead_children": [
                {"workflow_id": c.child_id, "status": c.status}
                for c in self.snapshot.dead_children.get(wf.workflow_id, ())
            ],
            "decision": None if decision is None else decision.describe(),
            "rules": [v.describe() for v in self.verdicts],
        }


def _candidate(verdict: Verdict, now_ms: int) -> dict[str, Any]:
    wf = verdict.workflow
    return {
        **verdict.describe(),
        "name": wf.name,
        "status": wf.status,
        "deduplication_id": wf.deduplication_id,
        "executor_id": wf.executor_id,
        "recovery_attempts": wf.recovery_attempts,
        "last_progress_ms": wf.last_progress_ms,
        "stuck_ms": max(0, now_ms - wf.last_progress_ms),
    }


def _executor(executor: ExecutorRow, snap: Snapshot, holding: list[str]) -> dict[str, Any]:
    return {
        **executor.evidence(snap.now_ms),
        "group": EXECUTOR_GROUPS[executor.state],
        "application_name": executor.application_name,
        "sdk": executor.sdk,
        "started_at_ms": executor.started_at_ms,
        "last_seen_ms": executor.last_seen_ms,
        "lease_expires_ms": executor.lease_expires_ms,
        "running": sorted(executor.running or ()),
        "report_at_ms": executor.report_at_ms,
        # The PENDING rows claimed under its executor ID (the rows its work holds).
        "pending": holding,
    }


@dataclass(frozen=True)
class Overview:
    """Everything the console's overview shows, read at once: executors and the workflows
    each holds, the candidates by rule, recent actions, the supervisors, the history."""

    snapshot: Snapshot
    verdicts: list[Verdict]
    recent_actions: list[dict[str, Any]]
    supervisors: list[dict[str, Any]]
    executor_conflicts: dict[str, int]
    history: list[dict[str, Any]]
    history_bucket_s: int
    instance: str | None = None

    def describe(self) -> dict[str, Any]:
        snap = self.snapshot
        holding: dict[str, list[str]] = {}
        for wf in snap.workflows:
            if wf.status == Status.PENDING and wf.executor_id:
                holding.setdefault(wf.executor_id, []).append(wf.workflow_id)
        by_rule: dict[str, list[dict[str, Any]]] = {}
        for verdict in self.verdicts:
            by_rule.setdefault(verdict.rule, []).append(_candidate(verdict, snap.now_ms))
        oldest = min(self.verdicts, key=lambda v: v.workflow.last_progress_ms, default=None)
        executors = sorted(snap.executors.values(), key=lambda e: (not e.live, e.executor_id))
        return {
            "now_ms": snap.now_ms,
            "now": iso_ms(snap.now_ms),
            "in_flight": len(snap.workflows),
            "truncated": snap.truncated,
            "executors": [_executor(e, snap, holding.get(e.executor_id, [])) for e in executors],
            "unregistered_holders": sorted(set(holding) - set(snap.executors)),
            "candidates": {
                "count": len(self.verdicts),
                "by_rule": by_rule,
                "oldest": None if oldest is None else _candidate(oldest, snap.now_ms),
            },
            "recent_actions": self.recent_actions,
            "supervisors": [
                {**s, "this": s["instance"] == self.instance} for s in self.supervisors
            ],
            "executor_conflicts": self.executor_conflicts,
            "history": {"bucket_s": self.history_bucket_s, "buckets": self.history},
        }


@dataclass(frozen=True)
class WorkflowDetail:
    """One workflow in full: the explanation (every rule's verdict with its evidence, as
    `explain`), its stored error, children, steps and audit history."""

    explanation: Explanation
    error: str | None
    children: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)

    @property
    def releasable(self) -> bool:
        return self.explanation.workflow.status in IN_FLIGHT

    def describe(self) -> dict[str, Any]:
        return {
            **self.explanation.describe(),
            "now_ms": self.explanation.snapshot.now_ms,
            "error": self.error,
            "children": self.children,
            "steps": self.steps,
            "audit": self.audit,
            "releasable": self.releasable,
            "release_actions": {a.value: MANUAL_EFFECTS[a] for a in MANUAL_ACTIONS},
        }


class Operator:
    def __init__(self, pool: asyncpg.Pool, schema: DbosSchema, settings: Settings) -> None:
        self.pool = pool
        self.schema = schema
        self.settings = settings
        self.sweeper = Sweeper(pool, schema, settings)

    async def candidates(self) -> Candidates:
        async with self.pool.acquire() as conn:
            snap = await observe(conn, self.schema, self.settings.scan_limit, self.settings.rules)
        return Candidates(snap, decide(snap, self.settings.rules))

    async def snapshot(self) -> Snapshot:
        """Every in-flight workflow (no prefilter) with its context: the console's overview."""
        async with self.pool.acquire() as conn:
            return await observe(conn, self.schema, self.settings.scan_limit)

    async def explain(self, workflow_id: str) -> Explanation:
        async with self.pool.acquire() as conn:
            snap = await observe_one(conn, self.schema, workflow_id)
        if snap is None:
            raise WorkflowNotFound(workflow_id)
        return Explanation(snap, explain(snap.workflows[0], snap, self.settings.rules))

    async def overview(
        self,
        *,
        recent: int = 10,
        minutes: int = 60,
        bucket_s: int = 60,
        instance: str | None = None,
    ) -> Overview:
        """The console's overview (also `GET /admin/overview`, `limbo-supervisor overview`).
        The candidates are decided on the same unfiltered snapshot the executors come from
        (each rule's prefilter only narrows reads, so they are the sweep's candidates)."""
        async with self.pool.acquire() as conn:
            snap = await observe(conn, self.schema, self.settings.scan_limit)
            recent_actions = await audit_store.page(conn, AuditFilter(), recent)
            supervisors = await supervisor_store.supervisors(conn, LOCK_NAME)
            conflicts = await executor_store.recent_conflicts(conn)
            history = await history_store.history(conn, minutes, bucket_s)
        return Overview(
            snapshot=snap,
            verdicts=decide(snap, self.settings.rules),
            recent_actions=recent_actions,
            supervisors=supervisors,
            executor_conflicts=conflicts,
            history=history,
            history_bucket_s=bucket_s,
            instance=instance,
        )

    async def detail(
        self, workflow_id: str, *, steps: int = 500, audit: int = 50, error_chars: int = 4000
    ) -> WorkflowDetail:
        """One workflow in full: the console's workflow page, `GET /admin/workflows/{id}/detail`,
        `limbo-supervisor show ID`."""
        explanation = await self.explain(workflow_id)
        async with self.pool.acquire() as conn:
            error = await reads.workflow_error(conn, self.schema, workflow_id, error_chars)
            children = await reads.workflow_children(conn, self.schema, workflow_id, steps)
            step_rows = await reads.workflow_steps(
                conn, self.schema, workflow_id, steps, error_chars
            )
            history = await audit_store.page(conn, AuditFilter(workflow_id=workflow_id), audit)
        return WorkflowDetail(explanation, error, children, step_rows, history)

    async def sweep(self, *, dry_run: bool | None = None) -> SweepReport:
        return await self.sweeper.sweep(dry_run=dry_run)

    async def audit(
        self, where: AuditFilter | None = None, *, limit: int = 50
    ) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            return await audit_store.page(conn, where or AuditFilter(), limit)

    async def history(self, *, minutes: int = 60, bucket_s: int = 60) -> list[dict[str, Any]]:
        """Candidates (the leader's samples) and audited actions per time bucket."""
        async with self.pool.acquire() as conn:
            return await history_store.history(conn, minutes, bucket_s)

    async def executor_conflicts(self) -> dict[str, int]:
        async with self.pool.acquire() as conn:
            return await executor_store.recent_conflicts(conn)

    async def release(
        self,
        workflow_id: str,
        *,
        reason: str,
        action: Action = Action.DEAD_LETTER,
        dry_run: bool = False,
        force: bool = False,
    ) -> Outcome:
        """An operator's release of one workflow, guarded and audited like any decision."""
        if action not in MANUAL_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(a.value for a in MANUAL_ACTIONS)}")
        if not reason.strip():
            raise ValueError("a reason is required")
        async with self.pool.acquire() as conn:
            snap = await observe_one(conn, self.schema, workflow_id)
        if snap is None:
            raise WorkflowNotFound(workflow_id)
        wf = snap.workflows[0]
        if wf.status not in IN_FLIGHT:
            raise NotReleasable(f"workflow {workflow_id} is {wf.status}: nothing to release")
        if action is Action.REENQUEUE and wf.status != Status.PENDING:
            raise NotReleasable(f"workflow {workflow_id} is {wf.status}: only PENDING re-enqueues")
        evidence: dict[str, Any] = {"requested_action": action.value, "force": force}
        if wf.status == Status.PENDING:
            holder = manual.RULE.holder(wf, snap)
            evidence["holder"] = holder.state.value
            if holder.state not in manual.RELEASABLE and not force:
                raise NotReleasable(f"{holder.why}: it may be running; use force to release anyway")
        verdict = manual.RULE.verdict(wf, action, reason, evidence, force)
        [outcome] = await self.sweeper.act([verdict], dry_run=dry_run, note=reason)
        return outcome
