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
from dataclasses import dataclass, replace
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


# Per-row observations and assumptions, passed as parallel arrays and unnested as `o`.
_OBSERVED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("workflow_uuid", "text"),
    ("status", "text"),
    ("attempts", "bigint"),
    ("executor_id", "text"),
    ("version", "text"),
    ("dedup", "text"),
    ("updated_at", "bigint"),
    ("not_holding", "text"),  # Guard.executor_not_holding
    ("claim_limit", "bigint"),  # Guard.claimed_at + restart tolerance
    ("version_not_live", "text"),
    ("dead_child", "text"),
    ("dead_child_status", "text"),
    ("last_step_ms", "bigint"),
    ("target_version", "text"),  # UPGRADE
    ("error_native", "text"),  # FAIL, DBOS's default serialization
    ("error_portable", "text"),  # FAIL, portable_json serialization
)


def observed_arrays(verdicts: list[Verdict], rules: RuleSettings) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in _OBSERVED_COLUMNS]
    for verdict in verdicts:
        wf, guard = verdict.workflow, verdict.guard
        message = verdict.error_message
        row = (
            wf.workflow_id,
            wf.status,
            wf.recovery_attempts,
            wf.executor_id,
            wf.application_version,
            wf.deduplication_id,
            wf.updated_at,
            guard.executor_not_holding,
            None if guard.claimed_at is None else guard.claimed_at + rules.restart_tolerance_ms,
            guard.version_not_live,
            guard.dead_child,
            guard.dead_child_status,
            guard.last_step_ms,
            verdict.target_version,
            None if message is None else error_payload(message, None),
            None if message is None else error_payload(message, "portable_json"),
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def _observed_cte() -> str:
    arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(_OBSERVED_COLUMNS, 1))
    names = ", ".join(name for name, _ in _OBSERVED_COLUMNS)
    return f"o AS (SELECT * FROM unnest({arrays}) AS o({names}))"


def _guard_clause(schema: DbosSchema, rules: RuleSettings) -> str:
    """Everything each decision assumed, restated per row against the row as it is now."""
    timeout = f"make_interval(secs => {rules.executor_timeout_ms / 1000.0}::float8)"
    where = [
        "ws.workflow_uuid = o.workflow_uuid",
        "ws.status = o.status",
        "ws.recovery_attempts IS NOT DISTINCT FROM o.attempts",
        "ws.executor_id IS NOT DISTINCT FROM o.executor_id",
        "ws.application_version IS NOT DISTINCT FROM o.version",
        "ws.deduplication_id IS NOT DISTINCT FROM o.dedup",
        "ws.updated_at = o.updated_at",
        # Same reading as rules.base.holder_state: no live incarnation older than the claim.
        f"(o.not_holding IS NULL OR NOT EXISTS (SELECT 1 FROM {LIMBO}.executors e "
        f"WHERE e.executor_id = o.not_holding AND e.stopped_at IS NULL "
        f"AND e.last_seen_at >= now() - {timeout} "
        f"AND (extract(epoch FROM e.started_at) * 1000)::bigint <= o.claim_limit))",
        f"(o.version_not_live IS NULL OR NOT EXISTS (SELECT 1 FROM {LIMBO}.executors v "
        f"WHERE v.application_version = o.version_not_live "
        f"AND v.stopped_at IS NULL AND v.last_seen_at >= now() - {timeout}))",
        f"(o.dead_child IS NULL OR EXISTS (SELECT 1 FROM {schema.workflow_status} c "
        f"WHERE c.workflow_uuid = o.dead_child AND c.status = o.dead_child_status))",
    ]
    if schema.step_times:
        where.append(
            f"(o.last_step_ms IS NULL OR NOT EXISTS (SELECT 1 FROM {schema.operation_outputs} s "
            f"WHERE s.workflow_uuid = ws.workflow_uuid "
            f"AND greatest(coalesce(s.completed_at_epoch_ms, 0), "
            f"coalesce(s.started_at_epoch_ms, 0)) > o.last_step_ms))"
        )
    return " AND ".join(where)


def _set_clause(schema: DbosSchema, action: Action) -> str:
    """DBOS's own write for the action; columns a schema lacks (2.8) are left out."""
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
        put("status", "'ERROR'")
        if schema.has("serialization"):
            put(
                "error",
                "CASE WHEN ws.serialization = 'portable_json' "
                "THEN o.error_portable ELSE o.error_native END",
            )
        else:
            put("error", "o.error_native")
        put("deduplication_id", "NULL")
        put("owner_xid", "NULL")
        put("updated_at", now)
        put("completed_at", now)
    elif action in (Action.REENQUEUE, Action.UPGRADE):
        # UPGRADE moves the version, and re-enqueues the row only if it was PENDING.
        requeue = "TRUE" if action is Action.REENQUEUE else "ws.status = 'PENDING'"
        if action is Action.UPGRADE:
            put("application_version", "o.target_version")
        put("status", f"CASE WHEN {requeue} THEN 'ENQUEUED' ELSE ws.status END")
        put("owner_xid", f"CASE WHEN {requeue} THEN NULL ELSE ws.owner_xid END")
        put(
            "started_at_epoch_ms",
            f"CASE WHEN {requeue} THEN NULL ELSE ws.started_at_epoch_ms END",
        )
        put(
            "queue_name",
            f"CASE WHEN {requeue} THEN coalesce(ws.queue_name, '{INTERNAL_QUEUE_NAME}') "
            "ELSE ws.queue_name END",
        )
        put("updated_at", now)
    else:
        raise ValueError(f"action {action} does not change a row")
    return ", ".join(sets)


async def _current_rows(
    conn: Conn, schema: DbosSchema, workflow_ids: list[str]
) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT workflow_uuid, status, executor_id, recovery_attempts, application_version, "
        f"deduplication_id, updated_at FROM {schema.workflow_status} "
        f"WHERE workflow_uuid = ANY($1::text[])",
        workflow_ids,
    )
    return {
        row["workflow_uuid"]: {k: v for k, v in row.items() if k != "workflow_uuid"} for row in rows
    }


def update_statement(
    schema: DbosSchema, action: Action, rules: RuleSettings, *, dry_run: bool
) -> str:
    """The one guarded UPDATE for a batch of `action` verdicts (in dry run, the SELECT of
    the rows it would change). Its parameters are `observed_arrays(verdicts, rules)`."""
    where = _guard_clause(schema, rules)
    if dry_run:
        return (
            f"WITH {_observed_cte()} SELECT ws.workflow_uuid "
            f"FROM {schema.workflow_status} ws, o WHERE {where}"
        )
    return (
        f"WITH {_observed_cte()} UPDATE {schema.workflow_status} ws "
        f"SET {_set_clause(schema, action)} FROM o WHERE {where} RETURNING ws.workflow_uuid"
    )


async def _guarded_update(
    conn: Conn,
    schema: DbosSchema,
    action: Action,
    verdicts: list[Verdict],
    rules: RuleSettings,
    *,
    dry_run: bool,
) -> set[str] | None:
    """The rows of `verdicts` whose guard holds: changed by one UPDATE (or, in dry run, only
    matched). None if a row was locked by another transaction past the lock timeout."""
    sql = update_statement(schema, action, rules, dry_run=dry_run)
    arrays = observed_arrays(verdicts, rules)
    try:
        async with conn.transaction():  # a savepoint: a lock timeout aborts only this
            rows = await conn.fetch(sql, *arrays)
    except asyncpg.LockNotAvailableError:
        return None
    return {row["workflow_uuid"] for row in rows}


async def apply_batch(
    conn: Conn,
    schema: DbosSchema,
    verdicts: list[Verdict],
    *,
    actor: str,
    dry_run: bool,
    rules: RuleSettings,
    lock_timeout_ms: int = 2_000,
    note: str | None = None,
) -> list[Outcome]:
    """Carry out verdicts and audit each, in one transaction: for each kind of action one
    UPDATE whose WHERE restates, row by row, what the decision saw. Rows that moved on are
    skipped and audited as such. Outcomes come back in the verdicts' order."""
    for verdict in verdicts:
        if not verdict.changes_row:
            raise ValueError(f"verdict {verdict.rule}/{verdict.action} changes nothing")
    if not verdicts:
        return []
    by_action: dict[Action, list[Verdict]] = {}
    for verdict in verdicts:
        assert verdict.action is not None
        by_action.setdefault(verdict.action, []).append(verdict)
    async with conn.transaction():
        # Never queue behind a row DBOS holds locked (a dequeue, an outcome write).
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        matched: set[str] = set()
        locked: set[str] = set()
        for action, group in by_action.items():
            hit = await _guarded_update(conn, schema, action, group, rules, dry_run=dry_run)
            if hit is None and len(group) > 1:
                # One row is locked: fall back to one statement per row for this group,
                # so that only that row waits for the next sweep.
                for verdict in group:
                    single = await _guarded_update(
                        conn, schema, action, [verdict], rules, dry_run=dry_run
                    )
                    if single is None:
                        locked.add(verdict.workflow_id)
                    else:
                        matched |= single
            elif hit is None:
                locked.add(group[0].workflow_id)
            else:
                matched |= hit
        moved_on = [
            v.workflow_id
            for v in verdicts
            if v.workflow_id not in matched and v.workflow_id not in locked
        ]
        current = await _current_rows(conn, schema, moved_on) if moved_on else {}
        outcomes = [
            _outcome(v, dry_run, v.workflow_id in matched, v.workflow_id in locked, current)
            for v in verdicts
        ]
        audit_ids = await conn.fetch(
            f"""INSERT INTO {LIMBO}.audit
                    (actor, rule, action, workflow_id, outcome, dry_run, dedup_id_released,
                     reason, evidence)
                SELECT $1, r.rule, r.action, r.workflow_id, r.outcome, $2, r.released,
                       r.reason, r.evidence
                  FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                              $8::text[], $9::jsonb[], $10::int[])
                       AS r(rule, action, workflow_id, outcome, released, reason, evidence, ord)
                 ORDER BY r.ord
                RETURNING id, workflow_id""",
            actor,
            dry_run,
            [o.verdict.rule for o in outcomes],
            [o.verdict.action.value if o.verdict.action else "none" for o in outcomes],
            [o.verdict.workflow_id for o in outcomes],
            [o.outcome for o in outcomes],
            [o.dedup_id_released for o in outcomes],
            [
                note
                if note is not None
                else (
                    f"{o.reason}; decided: {o.verdict.reason}"
                    if o.outcome == SKIPPED
                    else o.verdict.reason
                )
                for o in outcomes
            ],
            [_evidence(o) for o in outcomes],
            list(range(len(outcomes))),
        )
    ids = {row["workflow_id"]: row["id"] for row in audit_ids}
    return [replace(o, audit_id=ids[o.verdict.workflow_id]) for o in outcomes]


def _outcome(
    verdict: Verdict,
    dry_run: bool,
    matched: bool,
    locked: bool,
    current: dict[str, dict[str, Any]],
) -> Outcome:
    releases = verdict.action in RELEASES_DEDUP
    would_release = verdict.workflow.deduplication_id if releases else None
    if dry_run:
        reason = "dry run: nothing changed" + ("" if matched else " (and the guard fails now)")
        return Outcome(verdict, DRY_RUN, would_release, reason, None)
    if matched:
        return Outcome(verdict, APPLIED, would_release, verdict.reason, None)
    if locked:
        reason = "row locked by another transaction: left for the next sweep"
        return Outcome(verdict, SKIPPED, None, reason, None)
    reason = "row moved on since it was observed: guard did not match"
    return Outcome(verdict, SKIPPED, None, reason, None, current.get(verdict.workflow_id))


def _evidence(outcome: Outcome) -> dict[str, Any]:
    verdict = outcome.verdict
    evidence = {
        **verdict.evidence,
        "observed": verdict.workflow.evidence(),
        "guard": {k: v for k, v in vars(verdict.guard).items() if v is not None},
    }
    if outcome.current is not None:
        evidence["current"] = outcome.current
    if verdict.target_version is not None:
        evidence["target_version"] = verdict.target_version
    return evidence


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
    [outcome] = await apply_batch(
        conn,
        schema,
        [verdict],
        actor=actor,
        dry_run=dry_run,
        rules=rules,
        lock_timeout_ms=lock_timeout_ms,
        note=note,
    )
    return outcome
