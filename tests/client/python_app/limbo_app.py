"""A third-party DBOS Python app, not Limbo's worker: it imports `limbo` and nothing else of
Limbo's, and adds one call. Run: `python limbo_app.py EXECUTOR_ID` with DATABASE_URL set.

Its job `job(steps)` records one row per step in `thirdparty.effects` (workflow, step, pid)
from a plain DBOS step; its queue is `tp-queue`. With ENQUEUE=<dedup ID> it enqueues one job
under that deduplication ID at start (and prints its workflow ID). LIMBO_PROTECT=0 leaves
the protection out, as an app that does not take part would.
"""

from __future__ import annotations

import os
import sys
import time

import psycopg
from dbos import DBOS, SetEnqueueOptions

import limbo

URL = os.environ["DATABASE_URL"]
STEP_SECONDS = float(os.environ.get("STEP_SECONDS", "0.5"))

DBOS(
    config={
        "name": "thirdparty",
        "system_database_url": URL,
        "executor_id": sys.argv[1],
        "application_version": "tp-1",
    }
)


@DBOS.step()
def record(step: int) -> None:
    time.sleep(STEP_SECONDS)
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO thirdparty.effects (workflow_id, step, pid) VALUES (%s, %s, %s)",
            (DBOS.workflow_id, step, os.getpid()),
        )


@DBOS.workflow(max_recovery_attempts=7)
def job(steps: int) -> int:
    for step in range(steps):
        record(step)
    return steps


def main() -> None:
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS thirdparty")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS thirdparty.effects "
            "(workflow_id text, step int, pid int, at timestamptz DEFAULT now())"
        )
    if os.environ.get("LIMBO_PROTECT", "1") != "0":  # "0": an app that takes no part
        limbo.protect()  # the one line
    DBOS.launch()
    queue = DBOS.register_queue("tp-queue", polling_interval_sec=0.1)
    dedup = os.environ.get("ENQUEUE")
    if dedup:
        with SetEnqueueOptions(deduplication_id=dedup):
            handle = queue.enqueue(job, int(os.environ.get("STEPS", "10")))
        print(f"enqueued {handle.workflow_id}", flush=True)
    print("serving", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
