"""The supervisor's operations on a database: scan, explain, sweep, release, audit.

Used by the service loop (as leader), the admin API and the CLI alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from services.shared.schema import SCHEMA as LIMBO
from services.supervisor import metrics
from services.supervisor.actions import APPLIED, Outcome, apply_batch
from services.supervisor.dbos_schema import DbosSchema
from services.supervisor.observe import Snapshot, WorkflowRow, observe, observe_one
from services.supervisor.rules import RULES, Action, Verdict, decide, explain
from services.supervisor.rules.base import executor_alive, holder_state
from services.supervisor.settings import Settings

log = structlog.get_logger("limbo.supervisor")

TERMINAL = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
MANUAL_ACTIONS = (Action.DEAD_LETTER, Action.CANCEL, Action.REENQUEUE)
# Verdicts applied per transaction: one guarded UPDATE per kind of action covers them.
ROWS_PER_TRANSACTION = 500
# Rules whose verdict rests on executors' heartbeats being stale.
HEARTBEAT_RULES = frozenset({"orphaned", "version_orphaned"})


class WorkflowNotFound(LookupError):
    pass


class NotReleasable(RuntimeError):
    """A hand release that would be wrong (terminal row, or a live executor without force)."""


@dataclass
class SweepReport:
    dry_run: bool
    observed: int = 0
    truncated: bool = False
    candidates: list[Verdict] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    deferred: int = 0  # candidates left for the next sweep (batch bound)
    duration_s: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "observed": self.observed,
            "truncated": self.truncated,
            "candidates": len(self.candidates),
            "deferred": self.deferred,
            "duration_s": round(self.duration_s, 4),
            "outcomes": [outcome.describe() for outcome in self.outcomes],
            "alerts": [v.describe() for v in self.candidates if v.action is Action.ALERT],
        }


class Supervisor:
    def __init__(self, pool: asyncpg.Pool, schema: DbosSchema, settings: Settings) -> None:
        self.pool = pool
        self.schema = schema
        self.settings = settings
        self._alerted: set[tuple[str, int]] = set()
        self._dry_reported: set[tuple[str, int, str]] = set()

    # -- reading --------------------------------------------------------------------------
    async def snapshot(self) -> Snapshot:
        async with self.pool.acquire() as conn:
            return await observe(conn, self.schema, self.settings.scan_limit, self.settings.rules)

    async def candidates(self) -> tuple[Snapshot, list[Verdict]]:
        snap = await self.snapshot()
        return snap, decide(snap, self.settings.rules)

    async def explain(self, workflow_id: str) -> tuple[WorkflowRow, list[Verdict]]:
        async with self.pool.acquire() as conn:
            snap = await observe_one(conn, self.schema, workflow_id)
        if snap is None:
            raise WorkflowNotFound(workflow_id)
        wf = snap.workflows[0]
        return wf, explain(wf, snap, self.settings.rules)

    async def audit(
        self, *, workflow_id: str | None = None, limit: int = 50, before_id: int | None = None
    ) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT id, at, actor, rule, action, workflow_id, outcome, dry_run,
                           dedup_id_released, reason, evidence
                      FROM {LIMBO}.audit
                     WHERE ($1::text IS NULL OR workflow_id = $1)
                       AND ($2::bigint IS NULL OR id < $2)
                     ORDER BY id DESC LIMIT $3""",
                workflow_id,
                before_id,
                limit,
            )
        return [{**dict(row), "at": row["at"].isoformat()} for row in rows]

    # -- acting ---------------------------------------------------------------------------
    async def _act(self, verdict: Verdict, *, dry_run: bool, note: str | None = None) -> Outcome:
        [outcome] = await self._act_batch([verdict], dry_run=dry_run, note=note)
        return outcome

    async def _act_batch(
        self, verdicts: list[Verdict], *, dry_run: bool, note: str | None = None
    ) -> list[Outcome]:
        """Apply verdicts in one transaction; one decision log line and metric each."""
        async with self.pool.acquire() as conn:
            outcomes = await apply_batch(
                conn,
                self.schema,
                verdicts,
                actor=self.settings.actor,
                dry_run=dry_run,
                rules=self.settings.rules,
                lock_timeout_ms=self.settings.lock_timeout_ms,
                note=note,
            )
        for outcome in outcomes:
            verdict = outcome.verdict
            action = verdict.action.value if verdict.action else "none"
            metrics.ACTIONS.labels(rule=verdict.rule, action=action, outcome=outcome.outcome).inc()
            if outcome.outcome == APPLIED and outcome.dedup_id_released is not None:
                metrics.DEDUP_RELEASED.labels(rule=verdict.rule).inc()
            log_line = log.warning if outcome.outcome == "skipped" else log.info
            log_line(
                "decision",
                workflow_id=verdict.workflow_id,
                rule=verdict.rule,
                action=action,
                outcome=outcome.outcome,
                dry_run=dry_run,
                dedup_id_released=outcome.dedup_id_released,
                reason=verdict.reason,
                outcome_reason=outcome.reason,
                evidence=verdict.evidence,
                audit_id=outcome.audit_id,
            )
        return outcomes

    def _alert(self, verdict: Verdict) -> None:
        key = (verdict.workflow_id, verdict.workflow.updated_at)
        if key in self._alerted:
            return
        self._alerted.add(key)
        if len(self._alerted) > 100_000:
            self._alerted.clear()
        metrics.ACTIONS.labels(rule=verdict.rule, action="alert", outcome="alerted").inc()
        log.warning(
            "decision",
            workflow_id=verdict.workflow_id,
            rule=verdict.rule,
            action="alert",
            outcome="alerted",
            dedup_id_released=None,
            reason=verdict.reason,
            evidence=verdict.evidence,
        )

    @staticmethod
    def _dry_key(verdict: Verdict) -> tuple[str, int, str]:
        return (verdict.workflow_id, verdict.workflow.updated_at, verdict.rule)

    def _record_metrics(self, snap: Snapshot, verdicts: list[Verdict]) -> None:
        by_rule = {name: 0 for name, _ in RULES}
        for verdict in verdicts:
            by_rule[verdict.rule] += 1
        for rule, count in by_rule.items():
            metrics.CANDIDATES.labels(rule=rule).set(count)
        oldest = min((v.workflow.updated_at for v in verdicts), default=None)
        metrics.OLDEST_CANDIDATE.set(0 if oldest is None else max(0, snap.now_ms - oldest) / 1000)
        alive = sum(executor_alive(e, snap, self.settings.rules) for e in snap.executors.values())
        metrics.EXECUTORS.labels(state="alive").set(alive)
        metrics.EXECUTORS.labels(state="dead").set(len(snap.executors) - alive)
        metrics.IN_FLIGHT.set(len(snap.workflows))

    async def sweep(
        self,
        *,
        dry_run: bool | None = None,
        still_leader: Callable[[], bool] | None = None,
        repeat_dry_runs: bool = True,
        trust_heartbeats: bool = True,
    ) -> SweepReport:
        """Observe, decide, act on at most `batch_size` verdicts (oldest first).

        The service loop passes `repeat_dry_runs=False`: in dry-run mode a decision on an
        unchanged row is logged and audited once, not on every poll. It passes
        `trust_heartbeats=False` right after (re)connecting: the rules that judge executors
        by their heartbeats then wait (see Runner.heartbeats_trusted).
        """
        dry = self.settings.dry_run if dry_run is None else dry_run
        started = time.monotonic()
        report = SweepReport(dry_run=dry)
        try:
            snap, verdicts = await self.candidates()
            if not trust_heartbeats:
                held = [v for v in verdicts if v.rule in HEARTBEAT_RULES]
                if held:
                    log.info("heartbeat rules held after reconnect", candidates=len(held))
                verdicts = [v for v in verdicts if v.rule not in HEARTBEAT_RULES]
            report.observed, report.truncated, report.candidates = (
                len(snap.workflows),
                snap.truncated,
                verdicts,
            )
            self._record_metrics(snap, verdicts)
            if snap.truncated:
                log.warning(
                    "scan truncated: more in-flight workflows than SUPERVISOR_SCAN_LIMIT",
                    scan_limit=self.settings.scan_limit,
                )
            changing = [v for v in verdicts if v.changes_row]
            if dry and not repeat_dry_runs:
                changing = [v for v in changing if self._dry_key(v) not in self._dry_reported]
            for verdict in verdicts:
                if verdict.action is Action.ALERT:
                    self._alert(verdict)
            batch = changing[: self.settings.batch_size]
            report.deferred = len(changing) - len(batch)
            for start in range(0, len(batch), ROWS_PER_TRANSACTION):
                if still_leader is not None and not still_leader():
                    report.deferred += len(batch) - start
                    break
                chunk = batch[start : start + ROWS_PER_TRANSACTION]
                report.outcomes.extend(await self._act_batch(chunk, dry_run=dry))
                if dry:
                    if len(self._dry_reported) > 100_000:
                        self._dry_reported.clear()
                    self._dry_reported.update(self._dry_key(v) for v in chunk)
        except BaseException:
            metrics.SWEEPS.labels(outcome="error").inc()
            raise
        report.duration_s = time.monotonic() - started
        metrics.SWEEPS.labels(outcome="ok").inc()
        metrics.SWEEP_SECONDS.observe(report.duration_s)
        return report

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
        if wf.status not in ("PENDING", "ENQUEUED"):
            raise NotReleasable(f"workflow {workflow_id} is {wf.status}: nothing to release")
        if action is Action.REENQUEUE and wf.status != "PENDING":
            raise NotReleasable(f"workflow {workflow_id} is {wf.status}: only PENDING re-enqueues")
        evidence: dict[str, Any] = {"requested_action": action.value}
        if wf.status == "PENDING":
            state, why = holder_state(wf, snap, self.settings.rules)
            evidence["executor_state"] = state
            if state == "alive" and not force:
                raise NotReleasable(f"{why}: it may be running; use force to release anyway")
        verdict = Verdict(
            rule="manual",
            workflow=wf,
            matched=True,
            reason=f"released by hand: {reason}",
            action=action,
            evidence=evidence,
        )
        return await self._act(verdict, dry_run=dry_run, note=reason)
