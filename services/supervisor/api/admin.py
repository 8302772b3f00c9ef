"""The admin API, mounted only when SUPERVISOR_ADMIN_TOKEN is set (bearer token).

Without the token the routes do not exist (404); with it, a request without the right
`Authorization: Bearer <token>` header gets 401. Payloads come from the operating layer,
shared with the CLI and the console.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get, post
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import Parameter
from msgspec import Struct

from services.supervisor.model import Action
from services.supervisor.operating import MANUAL_ACTIONS, NotReleasable, Operator, WorkflowNotFound
from services.supervisor.service import Service
from services.supervisor.store.audit import AuditFilter


class SweepRequest(Struct, forbid_unknown_fields=True):
    dry_run: bool | None = None


class ReleaseRequest(Struct, forbid_unknown_fields=True):
    reason: str
    action: Action = Action.DEAD_LETTER
    dry_run: bool = False
    force: bool = False


def operator_of(request: Request[Any, Any, Any]) -> Operator:
    service: Service = request.app.state.service
    if service.operator is None or not service.ready:
        raise HTTPException(status_code=503, detail=service.not_ready_reason or "not ready")
    return service.operator


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]

    @get("/candidates", summary="Workflows in limbo now, with the rule and its evidence")
    async def candidates(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        return (await operator_of(request).candidates()).describe()

    @get(
        "/overview",
        summary="Executors, candidates by rule, recent actions, supervisors, history",
    )
    async def overview(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        service: Service = request.app.state.service
        operator = operator_of(request)
        return (await operator.overview(instance=service.instance)).describe()

    @get(
        "/workflows/{workflow_id:str}/detail",
        summary="One workflow in full: explanation, error, children, steps, audit history",
    )
    async def detail(self, request: Request[Any, Any, Any], workflow_id: str) -> dict[str, Any]:
        try:
            return (await operator_of(request).detail(workflow_id)).describe()
        except WorkflowNotFound:
            raise NotFoundException(f"workflow {workflow_id} not found") from None

    @get(
        "/workflows/{workflow_id:str}",
        summary="Explain one workflow: which rule matches, or why none",
    )
    async def explain(self, request: Request[Any, Any, Any], workflow_id: str) -> dict[str, Any]:
        try:
            return (await operator_of(request).explain(workflow_id)).describe()
        except WorkflowNotFound:
            raise NotFoundException(f"workflow {workflow_id} not found") from None

    @post("/sweeps", status_code=200, summary="Run one sweep now (optionally dry)")
    async def sweep(
        self, request: Request[Any, Any, Any], data: SweepRequest | None = None
    ) -> dict[str, Any]:
        dry_run = None if data is None else data.dry_run
        return (await operator_of(request).sweep(dry_run=dry_run)).describe()

    @get("/audit", summary="The audit trail, newest first (keyset pagination on id)")
    async def audit(
        self,
        request: Request[Any, Any, Any],
        workflow_id: str | None = None,
        rule: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = Parameter(default=50, ge=1, le=1000),
        before_id: int | None = None,
    ) -> dict[str, Any]:
        where = AuditFilter(workflow_id, rule, action, outcome, since, until, before_id)
        entries = await operator_of(request).audit(where, limit=limit)
        next_before = entries[-1]["id"] if len(entries) == limit else None
        return {"entries": entries, "next_before_id": next_before}

    @post(
        "/workflows/{workflow_id:str}/release",
        status_code=200,
        summary="Release one workflow by hand (guarded and audited)",
        description=f"action: one of {', '.join(a.value for a in MANUAL_ACTIONS)}",
    )
    async def release(
        self, request: Request[Any, Any, Any], workflow_id: str, data: ReleaseRequest
    ) -> dict[str, Any]:
        try:
            outcome = await operator_of(request).release(
                workflow_id,
                reason=data.reason,
                action=data.action,
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
