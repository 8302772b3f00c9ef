"""Settings from the environment: defaults, parsing, and ConfigError naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.shared.config import ConfigError
from services.supervisor.rules import BY_NAME, DEFAULT_ENABLED, RULE_NAMES
from services.supervisor.settings import documented_variables, load_settings

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
    assert s.rules.enabled == DEFAULT_ENABLED == frozenset(RULE_NAMES) - {"stalled"}
    assert s.rules.config(BY_NAME["orphaned"]).report_grace_ms == 5_000
    assert s.rules.common.default_max_recovery_attempts == 100
    assert s.rules.config(BY_NAME["version_orphaned"]).version_orphan_policy == "alert"
    assert s.liveness_poll_interval == 0.1
    assert "pw" not in repr(s)


def test_parsing() -> None:
    s = load_settings(
        {
            "DATABASE_URL": URL,
            "SUPERVISOR_DISABLED_RULES": "version_orphaned, dead_child",
            "SUPERVISOR_MAX_RECOVERY_ATTEMPTS": "job=3, other=none",
            "SUPERVISOR_DEFAULT_MAX_RECOVERY_ATTEMPTS": "unlimited",
            "SUPERVISOR_REPORT_GRACE": "2.5",
            "SUPERVISOR_ENABLE_RULES": "stalled",
            "SUPERVISOR_STALL_TIMEOUTS": "etl=600, report=0.5",
            "SUPERVISOR_VERSION_ORPHAN_POLICY": "upgrade",
            "SUPERVISOR_DRY_RUN": "true",
            "DBOS_SYSTEM_SCHEMA": "dbos_sys",
        }
    )
    assert s.rules.enabled == {"exhausted", "orphaned", "stalled"}
    assert dict(s.rules.common.max_recovery_overrides) == {"job": 3, "other": None}
    assert s.rules.common.default_max_recovery_attempts is None
    assert s.rules.config(BY_NAME["orphaned"]).report_grace_ms == 2_500
    assert s.rules.config(BY_NAME["stalled"]).per_name_ms == {"etl": 600_000, "report": 500}
    assert s.rules.config(BY_NAME["version_orphaned"]).version_orphan_policy == "upgrade"
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
        ("SUPERVISOR_ENABLE_RULES", "stalld"),
        ("SUPERVISOR_STALL_TIMEOUTS", "etl=soon"),
        ("SUPERVISOR_REPORT_GRACE", "0"),
        ("SUPERVISOR_LIVENESS_POLL_INTERVAL", "0"),
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


def test_every_rule_setting_is_documented_in_the_supervisor_readme() -> None:
    """Settings derive from the registry of rules: adding one without documenting it fails."""
    readme = (Path(__file__).resolve().parents[2] / "services/supervisor/README.md").read_text()
    missing = [v for v in documented_variables() if f"`{v}`" not in readme]
    assert missing == []
