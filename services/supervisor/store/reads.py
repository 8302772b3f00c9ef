"""Observations: what the rules decide on, read in one consistent snapshot through indexes.

Every query on DBOS's tables is shaped for an index DBOS already has: in-flight rows through
the partial indexes on `status IN ('ENQUEUED', 'PENDING')` (3.x) or the status index (2.8);
steps and children through primary keys. Each enabled rule's prefilter narrows the reads to
rows it could match, so a sweep's cost follows the work in limbo, not the table's size; a
PENDING row a live executor reports running is settled by one hashed lookup first.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from services.supervisor.model import (
    DEAD_CHILD,
    IN_FLIGHT,
    ChildRow,
    Snapshot,
    Status,
    WorkflowRow,
)
from services.supervisor.model.schema import DbosSchema
from services.supervisor.model.status import sql_list
from services.supervisor.rules import RuleSettings
from services.supervisor.rules.base import PrefilterContext, Rule, Signal, SqlParams
from services.supervisor.rules.liveness import claimed_sql, last_checkpoint_sql, skipping_listed
from services.supervisor.store import executors as executor_store
from services.supervisor.store.connection import NOW_MS, Conn


def _status_columns(schema: DbosSchema) -> str:
    optional = [
        f"ws.{column}" if schema.has(column) else f"NULL::text AS {column}"
        for column in ("application_name", "parent_workflow_id")
    ]
    return ", ".join(
        [
            "ws.workflow_uuid",
            "ws.status",
            "ws.name",
            "ws.executor_id",
            "ws.application_version",
            "ws.recovery_attempts",
            "ws.queue_name",
            "ws.deduplication_id",
            "ws.created_at",
            "ws.updated_at",
            "ws.started_at_epoch_ms",
            *optional,
            f"{last_checkpoint_sql(schema)} AS last_checkpoint_ms",
        ]
    )


def in_flight_query(schema: DbosSchema, status: Status, prefilter: str | None = None) -> str:
    """One of the sweep's main reads: the rows of one in-flight status, oldest first and
    bounded (each status separately, so a long legitimate queue never hides a PENDING row
    in limbo). `$1` is the limit; the prefilter's parameters follow."""
    assert status in IN_FLIGHT
    extra = f" AND ({prefilter})" if prefilter else ""
    return (
        f"SELECT {_status_columns(schema)} FROM {schema.workflow_status} ws "
        f"WHERE ws.status = {status.sql}{extra} ORDER BY ws.created_at LIMIT $1"
    )


def one_workflow_query(schema: DbosSchema) -> str:
    return (
        f"SELECT {_status_columns(schema)} FROM {schema.workflow_status} ws "
        f"WHERE ws.workflow_uuid = $1"
    )


def dead_children_query(schema: DbosSchema) -> str:
    """Children of the given parents that DBOS will never finish (dead-lettered or cancelled),
    found as `rules.dead_child.has_dead_child_sql` finds them: by parent_workflow_id in 3.x,
    among the parents' steps in 2.8. Driven by the parent IDs; OFFSET 0 keeps the planner
    from starting at the table's failed workflows instead, whose number grows with history.
    """
    dead = sql_list(DEAD_CHILD)
    if schema.has("parent_workflow_id"):
        return (
            f"SELECT c.parent_workflow_id AS parent_id, c.workflow_uuid AS child_id, c.status, "
            f"c.updated_at FROM (SELECT workflow_uuid, parent_workflow_id, status, updated_at "
            f"FROM {schema.workflow_status} "
            f"WHERE parent_workflow_id = ANY($1::text[]) OFFSET 0) c "
            f"WHERE c.status IN {dead}"
        )
    return (
        f"SELECT o.parent_id, c.workflow_uuid AS child_id, c.status, c.updated_at "
        f"FROM (SELECT workflow_uuid AS parent_id, child_workflow_id "
        f"FROM {schema.operation_outputs} "
        f"WHERE workflow_uuid = ANY($1::text[]) AND child_workflow_id IS NOT NULL OFFSET 0) o "
        f"JOIN {schema.workflow_status} c ON c.workflow_uuid = o.child_workflow_id "
        f"WHERE c.status IN {dead}"
    )


def executor_progress_query(schema: DbosSchema) -> str:
    """Per executor, among all its PENDING rows, the newest claim or update and the newest
    step checkpoint (NULL if none), each on its own clock (through DBOS's pending index;
    steps by primary key)."""
    return (
        f"SELECT ws.executor_id, max({claimed_sql()}) AS claimed, "
        f"max({last_checkpoint_sql(schema)}) AS checkpoint "
        f"FROM {schema.workflow_status} ws "
        f"WHERE ws.status = {Status.PENDING.sql} AND ws.executor_id = ANY($1::text[]) GROUP BY 1"
    )


def workflow_from(row: asyncpg.Record) -> WorkflowRow:
    return WorkflowRow(
        workflow_id=row["workflow_uuid"],
        status=row["status"],
        name=row["name"],
        executor_id=row["executor_id"],
        application_version=row["application_version"],
        recovery_attempts=row["recovery_attempts"],
        queue_name=row["queue_name"],
        deduplication_id=row["deduplication_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at_ms=row["started_at_epoch_ms"],
        application_name=row["application_name"],
        parent_workflow_id=row["parent_workflow_id"],
        last_checkpoint_ms=row["last_checkpoint_ms"],
    )


async def _context(
    conn: Conn,
    schema: DbosSchema,
    workflows: tuple[WorkflowRow, ...],
    signals: frozenset[Signal],
    fully_read: frozenset[str] | None,
) -> dict[str, Any]:
    """Dead children and executor progress. `fully_read`: the executors all of whose
    PENDING rows are among `workflows` (None: every executor's); their progress (newest
    claim, newest checkpoint) is derived from those rows, exactly as
    `executor_progress_query` computes it."""
    pending = [wf for wf in workflows if wf.status == Status.PENDING]
    children: dict[str, list[ChildRow]] = {}
    claimed: dict[str, int] = {}
    checkpoint: dict[str, int] = {}
    if pending and Signal.DEAD_CHILDREN in signals:
        ids = [wf.workflow_id for wf in pending]
        for row in await conn.fetch(dead_children_query(schema), ids):
            child = ChildRow(row["parent_id"], row["child_id"], row["status"], row["updated_at"])
            children.setdefault(child.parent_id, []).append(child)
    if pending and Signal.EXECUTOR_PROGRESS in signals:
        executor_ids = {wf.executor_id for wf in pending if wf.executor_id}
        derived = executor_ids if fully_read is None else executor_ids & fully_read
        for wf in pending:
            executor_id, step = wf.executor_id, wf.last_checkpoint_ms
            if executor_id is not None and executor_id in derived:
                claimed[executor_id] = max(claimed.get(executor_id, 0), wf.claimed_at)
                if step is not None:
                    checkpoint[executor_id] = max(checkpoint.get(executor_id, step), step)
        if rest := sorted(executor_ids - derived):
            for row in await conn.fetch(executor_progress_query(schema), rest):
                claimed[row["executor_id"]] = int(row["claimed"])
                if row["checkpoint"] is not None:
                    checkpoint[row["executor_id"]] = int(row["checkpoint"])
    return {
        "dead_children": {
            parent: tuple(sorted(rows, key=lambda c: c.child_id))
            for parent, rows in children.items()
        },
        "executor_claimed_ms": claimed,
        "executor_checkpoint_ms": checkpoint,
    }


ALL_SIGNALS = frozenset(Signal)


def prefilter_for(
    status: Status, ctx: PrefilterContext, settings: RuleSettings
) -> tuple[str, list[Any]] | None:
    """The OR of every enabled rule's prefilter for `status` and its parameters (after the
    read's LIMIT, `$1`); None when no enabled rule reads that status. For PENDING rows it
    applies only to rows no live incarnation reports (`liveness.skipping_listed`), unless a
    rule may override that listing."""
    rules = [rule for rule in settings.active() if status in rule.statuses]
    if not rules:
        return None
    p = SqlParams(first=2)
    sql = " OR ".join(
        f"({rule.prefilter(status, p, ctx, settings.common, settings.config(rule))})"
        for rule in rules
    )
    if status == Status.PENDING and not any(rule.may_override_listing for rule in rules):
        sql = skipping_listed(p, ctx, sql, read_in_full(rules, ctx))
    return sql, p.values


def read_in_full(rules: list[Rule[Any]], ctx: PrefilterContext) -> frozenset[str]:
    """The executors every PENDING row of which some of `rules`' prefilters select."""
    return frozenset(
        executor_id
        for rule in rules
        if Status.PENDING in rule.statuses
        for executor_id in rule.reads_every_pending_row_of(ctx)
    )


async def observe(
    conn: Conn, schema: DbosSchema, limit: int, settings: RuleSettings | None = None
) -> Snapshot:
    """In-flight workflows (up to `limit` PENDING and `limit` ENQUEUED, oldest first) and
    their context, in one snapshot. With `settings`, only rows an enabled rule could match
    are read (each rule's prefilter) and only the signals they read."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        now_ms = await conn.fetchval(f"SELECT {NOW_MS}")
        base = Snapshot(
            now_ms=now_ms,
            executors=await executor_store.executors(conn),
            registry=await executor_store.registry(conn),
        )
        ctx = PrefilterContext(now_ms=now_ms, snap=base, schema=schema)
        rows: list[asyncpg.Record] = []
        truncated = False
        signals = ALL_SIGNALS
        # Executors whose every PENDING row the reads return (None: all, unfiltered).
        fully_read: frozenset[str] | None = None
        if settings is not None:
            active = settings.active()
            signals = frozenset(s for rule in active for s in rule.reads)
            fully_read = read_in_full(active, ctx)
        for status in IN_FLIGHT:
            params: list[Any] = []
            prefilter = None
            if settings is not None:
                narrowed = prefilter_for(status, ctx, settings)
                if narrowed is None:
                    continue
                prefilter, params = narrowed
            found = await conn.fetch(in_flight_query(schema, status, prefilter), limit + 1, *params)
            if len(found) > limit:
                truncated = True
                if status == Status.PENDING:
                    fully_read = frozenset()
            rows.extend(found[:limit])
        rows.sort(key=lambda r: (r["created_at"], r["workflow_uuid"]))
        workflows = tuple(workflow_from(row) for row in rows)
        context = await _context(conn, schema, workflows, signals, fully_read)
    return Snapshot(
        now_ms=now_ms,
        workflows=workflows,
        executors=base.executors,
        registry=base.registry,
        truncated=truncated,
        **context,
    )


async def observe_one(conn: Conn, schema: DbosSchema, workflow_id: str) -> Snapshot | None:
    """The same snapshot, for one workflow whatever its status; None if it does not exist."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        now_ms = await conn.fetchval(f"SELECT {NOW_MS}")
        row = await conn.fetchrow(one_workflow_query(schema), workflow_id)
        if row is None:
            return None
        workflows = (workflow_from(row),)
        executors = await executor_store.executors(conn)
        registry = await executor_store.registry(conn)
        context = await _context(conn, schema, workflows, ALL_SIGNALS, frozenset())
    return Snapshot(
        now_ms=now_ms, workflows=workflows, executors=executors, registry=registry, **context
    )


# -- one workflow in full (the console's workflow page, `Operator.detail`) ---------------------


def children_query(schema: DbosSchema) -> str:
    """Every child of `$1` (by its steps' child_workflow_id, and on 3.x by
    parent_workflow_id), oldest first, at most `$2`."""
    by_steps = (
        f"SELECT child_workflow_id AS child FROM {schema.operation_outputs} "
        f"WHERE workflow_uuid = $1 AND child_workflow_id IS NOT NULL"
    )
    ids = by_steps
    if schema.has("parent_workflow_id"):
        ids += (
            f" UNION SELECT workflow_uuid FROM {schema.workflow_status} "
            f"WHERE parent_workflow_id = $1"
        )
    return (
        f"SELECT c.workflow_uuid, c.status, c.name, c.recovery_attempts, c.executor_id, "
        f"c.deduplication_id, c.created_at, c.updated_at "
        f"FROM ({ids}) i JOIN {schema.workflow_status} c ON c.workflow_uuid = i.child "
        f"ORDER BY c.created_at, c.workflow_uuid LIMIT $2"
    )


def steps_query(schema: DbosSchema) -> str:
    """The steps of `$1` in order, at most `$2`: name, child, times, error (truncated)."""
    optional = {
        "function_name": "o.function_name",
        "started_at_epoch_ms": "o.started_at_epoch_ms",
        "completed_at_epoch_ms": "o.completed_at_epoch_ms",
        "error": "left(o.error, $3)",
    }
    absent = {"error": "left(NULL::text, $3)"}
    columns = ", ".join(
        f"{expression if name in schema.operation_columns else absent.get(name, 'NULL')} AS {name}"
        for name, expression in optional.items()
    )
    return (
        f"SELECT o.function_id, o.child_workflow_id, {columns} "
        f"FROM {schema.operation_outputs} o WHERE o.workflow_uuid = $1 "
        f"ORDER BY o.function_id LIMIT $2"
    )


def error_query(schema: DbosSchema) -> str:
    return f"SELECT left(error, $2) FROM {schema.workflow_status} WHERE workflow_uuid = $1"


async def workflow_children(
    conn: Conn, schema: DbosSchema, workflow_id: str, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(children_query(schema), workflow_id, limit)
    return [{**dict(row), "workflow_id": row["workflow_uuid"]} for row in rows]


async def workflow_steps(
    conn: Conn, schema: DbosSchema, workflow_id: str, limit: int, error_chars: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(steps_query(schema), workflow_id, limit, error_chars)
    return [dict(row) for row in rows]


async def workflow_error(
    conn: Conn, schema: DbosSchema, workflow_id: str, error_chars: int
) -> str | None:
    """The workflow's stored error as DBOS wrote it (serialized; never deserialized here:
    it is user data), truncated."""
    value = await conn.fetchval(error_query(schema), workflow_id, error_chars)
    return None if value is None else str(value)
