"""The worker's HTTP API against a real worker process, DBOS and PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from testkit.worker import Worker, step_effect_counts


async def test_job_runs_to_success_with_children_and_steps_visible(
    api_worker: Worker, api_database: str
) -> None:
    response = api_worker.enqueue(children=3, steps=4, dedup_id="visible-1")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["dedup_id"] == "visible-1"
    assert body["queue"] == "example-queue"
    assert body["status"] in {"ENQUEUED", "PENDING"}

    view = await asyncio.to_thread(api_worker.wait_terminal, body["workflow_id"], 60)
    assert view["status"] == "SUCCESS"
    assert view["executor_id"] == "exec-api"
    assert view["dedup_id"] is None  # DBOS releases the ID when the workflow ends
    assert [c["status"] for c in view["children"]] == ["SUCCESS"] * 3
    for child in view["children"]:
        assert child["workflow_id"].startswith(body["workflow_id"] + "-")
        assert len(child["steps"]) == 4
        assert all(step["completed"] for step in child["steps"])

    effects = await step_effect_counts(api_database, body["workflow_id"])
    assert len(effects) == 3 * 4
    assert set(effects.values()) == {1}


def test_empty_body_is_the_seeds_job(api_worker: Worker) -> None:
    response = api_worker.enqueue()
    assert response.status_code == 202, response.text
    assert response.json()["dedup_id"] == "6/5"
    view = api_worker.wait_terminal(response.json()["workflow_id"], 60)
    assert view["status"] == "SUCCESS"
    assert len(view["children"]) == 6
    assert all(len(child["steps"]) == 5 for child in view["children"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"children": 0}, "children"),
        ({"children": 101}, "children"),
        ({"steps": "five"}, "steps"),
        ({"steps": 1.5}, "steps"),
        ({"dedup_id": "x" * 201}, "dedup_id"),
        ({"dedup_id": ""}, "dedup_id"),
        ({"chaos": {"step": 1, "mode": "meteor"}}, "chaos.mode"),
        ({"childrne": 2}, "childrne"),
    ],
)
def test_invalid_bodies_get_400_naming_the_field(
    api_worker: Worker, body: dict[str, object], field: str
) -> None:
    response = api_worker.enqueue(**body)
    assert response.status_code == 400, response.text
    problem = response.json()
    text = json.dumps(problem)
    assert field in text, problem
    assert problem["status"] == 400


def test_malformed_json_is_400(api_worker: Worker) -> None:
    response = api_worker.http.post(
        "/workflows", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


def test_dedup_conflict_names_the_holder(api_worker: Worker) -> None:
    first = api_worker.enqueue(children=1, steps=50, dedup_id="held-1", step_seconds=0.2)
    assert first.status_code == 202
    second = api_worker.enqueue(children=2, steps=2, dedup_id="held-1")
    assert second.status_code == 409, second.text
    problem = second.json()
    holder = problem["holder"]
    assert holder["workflow_id"] == first.json()["workflow_id"]
    assert holder["status"] in {"ENQUEUED", "PENDING"}
    assert holder["executor_id"] == "exec-api"
    assert holder["application_version"] == "0.1.0"
    assert isinstance(holder["recovery_attempts"], int)
    assert holder["age_seconds"] >= 0
    assert first.json()["workflow_id"] in problem["detail"]


def test_chaos_is_refused_when_disabled(api_worker: Worker) -> None:
    response = api_worker.enqueue(children=1, steps=1, dedup_id="chaos-1", chaos={"step": 0})
    assert response.status_code == 403
    assert "DEMO_CHAOS" in response.json()["detail"]
    # Nothing was enqueued: the same dedup ID is still free.
    assert api_worker.enqueue(children=1, steps=1, dedup_id="chaos-1").status_code == 202


def test_unknown_workflow_is_404(api_worker: Worker) -> None:
    response = api_worker.http.get("/workflows/does-not-exist")
    assert response.status_code == 404
    assert "does-not-exist" in response.json()["detail"]


def test_queue_lists_enqueued_and_pending(api_worker: Worker) -> None:
    held = api_worker.enqueue(children=1, steps=30, dedup_id="queue-1", step_seconds=0.2)
    assert held.status_code == 202
    listed = api_worker.http.get("/queue").json()
    assert listed["queue"] == "example-queue"
    ids = {w["workflow_id"]: w for w in listed["queued_workflows"]}
    assert held.json()["workflow_id"] in ids
    assert {w["status"] for w in ids.values()} <= {"ENQUEUED", "PENDING"}


def test_health_metrics_and_openapi(api_worker: Worker) -> None:
    assert api_worker.http.get("/healthz").status_code == 200
    ready = api_worker.http.get("/readyz")
    assert ready.status_code == 200
    assert set(ready.json()["ok"]) == {"dbos", "database", "lease"}
    api_worker.http.get("/workflows/some-id")
    metrics = api_worker.http.get("/metrics").text
    for name in (
        "limbo_worker_workflows_enqueued_total",
        "limbo_worker_dedup_rejections_total",
        "limbo_demo_workflows_finished_total",
        "limbo_worker_lease_age_seconds",
        "limbo_worker_active_workflows",
    ):
        assert name in metrics
    # HTTP metrics carry route templates, not raw paths.
    assert 'path="/workflows/{workflow_id}"' in metrics
    assert "/workflows/some-id" not in metrics
    schema = api_worker.http.get("/schema/openapi.json")
    assert schema.status_code == 200
    assert "/workflows" in schema.json()["paths"]
    assert "/api/queues/{queue_name}/workflows" in schema.json()["paths"]


def test_every_log_line_is_json_and_secret_free(api_worker: Worker) -> None:
    api_worker.enqueue(children=1, steps=1, dedup_id="log-1")
    lines = [line for line in api_worker.proc.log_lines() if line.strip()]
    assert len(lines) > 10
    parsed = [json.loads(line) for line in lines]  # raises on any non-JSON line
    assert all("event" in entry and "level" in entry for entry in parsed)
    assert not any("hunter2-secret" in line for line in lines)
    assert any(entry.get("logger") == "dbos" for entry in parsed)
    assert any(entry.get("logger", "").startswith("uvicorn") for entry in parsed)
    assert all(entry.get("executor_id") == "exec-api" for entry in parsed)
    assert any(entry.get("workflow_id") for entry in parsed if entry["event"] == "job_started")


def test_openapi_documents_the_limits(api_worker: Worker) -> None:
    spec = httpx.get(f"{api_worker.base}/schema/openapi.json").json()
    text = json.dumps(spec)
    assert "EnqueueRequest" in text
