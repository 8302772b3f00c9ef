"""The admin API, mounted only when SUPERVISOR_ADMIN_TOKEN is set (bearer token).

Without the token the routes do not exist (404); with it, a request without the right
`Authorization: Bearer <token>` header gets 401.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import Parameter
from msgspec import Struct

from services.supervisor.rules import Action
from services.supervisor.runner import Runner
from services.supervisor.sweeper import NotReleasable, Supervisor, WorkflowNotFound


class SweepRequest(Struct, forbid_unknown_fields=True):
    dry_run: bool | None = None


class ReleaseRequest(Struct, forbid_unknown_fields=True):
    reason: str
    action: str = "dead_letter"
    dry_run: bool = False
    force: bool = False


def _supervisor(request: Request[Any, Any, Any]) -> Supervisor:
    runner: Runner = request.app.state.runner
    if runner.supervisor is None or not runner.ready:
        raise HTTPException(status_code=503, detail=runner.not_ready_reason or "not ready")
    return runner.supervisor


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]

    @get("/candidates", summary="Workflows in limbo now, with the rule and its evidence")
    async def candidates(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        snap, verdicts = await _supervisor(request).candidates()
        return {
            "observed": len(snap.workflows),
            "truncated": snap.truncated,
            "candidates": [v.describe() for v in verdicts],
        }

    @get(
        "/workflows/{workflow_id:str}",
        summary="Explain one workflow: which rule matches, or why none",
    )
    async def explain(self, request: Request[Any, Any, Any], workflow_id: str) -> dict[str, Any]:
        try:
            wf, verdicts = await _supervisor(request).explain(workflow_id)
        except WorkflowNotFound:
            raise NotFoundException(f"workflow {workflow_id} not found") from None
        matched = next((v for v in verdicts if v.matched), None)
        return {
            "workflow": {"workflow_id": wf.workflow_id, **wf.evidence()},
            "decision": None if matched is None else matched.describe(),
            "rules": [v.describe() for v in verdicts],
        }

    @post("/sweeps", status_code=200, summary="Run one sweep now (optionally dry)")
    async def sweep(
        self, request: Request[Any, Any, Any], data: SweepRequest | None = None
    ) -> dict[str, Any]:
        dry_run = None if data is None else data.dry_run
        report = await _supervisor(request).sweep(dry_run=dry_run)
        return report.describe()

    @get("/audit", summary="The audit trail, newest first (keyset pagination on id)")
    async def audit(
        self,
        request: Request[Any, Any, Any],
        workflow_id: str | None = None,
        limit: int = Parameter(default=50, ge=1, le=1000),
        before_id: int | None = None,
    ) -> dict[str, Any]:
        entries = await _supervisor(request).audit(
            workflow_id=workflow_id, limit=limit, before_id=before_id
        )
        next_before = entries[-1]["id"] if len(entries) == limit else None
        return {"entries": entries, "next_before_id": next_before}

    @post(
        "/workflows/{workflow_id:str}/release",
        status_code=200,
        summary="Release one workflow by hand (guarded and audited)",
    )
    async def release(
        self, request: Request[Any, Any, Any], workflow_id: str, data: ReleaseRequest
    ) -> dict[str, Any]:
        try:
            action = Action(data.action)
            outcome = await _supervisor(request).release(
                workflow_id,
                reason=data.reason,
                action=action,
                dry_run=data.dry_run,
                force=data.force,
            )
        except WorkflowNotFound:
            raise NotFoundException(f"workflow {workflow_id} not found") from None
        except NotReleasable as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        return outcome.describe()
