"""Request and response bodies of the worker's generic API."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

DedupId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, description="at most 200 characters")
]
Priority = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1, description="1 (first) to 2^31-1")]
Delay = Annotated[float, msgspec.Meta(ge=0, le=30 * 86_400, description="seconds, up to 30 days")]


class DedupHolder(msgspec.Struct):
    workflow_id: str
    status: str
    recovery_attempts: int
    executor_id: str | None
    application_version: str | None
    age_seconds: float


class WorkflowType(msgspec.Struct):
    name: str
    max_recovery_attempts: int | None  # None: unlimited
    parameters: list[str]


class QueueInfo(msgspec.Struct):
    name: str
    worker_concurrency: int | None
    global_concurrency: int | None
    polling_interval_sec: float


class Registry(msgspec.Struct):
    """What this worker hosts: its declared workflows and its queues."""

    workflows: list[WorkflowType]
    queues: list[QueueInfo]


class EnqueueWorkflow(msgspec.Struct, forbid_unknown_fields=True):
    """Enqueue a declared workflow by name, with JSON arguments."""

    workflow: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    args: list[Any] = msgspec.field(default_factory=list)
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    dedup_id: DedupId | None = None
    priority: Priority | None = None
    delay_seconds: Delay | None = None


class Enqueued(msgspec.Struct):
    workflow_id: str
    workflow: str
    queue: str
    status: str
    dedup_id: str | None


class Run(msgspec.Struct):
    """A workflow's status, and its result or error once it ended."""

    workflow_id: str
    name: str
    status: str
    queue: str | None
    executor_id: str | None
    application_version: str | None
    dedup_id: str | None
    created_at: float | None
    updated_at: float | None
    output: Any = None
    error: str | None = None


class Health(msgspec.Struct):
    """svcs-style: the checks that passed and the reasons of those that failed."""

    ok: list[str]
    failing: dict[str, str]
