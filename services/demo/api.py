"""The demo's HTTP routes: enqueue the seed-shaped job, see it and its children's steps,
see the queue. A thin layer over the worker's generic API (services/worker/api.py)."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.status_codes import HTTP_202_ACCEPTED

from services.demo.job import ChaosPlan, demo
from services.demo.schemas import EnqueueRequest, EnqueueResponse, QueueView, WorkflowView
from services.worker.enqueue import enqueue


class DemoController(Controller):
    path = "/"
    tags = ["demo"]

    @post("/workflows", status_code=HTTP_202_ACCEPTED)
    async def enqueue(self, data: EnqueueRequest) -> EnqueueResponse:
        """Enqueue the demo job on the demo's queue under a deduplication ID."""
        job = demo()
        chaos: ChaosPlan | None = None
        if data.chaos is not None:
            if not job.settings.chaos_enabled:
                raise ProblemDetailsException(
                    status_code=403,
                    title="Chaos refused",
                    detail="chaos requests are refused: this worker runs without DEMO_CHAOS=1",
                )
            chaos = {
                "child": data.chaos.child,
                "step": data.chaos.step,
                "mode": data.chaos.mode,
                "times": data.chaos.times,
            }
        dedup_id = data.dedup_id or f"{data.children}/{data.steps}"
        queue = job.settings.queue_name
        workflow_id = await enqueue(
            job.queue,
            job.parent,
            args=(data.children, data.steps, chaos, data.step_seconds),
            dedup_id=dedup_id,
            holder_of=job.host.dedup_holder,
        )
        return EnqueueResponse(
            workflow_id=workflow_id, status="ENQUEUED", dedup_id=dedup_id, queue=queue
        )

    @get("/workflows/{workflow_id:str}")
    async def workflow(self, workflow_id: str) -> WorkflowView:
        """A workflow's status, attempts, executor, dedup ID, and its children's steps."""
        view = await demo().repository.workflow(workflow_id)
        if view is None:
            raise ProblemDetailsException(
                status_code=404, title="Unknown workflow", detail=f"no workflow {workflow_id!r}"
            )
        return view

    @get("/queue")
    async def queue(self) -> QueueView:
        """The demo queue's ENQUEUED and PENDING workflows, oldest first."""
        job = demo()
        name = job.settings.queue_name
        return QueueView(queue=name, queued_workflows=await job.repository.queued(name))
