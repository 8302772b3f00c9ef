"""The worker's settings, read once from the environment (ConfigError names the variable)."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from limbo import LeaseTiming, NotConfigured
from services.shared.config import ConfigError, Env

_EXECUTOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
DEFAULT_APP = "services.demo.job"


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
    apps: tuple[str, ...]
    dbos_schema: str
    lease: LeaseTiming
    api_token: str | None
    shutdown_timeout: int
    readiness_timeout: float
    log_level: str
    log_format: str

    def __repr__(self) -> str:  # never print the token or the URL's password
        return f"WorkerSettings(executor_id={self.executor_id!r}, apps={self.apps!r})"

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
        apps = tuple(
            a.strip() for a in env.string("WORKER_APP", DEFAULT_APP).split(",") if a.strip()
        )
        for app in apps:
            if not _MODULE.match(app):
                raise ConfigError("WORKER_APP", f"not an importable module name: {app!r}")
        if not apps:
            raise ConfigError("WORKER_APP", "names no module")
        schema = env.string("DBOS_SYSTEM_SCHEMA", "dbos")
        if not _IDENTIFIER.match(schema):
            raise ConfigError(
                "DBOS_SYSTEM_SCHEMA", f"must be a plain SQL identifier, got {schema!r}"
            )
        try:
            lease = LeaseTiming.from_env(environ)
        except NotConfigured as exc:
            variable = str(exc).split(":", 1)[0]
            raise ConfigError(variable, str(exc).split(":", 1)[-1].strip()) from None
        return cls(
            database_url=database_url,
            host=env.string("WORKER_HOST", "0.0.0.0"),
            port=env.integer("WORKER_PORT", 8000, minimum=1, maximum=65535),
            app_name=env.string("APP_NAME", "limbo"),
            app_version=env.string("APP_VERSION", "0.1.0"),
            executor_id=executor_id,
            apps=apps,
            dbos_schema=schema,
            lease=lease,
            api_token=env.optional_str("WORKER_API_TOKEN"),
            shutdown_timeout=env.integer("WORKER_SHUTDOWN_TIMEOUT", 20, minimum=0, maximum=3600),
            readiness_timeout=env.number("WORKER_READINESS_TIMEOUT", 1.0, minimum=0.05, maximum=30),
            log_level=env.choice(
                "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
            ),
            log_format=env.choice("LOG_FORMAT", "auto", ("auto", "json", "console")),
        )
