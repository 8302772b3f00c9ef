"""/readyz follows the database: 503 with a reason while it is unreachable, 200 after."""

from __future__ import annotations

from testkit.processes import wait_until
from testkit.tcp_proxy import TcpProxy
from testkit.worker import start_worker
from tests.conftest import Spawn


def test_readyz_goes_503_during_a_database_outage_and_recovers(
    spawn: Spawn, database_url: str
) -> None:
    proxy, proxied_url = TcpProxy.for_url(database_url)
    try:
        worker = start_worker(spawn, proxied_url, "exec-ready", WORKER_READINESS_TIMEOUT="0.5")
        assert worker.http.get("/readyz").status_code == 200

        proxy.cut()

        def not_ready() -> dict[str, object] | None:
            response = worker.http.get("/readyz")
            return response.json() if response.status_code == 503 else None

        body = wait_until(not_ready, 20, what="/readyz to report 503")
        assert "database" in body["failing"]
        assert worker.http.get("/healthz").status_code == 200  # alive all along

        proxy.restore()
        wait_until(
            lambda: worker.http.get("/readyz").status_code == 200, 30, what="/readyz to recover"
        )
        assert worker.proc.alive()
        job = worker.enqueue(children=1, steps=1, dedup_id="after-outage")
        assert job.status_code == 202
        assert worker.wait_terminal(job.json()["workflow_id"], 60)["status"] == "SUCCESS"
    finally:
        proxy.close()
