"""Settings from the environment: defaults, parsing, and ConfigError naming the variable."""

from __future__ import annotations

import pytest

from services.shared.config import ConfigError
from services.supervisor.settings import RULE_NAMES, load_settings

URL = "postgresql://u:pw@localhost/db"


def test_defaults() -> None:
    s = load_settings({"DATABASE_URL": URL})
    assert (s.port, s.poll_interval, s.dbos_schema, s.dry_run, s.admin_token) == (
        8001,
        1.0,
        "dbos",
        False,
        None,
    )
    assert s.rules.enabled == frozenset(RULE_NAMES)
    assert s.rules.executor_timeout_ms == 6_000
    assert s.rules.default_max_recovery_attempts == 100
    assert s.rules.version_orphan_policy == "alert"
    assert "pw" not in repr(s)


def test_parsing() -> None:
    s = load_settings(
        {
            "DATABASE_URL": URL,
            "SUPERVISOR_DISABLED_RULES": "version_orphaned, dead_child",
            "SUPERVISOR_MAX_RECOVERY_ATTEMPTS": "job=3, other=none",
            "SUPERVISOR_DEFAULT_MAX_RECOVERY_ATTEMPTS": "unlimited",
            "SUPERVISOR_EXECUTOR_TIMEOUT": "2.5",
            "SUPERVISOR_VERSION_ORPHAN_POLICY": "upgrade",
            "SUPERVISOR_DRY_RUN": "true",
            "DBOS_SYSTEM_SCHEMA": "dbos_sys",
        }
    )
    assert s.rules.enabled == {"exhausted", "orphaned"}
    assert dict(s.rules.max_recovery_overrides) == {"job": 3, "other": None}
    assert s.rules.default_max_recovery_attempts is None
    assert s.rules.executor_timeout_ms == 2_500
    assert s.rules.version_orphan_policy == "upgrade"
    assert s.dry_run
    assert s.dbos_schema == "dbos_sys"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", ""),
        ("DATABASE_URL", "mysql://x"),
        ("SUPERVISOR_PORT", "0"),
        ("SUPERVISOR_POLL_INTERVAL", "soon"),
        ("SUPERVISOR_RULES", "exhausted,bogus"),
        ("SUPERVISOR_MAX_RECOVERY_ATTEMPTS", "job=-1"),
        ("SUPERVISOR_MAX_RECOVERY_ATTEMPTS", "job"),
        ("SUPERVISOR_VERSION_ORPHAN_POLICY", "delete"),
        ("SUPERVISOR_DRY_RUN", "maybe"),
        ("DBOS_SYSTEM_SCHEMA", "dbos; DROP TABLE x"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    env = {"DATABASE_URL": URL, variable: value}
    with pytest.raises(ConfigError) as error:
        load_settings(env)
    assert error.value.variable == variable
