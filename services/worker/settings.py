"""The worker's settings, read once from the environment."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from services.shared.config import ConfigError, Env

_EXECUTOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")


def default_executor_id() -> str:
    """Stable per host (a pod name, a container hostname); never DBOS's shared `local`."""
    return "worker-" + re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:90]


@dataclass(frozen=True)
class WorkerSettings:
    database_url: str
    host: str
    port: int
    app_name: str
    app_version: str
    executor_id: str
    queue_name: str
    worker_concurrency: int
    queue_poll_interval: float
    max_recovery_attempts: int | None
    step_seconds: float
    sleep_seconds: float
    chaos_enabled: bool
    heartbeat_interval: float
    api_token: str | None
    shutdown_timeout: int
    readiness_timeout: float
    log_level: str
    log_format: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        env = Env(environ)
        executor_id = env.string("WORKER_EXECUTOR_ID", default_executor_id())
        if executor_id == "local":
            raise ConfigError(
                "WORKER_EXECUTOR_ID",
                "'local' is DBOS's shared default; give each worker its own ID",
            )
        if not _EXECUTOR_ID.match(executor_id):
            raise ConfigError(
                "WORKER_EXECUTOR_ID",
                "must be 1-100 characters of letters, digits, '.', '_', ':' or '-'",
            )
        database_url = env.required_str("DATABASE_URL")
        if not database_url.startswith(("postgresql://", "postgres://", "postgresql+")):
            raise ConfigError("DATABASE_URL", "must be a postgresql:// URL")
        return cls(
            database_url=database_url,
            host=env.string("WORKER_HOST", "0.0.0.0"),
            port=env.integer("WORKER_PORT", 8000, minimum=1, maximum=65535),
            app_name=env.string("APP_NAME", "limbo"),
            app_version=env.string("APP_VERSION", "0.1.0"),
            executor_id=executor_id,
            queue_name=env.string("WORKER_QUEUE_NAME", "example-queue"),
            worker_concurrency=env.integer("WORKER_CONCURRENCY", 10, minimum=1, maximum=1000),
            queue_poll_interval=env.number(
                "WORKER_QUEUE_POLL_INTERVAL", 0.25, minimum=0.01, maximum=60
            ),
            max_recovery_attempts=env.optional_int("WORKER_MAX_RECOVERY_ATTEMPTS", minimum=0)
            if env.raw("WORKER_MAX_RECOVERY_ATTEMPTS") is not None
            else 2,
            step_seconds=env.number("WORKER_STEP_SECONDS", 0.2, minimum=0, maximum=3600),
            sleep_seconds=env.number("WORKER_SLEEP_SECONDS", 0.1, minimum=0, maximum=3600),
            chaos_enabled=env.flag("WORKER_CHAOS", False),
            heartbeat_interval=env.number(
                "WORKER_HEARTBEAT_INTERVAL", 2.0, minimum=0.1, maximum=60
            ),
            api_token=env.optional_str("WORKER_API_TOKEN"),
            shutdown_timeout=env.integer("WORKER_SHUTDOWN_TIMEOUT", 20, minimum=0, maximum=3600),
            readiness_timeout=env.number("WORKER_READINESS_TIMEOUT", 1.0, minimum=0.05, maximum=30),
            log_level=env.choice(
                "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
            ),
            log_format=env.choice("LOG_FORMAT", "auto", ("auto", "json", "console")),
        )
