"""The supervisor beside real DBOS 3.4 workers.

- `orphaned` takeover: a worker is SIGKILLed mid-workflow; its replacement (another executor
  ID) does not recover the workflow by itself and the dedup ID stays taken (the control);
  once the supervisor runs, the workflow is handed over, completes with SUCCESS, and the
  dedup ID is accepted again.
- No false positive: many workflows progress on two live workers while the leader sweeps
  continuously with aggressive settings; the audit trail never names any of them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from testkit.dbos_rows import spawn_supervisor
from testkit.worker import fetch, start_worker
from tests.conftest import Spawn

pytestmark = pytest.mark.slow


def start_supervisor(spawn: Spawn, url: str, **env: str) -> str:
    settings = {"SUPERVISOR_POLL_INTERVAL": "0.3", "SUPERVISOR_EXECUTOR_TIMEOUT": "3", **env}
    proc, base = spawn_supervisor(spawn, url, "e2e", **settings)
    proc.wait_http(f"{base}/readyz", timeout=30)
    return base


def audit(url: str) -> list[dict[str, Any]]:
    rows = asyncio.run(fetch(url, "SELECT * FROM limbo.audit_entries ORDER BY id"))
    return [dict(r) for r in rows]


def status_of(url: str, workflow_id: str) -> dict[str, Any]:
    [row] = asyncio.run(
        fetch(
            url,
            "SELECT status, executor_id, deduplication_id, recovery_attempts "
            "FROM dbos.workflow_status WHERE workflow_uuid = $1",
            workflow_id,
        )
    )
    return dict(row)


def test_orphaned_takeover_with_real_workers(database_url: str, spawn: Spawn) -> None:
    a = start_worker(spawn, database_url, "exec-a", DEMO_CHAOS="1")
    job = a.enqueue(
        children=2,
        steps=3,
        dedup_id="job-1",
        step_seconds=0.05,
        chaos={"step": 1, "mode": "sigkill", "child": 0, "times": 1},
    )
    assert job.status_code == 202, job.text
    workflow_id = job.json()["workflow_id"]
    a.proc.wait(30)  # SIGKILLed by its own chaos at step 1
    assert not a.proc.alive()

    b = start_worker(spawn, database_url, "exec-b")
    # The control: exec-b is alive and idle, yet the workflow stays PENDING on exec-a, and
    # the dedup ID stays taken. Nothing but the supervisor would ever free it.
    time.sleep(4)
    stuck = status_of(database_url, workflow_id)
    assert (stuck["status"], stuck["executor_id"], stuck["deduplication_id"]) == (
        "PENDING",
        "exec-a",
        "job-1",
    )
    assert b.enqueue(children=1, steps=1, dedup_id="job-1").status_code == 409

    start_supervisor(spawn, database_url)
    final = b.wait_terminal(workflow_id, timeout=60)
    assert final["status"] == "SUCCESS"
    entries = audit(database_url)
    assert entries
    assert {(e["rule"], e["action"], e["outcome"]) for e in entries} == {
        ("orphaned", "reenqueue", "applied")
    }
    assert workflow_id in {e["workflow_id"] for e in entries}
    again = b.enqueue(children=1, steps=1, dedup_id="job-1", step_seconds=0.01)
    assert again.status_code == 202, again.text
    assert b.wait_terminal(again.json()["workflow_id"], timeout=60)["status"] == "SUCCESS"


def test_no_false_positive_while_workflows_progress(database_url: str, spawn: Spawn) -> None:
    workers = [
        start_worker(spawn, database_url, "exec-1", DEMO_STEP_SECONDS="0.05"),
        start_worker(spawn, database_url, "exec-2", DEMO_STEP_SECONDS="0.05"),
    ]
    base = start_supervisor(
        spawn,
        database_url,
        SUPERVISOR_POLL_INTERVAL="0.1",
        SUPERVISOR_STALL_TIMEOUT="1",
        SUPERVISOR_VERSION_ORPHAN_POLICY="dead_letter",
        SUPERVISOR_VERSION_ORPHAN_AFTER="0",
    )
    ids = []
    for i in range(16):
        response = workers[i % 2].enqueue(children=3, steps=4, dedup_id=f"live-{i}")
        assert response.status_code == 202, response.text
        ids.append(response.json()["workflow_id"])
    for workflow_id in ids:
        assert workers[0].wait_terminal(workflow_id, timeout=120)["status"] == "SUCCESS"
    metrics = httpx.get(f"{base}/metrics").text
    sweeps = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('limbo_supervisor_sweeps_total{outcome="ok"}')
    ]
    assert sweeps
    assert sweeps[0] > 10  # it really swept, many times, while they ran
    assert audit(database_url) == []
