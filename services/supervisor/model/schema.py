"""The shape of the DBOS system schema the supervisor adapted to (inspected at start)."""

from __future__ import annotations

from dataclasses import dataclass

# Used when present (3.x), skipped when absent (2.8).
OPTIONAL_STATUS_COLUMNS = (
    "application_name",
    "parent_workflow_id",
    "completed_at",
    "owner_xid",
    "serialization",
)
INTERNAL_QUEUE_NAME = "_dbos_internal_queue"
# DBOS's SDKs share system-schema migrations from this index on: a database made by the
# TypeScript SDK 5.3 stops at 123, one made by Python 3.4 at 125 (two extra indexes).
SHARED_MIGRATION_BASE = 100


@dataclass(frozen=True)
class DbosSchema:
    name: str
    status_columns: frozenset[str]
    operation_columns: frozenset[str]
    indexes: frozenset[str]
    # dbos.dbos_migrations' version (None on 2.8, which has no such table).
    migration_version: int | None = None

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
            "migration_version": self.migration_version,
            "optional_columns": sorted(c for c in OPTIONAL_STATUS_COLUMNS if self.has(c)),
        }
