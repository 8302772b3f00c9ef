"""The run's PostgreSQL, databases, service processes and cost accounting.

Everything here reuses the test support code: the throwaway server of `testkit.postgres`
(one per run, DBOS's schema and ours in a template cloned per contestant), real processes of
`testkit.processes`, workers as `testkit.worker` starts them. Processes are
registered with the server's watchdog, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg
import psutil

from services.shared.dsn import asyncpg_dsn
from testkit.localpg import free_port
from testkit.postgres import TestPostgres
from testkit.processes import ServiceProcess
from testkit.worker import Worker, worker_env

Size = Literal["smoke", "full"]

# worker_env() tunes these for fast tests; benchmarks run the worker's own defaults.
_TEST_TUNINGS = (
    "DEMO_STEP_SECONDS",
    "DEMO_SLEEP_SECONDS",
    "LIMBO_BEAT_INTERVAL",
    "WORKER_SHUTDOWN_TIMEOUT",
)


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def fetchval(url: str, sql: str, *args: Any) -> Any:
    rows = await fetch(url, sql, *args)
    return rows[0][0] if rows else None


async def poll(
    check: Callable[[], Awaitable[Any]], *, timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    """Await `check()` until it returns something truthy; raise TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(interval)


@dataclass
class CostSnapshot:
    next_xid: int
    wal_bytes: int
    cpu: dict[int, float]  # pid -> user+system CPU seconds so far
    at: float


@dataclass
class Cost:
    """What a measured interval cost: write transactions, WAL, CPU of each side."""

    write_xacts: int
    wal_bytes: int
    server_cpu_s: float
    postgres_cpu_s: float
    seconds: float

    def per(self, units: int) -> dict[str, float]:
        units = max(units, 1)
        return {
            "write_xacts": self.write_xacts / units,
            "wal_bytes": self.wal_bytes / units,
            "server_cpu_ms": 1000 * self.server_cpu_s / units,
            "postgres_cpu_ms": 1000 * self.postgres_cpu_s / units,
        }


def _cpu_of(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return float(times.user + times.system)


@dataclass
class BenchContext:
    pg: TestPostgres
    size: Size
    log_dir: Path
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def smoke(self) -> bool:
        return self.size == "smoke"

    # -- databases --------------------------------------------------------------------
    def fresh_database(self, prefix: str) -> str:
        """A new database holding DBOS's schema and ours (a clone of the run's template)."""
        return self.pg.fresh_database(prefix)

    def drop_database(self, url: str) -> None:
        self.pg.drop_database(url)

    @contextlib.asynccontextmanager
    async def database(self, prefix: str) -> AsyncIterator[str]:
        url = self.fresh_database(prefix)
        try:
            yield url
        finally:
            self.stop_all()
            self.drop_database(url)

    @property
    def postmaster_pid(self) -> int | None:
        if self.pg.owned is None:
            return None
        pid_file = self.pg.owned.server.data_dir / "postmaster.pid"
        try:
            return int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def server_url(self) -> str:
        return self.pg.base_url

    # -- processes ----------------------------------------------------------------------
    def spawn(self, module: str, env: Mapping[str, str], name: str | None = None) -> ServiceProcess:
        label = name or f"{module.rsplit('.', 1)[-1]}-{len(self.processes)}"
        proc = ServiceProcess(
            module,
            env,
            self.log_dir / f"{label}.log",
            on_start=self.pg.register_child,
            on_exit=self.pg.unregister_child,
        )
        self.processes.append(proc)
        return proc.start()

    def worker_env(
        self, database_url: str, port: int, executor_id: str, **overrides: str
    ) -> dict[str, str]:
        """The environment of a worker with its production defaults (not the tests' tuning)."""
        env = worker_env(database_url, port, executor_id)
        for key in _TEST_TUNINGS:
            env.pop(key, None)
        env.update(overrides)
        return env

    def start_worker(self, database_url: str, executor_id: str, **overrides: str) -> Worker:
        """A worker process with its default settings (plus `overrides`), once it is ready."""
        port = free_port()
        proc = self.spawn(
            "services.worker",
            self.worker_env(database_url, port, executor_id, **overrides),
            name=f"worker-{executor_id}",
        )
        worker = Worker(port=port, proc=proc, token=overrides.get("WORKER_API_TOKEN"))
        return worker.wait_ready(timeout=90)

    def stop(self, proc: ServiceProcess, timeout: float = 15.0) -> None:
        proc.stop(timeout=timeout)
        with contextlib.suppress(ValueError):
            self.processes.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.processes)):
            self.stop(proc)

    # -- cost accounting ------------------------------------------------------------------
    def _postgres_pids(self) -> list[int]:
        master = self.postmaster_pid
        if master is None:
            return []
        try:
            return [master] + [child.pid for child in psutil.Process(master).children()]
        except psutil.NoSuchProcess:
            return []

    async def cost_snapshot(self, url: str, server_pids: tuple[int, ...] = ()) -> CostSnapshot:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            # The snapshot's xmax is the next transaction ID; reading it assigns none.
            next_xid = await conn.fetchval(
                "SELECT txid_snapshot_xmax(txid_current_snapshot())::bigint"
            )
            wal = await conn.fetchval("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint")
        finally:
            await conn.close()
        cpu = {}
        for pid in (*server_pids, *self._postgres_pids()):
            seconds = _cpu_of(pid)
            if seconds is not None:
                cpu[pid] = seconds
        return CostSnapshot(int(next_xid), int(wal), cpu, time.monotonic())

    def cost(
        self, before: CostSnapshot, after: CostSnapshot, server_pids: tuple[int, ...] = ()
    ) -> Cost:
        def used(pid: int) -> float:
            return max(0.0, after.cpu.get(pid, 0.0) - before.cpu.get(pid, 0.0))

        postgres = [pid for pid in after.cpu if pid not in server_pids]
        return Cost(
            write_xacts=after.next_xid - before.next_xid,
            wal_bytes=after.wal_bytes - before.wal_bytes,
            server_cpu_s=sum(used(pid) for pid in server_pids),
            postgres_cpu_s=sum(used(pid) for pid in postgres),
            seconds=after.at - before.at,
        )
