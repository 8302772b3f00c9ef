"""Baseline (b): an app shaped like the seed's, written for the benchmark.

FastAPI, a synchronous endpoint calling DBOS's synchronous `queue.enqueue` under a
deduplication ID and then the handle's status (as the seed returns it), synchronous
workflows, uvicorn with its default settings (one process, access log on).

`python -m bench.baselines.fastapi_seed`, configured by DATABASE_URL, BENCH_PORT and
BENCH_EXECUTOR_ID. Serves on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from dbos import DBOS, DBOSConfig, SetEnqueueOptions
from dbos._error import DBOSQueueDeduplicatedError
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bench.baselines import (
    APP_VERSION,
    DEMO_QUEUE_CONCURRENCY,
    DEMO_QUEUE_POLL_INTERVAL,
    QUEUE,
)


class EnqueueBody(BaseModel):
    children: int = 6
    steps: int = 5
    dedup_id: str | None = None
    step_seconds: float = 0.0


@DBOS.step(name="bench.seed_step")
def seed_step(step: int, step_seconds: float) -> int:
    if step_seconds > 0:
        time.sleep(step_seconds)
    return step


@DBOS.workflow(name="bench.seed_child")
def seed_child(steps: int, step_seconds: float) -> int:
    for step in range(steps):
        seed_step(step, step_seconds)
    return steps


@DBOS.workflow(name="bench.seed_job")
def seed_job(children: int, steps: int, step_seconds: float) -> dict[str, int]:
    for _ in range(children):
        DBOS.start_workflow(seed_child, steps, step_seconds).get_result()
    return {"children": children, "steps": steps}


state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    config: DBOSConfig = {
        "name": "limbo-bench-seed",
        "system_database_url": os.environ["DATABASE_URL"],
        "executor_id": os.environ["BENCH_EXECUTOR_ID"],
        "application_version": APP_VERSION,
    }
    DBOS(config=config)
    DBOS.launch()
    state["queue"] = await DBOS.register_queue_async(
        QUEUE,
        worker_concurrency=DEMO_QUEUE_CONCURRENCY,
        polling_interval_sec=DEMO_QUEUE_POLL_INTERVAL,
    )
    yield
    await asyncio.to_thread(DBOS.destroy, workflow_completion_timeout_sec=0)


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/workflows", status_code=202, response_model=None)
def enqueue(body: EnqueueBody) -> dict[str, Any] | JSONResponse:
    dedup_id = body.dedup_id or f"{body.children}/{body.steps}"
    try:
        with SetEnqueueOptions(deduplication_id=dedup_id):
            handle = state["queue"].enqueue(seed_job, body.children, body.steps, body.step_seconds)
    except DBOSQueueDeduplicatedError as exc:
        return JSONResponse({"status": "error", "message": str(exc)}, status_code=409)
    status = handle.get_status()
    return {
        "workflow_id": handle.workflow_id,
        "status": status.status,
        "dedup_id": dedup_id,
        "queue": QUEUE,
    }


def main() -> int:
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["BENCH_PORT"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
