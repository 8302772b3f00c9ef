"""The supervisor's Litestar application: health, readiness (with the role), metrics, admin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsPlugin
from litestar.plugins.prometheus import PrometheusConfig
from litestar.plugins.structlog import StructlogConfig, StructlogPlugin

from services.shared.auth import bearer_guard
from services.shared.logging import logging_config
from services.supervisor import console, metrics
from services.supervisor.api.admin import AdminController
from services.supervisor.api.health import HealthController, MetricsController
from services.supervisor.service import Service
from services.supervisor.settings import Settings

DESCRIPTION = """The limbo supervisor releases DBOS workflows stuck in limbo.

The `/admin` routes exist only when `SUPERVISOR_ADMIN_TOKEN` is set; they then require
`Authorization: Bearer <token>` (401 without it). When the token is unset they are not
mounted at all and answer 404. The same token enables the operator console (`/console`,
a browser UI with a login form; not part of this API)."""


def create_app(settings: Settings, on_fatal: Callable[[str], None] | None = None) -> Litestar:
    service = Service(settings, on_fatal=on_fatal)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        task = asyncio.create_task(service.run(), name="supervisor-loop")
        try:
            yield
        finally:
            service.stop_event.set()
            try:
                await asyncio.wait_for(task, 10)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            await service.close()

    metrics.reset(tuple(sorted(settings.rules.enabled)))
    metrics.BUILD.info({"version": metrics.package_version(), "dbos_schema": "unknown"})
    routes: list[Any] = [HealthController, MetricsController]
    template_config = None
    if settings.admin_token:
        routes.append(
            Router(
                path="/",
                route_handlers=[AdminController],
                guards=[bearer_guard(settings.admin_token, realm="limbo-supervisor")],
            )
        )
        routes.append(console.console_router(settings.admin_token))
        template_config = console.template_config()
    else:
        routes.append(console.disabled_router())
    log_config = logging_config("supervisor", level=settings.log_level)
    # A console request without a session is answered with the login page, not an error.
    log_config.disable_stack_trace = {*log_config.disable_stack_trace, console.LoginRequired}
    app = Litestar(
        route_handlers=routes,
        lifespan=[lifespan],
        middleware=[
            # The console's CSP and other headers on every /console response, errors too.
            console.SecurityHeaders,
            PrometheusConfig(
                app_name="limbo-supervisor",
                prefix="limbo_supervisor_http",
                group_path=True,
                exclude=["/metrics"],
            ).middleware,
        ],
        plugins=[
            StructlogPlugin(
                StructlogConfig(
                    structlog_logging_config=log_config, enable_middleware_logging=False
                )
            ),
            ProblemDetailsPlugin(ProblemDetailsConfig(enable_for_all_http_exceptions=True)),
        ],
        template_config=template_config,
        openapi_config=OpenAPIConfig(
            title="Limbo supervisor", version=metrics.package_version(), description=DESCRIPTION
        ),
    )
    app.state.service = service
    return app
