"""What the DBOS system database looks like, inspected at start, so queries fit the release.

Supported: the schemas of dbos 2.8.x (no parent_workflow_id, completed_at, application_name,
serialization) and 3.x. Optional columns are used when present; a schema lacking any
required column is refused with a message that names what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

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
# Used when present (3.x), skipped when absent (2.8).
OPTIONAL_STATUS_COLUMNS = (
    "application_name",
    "parent_workflow_id",
    "completed_at",
    "owner_xid",
    "serialization",
)
REQUIRED_OPERATION_COLUMNS = ("workflow_uuid", "function_id", "child_workflow_id")
INTERNAL_QUEUE_NAME = "_dbos_internal_queue"


class SchemaNotReady(RuntimeError):
    """The DBOS tables do not exist yet (the application has not migrated): wait and retry."""


class IncompatibleSchema(RuntimeError):
    """The DBOS tables exist but lack what the supervisor needs: refuse to run."""


@dataclass(frozen=True)
class DbosSchema:
    name: str
    status_columns: frozenset[str]
    operation_columns: frozenset[str]
    indexes: frozenset[str]

    def has(self, column: str) -> bool:
        return column in self.status_columns

    @property
    def workflow_status(self) -> str:
        return f'"{self.name}".workflow_status'

    @property
    def operation_outputs(self) -> str:
        return f'"{self.name}".operation_outputs'

    @property
    def step_times(self) -> bool:
        """operation_outputs records when steps ran (both 2.8 and 3.x do)."""
        return {"started_at_epoch_ms", "completed_at_epoch_ms"} <= self.operation_columns

    @property
    def flavor(self) -> str:
        """A label for logs and metrics: '3.x' when 3.x-only columns exist, else '2.x'."""
        return "3.x" if self.has("parent_workflow_id") and self.has("completed_at") else "2.x"

    def describe(self) -> dict[str, object]:
        return {
            "schema": self.name,
            "flavor": self.flavor,
            "optional_columns": sorted(c for c in OPTIONAL_STATUS_COLUMNS if self.has(c)),
        }


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
        "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'workflow_status'",
        schema,
    )
    return DbosSchema(
        name=schema,
        status_columns=frozenset(status),
        operation_columns=frozenset(operations),
        indexes=frozenset(row["indexname"] for row in indexes),
    )
