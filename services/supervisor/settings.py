"""The supervisor's settings, read once from the environment (ConfigError names the variable)."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.shared.config import ConfigError, Env

RULE_NAMES: tuple[str, ...] = ("exhausted", "dead_child", "orphaned", "version_orphaned")
VERSION_POLICIES: tuple[str, ...] = ("alert", "dead_letter", "upgrade")
# DBOS's own default for `max_recovery_attempts` (decorator argument, not stored anywhere).
DBOS_DEFAULT_MAX_RECOVERY_ATTEMPTS = 100
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class RuleSettings:
    """Everything the pure rule functions need; no I/O, no environment."""

    enabled: frozenset[str] = frozenset(RULE_NAMES)
    default_max_recovery_attempts: int | None = DBOS_DEFAULT_MAX_RECOVERY_ATTEMPTS
    # Per workflow name; None means unlimited. Wins over the published registry.
    max_recovery_overrides: Mapping[str, int | None] = field(default_factory=dict)
    executor_timeout_ms: int = 6_000
    # Executors absent from limbo.executors (apps that do not heartbeat): left alone unless set.
    assume_unknown_executors_dead: bool = False
    stall_timeout_ms: int = 60_000
    version_orphan_after_ms: int = 300_000
    version_orphan_policy: str = "alert"
    # A new incarnation of an executor must have started this long after a workflow's claim
    # before the claim counts as abandoned (tolerates clock skew between hosts).
    restart_tolerance_ms: int = 2_000


@dataclass(frozen=True)
class Settings:
    database_url: str
    dbos_schema: str = "dbos"
    port: int = 8001
    host: str = "0.0.0.0"
    poll_interval: float = 1.0
    dry_run: bool = False
    admin_token: str | None = None
    batch_size: int = 10_000
    scan_limit: int = 10_000
    lock_timeout_ms: int = 2_000
    actor: str = "supervisor"
    log_level: str = "INFO"
    rules: RuleSettings = field(default_factory=RuleSettings)

    def __repr__(self) -> str:  # never print the token or the URL's password
        return (
            f"Settings(dbos_schema={self.dbos_schema!r}, port={self.port}, dry_run={self.dry_run})"
        )


def parse_overrides(variable: str, text: str | None) -> dict[str, int | None]:
    """`name=3,other=none` -> {"name": 3, "other": None}."""
    overrides: dict[str, int | None] = {}
    if not text:
        return overrides
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.rpartition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ConfigError(variable, f"expected name=N entries, got {item!r}")
        if value.lower() in {"none", "unlimited"}:
            overrides[name] = None
            continue
        try:
            parsed = int(value)
        except ValueError:
            raise ConfigError(
                variable, f"{name}: expected an integer or none, got {value!r}"
            ) from None
        if parsed < 0:
            raise ConfigError(variable, f"{name}: must be at least 0, got {parsed}")
        overrides[name] = parsed
    return overrides


def parse_rules(variable: str, text: str | None) -> frozenset[str]:
    if text is None:
        return frozenset(RULE_NAMES)
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


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def load_rule_settings(env: Env) -> RuleSettings:
    enabled = parse_rules("SUPERVISOR_RULES", env.raw("SUPERVISOR_RULES"))
    disabled_raw = env.raw("SUPERVISOR_DISABLED_RULES")
    disabled = (
        frozenset()
        if disabled_raw is None
        else parse_rules("SUPERVISOR_DISABLED_RULES", disabled_raw)
    )
    return RuleSettings(
        enabled=enabled - disabled,
        default_max_recovery_attempts=env.optional_int(
            "SUPERVISOR_DEFAULT_MAX_RECOVERY_ATTEMPTS", minimum=0
        )
        if env.raw("SUPERVISOR_DEFAULT_MAX_RECOVERY_ATTEMPTS") is not None
        else DBOS_DEFAULT_MAX_RECOVERY_ATTEMPTS,
        max_recovery_overrides=parse_overrides(
            "SUPERVISOR_MAX_RECOVERY_ATTEMPTS", env.raw("SUPERVISOR_MAX_RECOVERY_ATTEMPTS")
        ),
        executor_timeout_ms=_ms(
            env.number("SUPERVISOR_EXECUTOR_TIMEOUT", 6.0, minimum=0.5, maximum=86_400)
        ),
        assume_unknown_executors_dead=env.flag("SUPERVISOR_ASSUME_UNKNOWN_EXECUTORS_DEAD", False),
        stall_timeout_ms=_ms(env.number("SUPERVISOR_STALL_TIMEOUT", 60.0, minimum=0.5)),
        version_orphan_after_ms=_ms(
            env.number("SUPERVISOR_VERSION_ORPHAN_AFTER", 300.0, minimum=0.0)
        ),
        version_orphan_policy=env.choice(
            "SUPERVISOR_VERSION_ORPHAN_POLICY", "alert", VERSION_POLICIES
        ),
        restart_tolerance_ms=_ms(
            env.number("SUPERVISOR_RESTART_TOLERANCE", 2.0, minimum=0.0, maximum=3600)
        ),
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
        dry_run=env.flag("SUPERVISOR_DRY_RUN", False),
        admin_token=env.optional_str("SUPERVISOR_ADMIN_TOKEN"),
        batch_size=env.integer("SUPERVISOR_BATCH_SIZE", 10_000, minimum=1, maximum=100_000),
        scan_limit=env.integer("SUPERVISOR_SCAN_LIMIT", 10_000, minimum=1, maximum=1_000_000),
        lock_timeout_ms=_ms(env.number("SUPERVISOR_LOCK_TIMEOUT", 2.0, minimum=0.05)),
        actor=env.string("SUPERVISOR_ACTOR", f"supervisor@{socket.gethostname()}:{os.getpid()}"),
        log_level=log_level,
        rules=load_rule_settings(env),
    )
