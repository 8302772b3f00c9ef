"""One long-lived worker shared by the API tests of a module (a worker takes ~2 s to start)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.localpg import free_port
from testkit.postgres import TestPostgres
from testkit.processes import ServiceProcess
from testkit.worker import Worker, worker_env


@pytest.fixture(scope="module")
def api_database(pg: TestPostgres) -> Iterator[str]:
    url = pg.fresh_database("api")
    yield url
    pg.drop_database(url)


@pytest.fixture(scope="module")
def api_worker(
    pg: TestPostgres, api_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    port = free_port()
    # The password is accepted by the trust-auth test server and must never be logged.
    url = api_database.replace("postgres@", "postgres:hunter2-secret@")
    log: Path = tmp_path_factory.mktemp("api") / "worker.log"
    proc = ServiceProcess(
        "services.worker",
        worker_env(url, port, "exec-api", DEMO_CHAOS="0", DEMO_STEP_SECONDS="0.001"),
        log,
        on_start=pg.register_child,
        on_exit=pg.unregister_child,
    ).start()
    worker = Worker(port, proc)
    try:
        yield worker.wait_ready()
    finally:
        proc.stop(timeout=20)
