"""Configuration errors name the variable; the worker refuses to start on them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.demo.settings import DemoSettings
from services.shared.config import ConfigError, Env, load_fields
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
        ({**BASE, "LIMBO_BEAT_INTERVAL": "nan"}, "LIMBO_BEAT_INTERVAL"),
        (
            {**BASE, "LIMBO_SESSION_GRACE": "0.1"},
            "LIMBO_BEAT_INTERVAL / LIMBO_SESSION_GRACE / LIMBO_LEASE",
        ),
        ({**BASE, "WORKER_APP": "not a module"}, "WORKER_APP"),
        ({**BASE, "DBOS_SYSTEM_SCHEMA": "x;y"}, "DBOS_SYSTEM_SCHEMA"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        WorkerSettings.from_env(env)
    assert caught.value.variable == variable
    assert variable in str(caught.value)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DEMO_CHAOS": "maybe"}, "DEMO_CHAOS"),
        ({"DEMO_MAX_RECOVERY_ATTEMPTS": "-1"}, "DEMO_MAX_RECOVERY_ATTEMPTS"),
        ({"DEMO_QUEUE_CONCURRENCY": "0"}, "DEMO_QUEUE_CONCURRENCY"),
    ],
)
def test_bad_demo_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_fields(DemoSettings, Env(env))
    assert caught.value.variable == variable


def test_defaults_follow_the_seed() -> None:
    settings = WorkerSettings.from_env(BASE)
    assert settings.port == 8000
    assert settings.apps == ("services.demo.job",)
    assert settings.executor_id == default_executor_id() != "local"
    assert (settings.lease.beat_s, settings.lease.grace_s, settings.lease.lease_s) == (
        0.25,
        1.0,
        5.0,
    )
    demo = load_fields(DemoSettings, Env({}))
    assert demo.max_recovery_attempts == 2
    assert demo.queue_name == "example-queue"
    assert not demo.chaos_enabled


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


def test_a_bad_hosted_app_setting_stops_the_process_with_2(database_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.worker"],
        env={
            "DATABASE_URL": database_url,
            "WORKER_PORT": "18931",
            "WORKER_EXECUTOR_ID": "bad-demo",
            "DEMO_QUEUE_CONCURRENCY": "zero",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout[-2000:]
    assert "DEMO_QUEUE_CONCURRENCY" in result.stderr
