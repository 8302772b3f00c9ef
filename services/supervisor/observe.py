"""Observations: what the rules decide on, read in one consistent snapshot through indexes.

Every query on DBOS's tables is shaped for an index DBOS already has: in-flight rows through
the partial indexes on `status IN ('ENQUEUED', 'PENDING')` (3.x) or the status index (2.8);
children and step times through primary keys. A sweep's cost follows the number of in-flight
workflows, never the size of `workflow_status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.shared.schema import SCHEMA as LIMBO
from services.supervisor.dbos_schema import DbosSchema
from services.supervisor.settings import RuleSettings

# A connection of our own or one borrowed from a pool.
Conn = asyncpg.Connection | PoolConnectionProxy

IN_FLIGHT = ("ENQUEUED", "PENDING")
DEAD_CHILD_STATUSES = ("MAX_RECOVERY_ATTEMPTS_EXCEEDED", "CANCELLED")
NOW_MS = "(extract(epoch FROM now()) * 1000)::bigint"


@dataclass(frozen=True)
class WorkflowRow:
    workflow_id: str
    status: str
    name: str | None
    executor_id: str | None
    application_version: str | None
    recovery_attempts: int | None
    queue_name: str | None
    deduplication_id: str | None
    created_at: int
    updated_at: int
    started_at_ms: int | None = None
    application_name: str | None = None
    parent_workflow_id: str | None = None

    @property
    def claimed_at(self) -> int:
        """When the current execution claimed the row (the latest of start and update)."""
        return max(self.started_at_ms or 0, self.updated_at)

    def evidence(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "name": self.name,
            "executor_id": self.executor_id,
            "application_version": self.application_version,
            "application_name": self.application_name,
            "recovery_attempts": self.recovery_attempts,
            "queue_name": self.queue_name,
            "deduplication_id": self.deduplication_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at_epoch_ms": self.started_at_ms,
        }


@dataclass(frozen=True)
class ExecutorRow:
    executor_id: str
    application_name: str
    application_version: str
    started_at_ms: int
    last_seen_ms: int
    stopped_at_ms: int | None = None


@dataclass(frozen=True)
class ChildRow:
    parent_id: str
    child_id: str
    status: str
    updated_at: int


@dataclass(frozen=True)
class RegistryEntry:
    application_name: str
    application_version: str
    workflow_name: str
    max_recovery_attempts: int | None


@dataclass(frozen=True)
class Snapshot:
    """Everything one sweep decides on, all read at the same database instant `now_ms`."""

    now_ms: int
    workflows: tuple[WorkflowRow, ...] = ()
    executors: Mapping[str, ExecutorRow] = field(default_factory=dict)
    registry: tuple[RegistryEntry, ...] = ()
    dead_children: Mapping[str, tuple[ChildRow, ...]] = field(default_factory=dict)
    # Latest step start/completion per workflow (epoch ms), for workflows with dead children.
    last_step_ms: Mapping[str, int] = field(default_factory=dict)
    truncated: bool = False
    # Per-snapshot memo for what rules derive identically for many rows (pure: the snapshot
    # never changes). Not part of the snapshot's value.
    memo: dict[tuple[Any, ...], Any] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )


def _status_columns(schema: DbosSchema) -> str:
    optional = [
        f"{column}" if schema.has(column) else f"NULL::text AS {column}"
        for column in ("application_name", "parent_workflow_id")
    ]
    return ", ".join(
        [
            "workflow_uuid",
            "status",
            "name",
            "executor_id",
            "application_version",
            "recovery_attempts",
            "queue_name",
            "deduplication_id",
            "created_at",
            "updated_at",
            "started_at_epoch_ms",
            *optional,
        ]
    )


def in_flight_query(schema: DbosSchema, status: str, prefilter: str | None = None) -> str:
    """The sweep's main reads: the PENDING rows, and the ENQUEUED rows, each oldest first and
    bounded separately (a long legitimate queue never hides a PENDING row in limbo).

    Each predicate is one the planner proves against DBOS's partial indexes
    (`idx_workflow_status_pending`, `idx_workflow_status_in_flight_v2` in 3.x) or matches
    the plain status index (2.8). `prefilter` (see `Prefilter`) keeps only the rows some rule
    could match, so that healthy in-flight work is never shipped to the supervisor.
    """
    assert status in IN_FLIGHT
    extra = f" AND ({prefilter})" if prefilter else ""
    return (
        f"SELECT {_status_columns(schema)} FROM {schema.workflow_status} ws "
        f"WHERE status = '{status}'{extra} ORDER BY created_at LIMIT $1"
    )


class _Params:
    """Numbered query parameters ($1 is the LIMIT), one per name, each with its SQL type."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._index: dict[str, str] = {}

    def __call__(self, name: str, value: Any, sql_type: str) -> str:
        if name not in self._index:
            self.values.append(value)
            self._index[name] = f"${len(self.values) + 1}::{sql_type}"
        return self._index[name]


@dataclass(frozen=True)
class Prefilter:
    """A cheap SQL condition that every row some rule could match satisfies.

    The rules stay the judges (pure functions, in rules/); this only spares them the rows
    that cannot be in limbo: a live executor's fresh claim, attempts far from any limit, a
    version that runs, a parent that changed within the stall timeout. A row is kept when:
    - `exhausted`: its attempts exceed the smallest finite limit known plus one;
    - `orphaned` (PENDING): its executor is known and dead or stopped, or restarted after the
      claim, or (only when unknown executors are assumed dead) unknown and stalled;
    - `version_orphaned`: its version has no live executor of its application;
    - `dead_child` (PENDING): it has not changed for the stall timeout and has a child in
      MAX_RECOVERY_ATTEMPTS_EXCEEDED or CANCELLED.
    """

    now_ms: int
    executors: Mapping[str, ExecutorRow]
    registry: tuple[RegistryEntry, ...]
    settings: RuleSettings
    schema: DbosSchema

    @property
    def app_column(self) -> str:
        return "ws.application_name" if self.schema.has("application_name") else "NULL::text"

    def _has_dead_child(self) -> str:
        """An index probe per row: by parent_workflow_id (3.x) or the parent's steps (2.8)."""
        dead = "('MAX_RECOVERY_ATTEMPTS_EXCEEDED', 'CANCELLED')"
        schema = self.schema
        if schema.has("parent_workflow_id"):
            return (
                f"EXISTS (SELECT 1 FROM {schema.workflow_status} c "
                f"WHERE c.parent_workflow_id = ws.workflow_uuid AND c.status IN {dead})"
            )
        return (
            f"EXISTS (SELECT 1 FROM {schema.operation_outputs} s "
            f"JOIN {schema.workflow_status} c ON c.workflow_uuid = s.child_workflow_id "
            f"WHERE s.workflow_uuid = ws.workflow_uuid AND c.status IN {dead} OFFSET 0)"
        )  # OFFSET 0: probe per row by key, never a hash of all the steps ever recorded

    def _live(self) -> list[ExecutorRow]:
        timeout = self.settings.executor_timeout_ms
        return [
            e
            for e in self.executors.values()
            if e.stopped_at_ms is None and self.now_ms - e.last_seen_ms <= timeout
        ]

    def _exhausted(self, p: _Params) -> str:
        settings = self.settings
        limits = [
            *settings.max_recovery_overrides.values(),
            *(entry.max_recovery_attempts for entry in self.registry),
            settings.default_max_recovery_attempts,
        ]
        finite = [limit for limit in limits if limit is not None]
        if not finite:
            return "FALSE"
        return f"ws.recovery_attempts > {p('threshold', min(finite) + 1, 'bigint')}"

    def _version(self, p: _Params) -> str:
        live = self._live()
        apps = p("live_apps", [e.application_name for e in live], "text[]")
        versions = p("live_versions", [e.application_version for e in live], "text[]")
        app = self.app_column
        return (
            f"(ws.application_version IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
            f"unnest({apps}, {versions}) AS l(app, version) "
            f"WHERE l.version = ws.application_version AND ({app} IS NULL OR l.app = {app})))"
        )

    def _orphaned_or_stalled(self, p: _Params) -> str:
        settings = self.settings
        live = self._live()
        live_ids = {e.executor_id for e in live}
        dead = [executor_id for executor_id in self.executors if executor_id not in live_ids]
        claimed = "greatest(coalesce(ws.started_at_epoch_ms, 0), ws.updated_at)"
        stall_before = p("stall_before", self.now_ms - settings.stall_timeout_ms, "bigint")
        live_ids_param = p("live_ids", [e.executor_id for e in live], "text[]")
        live_starts_param = p("live_starts", [e.started_at_ms for e in live], "bigint[]")
        clauses = [
            f"ws.executor_id = ANY({p('dead', dead, 'text[]')})",
            f"EXISTS (SELECT 1 FROM unnest({live_ids_param}, {live_starts_param}) "
            f"AS x(id, started) "
            f"WHERE x.id = ws.executor_id AND x.started > {claimed} "
            f"+ {p('tolerance', settings.restart_tolerance_ms, 'bigint')})",
            f"(ws.updated_at < {stall_before} AND {self._has_dead_child()})",
        ]
        if settings.assume_unknown_executors_dead:
            known = p("known", list(self.executors), "text[]")
            clauses.append(
                f"((ws.executor_id IS NULL OR NOT ws.executor_id = ANY({known})) "
                f"AND {claimed} < {stall_before})"
            )
        return " OR ".join(clauses)

    def pending(self) -> tuple[str, list[Any]]:
        p = _Params()
        sql = f"{self._exhausted(p)} OR {self._version(p)} OR {self._orphaned_or_stalled(p)}"
        return sql, p.values

    def enqueued(self) -> tuple[str, list[Any]]:
        p = _Params()
        return f"{self._exhausted(p)} OR {self._version(p)}", p.values


def one_workflow_query(schema: DbosSchema) -> str:
    return (
        f"SELECT {_status_columns(schema)} FROM {schema.workflow_status} WHERE workflow_uuid = $1"
    )


def dead_children_query(schema: DbosSchema) -> str:
    """Children of the given parents that DBOS will never finish (dead-lettered or cancelled).

    Driven by the parent IDs (primary key of operation_outputs, parent_workflow_id index in
    3.x); OFFSET 0 keeps the planner from starting at the table's failed workflows instead,
    whose number grows with history.
    """
    dead = "('MAX_RECOVERY_ATTEMPTS_EXCEEDED', 'CANCELLED')"
    by_steps = (
        f"SELECT o.parent_id, c.workflow_uuid AS child_id, c.status, c.updated_at "
        f"FROM (SELECT workflow_uuid AS parent_id, child_workflow_id "
        f"FROM {schema.operation_outputs} "
        f"WHERE workflow_uuid = ANY($1::text[]) AND child_workflow_id IS NOT NULL OFFSET 0) o "
        f"JOIN {schema.workflow_status} c ON c.workflow_uuid = o.child_workflow_id "
        f"WHERE c.status IN {dead}"
    )
    if not schema.has("parent_workflow_id"):
        return by_steps
    by_parent = (
        f"SELECT c.parent_workflow_id, c.workflow_uuid, c.status, c.updated_at "
        f"FROM (SELECT workflow_uuid, parent_workflow_id, status, updated_at "
        f"FROM {schema.workflow_status} "
        f"WHERE parent_workflow_id = ANY($1::text[]) OFFSET 0) c "
        f"WHERE c.status IN {dead}"
    )
    return f"{by_steps} UNION {by_parent}"


def last_step_query(schema: DbosSchema) -> str:
    return (
        f"SELECT workflow_uuid, max(greatest(coalesce(completed_at_epoch_ms, 0), "
        f"coalesce(started_at_epoch_ms, 0))) AS at "
        f"FROM {schema.operation_outputs} WHERE workflow_uuid = ANY($1::text[]) "
        f"GROUP BY workflow_uuid"
    )


EXECUTORS_QUERY = f"""
    SELECT executor_id, application_name, application_version,
           (extract(epoch FROM started_at) * 1000)::bigint AS started_at_ms,
           (extract(epoch FROM last_seen_at) * 1000)::bigint AS last_seen_ms,
           (extract(epoch FROM stopped_at) * 1000)::bigint AS stopped_at_ms
      FROM {LIMBO}.executors"""

REGISTRY_QUERY = f"""
    SELECT application_name, application_version, workflow_name, max_recovery_attempts
      FROM {LIMBO}.workflow_registry"""


def _workflow(row: asyncpg.Record) -> WorkflowRow:
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
    )


async def _executors(conn: Conn) -> dict[str, ExecutorRow]:
    return {
        row["executor_id"]: ExecutorRow(
            executor_id=row["executor_id"],
            application_name=row["application_name"],
            application_version=row["application_version"],
            started_at_ms=row["started_at_ms"],
            last_seen_ms=row["last_seen_ms"],
            stopped_at_ms=row["stopped_at_ms"],
        )
        for row in await conn.fetch(EXECUTORS_QUERY)
    }


async def _registry(conn: Conn) -> tuple[RegistryEntry, ...]:
    return tuple(
        RegistryEntry(
            application_name=row["application_name"],
            application_version=row["application_version"],
            workflow_name=row["workflow_name"],
            max_recovery_attempts=row["max_recovery_attempts"],
        )
        for row in await conn.fetch(REGISTRY_QUERY)
    )


async def _context(
    conn: Conn,
    schema: DbosSchema,
    workflows: tuple[WorkflowRow, ...],
    executors: dict[str, ExecutorRow],
    registry: tuple[RegistryEntry, ...],
) -> dict[str, Any]:
    pending = [wf.workflow_id for wf in workflows if wf.status == "PENDING"]
    children: dict[str, list[ChildRow]] = {}
    last_step: dict[str, int] = {}
    if pending:
        for row in await conn.fetch(dead_children_query(schema), pending):
            child = ChildRow(row["parent_id"], row["child_id"], row["status"], row["updated_at"])
            children.setdefault(child.parent_id, []).append(child)
        if children and schema.step_times:
            for row in await conn.fetch(last_step_query(schema), sorted(children)):
                last_step[row["workflow_uuid"]] = int(row["at"])
    return {
        "dead_children": {
            parent: tuple(sorted(rows, key=lambda c: c.child_id))
            for parent, rows in children.items()
        },
        "last_step_ms": last_step,
    }


async def observe(
    conn: Conn, schema: DbosSchema, limit: int, settings: RuleSettings | None = None
) -> Snapshot:
    """In-flight workflows (up to `limit` PENDING and `limit` ENQUEUED, oldest first) and
    their context, in one snapshot. With `settings`, only the rows a rule could match under
    them are read (see `Prefilter`)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        now_ms = await conn.fetchval(f"SELECT {NOW_MS}")
        executors = await _executors(conn)
        registry = await _registry(conn)
        if settings is None:
            pending = await conn.fetch(in_flight_query(schema, "PENDING"), limit + 1)
            enqueued = await conn.fetch(in_flight_query(schema, "ENQUEUED"), limit + 1)
        else:
            prefilter = Prefilter(now_ms, executors, registry, settings, schema)
            sql, params = prefilter.pending()
            pending = await conn.fetch(in_flight_query(schema, "PENDING", sql), limit + 1, *params)
            sql, params = prefilter.enqueued()
            enqueued = await conn.fetch(
                in_flight_query(schema, "ENQUEUED", sql), limit + 1, *params
            )
        truncated = len(pending) > limit or len(enqueued) > limit
        rows = sorted(
            [*pending[:limit], *enqueued[:limit]],
            key=lambda r: (r["created_at"], r["workflow_uuid"]),
        )
        workflows = tuple(_workflow(row) for row in rows)
        context = await _context(conn, schema, workflows, executors, registry)
    return Snapshot(
        now_ms=now_ms,
        workflows=workflows,
        truncated=truncated,
        executors=executors,
        registry=registry,
        **context,
    )


async def observe_one(conn: Conn, schema: DbosSchema, workflow_id: str) -> Snapshot | None:
    """The same snapshot, for one workflow whatever its status; None if it does not exist."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        now_ms = await conn.fetchval(f"SELECT {NOW_MS}")
        row = await conn.fetchrow(one_workflow_query(schema), workflow_id)
        if row is None:
            return None
        workflows = (_workflow(row),)
        executors = await _executors(conn)
        registry = await _registry(conn)
        context = await _context(conn, schema, workflows, executors, registry)
    return Snapshot(
        now_ms=now_ms, workflows=workflows, executors=executors, registry=registry, **context
    )
