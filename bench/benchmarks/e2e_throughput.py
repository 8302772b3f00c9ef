"""(5) End-to-end job throughput: jobs of 1 child x 1 step, from first enqueue to last SUCCESS.

Two contestants, each in a fresh database cloned from the same template on the same server,
in rounds whose order rotates:

- `limbo`: one worker (`python -m services.worker`, default settings: the demo's queue at
  DEMO_QUEUE_CONCURRENCY and DEMO_QUEUE_POLL_INTERVAL, the lease), jobs enqueued over HTTP
  from `CLIENTS` concurrent connections;
- `dbos`: baseline (c), DBOS alone in-process (`bench.baselines.dbos_e2e`): the same job
  (the step's effect committed in a datasource transaction), the same queue concurrency and
  polling interval, enqueued with `enqueue_async` from as many concurrent tasks.

All jobs are enqueued at once; the clock runs from the first enqueue until the last parent is
SUCCESS in the database (polled every 20 ms, the same watcher for both), after both have
settled for `SETTLE_S` once ready (startup is not throughput). Also reported:
each job's time from enqueue to completion and its queue wait, and per job the write
transactions, WAL and CPU (the serving process's and PostgreSQL's). Then, once each, the
worker with the previous defaults (concurrency 10, poll 0.25 s) and with concurrency 100:
what the default leaves on the table, or not.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.baselines import DEMO_QUEUE_CONCURRENCY, DEMO_QUEUE_POLL_INTERVAL, control
from bench.baselines.dbos_e2e import PARENT as DBOS_PARENT
from bench.harness import BenchContext, fetch, poll
from bench.load import run_load
from bench.results import BenchResult
from services.demo.job import PARENT_WORKFLOW

NAME = "e2e"
TITLE = "End-to-end job throughput (1 child, 1 step): one worker vs DBOS alone in-process"

CLIENTS = 8
# DBOS's queue manager starts a queue's dequeue thread up to 1 s after the queue is
# registered (dbos/_queue.py, queue_thread): both contestants settle this long once ready.
SETTLE_S = 1.5
PREVIOUS = {"DEMO_QUEUE_CONCURRENCY": "10", "DEMO_QUEUE_POLL_INTERVAL": "0.25"}
WIDE = {"DEMO_QUEUE_CONCURRENCY": "100"}
CONTESTANTS = ("limbo", "dbos")
LABELS = {"limbo": "limbo worker", "dbos": "DBOS alone in-process"}


@dataclass
class Plan:
    jobs: int
    rounds: int
    variants: bool


def plan(ctx: BenchContext) -> Plan:
    if ctx.smoke:
        return Plan(jobs=6, rounds=1, variants=False)
    return Plan(jobs=600, rounds=4, variants=True)


@dataclass
class Pass:
    jobs: int
    elapsed: float
    enqueued_in: float
    latencies_ms: list[float]
    waits_ms: list[float]
    cost: dict[str, float]
    effects: int

    @property
    def rate(self) -> float:
        return self.jobs / self.elapsed


async def _counts(url: str, name: str) -> dict[str, int]:
    rows = await fetch(
        url,
        "SELECT status, count(*) AS n FROM dbos.workflow_status WHERE name = $1 GROUP BY status",
        name,
    )
    return {r["status"]: int(r["n"]) for r in rows}


async def _until_done(url: str, name: str, jobs: int) -> None:
    async def all_done() -> bool:
        counts = await _counts(url, name)
        failed = {k: v for k, v in counts.items() if k not in ("SUCCESS", "ENQUEUED", "PENDING")}
        if failed:
            raise RuntimeError(f"jobs ended badly: {counts}")
        return counts.get("SUCCESS", 0) >= jobs

    await poll(all_done, timeout=600.0, interval=0.02, what=f"{jobs} jobs to succeed")


async def _finish(
    ctx: BenchContext,
    url: str,
    name: str,
    pid: int,
    jobs: int,
    run_jobs: Callable[[], Awaitable[float]],
) -> Pass:
    """Cost snapshot, `run_jobs()` (enqueues them all; returns how long that took), wait for
    the last SUCCESS, cost snapshot, and each job's times from its row."""
    await asyncio.sleep(SETTLE_S)
    before = await ctx.cost_snapshot(url, (pid,))
    started = time.perf_counter()
    enqueued_in = await run_jobs()
    await _until_done(url, name, jobs)
    elapsed = time.perf_counter() - started
    after = await ctx.cost_snapshot(url, (pid,))
    rows = await fetch(
        url,
        """SELECT updated_at - created_at AS total_ms,
                  started_at_epoch_ms - created_at AS wait_ms
             FROM dbos.workflow_status WHERE name = $1""",
        name,
    )
    effects = await fetch(url, "SELECT count(*) AS n FROM limbo_demo.step_effects")
    return Pass(
        jobs=jobs,
        elapsed=elapsed,
        enqueued_in=enqueued_in,
        latencies_ms=[float(r["total_ms"]) for r in rows],
        waits_ms=[float(r["wait_ms"]) for r in rows if r["wait_ms"] is not None],
        cost=ctx.cost(before, after, (pid,)).per(jobs),
        effects=int(effects[0]["n"]),
    )


async def limbo_pass(ctx: BenchContext, tag: str, jobs: int, **overrides: str) -> Pass:
    """A fresh database and worker; all jobs enqueued at once over HTTP."""
    async with ctx.database(f"e2e_{tag}") as url:
        worker = await asyncio.to_thread(ctx.start_worker, url, f"bench-e2e-{tag}", **overrides)

        def body(index: int) -> dict[str, Any]:
            return {"children": 1, "steps": 1, "dedup_id": f"e2e-{index}", "step_seconds": 0}

        async def enqueue_all() -> float:
            started = time.perf_counter()
            load = await run_load(
                f"{worker.base}/workflows", body, concurrency=CLIENTS, max_requests=jobs,
                max_seconds=120.0,
            )  # fmt: skip
            if load.ok != jobs:
                raise RuntimeError(f"enqueue failed: {load.describe()}")
            return time.perf_counter() - started

        result = await _finish(ctx, url, PARENT_WORKFLOW, worker.proc.pid, jobs, enqueue_all)
        worker.proc.kill()  # nothing left to drain; the database is dropped
        return result


async def dbos_pass(ctx: BenchContext, tag: str, jobs: int) -> Pass:
    """A fresh database and the DBOS-alone process; all jobs enqueued at once in-process."""
    async with ctx.database(f"e2e_{tag}") as url:
        with tempfile.TemporaryDirectory(prefix="limbo-bench-e2e-") as tmp:
            control_dir = Path(tmp)
            proc = ctx.spawn(
                "bench.baselines.dbos_e2e",
                {
                    "DATABASE_URL": url,
                    "BENCH_EXECUTOR_ID": f"bench-e2e-{tag}",
                    "BENCH_JOBS": str(jobs),
                    "BENCH_CONCURRENCY": str(CLIENTS),
                    "BENCH_CONTROL_DIR": str(control_dir),
                },
                name=f"dbos-e2e-{tag}",
            )
            await control.wait_file(control_dir / "ready", 120.0, proc.alive)

            async def enqueue_all() -> float:
                control.signal(control_dir / "go")
                await control.wait_file(control_dir / "enqueued.json", 120.0, proc.alive)
                data = control.read_json(control_dir / "enqueued.json")
                if data["errors"]:
                    raise RuntimeError(f"enqueue failed: {data['errors']}")
                return float(data["seconds"])

            try:
                return await _finish(ctx, url, DBOS_PARENT, proc.pid, jobs, enqueue_all)
            finally:
                control.signal(control_dir / "exit")
                proc.kill()


def _check_effects(result: BenchResult, label: str, run: Pass) -> None:
    if run.effects != run.jobs:
        result.notes.append(
            f"{label}: {run.effects} step effects for {run.jobs} jobs (expected equal)"
        )


async def run(ctx: BenchContext) -> BenchResult:
    p = plan(ctx)
    result = BenchResult(NAME, TITLE, ctx.size)
    result.params = {
        "jobs": p.jobs,
        "rounds": p.rounds,
        "concurrent_enqueuers": CLIENTS,
        "settings": f"worker defaults (DEMO_QUEUE_CONCURRENCY {DEMO_QUEUE_CONCURRENCY}, "
        f"DEMO_QUEUE_POLL_INTERVAL {DEMO_QUEUE_POLL_INTERVAL:g} s); DBOS alone with the same",
    }
    passes: dict[str, list[Pass]] = {name: [] for name in CONTESTANTS}
    for round_no in range(p.rounds):
        order = CONTESTANTS if round_no % 2 == 0 else CONTESTANTS[::-1]
        for name in order:
            tag = f"{name}{round_no}"
            if name == "limbo":
                passes[name].append(await limbo_pass(ctx, tag, p.jobs))
            else:
                passes[name].append(await dbos_pass(ctx, tag, p.jobs))

    for name in CONTESTANTS:
        runs = passes[name]
        label = LABELS[name]
        result.add_samples(
            f"{name}_jobs_per_s",
            f"{label}: jobs/s (first enqueue to last SUCCESS)",
            [r.rate for r in runs],
            "/s",
            headline=True,
        )
        result.add(
            f"{name}_enqueue_phase",
            f"{label}: of which enqueueing them all (median)",
            statistics.median(r.enqueued_in for r in runs),
            "s",
        )
        result.add_samples(
            f"{name}_latency",
            f"{label}: job latency (enqueue to SUCCESS)",
            [ms for r in runs for ms in r.latencies_ms],
            "ms",
        )
        waits = [ms for r in runs for ms in r.waits_ms]
        if waits:
            result.add_samples(
                f"{name}_queue_wait", f"{label}: queue wait (enqueue to dequeue)", waits, "ms"
            )
        total = sum(r.jobs for r in runs)

        def per_job(key: str, runs: list[Pass] = runs, total: int = total) -> float:
            return sum(r.cost[key] * r.jobs for r in runs) / total

        result.add(
            f"{name}_xacts", f"{label}: write transactions per job", per_job("write_xacts"), ""
        )
        result.add(f"{name}_wal", f"{label}: WAL per job", per_job("wal_bytes"), "B")
        result.add(
            f"{name}_cpu", f"{label}: its process's CPU per job", per_job("server_cpu_ms"), "ms"
        )
        result.add(
            f"{name}_pg_cpu", f"{label}: PostgreSQL CPU per job", per_job("postgres_cpu_ms"), "ms"
        )
        for run_pass in runs:
            _check_effects(result, label, run_pass)
    result.ratio(
        "limbo_vs_dbos",
        "limbo worker / DBOS alone (jobs/s)",
        result.value("limbo_jobs_per_s"),
        result.value("dbos_jobs_per_s"),
    )
    result.target("limbo_vs_dbos", ">=", 0.9, "the worker at least 0.9x DBOS alone")
    per_round = [a.rate / b.rate for a, b in zip(passes["limbo"], passes["dbos"], strict=True)]
    result.add_samples(
        "limbo_vs_dbos_paired",
        "limbo worker / DBOS alone, per round (the two passes of a round run back to back)",
        per_round,
        "x",
    )
    cpu = {
        name: result.value(f"{name}_cpu") + result.value(f"{name}_pg_cpu") for name in CONTESTANTS
    }
    result.ratio(
        "limbo_vs_dbos_cpu",
        "limbo worker / DBOS alone, by CPU per job (process + PostgreSQL; less sensitive to a "
        "busy machine)",
        cpu["dbos"],
        cpu["limbo"],
    )
    result.notes.append(
        "Per-round ratios (limbo / DBOS alone): "
        + ", ".join(f"{x:.2f}x" for x in per_round)
        + ". Both contestants share the machine's 2 cores with PostgreSQL; the worker also "
        "serves the enqueues over HTTP (the load client, on the same cores, is not counted "
        "in its CPU), the baseline enqueues in-process."
    )

    if p.variants:
        previous = await limbo_pass(ctx, "previous", p.jobs, **PREVIOUS)
        wide = await limbo_pass(ctx, "wide", p.jobs, **WIDE)
        default_rate = result.value("limbo_jobs_per_s")
        for key, label, run_pass in (
            ("previous", "concurrency 10, poll 0.25 s (previous defaults)", previous),
            ("wide", "concurrency 100, poll 0.1 s", wide),
        ):
            result.add(f"{key}_jobs_per_s", f"limbo worker, {label}: jobs/s", run_pass.rate, "/s")
            result.add_samples(
                f"{key}_latency", f"limbo worker, {label}: job latency", run_pass.latencies_ms, "ms"
            )
            result.ratio(
                f"{key}_vs_default",
                f"limbo worker, {label} / defaults",
                run_pass.rate,
                default_rate,
            )
            _check_effects(result, label, run_pass)
    result.notes.append(
        "Each queue poll claims at most the worker's free slots (worker_concurrency minus "
        "what it runs), so one worker starts at most concurrency / poll interval jobs per "
        "second however cheap a job is: 40/s with the previous defaults, "
        f"{DEMO_QUEUE_CONCURRENCY / DEMO_QUEUE_POLL_INTERVAL:.0f}/s with today's."
    )
    return result
