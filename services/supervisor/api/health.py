"""Health and readiness (with the role), and metrics."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.plugins.prometheus import PrometheusController

from services.supervisor.service import Service


class HealthController(Controller):
    tags = ["health"]

    @get("/healthz", summary="The process is up")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="Database reachable and DBOS schema supported; reports the role")
    async def readyz(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        service: Service = request.app.state.service
        operator = service.operator
        body: dict[str, Any] = {
            "status": "ready" if service.ready else "not_ready",
            "role": service.role,
            "dry_run": service.settings.dry_run,
            "dbos_schema": None if operator is None else operator.schema.describe(),
        }
        if not service.ready:
            body["reason"] = service.not_ready_reason
        return Response(body, status_code=200 if service.ready else 503)


class MetricsController(PrometheusController):
    pass
