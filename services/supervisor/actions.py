"""Acting on a verdict: one guarded UPDATE of DBOS's row and its audit row, one transaction.

The UPDATE's WHERE clause restates everything the decision was based on (status, attempts,
executor, version, dedup ID, updated_at, and the rule's own assumptions such as "the executor
is still dead"). A row that moved on since it was observed matches nothing: the action is
skipped, logged and audited as 'skipped'. In dry run nothing in DBOS's tables changes; the
guard is only evaluated, and the audit row says 'dry_run'.

The writes mirror DBOS's own (dbos/_sys_db.py): dead_letter_workflows, reenqueue_for_recovery,
cancel_workflows and the ERROR outcome; on schemas without a column (2.8) it is not set.
"""

from __future__ import annotations

import base64
import json
import pickle
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.shared.schema import SCHEMA as LIMBO
from services.supervisor.dbos_schema import INTERNAL_QUEUE_NAME, DbosSchema
from services.supervisor.observe import NOW_MS, Conn
from services.supervisor.rules.base import RELEASES_DEDUP, Action, Verdict
from services.supervisor.settings import RuleSettings

APPLIED, SKIPPED, DRY_RUN = "applied", "skipped", "dry_run"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    outcome: str  # applied | skipped | dry_run
    dedup_id_released: str | None
    reason: str
    audit_id: int | None
    current: dict[str, Any] | None = None  # the row as found, when skipped

    def describe(self) -> dict[str, Any]:
        return {
            **self.verdict.describe(),
            "outcome": self.outcome,
            "dedup_id_released": self.dedup_id_released,
            "outcome_reason": self.reason,
            "audit_id": self.audit_id,
            **({"current": self.current} if self.current is not None else {}),
        }


class _Params:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def error_payload(message: str, serialization: str | None) -> str:
    """The ERROR outcome in the row's serialization, readable by DBOS without our code."""
    if serialization == "portable_json":
        return json.dumps({"name": "DBOSAwaitedWorkflowDeadChild", "message": message})
    # DBOS's default serializer: base64 of a pickle. A builtin exception unpickles anywhere.
    return base64.b64encode(pickle.dumps(RuntimeError(message))).decode("ascii")


# Columns every supported schema has.
REQUIRED_ALWAYS = frozenset(
    {
        "status",
        "deduplication_id",
        "started_at_epoch_ms",
        "queue_name",
        "updated_at",
        "error",
        "application_version",
    }
)


def _set_clause(schema: DbosSchema, verdict: Verdict, p: _Params) -> list[str]:
    action = verdict.action
    now = NOW_MS
    sets: list[str] = []

    def put(column: str, expression: str) -> None:
        if column in REQUIRED_ALWAYS or schema.has(column):
            sets.append(f"{column} = {expression}")

    if action is Action.DEAD_LETTER:
        put("status", "'MAX_RECOVERY_ATTEMPTS_EXCEEDED'")
        put("owner_xid", "NULL")
        put("deduplication_id", "NULL")
        put("started_at_epoch_ms", "NULL")
        put("queue_name", "NULL")
        put("updated_at", now)
        put("completed_at", now)
    elif action is Action.CANCEL:
        put("status", "'CANCELLED'")
        put("owner_xid", "NULL")
        put("queue_name", "NULL")
        put("deduplication_id", "NULL")
        put("started_at_epoch_ms", "NULL")
        put("updated_at", now)
        put("completed_at", now)
    elif action is Action.FAIL:
        message = verdict.error_message
        assert message is not None
        native = p(error_payload(message, None))
        put("status", "'ERROR'")
        if schema.has("serialization"):
            portable = p(error_payload(message, "portable_json"))
            put(
                "error",
                f"CASE WHEN serialization = 'portable_json' THEN {portable} ELSE {native} END",
            )
        else:
            put("error", native)
        put("deduplication_id", "NULL")
        put("owner_xid", "NULL")
        put("updated_at", now)
        put("completed_at", now)
    elif action in (Action.REENQUEUE, Action.UPGRADE):
        if action is Action.UPGRADE:
            assert verdict.target_version is not None
            put("application_version", p(verdict.target_version))
        if action is Action.REENQUEUE or verdict.workflow.status == "PENDING":
            put("status", "'ENQUEUED'")
            put("owner_xid", "NULL")
            put("started_at_epoch_ms", "NULL")
            put("queue_name", f"coalesce(queue_name, {p(INTERNAL_QUEUE_NAME)})")
        put("updated_at", now)
    else:
        raise ValueError(f"action {action} does not change a row")
    return sets


def _guard_clause(
    schema: DbosSchema, verdict: Verdict, rules: RuleSettings, p: _Params
) -> list[str]:
    wf = verdict.workflow
    where = [
        f"ws.workflow_uuid = {p(wf.workflow_id)}",
        f"ws.status = {p(wf.status)}",
        f"ws.recovery_attempts IS NOT DISTINCT FROM {p(wf.recovery_attempts)}::bigint",
        f"ws.executor_id IS NOT DISTINCT FROM {p(wf.executor_id)}::text",
        f"ws.application_version IS NOT DISTINCT FROM {p(wf.application_version)}::text",
        f"ws.deduplication_id IS NOT DISTINCT FROM {p(wf.deduplication_id)}::text",
        f"ws.updated_at = {p(wf.updated_at)}::bigint",
    ]
    guard = verdict.guard

    def timeout() -> str:
        return f"make_interval(secs => {p(rules.executor_timeout_ms / 1000.0)}::float8)"

    if guard.executor_not_holding is not None:
        assert guard.claimed_at is not None
        # Same reading as rules.base.holder_state: no live incarnation older than the claim.
        where.append(
            f"NOT EXISTS (SELECT 1 FROM {LIMBO}.executors e "
            f"WHERE e.executor_id = {p(guard.executor_not_holding)} AND e.stopped_at IS NULL "
            f"AND e.last_seen_at >= now() - {timeout()} "
            f"AND (extract(epoch FROM e.started_at) * 1000)::bigint <= "
            f"{p(guard.claimed_at + rules.restart_tolerance_ms)}::bigint)"
        )
    if guard.version_not_live is not None:
        where.append(
            f"NOT EXISTS (SELECT 1 FROM {LIMBO}.executors v "
            f"WHERE v.application_version = {p(guard.version_not_live)} "
            f"AND v.stopped_at IS NULL AND v.last_seen_at >= now() - {timeout()})"
        )
    if guard.dead_child is not None:
        where.append(
            f"EXISTS (SELECT 1 FROM {schema.workflow_status} c "
            f"WHERE c.workflow_uuid = {p(guard.dead_child)} "
            f"AND c.status = {p(guard.dead_child_status)})"
        )
        if schema.step_times and guard.last_step_ms is not None:
            where.append(
                f"NOT EXISTS (SELECT 1 FROM {schema.operation_outputs} o "
                f"WHERE o.workflow_uuid = ws.workflow_uuid "
                f"AND greatest(coalesce(o.completed_at_epoch_ms, 0), "
                f"coalesce(o.started_at_epoch_ms, 0)) > {p(guard.last_step_ms)}::bigint)"
            )
    return where


async def _current_row(conn: Conn, schema: DbosSchema, workflow_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT status, executor_id, recovery_attempts, application_version, deduplication_id, "
        f"updated_at FROM {schema.workflow_status} WHERE workflow_uuid = $1",
        workflow_id,
    )
    return None if row is None else dict(row)


async def apply(
    conn: Conn,
    schema: DbosSchema,
    verdict: Verdict,
    *,
    actor: str,
    dry_run: bool,
    rules: RuleSettings,
    lock_timeout_ms: int = 2_000,
    note: str | None = None,
) -> Outcome:
    """Carry out one verdict (guarded) and audit it, in one transaction."""
    if not verdict.changes_row:
        raise ValueError(f"verdict {verdict.rule}/{verdict.action} changes nothing")
    wf = verdict.workflow
    p = _Params()
    where = " AND ".join(_guard_clause(schema, verdict, rules, p))
    releases = verdict.action in RELEASES_DEDUP
    would_release = wf.deduplication_id if releases else None
    current: dict[str, Any] | None = None
    async with conn.transaction():
        # Never queue behind a row DBOS holds locked (a dequeue, an outcome write): skip it.
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        if dry_run:
            holds = await conn.fetchval(
                f"SELECT count(*) FROM {schema.workflow_status} ws WHERE {where}", *p.values
            )
            outcome = DRY_RUN
            reason = "dry run: nothing changed" + ("" if holds else " (and the guard fails now)")
        else:
            sets = ", ".join(_set_clause(schema, verdict, p))
            try:
                async with conn.transaction():  # a savepoint: a lock timeout aborts only it
                    changed = await conn.fetch(
                        f"UPDATE {schema.workflow_status} ws SET {sets} WHERE {where} "
                        f"RETURNING ws.workflow_uuid",
                        *p.values,
                    )
            except asyncpg.LockNotAvailableError:
                changed = None
            if changed:
                outcome, reason = APPLIED, verdict.reason
            else:
                outcome = SKIPPED
                if changed is None:
                    reason = "row locked by another transaction: left for the next sweep"
                else:
                    current = await _current_row(conn, schema, wf.workflow_id)
                    reason = "row moved on since it was observed: guard did not match"
        evidence = {
            **verdict.evidence,
            "observed": wf.evidence(),
            "guard": {k: v for k, v in vars(verdict.guard).items() if v is not None},
        }
        if current is not None:
            evidence["current"] = current
        if verdict.target_version is not None:
            evidence["target_version"] = verdict.target_version
        released = would_release if outcome in (APPLIED, DRY_RUN) else None
        audit_id = await conn.fetchval(
            f"""INSERT INTO {LIMBO}.audit
                    (actor, rule, action, workflow_id, outcome, dry_run, dedup_id_released,
                     reason, evidence)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id""",
            actor,
            verdict.rule,
            verdict.action.value if verdict.action else "none",
            wf.workflow_id,
            outcome,
            dry_run,
            released,
            note
            if note is not None
            else (f"{reason}; decided: {verdict.reason}" if outcome == SKIPPED else verdict.reason),
            evidence,
        )
    return Outcome(
        verdict=verdict,
        outcome=outcome,
        dedup_id_released=released,
        reason=reason,
        audit_id=audit_id,
        current=current,
    )
