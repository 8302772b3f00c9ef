"""Request and response bodies of the worker's HTTP API."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Count = Annotated[int, msgspec.Meta(ge=1, le=100, description="1 to 100")]
DedupId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, description="at most 200 characters")
]
StepIndex = Annotated[int, msgspec.Meta(ge=0, le=99)]
StepSeconds = Annotated[float, msgspec.Meta(ge=0, le=60)]


class ChaosRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Crash the worker process when the job reaches a step (DEMO_CHAOS=1 only).

    `stall` blocks the event loop for a few seconds instead, as CPU-bound work would;
    `freeze` holds the GIL for 10 s in a C call, so no thread of the process runs.
    """

    step: StepIndex
    mode: Literal["segfault", "sigkill", "exit", "stall", "freeze"] = "segfault"
    child: StepIndex = 0
    times: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None  # None: every time


class EnqueueRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A job: `children` child workflows of `steps` steps each. `{}` is the seed's 6 x 5."""

    children: Count = 6
    steps: Count = 5
    dedup_id: DedupId | None = None  # default "<children>/<steps>", as in the seed
    chaos: ChaosRequest | None = None
    step_seconds: StepSeconds | None = None  # default DEMO_STEP_SECONDS


class EnqueueResponse(msgspec.Struct):
    workflow_id: str
    status: str
    dedup_id: str
    queue: str


class StepView(msgspec.Struct):
    function_id: int
    name: str
    completed: bool
    error: str | None


class ChildView(msgspec.Struct):
    workflow_id: str
    status: str
    recovery_attempts: int
    executor_id: str | None
    steps: list[StepView]


class QueuedWorkflow(msgspec.Struct):
    workflow_id: str
    name: str
    status: str
    recovery_attempts: int
    executor_id: str | None
    application_version: str | None
    dedup_id: str | None
    created_at: float
    updated_at: float


class WorkflowView(QueuedWorkflow):
    """A queued workflow's summary, plus its queue, error and children."""

    queue: str | None
    error: str | None
    children: list[ChildView]


class QueueView(msgspec.Struct):
    queue: str
    queued_workflows: list[QueuedWorkflow]
