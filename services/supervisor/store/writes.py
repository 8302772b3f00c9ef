"""Acting on verdicts: one guarded UPDATE of DBOS's rows per (rule, action), and their audit
rows, in one transaction.

The UPDATE's WHERE clause restates everything the decision was based on: the observed row
(status, attempts, executor, version, dedup ID, updated_at), that no live executor reports
running it, and the rule's own assumptions (its `guard`, e.g. "the holder is still dead,
since after its claim"). A row that moved on matches nothing: the action is skipped, logged
and audited as 'skipped'. In dry run nothing in DBOS's tables changes; the guard is only
evaluated, and the audit row says 'dry_run'.

The writes mirror DBOS's own (dbos/_sys_db.py): dead_letter_workflows, reenqueue_for_recovery
(which clears the fencing token owner_xid), cancel_workflows and the ERROR outcome; on
schemas without a column (2.8) it is not set. Every payload is written in the row's own
serialization, so the SDK that owns the row (Python or TypeScript) reads it. Since schema
migration 109 both SDKs write a workflow's outcome to `workflow_output` and read
`coalesce(workflow_output.error, workflow_status.error)`: a PENDING row has no outcome there
yet, so the ERROR outcome written to `workflow_status.error` is the one they read.
"""

from __future__ import annotations

import base64
import json
import pickle
from typing import Any

import asyncpg
import msgspec

from services.supervisor.model import Action, Outcome, OutcomeKind, Status, Verdict
from services.supervisor.model.schema import INTERNAL_QUEUE_NAME, DbosSchema
from services.supervisor.rules import guard_rule
from services.supervisor.rules.base import GuardColumn, Rule
from services.supervisor.rules.liveness import LISTED_SQL, LIVE_CTE
from services.supervisor.store import audit
from services.supervisor.store.connection import NOW_MS, Conn

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

# What every verdict observed of its row, restated for every action.
OBSERVED: tuple[GuardColumn, ...] = (
    GuardColumn("workflow_uuid", "text"),
    GuardColumn("status", "text"),
    GuardColumn("attempts", "bigint"),
    GuardColumn("executor_id", "text"),
    GuardColumn("version", "text"),
    GuardColumn("dedup", "text"),
    GuardColumn("updated_at", "bigint"),
)
# What an action writes beyond constants: only its own columns travel with its rows.
PAYLOAD: dict[Action, tuple[GuardColumn, ...]] = {
    Action.UPGRADE: (GuardColumn("target_version", "text"),),
    Action.FAIL: (
        GuardColumn("error_native", "text"),  # DBOS Python's default serialization
        GuardColumn("error_portable", "text"),  # portable_json
        GuardColumn("error_superjson", "text"),  # the TypeScript SDK's js_superjson
    ),
}


# The name the ERROR outcome carries where a serialization keeps one (portable, superjson).
DEAD_CHILD_ERROR_NAME = "DBOSAwaitedWorkflowDeadChild"
# @dbos-inc/dbos-sdk (5.x) parses a js_superjson value only with this marker beside `json`.
SUPERJSON_MARKER = {"__dbos_serializer": "superjson"}


def error_payloads(message: str) -> tuple[str, str, str]:
    """The ERROR outcome in each serialization DBOS SDKs read, without our code."""
    # DBOS Python's default: base64 of a pickle. A builtin exception unpickles anywhere.
    native = base64.b64encode(pickle.dumps(RuntimeError(message))).decode("ascii")
    portable = json.dumps({"name": DEAD_CHILD_ERROR_NAME, "message": message})
    # What @dbos-inc/dbos-sdk writes for a thrown error: superjson of serialize-error's plain
    # record of it, plus DBOS's marker. Read back (getResult), it throws an Error of that name
    # and message. Without the marker the SDK refuses the value ("carries no superjson marker").
    superjson = json.dumps(
        {"json": {"name": DEAD_CHILD_ERROR_NAME, "message": message}, **SUPERJSON_MARKER}
    )
    return native, portable, superjson


def _columns(rule: Rule[Any], action: Action) -> tuple[GuardColumn, ...]:
    return (*OBSERVED, *rule.guard_columns, *PAYLOAD.get(action, ()))


def _payload(action: Action, verdict: Verdict) -> tuple[Any, ...]:
    if action is Action.UPGRADE:
        return (verdict.target_version,)
    if action is Action.FAIL:
        message = verdict.error_message
        return error_payloads(message) if message is not None else (None, None, None)
    return ()


def observed_rows(rule: Rule[Any], action: Action, verdicts: list[Verdict]) -> str:
    """The rows of `o`, one JSON object each: the observed row, the rule's guard values, the
    action's payload. One JSON text parameter instead of an array per column: asyncpg checks
    every element of an array parameter against ABCs, and this process's share of a
    2,000-row UPDATE went from 29 ms to 17 ms; the server parses the JSON no slower."""
    names = [c.name for c in _columns(rule, action)]
    guard_names = [c.name for c in rule.guard_columns]
    records = [
        dict(
            zip(
                names,
                (
                    wf.workflow_id,  # in the order of OBSERVED
                    wf.status,
                    wf.recovery_attempts,
                    wf.executor_id,
                    wf.application_version,
                    wf.deduplication_id,
                    wf.updated_at,
                    *(verdict.guard.get(name) for name in guard_names),
                    *_payload(action, verdict),
                ),
                strict=True,
            )
        )
        for verdict in verdicts
        for wf in (verdict.workflow,)
    ]
    return msgspec.json.encode(records).decode()


def _with(rule: Rule[Any], action: Action, schema: DbosSchema) -> str:
    columns = ", ".join(f"{c.name} {c.sql_type}" for c in _columns(rule, action))
    rows = f"o AS (SELECT * FROM json_to_recordset($1::text::json) AS o({columns}))"
    return "WITH " + ", ".join([rows, LIVE_CTE, *rule.ctes(schema)])


def _where(rule: Rule[Any], schema: DbosSchema) -> str:
    listed = f"NOT {LISTED_SQL}"
    if rule.may_override_listing:
        listed = f"(o.force OR {listed})"
    return " AND ".join(
        [
            "ws.workflow_uuid = o.workflow_uuid",
            "ws.status = o.status",
            "ws.recovery_attempts IS NOT DISTINCT FROM o.attempts",
            "ws.executor_id IS NOT DISTINCT FROM o.executor_id",
            "ws.application_version IS NOT DISTINCT FROM o.version",
            "ws.deduplication_id IS NOT DISTINCT FROM o.dedup",
            "ws.updated_at = o.updated_at",
            listed,
            f"({rule.guard(schema)})",
        ]
    )


def set_clause(schema: DbosSchema, action: Action) -> str:
    """DBOS's own write for the action; columns a schema lacks (2.8) are left out."""
    sets: list[str] = []

    def put(column: str, expression: str) -> None:
        if column in REQUIRED_ALWAYS or schema.has(column):
            sets.append(f"{column} = {expression}")

    if action in (Action.DEAD_LETTER, Action.CANCEL):
        status = "MAX_RECOVERY_ATTEMPTS_EXCEEDED" if action is Action.DEAD_LETTER else "CANCELLED"
        put("status", f"'{status}'")
        put("owner_xid", "NULL")
        put("deduplication_id", "NULL")
        put("started_at_epoch_ms", "NULL")
        put("queue_name", "NULL")
        put("updated_at", NOW_MS)
        put("completed_at", NOW_MS)
    elif action is Action.FAIL:
        put("status", "'ERROR'")
        if schema.has("serialization"):
            put(
                "error",
                "CASE ws.serialization WHEN 'portable_json' THEN o.error_portable "
                "WHEN 'js_superjson' THEN o.error_superjson ELSE o.error_native END",
            )
        else:
            put("error", "o.error_native")
        put("deduplication_id", "NULL")
        put("owner_xid", "NULL")
        put("updated_at", NOW_MS)
        put("completed_at", NOW_MS)
    elif action in (Action.REENQUEUE, Action.UPGRADE):
        # UPGRADE moves the version, and re-enqueues the row only if it was PENDING.
        requeue = "TRUE" if action is Action.REENQUEUE else f"ws.status = {Status.PENDING.sql}"
        if action is Action.UPGRADE:
            put("application_version", "o.target_version")
        put("status", f"CASE WHEN {requeue} THEN 'ENQUEUED' ELSE ws.status END")
        # The fencing token: a zombie's next checkpoint then fails (DBOS's recovery does it).
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
        put("updated_at", NOW_MS)
    else:
        raise ValueError(f"action {action} does not change a row")
    return ", ".join(sets)


def update_statement(schema: DbosSchema, rule: Rule[Any], action: Action, *, dry_run: bool) -> str:
    """The one guarded UPDATE for a batch of `rule`'s `action` verdicts (in dry run, the
    SELECT of the rows it would change). Its parameter is `observed_rows(rule, action, ...)`."""
    head, where = _with(rule, action, schema), _where(rule, schema)
    if dry_run:
        return f"{head} SELECT ws.workflow_uuid FROM {schema.workflow_status} ws, o WHERE {where}"
    return (
        f"{head} UPDATE {schema.workflow_status} ws SET {set_clause(schema, action)} "
        f"FROM o WHERE {where} RETURNING ws.workflow_uuid"
    )


async def _guarded_update(
    conn: Conn,
    schema: DbosSchema,
    rule: Rule[Any],
    action: Action,
    verdicts: list[Verdict],
    *,
    dry_run: bool,
) -> set[str] | None:
    """The rows of `verdicts` whose guard holds: changed by one UPDATE (or, in dry run, only
    matched). None if a row was locked by another transaction past the lock timeout."""
    sql = update_statement(schema, rule, action, dry_run=dry_run)
    try:
        async with conn.transaction():  # a savepoint: a lock timeout aborts only this
            rows = await conn.fetch(sql, observed_rows(rule, action, verdicts))
    except asyncpg.LockNotAvailableError:
        return None
    return {row["workflow_uuid"] for row in rows}


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


async def apply_batch(
    conn: Conn,
    schema: DbosSchema,
    verdicts: list[Verdict],
    *,
    actor: str,
    dry_run: bool,
    lock_timeout_ms: int = 2_000,
    note: str | None = None,
) -> list[Outcome]:
    """Carry out verdicts and audit each, in one transaction: per (rule, action) one UPDATE
    whose WHERE restates, row by row, what the decision saw. Rows that moved on are skipped
    and audited as such. Outcomes come back in the verdicts' order."""
    for verdict in verdicts:
        if not verdict.changes_row:
            raise ValueError(f"verdict {verdict.rule}/{verdict.action} changes nothing")
    if not verdicts:
        return []
    groups: dict[tuple[str, Action], list[Verdict]] = {}
    for verdict in verdicts:
        assert verdict.action is not None
        groups.setdefault((verdict.rule, verdict.action), []).append(verdict)
    async with conn.transaction():
        # Never queue behind a row DBOS holds locked (a dequeue, an outcome write).
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        matched: set[str] = set()
        locked: set[str] = set()
        for (rule_name, action), group in groups.items():
            rule = guard_rule(rule_name)
            hit = await _guarded_update(conn, schema, rule, action, group, dry_run=dry_run)
            if hit is None and len(group) > 1:
                # One row is locked: one statement per row for this group, so that only
                # that row waits for the next sweep.
                for verdict in group:
                    single = await _guarded_update(
                        conn, schema, rule, action, [verdict], dry_run=dry_run
                    )
                    if single is None:
                        locked.add(verdict.workflow_id)
                    else:
                        matched |= single
            elif hit is None:
                locked.add(group[0].workflow_id)
            else:
                matched |= hit
        settled = matched | locked
        moved_on = [v.workflow_id for v in verdicts if v.workflow_id not in settled]
        current = await _current_rows(conn, schema, moved_on) if moved_on else {}
        outcomes = [
            _outcome(v, dry_run, v.workflow_id in matched, v.workflow_id in locked, current)
            for v in verdicts
        ]
        ids = await audit.insert(
            conn,
            outcomes,
            actor=actor,
            dry_run=dry_run,
            reasons=[_audit_reason(o, note) for o in outcomes],
            evidence=[_evidence(o) for o in outcomes],
        )
    return [msgspec.structs.replace(o, audit_id=ids[o.verdict.workflow_id]) for o in outcomes]


def _audit_reason(outcome: Outcome, note: str | None) -> str:
    if note is not None:
        return note
    if outcome.outcome is OutcomeKind.SKIPPED:
        return f"{outcome.reason}; decided: {outcome.verdict.reason}"
    return outcome.verdict.reason


def _outcome(
    verdict: Verdict,
    dry_run: bool,
    matched: bool,
    locked: bool,
    current: dict[str, dict[str, Any]],
) -> Outcome:
    assert verdict.action is not None
    would_release = verdict.workflow.deduplication_id if verdict.action.releases_dedup else None
    if dry_run:
        reason = "dry run: nothing changed" + ("" if matched else " (and the guard fails now)")
        return Outcome(
            verdict, OutcomeKind.DRY_RUN, would_release, reason, None, guard_held=matched
        )
    if matched:
        return Outcome(verdict, OutcomeKind.APPLIED, would_release, verdict.reason, None)
    if locked:
        reason = "row locked by another transaction: left for the next sweep"
        return Outcome(verdict, OutcomeKind.SKIPPED, None, reason, None)
    reason = "row moved on since it was observed: guard did not match"
    return Outcome(
        verdict, OutcomeKind.SKIPPED, None, reason, None, current.get(verdict.workflow_id)
    )


def _evidence(outcome: Outcome) -> dict[str, Any]:
    verdict = outcome.verdict
    evidence: dict[str, Any] = {
        **verdict.evidence,
        "observed": verdict.workflow.evidence(),
        "guard": {k: v for k, v in verdict.guard.items() if v is not None},
    }
    if outcome.current is not None:
        evidence["current"] = dict(outcome.current)
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
        lock_timeout_ms=lock_timeout_ms,
        note=note,
    )
    return outcome
