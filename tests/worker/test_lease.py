"""The lease the supervisor relies on (limbo.executors, through the contract), from a real
worker process: registration, beats, the work report, the registry, the stop mark."""

from __future__ import annotations

import signal
import time
from typing import Any

from testkit.processes import wait_until
from testkit.worker import fetch, start_worker
from tests.conftest import Spawn


async def _executor(database_url: str, executor_id: str) -> dict[str, Any]:
    rows = await fetch(
        database_url,
        "SELECT *, now() - last_seen_at AS age FROM limbo.executors WHERE executor_id = $1",
        executor_id,
    )
    assert len(rows) == 1
    return dict(rows[0])


async def test_lease_rows_appear_advance_and_mark_stopped(spawn: Spawn, database_url: str) -> None:
    worker = start_worker(spawn, database_url, "exec-hb", APP_VERSION="1.2.3")
    first = await _executor(database_url, "exec-hb")
    assert first["application_name"] == "limbo"
    assert first["application_version"] == "1.2.3"
    assert first["pid"] == worker.proc.pid
    assert first["stopped_at"] is None
    assert first["lease_ms"] == 5_000
    assert first["grace_ms"] == 1_000
    time.sleep(1.5)  # six beats at 0.25 s
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
    state = await fetch(
        database_url,
        "SELECT state, lock_held FROM limbo.executor_liveness WHERE executor_id = $1",
        "exec-hb",
    )
    assert [(r["state"], r["lock_held"]) for r in state] == [("stopped", False)]


async def test_the_work_report_lists_what_runs_here(spawn: Spawn, database_url: str) -> None:
    worker = start_worker(spawn, database_url, "exec-rep")
    response = worker.enqueue(children=1, steps=20, dedup_id="rep", step_seconds=0.2)
    workflow_id = response.json()["workflow_id"]

    async def reported() -> list[str]:
        row = await _executor(database_url, "exec-rep")
        return list(row["running"] or [])

    def parent_and_child(ids: list[str]) -> bool:
        # The child starts after its parent: a beat may list the parent alone first.
        return workflow_id in ids and any(w.startswith(workflow_id + "-") for w in ids)

    deadline = time.monotonic() + 20
    while not parent_and_child(await reported()):
        assert time.monotonic() < deadline, "the running parent and child never both appeared"
        time.sleep(0.1)
    assert worker.wait_terminal(workflow_id, 60)["status"] == "SUCCESS"
    time.sleep(0.6)
    assert await reported() == []


async def test_unlimited_attempts_are_published_as_null(spawn: Spawn, database_url: str) -> None:
    start_worker(spawn, database_url, "exec-unl", DEMO_MAX_RECOVERY_ATTEMPTS="unlimited")
    rows = await fetch(database_url, "SELECT max_recovery_attempts FROM limbo.workflow_registry")
    assert rows
    assert all(r["max_recovery_attempts"] is None for r in rows)


async def test_a_blocked_event_loop_does_not_stop_the_beats(
    spawn: Spawn, database_url: str
) -> None:
    """The heartbeat has its own thread: a stalled loop must not make the worker look dead."""
    worker = start_worker(spawn, database_url, "exec-stall", DEMO_CHAOS="1")
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
