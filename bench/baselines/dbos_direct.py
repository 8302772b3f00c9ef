"""Baseline (a): DBOS enqueueing in-process, from N concurrent asyncio tasks, no HTTP.

`python -m bench.baselines.dbos_direct`, configured by the environment:

    DATABASE_URL, BENCH_EXECUTOR_ID     the system database, this executor's ID
    BENCH_CONCURRENCY                   concurrent enqueuing tasks
    BENCH_MAX_REQUESTS, BENCH_MAX_SECONDS   bounds of the measured phase
    BENCH_WARMUP                        enqueues before measuring (not counted)
    BENCH_STEP_SECONDS                  what each job's steps sleep (the worker's request field)
    BENCH_CONTROL_DIR                   handshake: writes `ready`, waits for `go`, writes
                                        `result.json`, waits for `exit` (so the harness
                                        can measure costs over the measured phase only)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSConfig, SetEnqueueOptions

from bench.baselines import (
    APP_VERSION,
    DEMO_QUEUE_CONCURRENCY,
    DEMO_QUEUE_POLL_INTERVAL,
    QUEUE,
    control,
)


@DBOS.step(name="bench.direct_step")
async def direct_step(step: int, step_seconds: float) -> int:
    if step_seconds > 0:
        await asyncio.sleep(step_seconds)
    return step


@DBOS.workflow(name="bench.direct_child")
async def direct_child(steps: int, step_seconds: float) -> int:
    for step in range(steps):
        await direct_step(step, step_seconds)
    return steps


@DBOS.workflow(name="bench.direct_job")
async def direct_job(children: int, steps: int, step_seconds: float) -> dict[str, int]:
    for _ in range(children):
        handle = await DBOS.start_workflow_async(direct_child, steps, step_seconds)
        await handle.get_result()
    return {"children": children, "steps": steps}


async def measure(env: dict[str, str]) -> dict[str, Any]:
    concurrency = int(env["BENCH_CONCURRENCY"])
    max_requests = int(env["BENCH_MAX_REQUESTS"])
    max_seconds = float(env["BENCH_MAX_SECONDS"])
    warmup = int(env.get("BENCH_WARMUP", "0"))
    step_seconds = float(env.get("BENCH_STEP_SECONDS", "0"))
    control_dir = Path(env["BENCH_CONTROL_DIR"])
    config: DBOSConfig = {
        "name": "limbo-bench-direct",
        "system_database_url": env["DATABASE_URL"],
        "executor_id": env["BENCH_EXECUTOR_ID"],
        "application_version": APP_VERSION,
    }
    DBOS(config=config)
    DBOS.launch()
    queue = await DBOS.register_queue_async(
        QUEUE,
        worker_concurrency=DEMO_QUEUE_CONCURRENCY,
        polling_interval_sec=DEMO_QUEUE_POLL_INTERVAL,
    )
    numbers = itertools.count()
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def enqueue(index: int) -> float | None:
        started = time.perf_counter()
        try:
            with SetEnqueueOptions(deduplication_id=f"direct-{index}"):
                await queue.enqueue_async(direct_job, 1, 1, step_seconds)
        except Exception as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return None
        return (time.perf_counter() - started) * 1000

    async def warm() -> None:
        while (index := next(numbers)) < warmup:
            await enqueue(index)

    await asyncio.gather(*(warm() for _ in range(min(concurrency, max(warmup, 1)))))
    control.signal(control_dir / "ready", str(os.getpid()))
    await control.wait_file(control_dir / "go", timeout=120)
    issued = 0
    deadline = time.monotonic() + max_seconds

    async def worker() -> None:
        nonlocal issued
        while time.monotonic() < deadline and issued < max_requests:
            issued += 1
            index = next(numbers)
            elapsed = await enqueue(index)
            if elapsed is not None:
                latencies.append(elapsed)

    cpu_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    result = {
        "ok": len(latencies),
        "errors": errors,
        "seconds": seconds,
        "latencies_ms": latencies,
        "cpu_seconds": time.process_time() - cpu_before,
    }
    control.write_json(control_dir / "result.json", result)
    # Stay (with our connections) until the harness has read the costs of the measured phase:
    # a backend that exits takes its CPU counters with it.
    await control.wait_file(control_dir / "exit", timeout=120)
    return result


def main() -> int:
    return control.run_and_leave(measure)


if __name__ == "__main__":
    sys.exit(main())
