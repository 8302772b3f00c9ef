"""The supervisor's Litestar application: health, readiness (with the role), metrics, admin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Controller, Litestar, Request, Response, Router, get
from litestar.openapi import OpenAPIConfig
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.plugins.structlog import StructlogConfig, StructlogPlugin

from services.shared.auth import bearer_guard
from services.shared.logging import logging_config
from services.supervisor import metrics
from services.supervisor.admin import AdminController
from services.supervisor.runner import Runner
from services.supervisor.settings import Settings

DESCRIPTION = """The limbo supervisor releases DBOS workflows stuck in limbo.

The `/admin` routes exist only when `SUPERVISOR_ADMIN_TOKEN` is set; they then require
`Authorization: Bearer <token>` (401 without it). When the token is unset they are not
mounted at all and answer 404."""


class HealthController(Controller):
    tags = ["health"]

    @get("/healthz", summary="The process is up")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="Database reachable and DBOS schema supported; reports the role")
    async def readyz(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        runner: Runner = request.app.state.runner
        supervisor = runner.supervisor
        body: dict[str, Any] = {
            "status": "ready" if runner.ready else "not_ready",
            "role": runner.role,
            "dry_run": runner.settings.dry_run,
            "dbos_schema": None if supervisor is None else supervisor.schema.describe(),
        }
        if not runner.ready:
            body["reason"] = runner.not_ready_reason
        return Response(body, status_code=200 if runner.ready else 503)


class MetricsController(PrometheusController):
    pass


def create_app(settings: Settings, on_fatal: Callable[[str], None] | None = None) -> Litestar:
    runner = Runner(settings, on_fatal=on_fatal)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.runner = runner
        task = asyncio.create_task(runner.run(), name="supervisor-loop")
        try:
            yield
        finally:
            runner.stop_event.set()
            try:
                await asyncio.wait_for(task, 10)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            await runner.close()

    metrics.reset_candidates(tuple(sorted(settings.rules.enabled)))
    metrics.BUILD.info({"version": metrics.package_version(), "dbos_schema": "unknown"})
    routes: list[Any] = [HealthController, MetricsController]
    if settings.admin_token:
        routes.append(
            Router(
                path="/",
                route_handlers=[AdminController],
                guards=[bearer_guard(settings.admin_token, realm="limbo-supervisor")],
            )
        )
    log_config = logging_config("supervisor", level=settings.log_level)
    app = Litestar(
        route_handlers=routes,
        lifespan=[lifespan],
        middleware=[
            PrometheusConfig(
                app_name="limbo-supervisor",
                prefix="limbo_supervisor_http",
                group_path=True,
                exclude=["/metrics"],
            ).middleware
        ],
        plugins=[
            StructlogPlugin(
                StructlogConfig(
                    structlog_logging_config=log_config, enable_middleware_logging=False
                )
            ),
            ProblemDetailsPlugin(ProblemDetailsConfig(enable_for_all_http_exceptions=True)),
        ],
        openapi_config=OpenAPIConfig(
            title="Limbo supervisor", version=metrics.package_version(), description=DESCRIPTION
        ),
    )
    app.state.runner = runner
    return app
