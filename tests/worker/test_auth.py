"""WORKER_API_TOKEN: every route but health and metrics needs the bearer token."""

from __future__ import annotations

import httpx

from testkit.worker import start_worker
from tests.conftest import Spawn


def test_token_required_except_for_health_and_metrics(spawn: Spawn, database_url: str) -> None:
    worker = start_worker(spawn, database_url, "exec-auth", WORKER_API_TOKEN="tok-123")
    anonymous = httpx.Client(base_url=worker.base, timeout=10)
    assert anonymous.post("/workflows", json={}).status_code == 401
    assert anonymous.get("/queue").status_code == 401
    assert anonymous.get("/workflows/x").status_code == 401
    wrong = anonymous.get("/queue", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "bearer" in wrong.json()["detail"]
    for public in ("/healthz", "/readyz", "/metrics"):
        assert anonymous.get(public).status_code == 200, public
    assert worker.http.get("/queue").status_code == 200
    assert worker.enqueue(children=1, steps=1, dedup_id="auth-1").status_code == 202
    assert not any("tok-123" in line for line in worker.proc.log_lines())
