"""Baselines the worker is measured against, in the same run, on the same PostgreSQL.

- `dbos_direct`: DBOS itself, enqueueing in-process from N concurrent tasks (no HTTP).
- `fastapi_seed`: an app shaped like the seed's: FastAPI, a synchronous endpoint calling the
  synchronous DBOS enqueue, served by uvicorn with its defaults.

Both run the job shape of the worker (a parent starting children of steps) on the same
queue name and worker concurrency, so that only the enqueue path differs.
"""

from __future__ import annotations

QUEUE = "example-queue"
WORKER_CONCURRENCY = 10  # the worker's default (WORKER_CONCURRENCY)
APP_VERSION = "0.1.0"
