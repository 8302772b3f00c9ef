"""The heartbeat rows the supervisor relies on, from a real worker process."""

from __future__ import annotations

import signal
import time
from typing import Any

from tests.conftest import Spawn
from tests.support.processes import wait_until
from tests.support.worker import fetch, start_worker


async def _executor(database_url: str, executor_id: str) -> dict[str, Any]:
    rows = await fetch(
        database_url,
        "SELECT *, now() - last_seen_at AS age FROM limbo.executors WHERE executor_id = $1",
        executor_id,
    )
    assert len(rows) == 1
    return dict(rows[0])


async def test_heartbeat_rows_appear_advance_and_mark_stopped(
    spawn: Spawn, database_url: str
) -> None:
    worker = start_worker(spawn, database_url, "exec-hb", APP_VERSION="1.2.3")
    first = await _executor(database_url, "exec-hb")
    assert first["application_name"] == "limbo"
    assert first["application_version"] == "1.2.3"
    assert first["pid"] == worker.proc.pid
    assert first["stopped_at"] is None
    time.sleep(1.5)  # three beats at 0.5 s
    second = await _executor(database_url, "exec-hb")
    assert second["last_seen_at"] > first["last_seen_at"]
    assert second["started_at"] == first["started_at"]

    registry = await fetch(
        database_url,
        "SELECT workflow_name, max_recovery_attempts, published_by FROM limbo.workflow_registry"
        " WHERE application_version = '1.2.3' ORDER BY workflow_name",
    )
    assert [(r["workflow_name"], r["max_recovery_attempts"]) for r in registry] == [
        ("limbo.job", 2),
        ("limbo.job_child", 2),
    ]
    assert {r["published_by"] for r in registry} == {"exec-hb"}

    worker.proc.signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=30) == 0
    stopped = await _executor(database_url, "exec-hb")
    assert stopped["stopped_at"] is not None


async def test_unlimited_attempts_are_published_as_null(spawn: Spawn, database_url: str) -> None:
    start_worker(spawn, database_url, "exec-unl", WORKER_MAX_RECOVERY_ATTEMPTS="unlimited")
    rows = await fetch(database_url, "SELECT max_recovery_attempts FROM limbo.workflow_registry")
    assert rows
    assert all(r["max_recovery_attempts"] is None for r in rows)


async def test_a_blocked_event_loop_does_not_stop_the_heartbeat(
    spawn: Spawn, database_url: str
) -> None:
    """The heartbeat has its own thread: a stalled loop must not make the worker look dead."""
    worker = start_worker(spawn, database_url, "exec-stall", WORKER_CHAOS="1")
    response = worker.enqueue(
        children=1, steps=1, dedup_id="stall", chaos={"step": 0, "mode": "stall", "times": 1}
    )
    assert response.status_code == 202
    wait_until(
        lambda: any(line.get("event") == "chaos" for line in worker.proc.json_lines()),
        20,
        what="the stall to begin",
    )
    # While the loop is blocked (8 s), the HTTP API cannot answer, but the heartbeat beats.
    samples = []
    for _ in range(6):
        row = await _executor(database_url, "exec-stall")
        samples.append(row["age"].total_seconds())
        time.sleep(1.0)
    assert max(samples) < 2.0, f"heartbeat stalled with the event loop: ages {samples}"
    assert worker.wait_terminal(response.json()["workflow_id"], 60)["status"] == "SUCCESS"
