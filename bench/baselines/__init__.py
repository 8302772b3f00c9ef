"""Baselines the worker is measured against, in the same run, on the same PostgreSQL.

- `dbos_direct`: DBOS itself, enqueueing in-process from N concurrent tasks (no HTTP).
- `fastapi_seed`: an app shaped like the seed's: FastAPI, a synchronous endpoint calling the
  synchronous DBOS enqueue, served by uvicorn with its defaults.
- `dbos_e2e`: DBOS itself running the demo's job end to end in-process (no worker).

All run the job shape of the worker's demo (a parent starting children of steps) on the
same queue name, worker concurrency and polling interval (the demo's defaults), so that
only what the worker adds differs.
"""

from __future__ import annotations

from services.demo.settings import DemoSettings

_DEMO = DemoSettings()
QUEUE = _DEMO.queue_name
DEMO_QUEUE_CONCURRENCY = _DEMO.concurrency  # the worker's default (DEMO_QUEUE_CONCURRENCY)
DEMO_QUEUE_POLL_INTERVAL = _DEMO.poll_interval  # the worker's default (DEMO_QUEUE_POLL_INTERVAL)
APP_VERSION = "0.1.0"
