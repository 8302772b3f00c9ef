"""(5) End-to-end job throughput: jobs of 1 child x 1 step, enqueued over HTTP, run to SUCCESS.

One worker with its default settings; all jobs are enqueued at once (concurrent HTTP), and the
clock runs from the first request until the last parent is SUCCESS in the database. Also
reported: each job's time from enqueue to completion, and per job the write transactions,
WAL and CPU it cost. A second pass with WORKER_CONCURRENCY=100 shows what the default
concurrency and DBOS's 1 s queue polling leave on the table.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from bench.harness import BenchContext, fetch, poll
from bench.load import run_load
from bench.results import BenchResult
from services.worker.workflows import PARENT_WORKFLOW

NAME = "e2e"
TITLE = "End-to-end job throughput (1 child, 1 step), one worker, default settings"


CLIENTS = 8
WIDE = 100


def job_count(ctx: BenchContext) -> int:
    return 6 if ctx.smoke else 400


async def _finished(url: str) -> dict[str, int]:
    rows = await fetch(
        url,
        "SELECT status, count(*) AS n FROM dbos.workflow_status WHERE name = $1 GROUP BY status",
        PARENT_WORKFLOW,
    )
    return {r["status"]: int(r["n"]) for r in rows}


@dataclass
class Pass:
    jobs: int
    elapsed: float
    enqueued_in: float
    latencies_ms: list[float]
    waits_ms: list[float]
    cost: dict[str, float]
    effects: int


async def one_pass(ctx: BenchContext, tag: str, jobs: int, **overrides: str) -> Pass:
    """A fresh database and worker; all jobs enqueued at once; the clock stops at the last
    SUCCESS."""
    async with ctx.database(f"e2e_{tag}") as url:
        worker = await asyncio.to_thread(ctx.start_worker, url, f"bench-e2e-{tag}", **overrides)
        pid = worker.proc.pid
        before = await ctx.cost_snapshot(url, (pid,))
        started = time.perf_counter()

        def body(index: int) -> dict[str, Any]:
            return {"children": 1, "steps": 1, "dedup_id": f"e2e-{index}", "step_seconds": 0}

        load = await run_load(
            f"{worker.base}/workflows", body, concurrency=CLIENTS, max_requests=jobs,
            max_seconds=120.0,
        )  # fmt: skip
        if load.ok != jobs:
            raise RuntimeError(f"enqueue failed: {load.describe()}")
        enqueued_in = time.perf_counter() - started

        async def all_done() -> bool:
            counts = await _finished(url)
            failed = {
                k: v for k, v in counts.items() if k not in ("SUCCESS", "ENQUEUED", "PENDING")
            }
            if failed:
                raise RuntimeError(f"jobs ended badly: {counts}")
            return counts.get("SUCCESS", 0) >= jobs

        await poll(all_done, timeout=600.0, interval=0.02, what=f"{jobs} jobs to succeed")
        elapsed = time.perf_counter() - started
        after = await ctx.cost_snapshot(url, (pid,))
        rows = await fetch(
            url,
            """SELECT updated_at - created_at AS total_ms,
                      started_at_epoch_ms - created_at AS wait_ms
                 FROM dbos.workflow_status WHERE name = $1""",
            PARENT_WORKFLOW,
        )
        effects = await fetch(url, "SELECT count(*) AS n FROM limbo.step_effects")
    return Pass(
        jobs=jobs,
        elapsed=elapsed,
        enqueued_in=enqueued_in,
        latencies_ms=[float(r["total_ms"]) for r in rows],
        waits_ms=[float(r["wait_ms"]) for r in rows if r["wait_ms"] is not None],
        cost=ctx.cost(before, after, (pid,)).per(jobs),
        effects=int(effects[0]["n"]),
    )


async def run(ctx: BenchContext) -> BenchResult:
    jobs = job_count(ctx)
    result = BenchResult(NAME, TITLE, ctx.size)
    result.params = {
        "jobs": jobs,
        "http_clients": CLIENTS,
        "settings": "worker defaults (WORKER_CONCURRENCY 10, DBOS queue polling 1 s); "
        f"then WORKER_CONCURRENCY={WIDE}",
    }
    default = await one_pass(ctx, "default", jobs)
    result.add(
        "jobs_per_s",
        "jobs/s (first enqueue to last SUCCESS)",
        default.jobs / default.elapsed,
        "/s",
        headline=True,
    )
    result.add("elapsed", "wall time for all jobs", default.elapsed, "s")
    result.add("enqueue_phase", "of which enqueueing them all", default.enqueued_in, "s")
    result.add_samples(
        "job_latency", "job latency (enqueue to SUCCESS)", default.latencies_ms, "ms"
    )
    if default.waits_ms:
        result.add_samples("queue_wait", "queue wait (enqueue to dequeue)", default.waits_ms, "ms")
    result.add("xacts_per_job", "write transactions per job", default.cost["write_xacts"], "")
    result.add("wal_per_job", "WAL per job", default.cost["wal_bytes"], "B")
    result.add("server_cpu_per_job", "worker CPU per job", default.cost["server_cpu_ms"], "ms")
    result.add("pg_cpu_per_job", "PostgreSQL CPU per job", default.cost["postgres_cpu_ms"], "ms")

    wide = await one_pass(ctx, "wide", jobs, WORKER_CONCURRENCY=str(WIDE))
    result.add(
        "jobs_per_s_wide",
        f"jobs/s with WORKER_CONCURRENCY={WIDE}",
        wide.jobs / wide.elapsed,
        "/s",
    )
    result.add_samples(
        "job_latency_wide", f"job latency, WORKER_CONCURRENCY={WIDE}", wide.latencies_ms, "ms"
    )
    result.add(
        "server_cpu_per_job_wide",
        f"worker CPU per job, concurrency {WIDE}",
        wide.cost["server_cpu_ms"],
        "ms",
    )
    result.ratio(
        "wide_vs_default",
        f"WORKER_CONCURRENCY={WIDE} / default",
        wide.jobs / wide.elapsed,
        default.jobs / default.elapsed,
    )
    for label, run_pass in (("default", default), ("wide", wide)):
        if run_pass.effects != run_pass.jobs:
            result.notes.append(
                f"{label}: {run_pass.effects} step effects for {run_pass.jobs} jobs"
                " (expected equal)"
            )
    result.notes.append(
        "DBOS dequeues at most WORKER_CONCURRENCY jobs per queue poll and polls about once a "
        "second (dbos/_queue.py, queue_worker_thread): with the defaults that caps one worker "
        "near 10 jobs/s whatever a job costs; the second pass shows the same worker with room."
    )
    return result
