"""`python -m services.worker`: serve the worker with uvicorn on WORKER_PORT."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import structlog
import uvicorn

from services.shared.config import ConfigError
from services.shared.logging import bind_process_fields
from services.worker.app import create_app
from services.worker.settings import WorkerSettings


def main() -> int:
    try:
        settings = WorkerSettings.from_env()
    except ConfigError as exc:
        print(f"worker: configuration error: {exc}", file=sys.stderr)
        return 2
    bind_process_fields(executor_id=settings.executor_id, app_version=settings.app_version)
    refusals: list[str] = []
    app = create_app(settings, refusals)
    structlog.get_logger("services.worker").info(
        "worker_starting", port=settings.port, executor_id=settings.executor_id
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,  # our structlog handlers format uvicorn's lines too
            lifespan="on",
            timeout_graceful_shutdown=max(settings.shutdown_timeout // 2, 1),
            proxy_headers=False,
        )
    )
    # uvicorn re-raises the signal that stopped it once shutdown is done; a graceful stop
    # is a clean exit, so that re-raised SIGTERM/SIGINT ends the process with status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    try:
        server.run()
    except SystemExit:
        if not refusals:
            raise
    if refusals:
        print(f"worker: refused to start: {refusals[0]}", file=sys.stderr)
        return 2
    # uvicorn swallows a failed startup and returns; report it as an error exit.
    return 0 if server.started else 1


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
