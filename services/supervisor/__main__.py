"""`python -m services.supervisor`: serve the supervisor with uvicorn on SUPERVISOR_PORT.

Exit codes: 0 after a graceful stop, 2 for a configuration error or an unsupported DBOS
schema, 1 if the server failed to start.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import structlog
import uvicorn

from services.shared.config import ConfigError
from services.supervisor.api.app import create_app
from services.supervisor.settings import load_settings


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"supervisor: configuration error: {exc}", file=sys.stderr)
        return 2
    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    structlog.get_logger("limbo.supervisor").info(
        "supervisor_starting",
        port=settings.port,
        dry_run=settings.dry_run,
        rules=sorted(settings.rules.enabled),
        admin_api=settings.admin_token is not None,
        poll_interval_s=settings.poll_interval,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=5,
            proxy_headers=False,
        )
    )
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    try:
        server.run()
    except SystemExit as exc:
        if fatal:
            return 2
        raise exc
    if fatal:
        print(f"supervisor: {fatal[0]}", file=sys.stderr)
        return 2
    return 0 if server.started else 1


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
