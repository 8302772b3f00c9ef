"""Inspecting the DBOS system database at start, so queries fit the release that made it.

Supported: the schemas of dbos 2.8.x (no parent_workflow_id, completed_at, application_name,
serialization) and 3.x. Optional columns are used when present; a schema lacking any
required column is refused with a message that names what is missing.
"""

from __future__ import annotations

import asyncpg

from services.supervisor.model.schema import SHARED_MIGRATION_BASE, DbosSchema

# Columns every decision reads or every write sets: without them we cannot act safely.
REQUIRED_STATUS_COLUMNS: dict[str, tuple[str, ...]] = {
    "workflow_uuid": ("text",),
    "status": ("text",),
    "name": ("text",),
    "executor_id": ("text",),
    "application_version": ("text",),
    "recovery_attempts": ("bigint", "integer"),
    "queue_name": ("text",),
    "deduplication_id": ("text",),
    "created_at": ("bigint",),
    "updated_at": ("bigint",),
    "started_at_epoch_ms": ("bigint",),
    "error": ("text",),
}
REQUIRED_OPERATION_COLUMNS = ("workflow_uuid", "function_id", "child_workflow_id")


class SchemaNotReady(RuntimeError):
    """The DBOS tables do not exist yet (the application has not migrated): wait and retry."""


class IncompatibleSchema(RuntimeError):
    """The DBOS tables exist but lack what the supervisor needs: refuse to run."""


async def inspect_schema(conn: asyncpg.Connection, schema: str) -> DbosSchema:
    rows = await conn.fetch(
        """SELECT table_name, column_name, data_type
             FROM information_schema.columns
            WHERE table_schema = $1 AND table_name IN ('workflow_status', 'operation_outputs')""",
        schema,
    )
    status: dict[str, str] = {}
    operations: dict[str, str] = {}
    for row in rows:
        target = status if row["table_name"] == "workflow_status" else operations
        target[row["column_name"]] = row["data_type"]
    if not status:
        raise SchemaNotReady(
            f"table {schema}.workflow_status does not exist (yet): has a DBOS application "
            f"migrated this database, and is DBOS_SYSTEM_SCHEMA={schema!r} right?"
        )
    problems = []
    for column, types in REQUIRED_STATUS_COLUMNS.items():
        if column not in status:
            problems.append(f"workflow_status.{column} is missing")
        elif status[column] not in types:
            problems.append(
                f"workflow_status.{column} is {status[column]}, expected {' or '.join(types)}"
            )
    if not operations:
        problems.append("table operation_outputs is missing")
    else:
        problems.extend(
            f"operation_outputs.{column} is missing"
            for column in REQUIRED_OPERATION_COLUMNS
            if column not in operations
        )
    if problems:
        raise IncompatibleSchema(
            f"the DBOS system schema {schema!r} is not one this supervisor supports "
            f"(dbos 2.8.x to 3.x): {'; '.join(problems)}"
        )
    indexes = await conn.fetch(
        "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = $1 "
        "AND tablename = 'workflow_status'",
        schema,
    )
    return DbosSchema(
        name=schema,
        status_columns=frozenset(status),
        operation_columns=frozenset(operations),
        indexes=frozenset(r["indexname"] for r in indexes),
        migration_version=await _migration_version(conn, schema),
    )


async def _migration_version(conn: asyncpg.Connection, schema: str) -> int | None:
    """dbos_migrations' version, for the record: databases made by either SDK are supported
    (TypeScript 5.3 stops at 123, Python 3.4 at 125; both share migrations from
    SHARED_MIGRATION_BASE on); 2.8 has no such table. The columns are checked either way."""
    exists = await conn.fetchval(
        "SELECT to_regclass(format('%I.dbos_migrations', $1::text)) IS NOT NULL", schema
    )
    if not exists:
        return None
    version = await conn.fetchval(f'SELECT max(version) FROM "{schema}".dbos_migrations')
    return None if version is None else int(version)


__all__ = ["SHARED_MIGRATION_BASE", "IncompatibleSchema", "SchemaNotReady", "inspect_schema"]
