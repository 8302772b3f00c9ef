"""The supervisor's settings, read once from the environment (ConfigError names the variable).

The rules' settings are declared on each rule's own config type (rules/*.py) and on
`CommonSettings`; `documented_variables()` lists every variable for the README.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.shared.config import ConfigError, Env, EnvSetting, load_fields, settings_of
from services.supervisor.rules import DEFAULT_ENABLED, RULE_NAMES, RULES, RuleSettings
from services.supervisor.rules.base import CommonSettings

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")

__all__ = ["RULE_NAMES", "RuleSettings", "Settings", "documented_variables", "load_settings"]


@dataclass(frozen=True)
class Settings:
    database_url: str
    dbos_schema: str = "dbos"
    port: int = 8001
    host: str = "0.0.0.0"
    poll_interval: float = 1.0
    # How often the leader checks executors' leases and session locks (cheap), sweeping at
    # once when one dies: a dead process's work moves within its grace plus this.
    liveness_poll_interval: float = 0.1
    dry_run: bool = False
    admin_token: str | None = None
    # The console's path prefix behind a reverse proxy that strips it (e.g. "/ops"); None:
    # the request's X-Forwarded-Prefix, if any.
    console_prefix: str | None = None
    batch_size: int = 10_000
    scan_limit: int = 10_000
    lock_timeout_ms: int = 2_000
    actor: str = "supervisor"
    log_level: str = "INFO"
    # Above this many decisions in one transaction, the log says them in one summary line
    # (the audit table keeps one row each).
    log_summary_above: int = 100
    # Dead executors holding no PENDING or ENQUEUED work are forgotten this long after their
    # death (0: never), so a replaced pod does not stay "dead" on dashboards and alerts.
    executor_retention_ms: int = 3_600_000
    rules: RuleSettings = field(default_factory=RuleSettings)

    def __repr__(self) -> str:  # never print the token or the URL's password
        return (
            f"Settings(dbos_schema={self.dbos_schema!r}, port={self.port}, dry_run={self.dry_run})"
        )


def parse_rules(variable: str, text: str | None, default: frozenset[str]) -> frozenset[str]:
    if text is None:
        return default
    names = {part.strip() for part in text.split(",") if part.strip()}
    if names & {"none", "off"}:
        return frozenset()
    unknown = names - set(RULE_NAMES)
    if unknown:
        raise ConfigError(
            variable,
            f"unknown rule(s) {', '.join(sorted(unknown))}; known: {', '.join(RULE_NAMES)}",
        )
    return frozenset(names)


def load_rule_settings(env: Env) -> RuleSettings:
    enabled = parse_rules("SUPERVISOR_RULES", env.raw("SUPERVISOR_RULES"), DEFAULT_ENABLED)
    enabled |= parse_rules(
        "SUPERVISOR_ENABLE_RULES", env.raw("SUPERVISOR_ENABLE_RULES"), frozenset()
    )
    enabled -= parse_rules(
        "SUPERVISOR_DISABLED_RULES", env.raw("SUPERVISOR_DISABLED_RULES"), frozenset()
    )
    return RuleSettings(
        enabled=enabled,
        common=load_fields(CommonSettings, env),
        configs={rule.name: load_fields(rule.config_type, env) for rule in RULES},
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = Env(environ)
    url = env.required_str("DATABASE_URL")
    if not url.startswith(("postgresql://", "postgres://", "postgresql+")):
        raise ConfigError("DATABASE_URL", "must be a postgresql:// URL")
    schema = env.string("DBOS_SYSTEM_SCHEMA", "dbos")
    if not _IDENTIFIER.match(schema):
        raise ConfigError("DBOS_SYSTEM_SCHEMA", f"must be a plain SQL identifier, got {schema!r}")
    log_level = env.choice("SUPERVISOR_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
    return Settings(
        database_url=url,
        dbos_schema=schema,
        port=env.integer("SUPERVISOR_PORT", 8001, minimum=1, maximum=65535),
        host=env.string("SUPERVISOR_HOST", "0.0.0.0"),
        poll_interval=env.number("SUPERVISOR_POLL_INTERVAL", 1.0, minimum=0.05, maximum=3600),
        liveness_poll_interval=env.number(
            "SUPERVISOR_LIVENESS_POLL_INTERVAL", 0.1, minimum=0.02, maximum=60
        ),
        dry_run=env.flag("SUPERVISOR_DRY_RUN", False),
        admin_token=env.optional_str("SUPERVISOR_ADMIN_TOKEN"),
        console_prefix=_console_prefix(env.optional_str("SUPERVISOR_CONSOLE_PREFIX")),
        batch_size=env.integer("SUPERVISOR_BATCH_SIZE", 10_000, minimum=1, maximum=100_000),
        scan_limit=env.integer("SUPERVISOR_SCAN_LIMIT", 10_000, minimum=1, maximum=1_000_000),
        lock_timeout_ms=round(env.number("SUPERVISOR_LOCK_TIMEOUT", 2.0, minimum=0.05) * 1000),
        actor=env.string("SUPERVISOR_ACTOR", f"supervisor@{socket.gethostname()}:{os.getpid()}"),
        log_level=log_level,
        log_summary_above=env.integer("SUPERVISOR_LOG_SUMMARY_ABOVE", 100, minimum=1),
        executor_retention_ms=round(
            env.number("SUPERVISOR_EXECUTOR_RETENTION", 3600.0, minimum=0) * 1000
        ),
        rules=load_rule_settings(env),
    )


def _console_prefix(value: str | None) -> str | None:
    if value is None or value.strip("/") == "":
        return None
    prefix = "/" + value.strip("/")
    if not _PREFIX.match(prefix):
        raise ConfigError(
            "SUPERVISOR_CONSOLE_PREFIX",
            f"must be a plain URL path such as /ops/limbo, got {value!r}",
        )
    return prefix


def documented_variables() -> dict[str, EnvSetting]:
    """Every variable a rule (or CommonSettings) reads, once each, in registry order."""
    found: dict[str, EnvSetting] = {}
    classes: list[type] = [CommonSettings, *(rule.config_type for rule in RULES)]
    for cls in classes:
        for _, meta, _ in settings_of(cls):
            found.setdefault(meta.variable, meta)
    return found
