"""The worker's Litestar application factory: the generic API, health, metrics, and the
routes the hosted apps add."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.plugins.structlog import StructlogConfig, StructlogPlugin

from limbo import LimboError
from services.shared.auth import PUBLIC, bearer_guard
from services.shared.config import ConfigError
from services.shared.logging import logging_config
from services.worker.api import HealthController, WorkflowApiController
from services.worker.log_context import add_workflow_context
from services.worker.metrics import BUILD_INFO
from services.worker.runtime import WorkerRuntime
from services.worker.settings import WorkerSettings


class MetricsController(PrometheusController):
    opt = {PUBLIC: True}


class StartupRefused(RuntimeError):
    """The worker cannot start as configured (a hosted app's setting, a held executor ID)."""


def create_app(settings: WorkerSettings, refusals: list[str] | None = None) -> Litestar:
    """`refusals` collects why the start was refused, for the process's exit status."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            runtime = await WorkerRuntime.start(settings)
        except (ConfigError, LimboError) as exc:
            structlog.get_logger(__name__).error("worker_refused", reason=str(exc))
            if refusals is not None:
                refusals.append(str(exc))
            raise StartupRefused(str(exc)) from None
        app.state.runtime = runtime
        # Routes of the hosted apps exist only once they are set up.
        for handler in runtime.host.route_handlers:
            app.register(handler)
        try:
            yield
        finally:
            await runtime.stop()

    BUILD_INFO.info(
        {
            "version": settings.app_version,
            "application": settings.app_name,
            "executor_id": settings.executor_id,
            "apps": ",".join(settings.apps),
        }
    )
    log_config = logging_config(
        "worker",
        level=settings.log_level,
        as_json=None if settings.log_format == "auto" else settings.log_format == "json",
        extra_processors=[add_workflow_context],
    )
    return Litestar(
        route_handlers=[WorkflowApiController, HealthController, MetricsController],
        lifespan=[lifespan],
        guards=[bearer_guard(settings.api_token, realm="limbo-worker")],
        middleware=[
            PrometheusConfig(app_name="limbo-worker", prefix="litestar", group_path=True).middleware
        ],
        plugins=[
            StructlogPlugin(
                StructlogConfig(
                    structlog_logging_config=log_config, enable_middleware_logging=False
                )
            ),
            ProblemDetailsPlugin(ProblemDetailsConfig(enable_for_all_http_exceptions=True)),
        ],
        openapi_config=OpenAPIConfig(title="Limbo worker", version=settings.app_version),
    )
