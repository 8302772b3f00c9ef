"""Rows as the supervisor observed them, in database time (epoch milliseconds).

msgspec Structs, not dataclasses: a mass release builds 10,000 of them per sweep, and a
frozen dataclass's __init__ costs about ten times as much (5 us a row here)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec


class WorkflowRow(msgspec.Struct, frozen=True, gc=False):
    """One `workflow_status` row, plus its latest step checkpoint."""

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
    # Latest start or completion of any of its steps (operation_outputs), None if no step.
    last_checkpoint_ms: int | None = None

    @property
    def claimed_at(self) -> int:
        """When the current execution claimed the row (the latest of start and update)."""
        return max(self.started_at_ms or 0, self.updated_at)

    @property
    def last_progress_ms(self) -> int:
        """The newest sign that this workflow moved: its row, or a step of it."""
        return max(self.started_at_ms or 0, self.updated_at, self.last_checkpoint_ms or 0)

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
            "last_checkpoint_ms": self.last_checkpoint_ms,
        }


class ExecutorState(StrEnum):
    """`limbo.executor_liveness.state`: the contract's one reading of an executor's lease."""

    ALIVE = "alive"  # lease valid, session lock held
    SUSPECT = "suspect"  # lease valid, lock free for less than the grace: still alive
    LOST = "lost"  # lock free for the grace, no beat for the grace: fenced by its promise
    EXPIRED = "expired"  # lease over: fenced by its promise
    STOPPED = "stopped"  # stopped gracefully, with nothing running

    @property
    def live(self) -> bool:
        return self in (ExecutorState.ALIVE, ExecutorState.SUSPECT)


class ExecutorRow(msgspec.Struct, frozen=True):
    """One row of `limbo.executor_liveness`, read in the sweep's snapshot."""

    executor_id: str
    application_name: str
    application_version: str
    state: ExecutorState
    incarnation: str = ""
    hostname: str = ""
    pid: int = 0
    sdk: str = "python"
    lock_held: bool = False
    lease_ms: int = 5_000
    grace_ms: int = 1_000
    started_at_ms: int = 0
    last_seen_ms: int = 0
    lease_expires_ms: int = 0
    stopped_at_ms: int | None = None
    session_lost_seen_ms: int | None = None
    dead_since_ms: int | None = None
    # The workflows this incarnation reported running at `report_at_ms`; None: no report.
    running: frozenset[str] | None = None
    report_at_ms: int | None = None

    @property
    def live(self) -> bool:
        return self.state.live

    def evidence(self, now_ms: int) -> dict[str, Any]:
        return {
            "executor_id": self.executor_id,
            "executor_state": self.state.value,
            "incarnation": self.incarnation,
            "executor_version": self.application_version,
            "host": self.hostname,
            "pid": self.pid,
            "lock_held": self.lock_held,
            "heartbeat_age_ms": now_ms - self.last_seen_ms,
            "lease_remaining_ms": self.lease_expires_ms - now_ms,
            "dead_since_ms": self.dead_since_ms,
            "reports_work": self.running is not None,
        }


class ChildRow(msgspec.Struct, frozen=True, gc=False):
    parent_id: str
    child_id: str
    status: str
    updated_at: int


class RegistryEntry(msgspec.Struct, frozen=True, gc=False):
    application_name: str
    application_version: str
    workflow_name: str
    max_recovery_attempts: int | None = None
