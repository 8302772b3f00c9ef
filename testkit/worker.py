"""Starting real worker processes in tests, and reading what they did from the database."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
import httpx

from services.shared.dsn import asyncpg_dsn
from testkit.localpg import free_port
from testkit.processes import ServiceProcess

Spawn = Callable[..., ServiceProcess]
TERMINAL = {"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}


def worker_env(database_url: str, port: int, executor_id: str, **overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "WORKER_PORT": str(port),
        "WORKER_HOST": "127.0.0.1",
        "WORKER_EXECUTOR_ID": executor_id,
        "DEMO_STEP_SECONDS": "0.01",
        "DEMO_SLEEP_SECONDS": "0.01",
        "WORKER_SHUTDOWN_TIMEOUT": "5",
        "LOG_FORMAT": "json",
    }
    env.update(overrides)
    return env


class Worker:
    """A running worker process and a client for its API."""

    def __init__(
        self, port: int, proc: ServiceProcess | None = None, token: str | None = None
    ) -> None:
        self._proc = proc
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base, timeout=10.0, headers=headers)

    @property
    def proc(self) -> ServiceProcess:
        if self._proc is None:
            raise RuntimeError("this worker's process belongs to someone else (supervisord)")
        return self._proc

    def wait_ready(self, timeout: float = 60.0) -> Worker:
        self.proc.wait_http(f"{self.base}/readyz", timeout=timeout)
        return self

    def enqueue(self, **body: Any) -> httpx.Response:
        return self.http.post("/workflows", json=body)

    def status(self, workflow_id: str) -> dict[str, Any]:
        response = self.http.get(f"/workflows/{workflow_id}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_terminal(self, workflow_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            view = self.status(workflow_id)
            if view["status"] in TERMINAL:
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workflow_id} still {view['status']} after {timeout}s")
            time.sleep(0.2)


def start_worker(
    spawn: Spawn,
    database_url: str,
    executor_id: str = "exec-a",
    *,
    port: int | None = None,
    name: str | None = None,
    wait: bool = True,
    env: Mapping[str, str] | None = None,
    **overrides: str,
) -> Worker:
    overrides = {**(env or {}), **overrides}
    port = port or free_port()
    proc = spawn(
        "services.worker",
        worker_env(database_url, port, executor_id, **overrides),
        name=name or f"worker-{executor_id}",
    )
    worker = Worker(port, proc, overrides.get("WORKER_API_TOKEN"))
    return worker.wait_ready() if wait else worker


async def fetch(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def step_effect_counts(database_url: str, workflow_prefix: str) -> dict[tuple[str, int], int]:
    """How many times each (workflow, step) body ran, for workflows under a parent ID."""
    rows = await fetch(
        database_url,
        "SELECT workflow_id, step, count(*) AS n FROM limbo_demo.step_effects"
        " WHERE workflow_id LIKE $1 GROUP BY workflow_id, step",
        workflow_prefix + "%",
    )
    return {(r["workflow_id"], r["step"]): r["n"] for r in rows}
