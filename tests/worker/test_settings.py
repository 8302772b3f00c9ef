"""Configuration errors name the variable; the worker refuses to start on them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.shared.config import ConfigError
from services.worker.settings import WorkerSettings, default_executor_id

BASE = {"DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/db"}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "DATABASE_URL"),
        ({**BASE, "DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({**BASE, "WORKER_PORT": "eighty"}, "WORKER_PORT"),
        ({**BASE, "WORKER_PORT": "70000"}, "WORKER_PORT"),
        ({**BASE, "WORKER_EXECUTOR_ID": "local"}, "WORKER_EXECUTOR_ID"),
        ({**BASE, "WORKER_EXECUTOR_ID": "has space"}, "WORKER_EXECUTOR_ID"),
        ({**BASE, "WORKER_CHAOS": "maybe"}, "WORKER_CHAOS"),
        ({**BASE, "WORKER_MAX_RECOVERY_ATTEMPTS": "-1"}, "WORKER_MAX_RECOVERY_ATTEMPTS"),
        ({**BASE, "WORKER_HEARTBEAT_INTERVAL": "nan"}, "WORKER_HEARTBEAT_INTERVAL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        WorkerSettings.from_env(env)
    assert caught.value.variable == variable
    assert variable in str(caught.value)


def test_defaults_follow_the_seed() -> None:
    settings = WorkerSettings.from_env(BASE)
    assert settings.port == 8000
    assert settings.max_recovery_attempts == 2
    assert settings.queue_name == "example-queue"
    assert settings.executor_id == default_executor_id() != "local"
    assert not settings.chaos_enabled
    assert settings.heartbeat_interval == 2.0


def test_process_exits_2_with_the_variable_and_no_secret() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.worker"],
        env={"DATABASE_URL": "postgresql://u:topsecret@127.0.0.1:1/db", "WORKER_PORT": "x"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "WORKER_PORT" in result.stderr
    assert "topsecret" not in result.stderr + result.stdout
