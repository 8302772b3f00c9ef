"""Sweeping: observe, decide, act in bounded batches, and say what was done.

Run by the leading supervisor only (service.py decides who leads; a sweeper knows nothing of
leadership). Between sweeps the leader probes the executors' liveness every
`liveness_poll_interval` and sweeps at once when one of them died.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from services.supervisor import metrics
from services.supervisor.model import Action, ExecutorState, Outcome, OutcomeKind, Snapshot, Verdict
from services.supervisor.model.schema import DbosSchema
from services.supervisor.rules import RULE_NAMES, decide_each
from services.supervisor.settings import Settings
from services.supervisor.store import executors as executor_store
from services.supervisor.store.reads import observe
from services.supervisor.store.writes import apply_batch

log = structlog.get_logger("limbo.supervisor")

# Verdicts applied per transaction: one guarded UPDATE per (rule, action) covers them.
# Each UPDATE restates its executors' progress veto once, a walk of their PENDING rows that
# costs as much as ~1,000 rows' writes: 2,000 a statement keeps that a small share (500 made
# it half of a mass release), while a statement still holds its row locks for ~0.2 s.
ROWS_PER_TRANSACTION = 2_000
# Transactions in flight at once in a large sweep (the pools hold at least this many).
PIPELINE = 2
# Verdicts decided between two turns of the event loop, which the transactions in flight
# need to move on (a few milliseconds of deciding).
YIELD_EVERY = 100
# Decisions remembered so that an unchanged row is alerted or dry-run once, not every sweep.
MEMORY = 100_000


@dataclass
class SweepReport:
    dry_run: bool
    observed: int = 0
    truncated: bool = False
    candidates: list[Verdict] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    deferred: int = 0  # candidates left for the next sweep (batch bound, leadership lost)
    forgotten: list[tuple[str, str]] = field(default_factory=list)  # (executor_id, state)
    duration_s: float = 0.0

    @property
    def left_work(self) -> bool:
        """Whether the next sweep should follow at once."""
        return self.deferred > 0 or self.truncated

    def describe(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "observed": self.observed,
            "truncated": self.truncated,
            "candidates": len(self.candidates),
            "deferred": self.deferred,
            "duration_s": round(self.duration_s, 4),
            "outcomes": [outcome.describe() for outcome in self.outcomes],
            "forgotten_executors": [executor_id for executor_id, _ in self.forgotten],
            "alerts": [v.describe() for v in self.candidates if v.action is Action.ALERT],
        }


class _Once:
    """A bounded set of keys already reported (oldest forgotten first)."""

    def __init__(self, limit: int = MEMORY) -> None:
        self._keys: dict[tuple[Any, ...], None] = {}
        self._limit = limit

    def first_time(self, key: tuple[Any, ...]) -> bool:
        if key in self._keys:
            return False
        self._keys[key] = None
        while len(self._keys) > self._limit:
            del self._keys[next(iter(self._keys))]
        return True

    def seen(self, key: tuple[Any, ...]) -> bool:
        return key in self._keys


class Sweeper:
    def __init__(self, pool: asyncpg.Pool, schema: DbosSchema, settings: Settings) -> None:
        self.pool = pool
        self.schema = schema
        self.settings = settings
        self._alerted = _Once()
        self._dry_reported = _Once()
        self._dead: frozenset[tuple[str, str]] = frozenset()

    # -- between sweeps ---------------------------------------------------------------------
    async def probe(self) -> bool:
        """Stamp newly lost sessions and read every executor's state (two tiny queries).
        True when an executor died since the last probe: sweep now."""
        async with self.pool.acquire() as conn:
            await executor_store.mark_lost_sessions(conn)
            states = await conn.fetch(
                "SELECT executor_id, incarnation::text AS incarnation, state "
                "FROM limbo.executor_liveness"
            )
        dead = frozenset(
            (r["executor_id"], r["incarnation"])
            for r in states
            if not ExecutorState(r["state"]).live
        )
        died = bool(dead - self._dead)
        self._dead = dead
        for state in ExecutorState:
            metrics.EXECUTORS.labels(state=state.value).set(
                sum(1 for r in states if r["state"] == state.value)
            )
        return died

    # -- one sweep --------------------------------------------------------------------------
    async def sweep(
        self,
        *,
        dry_run: bool | None = None,
        should_continue: Callable[[], bool] | None = None,
        repeat_dry_runs: bool = True,
    ) -> SweepReport:
        """Observe, decide, act on at most `batch_size` verdicts (oldest first).

        The service loop passes `repeat_dry_runs=False`: in dry-run mode a decision on an
        unchanged row is logged and audited once, not on every poll; and `should_continue`
        (still the leader), checked between transactions.
        """
        dry = self.settings.dry_run if dry_run is None else dry_run
        started = time.monotonic()
        report = SweepReport(dry_run=dry)
        try:
            async with self.pool.acquire() as conn:
                await executor_store.mark_lost_sessions(conn)
                snap = await observe(
                    conn, self.schema, self.settings.scan_limit, self.settings.rules
                )
                conflicts = await executor_store.recent_conflicts(conn)
            report.observed, report.truncated = len(snap.workflows), snap.truncated
            if snap.truncated:
                log.warning("scan_truncated", scan_limit=self.settings.scan_limit)
            verdicts = await self._decide_and_act(
                snap, dry, should_continue, repeat_dry_runs, report
            )
            self._record_metrics(snap, verdicts, conflicts)
            retention = self.settings.executor_retention_ms
            if (
                not dry
                and retention > 0
                and any(
                    executor_store.may_forget(e, snap.now_ms, retention)
                    for e in snap.executors.values()
                )
            ):
                report.forgotten = await self._forget_dead_executors()
        except BaseException:
            metrics.SWEEPS.labels(outcome="error").inc()
            raise
        report.duration_s = time.monotonic() - started
        metrics.SWEEPS.labels(outcome="ok").inc()
        metrics.SWEEP_SECONDS.observe(report.duration_s)
        return report

    async def _decide_and_act(
        self,
        snap: Snapshot,
        dry: bool,
        should_continue: Callable[[], bool] | None,
        repeat_dry_runs: bool,
        report: SweepReport,
    ) -> list[Verdict]:
        """Decide on every observed row, and act on the first `batch_size` verdicts that
        change a row, in transactions of ROWS_PER_TRANSACTION with PIPELINE in flight: each
        starts as soon as its verdicts are decided, so PostgreSQL writes one while this
        process decides the next. Each is a guarded UPDATE of its own rows: their order does
        not change what they may do. Returns every verdict (the candidates)."""
        verdicts: list[Verdict] = []
        chunk: list[Verdict] = []
        in_flight: list[asyncio.Task[list[Outcome]]] = []
        taken = 0
        stopped = False

        async def submit() -> None:
            nonlocal chunk, stopped
            if should_continue is not None and not should_continue():
                stopped = True  # this chunk and every later verdict wait for the next sweep
                report.deferred += len(chunk)
            else:
                if len(in_flight) >= PIPELINE:
                    report.outcomes.extend(await in_flight.pop(0))
                in_flight.append(asyncio.create_task(self.act(chunk, dry_run=dry)))
                if dry:
                    for verdict in chunk:
                        self._dry_reported.first_time(_dry_key(verdict))
            chunk = []

        try:
            for verdict in decide_each(snap, self.settings.rules):
                verdicts.append(verdict)
                if len(verdicts) % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let the transactions in flight move on
                if verdict.action is Action.ALERT:
                    self._alert(verdict)
                if not verdict.changes_row:
                    continue
                if dry and not repeat_dry_runs and self._dry_reported.seen(_dry_key(verdict)):
                    continue
                if stopped or taken >= self.settings.batch_size:
                    report.deferred += 1
                    continue
                taken += 1
                chunk.append(verdict)
                if len(chunk) == ROWS_PER_TRANSACTION:
                    await submit()
            if chunk:
                await submit()
            while in_flight:
                report.outcomes.extend(await in_flight.pop(0))
        finally:
            for task in in_flight:  # after an error: never leave a transaction behind
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        report.candidates = verdicts
        return verdicts

    async def _forget_dead_executors(self) -> list[tuple[str, str]]:
        async with self.pool.acquire() as conn:
            forgotten = await executor_store.forget_dead(
                conn,
                self.schema,
                retention_ms=self.settings.executor_retention_ms,
                actor=self.settings.actor,
            )
        for executor_id, state in forgotten:
            metrics.EXECUTORS_FORGOTTEN.inc()
            log.info(
                "executor_forgotten",
                executor_id=executor_id,
                state=state,
                retention_s=self.settings.executor_retention_ms / 1000,
            )
        return forgotten

    async def act(
        self, verdicts: list[Verdict], *, dry_run: bool, note: str | None = None
    ) -> list[Outcome]:
        """Apply verdicts in one transaction; count them, and log them (one line each, or
        one summary line for a large batch: the audit table has every row)."""
        async with self.pool.acquire() as conn:
            outcomes = await apply_batch(
                conn,
                self.schema,
                verdicts,
                actor=self.settings.actor,
                dry_run=dry_run,
                lock_timeout_ms=self.settings.lock_timeout_ms,
                note=note,
            )
        counted: Counter[tuple[str, str, str]] = Counter()
        released: Counter[str] = Counter()
        for outcome in outcomes:
            verdict = outcome.verdict
            action = verdict.action.value if verdict.action else "none"
            counted[(verdict.rule, action, outcome.outcome.value)] += 1
            if outcome.outcome is OutcomeKind.APPLIED and outcome.dedup_id_released is not None:
                released[verdict.rule] += 1
        for (rule, action, kind), count in counted.items():
            metrics.ACTIONS.labels(rule=rule, action=action, outcome=kind).inc(count)
        for rule, count in released.items():
            metrics.DEDUP_RELEASED.labels(rule=rule).inc(count)
        if len(outcomes) > self.settings.log_summary_above:
            self._log_summary(outcomes, dry_run)
        else:
            for outcome in outcomes:
                self._log_decision(outcome, dry_run)
        return outcomes

    # -- saying it ----------------------------------------------------------------------------
    @staticmethod
    def _log_decision(outcome: Outcome, dry_run: bool) -> None:
        verdict = outcome.verdict
        log_line = log.warning if outcome.outcome is OutcomeKind.SKIPPED else log.info
        log_line(
            "decision",
            workflow_id=verdict.workflow_id,
            rule=verdict.rule,
            action=verdict.action.value if verdict.action else "none",
            outcome=outcome.outcome.value,
            dry_run=dry_run,
            dedup_id_released=outcome.dedup_id_released,
            reason=verdict.reason,
            outcome_reason=outcome.reason,
            evidence=dict(verdict.evidence),
            audit_id=outcome.audit_id,
        )

    @staticmethod
    def _log_summary(outcomes: list[Outcome], dry_run: bool) -> None:
        groups: dict[tuple[str, str, str], list[Outcome]] = {}
        for outcome in outcomes:
            verdict = outcome.verdict
            key = (
                verdict.rule,
                verdict.action.value if verdict.action else "none",
                outcome.outcome.value,
            )
            groups.setdefault(key, []).append(outcome)
        for (rule, action, kind), group in groups.items():
            ids = [o.audit_id for o in group if o.audit_id is not None]
            (log.warning if kind == OutcomeKind.SKIPPED else log.info)(
                "decisions",
                rule=rule,
                action=action,
                outcome=kind,
                dry_run=dry_run,
                count=len(group),
                dedup_ids_released=sum(1 for o in group if o.dedup_id_released is not None),
                first_workflow_ids=[o.verdict.workflow_id for o in group[:5]],
                audit_ids=[min(ids), max(ids)] if ids else None,
                reason=group[0].verdict.reason,
            )

    def _alert(self, verdict: Verdict) -> None:
        if not self._alerted.first_time((verdict.workflow_id, verdict.workflow.updated_at)):
            return
        metrics.ACTIONS.labels(rule=verdict.rule, action="alert", outcome="alerted").inc()
        log.warning(
            "decision",
            workflow_id=verdict.workflow_id,
            rule=verdict.rule,
            action="alert",
            outcome=OutcomeKind.ALERTED.value,
            dedup_id_released=None,
            reason=verdict.reason,
            evidence=dict(verdict.evidence),
        )

    def _record_metrics(
        self, snap: Snapshot, verdicts: list[Verdict], conflicts: dict[str, int]
    ) -> None:
        by_rule = dict.fromkeys(RULE_NAMES, 0)
        for verdict in verdicts:
            by_rule[verdict.rule] += 1
        for rule, count in by_rule.items():
            metrics.CANDIDATES.labels(rule=rule).set(count)
        oldest = min((v.workflow.updated_at for v in verdicts), default=None)
        metrics.OLDEST_CANDIDATE.set(0 if oldest is None else max(0, snap.now_ms - oldest) / 1000)
        for state in ExecutorState:
            metrics.EXECUTORS.labels(state=state.value).set(
                sum(1 for e in snap.executors.values() if e.state is state)
            )
        metrics.EXECUTOR_ID_CONFLICTS.clear()
        for executor_id, refused in conflicts.items():
            metrics.EXECUTOR_ID_CONFLICTS.labels(executor_id=executor_id).set(refused)
        metrics.IN_FLIGHT.set(len(snap.workflows))


def _dry_key(verdict: Verdict) -> tuple[str, int, str]:
    return (verdict.workflow_id, verdict.workflow.updated_at, verdict.rule)
