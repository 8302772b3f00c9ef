"""Crashes and restarts of a real worker process: DBOS recovers, no step runs twice."""

from __future__ import annotations

import signal

from testkit.processes import wait_until
from testkit.worker import fetch, start_worker, step_effect_counts
from tests.conftest import Spawn


async def test_segfault_at_a_step_then_restart_with_same_executor_recovers(
    spawn: Spawn, database_url: str
) -> None:
    worker = start_worker(spawn, database_url, "exec-crash", DEMO_CHAOS="1")
    response = worker.enqueue(
        children=2,
        steps=4,
        dedup_id="crash-once",
        chaos={"child": 1, "step": 2, "mode": "segfault", "times": 1},
    )
    assert response.status_code == 202, response.text
    workflow_id = response.json()["workflow_id"]

    code = worker.proc.wait(timeout=60)
    assert code == -signal.SIGSEGV, f"worker exited with {code}, not by a segfault"
    crashes = await fetch(
        database_url,
        "SELECT step FROM limbo_demo.chaos_crashes WHERE workflow_id LIKE $1",
        workflow_id + "%",
    )
    assert [r["step"] for r in crashes] == [2]
    before = await step_effect_counts(database_url, workflow_id)
    # Child 0 finished and child 1 completed steps 0 and 1 before the crash.
    assert sum(before.values()) == 4 + 2

    restarted = start_worker(spawn, database_url, "exec-crash", DEMO_CHAOS="1", name="restarted")
    view = restarted.wait_terminal(workflow_id, timeout=90)
    assert view["status"] == "SUCCESS"
    assert view["recovery_attempts"] >= 2  # the crashed run and the recovered one

    after = await step_effect_counts(database_url, workflow_id)
    assert len(after) == 2 * 4
    assert set(after.values()) == {1}, f"a step ran more than once: {after}"
    # The dedup ID was released when the job ended.
    assert restarted.enqueue(children=1, steps=1, dedup_id="crash-once").status_code == 202


async def test_sigterm_mid_job_loses_nothing(spawn: Spawn, database_url: str) -> None:
    worker = start_worker(
        spawn, database_url, "exec-term", WORKER_SHUTDOWN_TIMEOUT="1", DEMO_STEP_SECONDS="0.2"
    )
    response = worker.enqueue(children=2, steps=10, dedup_id="term-1")
    workflow_id = response.json()["workflow_id"]
    wait_until(lambda: worker.status(workflow_id)["status"] == "PENDING", 30, what="job to start")
    worker.proc.signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=30) == 0  # a graceful stop is a clean exit
    rows = await fetch(
        database_url,
        "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = $1",
        workflow_id,
    )
    assert rows[0]["status"] == "PENDING"  # still in flight: the drain timeout was 1 s

    restarted = start_worker(spawn, database_url, "exec-term", name="term-restarted")
    assert restarted.wait_terminal(workflow_id, timeout=90)["status"] == "SUCCESS"
    effects = await step_effect_counts(database_url, workflow_id)
    assert len(effects) == 2 * 10
    assert set(effects.values()) == {1}, effects
