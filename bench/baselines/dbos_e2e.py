"""Baseline (c): the demo's job run end to end by DBOS alone, in-process (no worker, no HTTP,
no lease).

The same job as the worker's demo (`services/demo/job.py`): a parent starts 1 child and
awaits it, the child runs 1 step, a DBOS datasource transaction that inserts the step's
effect into `limbo_demo.step_effects` in the same transaction as DBOS's record of the step.
The same queue name, worker concurrency and polling interval as the worker's demo queue
(DEMO_QUEUE_CONCURRENCY, DEMO_QUEUE_POLL_INTERVAL, read the same way), the same recovery
limit, the same kind of deduplication ID per job. Jobs are enqueued with `enqueue_async`
from BENCH_CONCURRENCY concurrent tasks (the worker's pass uses as many HTTP clients).

`python -m bench.baselines.dbos_e2e`, configured by the environment:

    DATABASE_URL, BENCH_EXECUTOR_ID     the system database, this executor's ID
    BENCH_JOBS, BENCH_CONCURRENCY       how many jobs, enqueued from how many tasks
    DEMO_QUEUE_CONCURRENCY, DEMO_QUEUE_POLL_INTERVAL   as the worker reads them
    BENCH_CONTROL_DIR                   handshake: writes `ready` once DBOS runs the queue,
                                        waits for `go`, enqueues every job, writes
                                        `enqueued.json`, then runs them until `exit`
                                        (the harness watches the database for the last
                                        SUCCESS, exactly as for the worker)
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, AsyncSQLAlchemyDatasource, DBOSConfig, SetEnqueueOptions

from bench.baselines import APP_VERSION, control
from services.demo.settings import DemoSettings
from services.shared.config import Env, load_fields

PARENT = "bench.e2e_job"
CHILD = "bench.e2e_child"
STEP = "bench.e2e_step"
_RECORD_STEP = sa.text(
    "INSERT INTO limbo_demo.step_effects (workflow_id, step, executor_id, pid)"
    " VALUES (:workflow_id, :step, :executor_id, :pid)"
)


def declare(settings: DemoSettings, datasource: AsyncSQLAlchemyDatasource, executor: str) -> Any:
    @datasource.transaction(name=STEP, isolation_level="READ COMMITTED")
    async def e2e_step(child: int, step: int, step_seconds: float) -> int:
        if step_seconds > 0:
            await asyncio.sleep(step_seconds)
        await datasource.sql_session().execute(
            _RECORD_STEP,
            {
                "workflow_id": DBOS.workflow_id,
                "step": step,
                "executor_id": executor,
                "pid": os.getpid(),
            },
        )
        return step

    @DBOS.workflow(name=CHILD, max_recovery_attempts=settings.max_recovery_attempts)
    async def e2e_child(child: int, steps: int, step_seconds: float) -> int:
        for step in range(steps):
            await e2e_step(child, step, step_seconds)
            if settings.sleep_seconds > 0 and step < steps - 1:
                await DBOS.sleep_async(settings.sleep_seconds)
        return steps

    @DBOS.workflow(name=PARENT, max_recovery_attempts=settings.max_recovery_attempts)
    async def e2e_job(children: int, steps: int, step_seconds: float) -> dict[str, int]:
        for index in range(children):
            handle = await DBOS.start_workflow_async(e2e_child, index, steps, step_seconds)
            await handle.get_result()
        return {"children": children, "steps": steps}

    return e2e_job


async def measure(env: dict[str, str]) -> None:
    jobs = int(env["BENCH_JOBS"])
    concurrency = int(env["BENCH_CONCURRENCY"])
    executor = env["BENCH_EXECUTOR_ID"]
    control_dir = Path(env["BENCH_CONTROL_DIR"])
    settings = load_fields(DemoSettings, Env(env))
    config: DBOSConfig = {
        "name": "limbo-bench-e2e",
        "system_database_url": env["DATABASE_URL"],
        "executor_id": executor,
        "application_version": APP_VERSION,
    }
    DBOS(config=config)
    datasource = await AsyncSQLAlchemyDatasource.create(
        env["DATABASE_URL"], engine_kwargs={"pool_size": 10, "max_overflow": 10}
    )
    job = declare(settings, datasource, executor)
    DBOS.launch()
    queue = await DBOS.register_queue_async(
        settings.queue_name,
        worker_concurrency=settings.concurrency,
        polling_interval_sec=settings.poll_interval,
    )
    control.signal(control_dir / "ready", str(os.getpid()))
    await control.wait_file(control_dir / "go", timeout=120)

    started = time.perf_counter()
    numbers = iter(range(jobs))
    errors: dict[str, int] = {}

    async def enqueuer() -> None:
        for index in numbers:
            try:
                with SetEnqueueOptions(deduplication_id=f"e2e-{index}"):
                    await queue.enqueue_async(job, 1, 1, 0.0)
            except Exception as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    await asyncio.gather(*(enqueuer() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    control.write_json(control_dir / "enqueued.json", {"seconds": seconds, "errors": errors})
    # Run the jobs until the harness saw the last one end and read the costs.
    await control.wait_file(control_dir / "exit", timeout=900)


def main() -> int:
    return control.run_and_leave(measure)


if __name__ == "__main__":
    sys.exit(main())
