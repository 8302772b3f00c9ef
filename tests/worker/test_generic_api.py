"""The worker's generic API over the workflows it hosts, against a real worker process."""

from __future__ import annotations

import time
from typing import Any

import pytest

from testkit.worker import TERMINAL, Worker

QUEUE = "/api/queues/example-queue/workflows"


def run_of(worker: Worker, workflow_id: str) -> dict[str, Any]:
    response = worker.http.get(f"/api/workflows/{workflow_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_status(
    worker: Worker, workflow_id: str, wanted: set[str], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = run_of(worker, workflow_id)
        if run["status"] in wanted:
            return run
        assert time.monotonic() < deadline, f"{workflow_id} still {run['status']}"
        time.sleep(0.1)


def test_registry_lists_the_declared_workflows_and_queues(api_worker: Worker) -> None:
    body = api_worker.http.get("/api/registry").json()
    workflows = {w["name"]: w for w in body["workflows"]}
    assert workflows["limbo.job"]["max_recovery_attempts"] == 2
    assert workflows["limbo.job"]["parameters"] == ["children", "steps", "chaos", "step_seconds"]
    assert "limbo.job_child" in workflows
    [queue] = body["queues"]
    assert (queue["name"], queue["worker_concurrency"]) == ("example-queue", 50)


def test_enqueue_by_name_runs_to_a_result(api_worker: Worker) -> None:
    body = {
        "workflow": "limbo.job",
        "args": [1, 2],
        "kwargs": {"chaos": None, "step_seconds": 0.01},
        "dedup_id": "generic-1",
        "priority": 5,
    }
    response = api_worker.http.post(QUEUE, json=body)
    assert response.status_code == 202, response.text
    enqueued = response.json()
    assert (enqueued["workflow"], enqueued["queue"], enqueued["dedup_id"]) == (
        "limbo.job",
        "example-queue",
        "generic-1",
    )
    run = wait_status(api_worker, enqueued["workflow_id"], TERMINAL)
    assert run["status"] == "SUCCESS"
    assert run["output"] == {"children": 1, "steps": 2}
    assert run["executor_id"] == "exec-api"
    assert run["dedup_id"] is None


def test_a_held_dedup_id_is_409_naming_the_holder(api_worker: Worker) -> None:
    body = {"workflow": "limbo.job", "args": [1, 30, None, 0.2], "dedup_id": "generic-held"}
    first = api_worker.http.post(QUEUE, json=body)
    assert first.status_code == 202
    second = api_worker.http.post(QUEUE, json=body)
    assert second.status_code == 409
    problem = second.json()
    assert problem["holder"]["workflow_id"] == first.json()["workflow_id"]
    assert first.json()["workflow_id"] in problem["detail"]
    api_worker.http.post(f"/api/workflows/{first.json()['workflow_id']}/cancel")


def test_delayed_enqueue_waits(api_worker: Worker) -> None:
    response = api_worker.http.post(
        QUEUE, json={"workflow": "limbo.job", "args": [1, 1, None, 0.01], "delay_seconds": 1.5}
    )
    assert response.status_code == 202, response.text
    workflow_id = response.json()["workflow_id"]
    assert run_of(api_worker, workflow_id)["status"] in {"DELAYED", "ENQUEUED"}
    started = time.monotonic()
    assert wait_status(api_worker, workflow_id, TERMINAL)["status"] == "SUCCESS"
    assert time.monotonic() - started > 0.5


def test_cancel_then_resume_through_dbos(api_worker: Worker) -> None:
    response = api_worker.http.post(
        QUEUE, json={"workflow": "limbo.job", "args": [2, 20, None, 0.1], "dedup_id": "generic-c"}
    )
    workflow_id = response.json()["workflow_id"]
    wait_status(api_worker, workflow_id, {"PENDING"})
    cancelled = api_worker.http.post(f"/api/workflows/{workflow_id}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "CANCELLED"
    assert cancelled.json()["dedup_id"] is None  # DBOS's cancel releases it
    resumed = api_worker.http.post(f"/api/workflows/{workflow_id}/resume")
    assert resumed.status_code == 200
    assert resumed.json()["status"] in {"ENQUEUED", "PENDING"}
    assert wait_status(api_worker, workflow_id, TERMINAL, 90)["status"] == "SUCCESS"


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        (QUEUE, {"workflow": "no.such.workflow"}, "unknown workflow"),
        ("/api/queues/nope/workflows", {"workflow": "limbo.job"}, "unknown queue"),
        (QUEUE, {"workflow": "limbo.job", "args": [1]}, "do not fit"),
        (QUEUE, {"workflow": "limbo.job", "kwargs": {"colour": 1}}, "do not fit"),
        (QUEUE, {"workflow": "limbo.job", "priority": 0}, "priority"),
        (QUEUE, {"workflow": "limbo.job", "surprise": True}, "surprise"),
    ],
)
def test_bad_requests_are_400_with_a_reason_and_enqueue_nothing(
    api_worker: Worker, path: str, body: dict[str, Any], needle: str
) -> None:
    def queued() -> set[str]:
        return {w["workflow_id"] for w in api_worker.http.get("/queue").json()["queued_workflows"]}

    before = queued()
    response = api_worker.http.post(path, json=body)
    assert response.status_code == 400, response.text
    assert needle in response.text
    assert queued() - before == set()


def test_unknown_run_is_404(api_worker: Worker) -> None:
    assert api_worker.http.get("/api/workflows/nope").status_code == 404
    assert api_worker.http.post("/api/workflows/nope/cancel").status_code == 404
