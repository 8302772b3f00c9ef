"""`make run`'s stack for real: deploy/run_local.py, supervisord, the worker and the supervisor."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.localpg import free_port
from tests.conftest import Spawn


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Short: supervisord's control socket lives here (sun_path is 108 bytes).
    path = Path(tempfile.mkdtemp(prefix="run-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_stack_serves_logs_json_and_stops_cleanly(
    spawn: Spawn, database_url: str, run_dir: Path
) -> None:
    worker_port, supervisor_port = free_port(), free_port()
    stack = spawn(
        "deploy.run_local",
        {
            "DATABASE_URL": database_url,
            "LIMBO_RUN_DIR": str(run_dir),
            "WORKER_PORT": str(worker_port),
            "SUPERVISOR_PORT": str(supervisor_port),
            "WORKER_EXECUTOR_ID": "run-local-test",
        },
        name="run_local",
    )
    stack.wait_http(f"http://127.0.0.1:{worker_port}/readyz", timeout=60)
    stack.wait_http(f"http://127.0.0.1:{supervisor_port}/readyz", timeout=60)
    assert stack.stop(timeout=60) == 0
    services: set[str] = set()
    for line in stack.log_lines():
        if line.startswith("run: ") or not line.strip():
            continue  # run_local's own messages
        record = json.loads(line)  # every other line: one whole JSON object
        services.add(str(record.get("service")))
    assert {"worker", "supervisor", "supervisord"} <= services
    # supervisord's own log went to the run directory, not to stdout
    assert (run_dir / "supervisord.log").exists()
