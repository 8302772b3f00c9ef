"""(1) Kill to release: a worker holding a job with a dedup ID is SIGKILLed, another is live.

Two workers and the supervisor run with their default settings (worker heartbeat 2 s,
supervisor executor timeout 6 s, poll 1 s). Each run enqueues a job under a fresh dedup ID,
waits until one worker holds it (PENDING, its executor ID) mid-job, SIGKILLs that worker's
process group, and follows the row in the database every 20 ms:

- released:  the supervisor re-enqueued it (no longer PENDING under the dead executor);
- taken over: PENDING under the live worker (or already finished there);
- ended:     terminal (DBOS then clears the dedup ID);
- reusable:  a new enqueue with the same dedup ID is accepted (202), probed over HTTP.

The killed worker is replaced by a new executor before the next run (not timed). First, as
the baseline of the same session, one kill with no supervisor running: DBOS alone never
hands the job over, so the dedup ID stays taken (checked for a bounded while).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.harness import BenchContext, fetch, poll
from bench.limbo_data import supervisor_defaults
from bench.results import BenchResult
from services.worker.settings import WorkerSettings
from tests.supervisor.support import spawn_supervisor
from tests.support.worker import TERMINAL, Worker

NAME = "kill_release"
TITLE = "Kill to release: SIGKILL the worker holding a dedup ID, a second worker live"
CONDUCTOR_DEAD_AFTER_S = 60.0  # DBOS Conductor declares an executor dead after 60 s
JOB = {"children": 1, "steps": 4, "step_seconds": 0.5}


@dataclass
class Plan:
    runs: int
    baseline_wait_s: float
    overrides_worker: dict[str, str]
    overrides_supervisor: dict[str, str]


def plan(ctx: BenchContext) -> Plan:
    if ctx.smoke:  # short timeouts only to keep the smoke run short; full runs use defaults
        return Plan(
            runs=1,
            baseline_wait_s=1.0,
            overrides_worker={"WORKER_HEARTBEAT_INTERVAL": "0.5"},
            overrides_supervisor={"SUPERVISOR_EXECUTOR_TIMEOUT": "1.5"},
        )
    return Plan(runs=5, baseline_wait_s=15.0, overrides_worker={}, overrides_supervisor={})


@dataclass
class Timeline:
    released: float
    taken_over: float
    ended: float
    reusable: float


async def _row(url: str, workflow_id: str) -> dict[str, Any]:
    rows = await fetch(
        url,
        "SELECT status, executor_id, deduplication_id FROM dbos.workflow_status"
        " WHERE workflow_uuid = $1",
        workflow_id,
    )
    return dict(rows[0])


def _enqueue(worker: Worker, dedup_id: str) -> httpx.Response:
    return worker.http.post("/workflows", json={**JOB, "dedup_id": dedup_id})


async def _held(url: str, workflow_id: str, executors: dict[str, Worker]) -> str:
    """Wait until one of our workers holds the job (PENDING under its executor ID)."""

    async def holder() -> str | None:
        row = await _row(url, workflow_id)
        if row["status"] in TERMINAL:
            raise RuntimeError(f"job {workflow_id} ended before it could be killed: {row}")
        if row["status"] == "PENDING" and row["executor_id"] in executors:
            return str(row["executor_id"])
        return None

    found: str = await poll(holder, timeout=30.0, interval=0.02, what="a worker to claim the job")
    return found


async def one_kill(
    ctx: BenchContext, url: str, workers: dict[str, Worker], dedup_id: str
) -> tuple[str, str, float]:
    """Enqueue, wait until claimed and mid-job, SIGKILL the holder. Returns the kill time."""
    any_worker = next(iter(workers.values()))
    response = await asyncio.to_thread(_enqueue, any_worker, dedup_id)
    if response.status_code != 202:
        raise RuntimeError(f"enqueue refused: {response.status_code} {response.text}")
    workflow_id = str(response.json()["workflow_id"])
    victim = await _held(url, workflow_id, workers)
    await asyncio.sleep(0.7)  # into the job: a step done, the child mid-way
    row = await _row(url, workflow_id)
    if row["status"] != "PENDING" or row["executor_id"] != victim:
        raise RuntimeError(f"job moved on before the kill: {row}")
    killed_at = time.monotonic()
    workers[victim].proc.kill()  # SIGKILL to the whole process group
    del workers[victim]
    return workflow_id, victim, killed_at


async def follow(
    url: str, workflow_id: str, victim: str, live: Worker, dedup_id: str, killed_at: float
) -> Timeline:
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 120.0
    while "ended" not in seen:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{workflow_id} not finished 120 s after the kill: {seen}")
        row = await _row(url, workflow_id)
        now = time.monotonic() - killed_at
        if not (row["status"] == "PENDING" and row["executor_id"] == victim):
            seen.setdefault("released", now)
        if row["executor_id"] != victim and row["status"] != "ENQUEUED":
            seen.setdefault("taken_over", now)
        if row["status"] in TERMINAL:
            if row["status"] != "SUCCESS":
                raise RuntimeError(f"{workflow_id} ended {row['status']}")
            seen.setdefault("ended", now)
        await asyncio.sleep(0.02)
    while True:
        response = await asyncio.to_thread(_enqueue, live, dedup_id)
        if response.status_code == 202:
            seen["reusable"] = time.monotonic() - killed_at
            break
        if response.status_code != 409 or time.monotonic() > deadline:
            raise RuntimeError(f"re-enqueue failed: {response.status_code} {response.text}")
        await asyncio.sleep(0.02)
    return Timeline(seen["released"], seen["taken_over"], seen["ended"], seen["reusable"])


async def run(ctx: BenchContext) -> BenchResult:
    p = plan(ctx)
    result = BenchResult(NAME, TITLE, ctx.size)
    result.params = {
        "runs": p.runs,
        "job": f"{JOB['children']} child x {JOB['steps']} steps of {JOB['step_seconds']} s",
        "settings": "defaults"
        if not (p.overrides_worker or p.overrides_supervisor)
        else {**p.overrides_worker, **p.overrides_supervisor},
    }
    generation = 0

    def start(url: str) -> Worker:
        nonlocal generation
        generation += 1
        return ctx.start_worker(url, f"bench-kill-{generation}", **p.overrides_worker)

    async with ctx.database("kill") as url:
        first, second = await asyncio.gather(
            asyncio.to_thread(start, url), asyncio.to_thread(start, url)
        )
        workers = {w.proc.env["WORKER_EXECUTOR_ID"]: w for w in (first, second)}

        # Baseline: DBOS alone, no supervisor.
        dedup = "kill-baseline"
        workflow_id, victim, killed_at = await one_kill(ctx, url, workers, dedup)
        await asyncio.sleep(p.baseline_wait_s)
        row = await _row(url, workflow_id)
        live = next(iter(workers.values()))
        refused = (await asyncio.to_thread(_enqueue, live, dedup)).status_code == 409
        still_held = row["status"] == "PENDING" and row["executor_id"] == victim and refused
        result.add(
            "baseline_held_s",
            "DBOS alone: dedup ID still held after",
            time.monotonic() - killed_at,
            "s",
        )
        if not still_held:
            result.notes.append(f"baseline: without the supervisor the row became {row}")
        result.notes.append(
            "Baseline, same session: with no supervisor the killed worker's job stayed "
            f"PENDING under {victim} and a new enqueue of its dedup ID was refused (409) "
            f"{p.baseline_wait_s:.0f} s after the kill: DBOS alone never releases it."
            if still_held
            else "Baseline did not hold: see the note above."
        )
        replacement = await asyncio.to_thread(start, url)
        workers[replacement.proc.env["WORKER_EXECUTOR_ID"]] = replacement

        supervisor, base = spawn_supervisor(
            ctx.spawn, url, "supervisor-kill", **p.overrides_supervisor
        )
        up_since = time.monotonic()
        await asyncio.to_thread(supervisor.wait_http, f"{base}/readyz", 60.0)
        # The baseline's job is released now too; let it finish (it is not timed).
        await poll(
            lambda: _terminal(url, workflow_id), timeout=120.0, interval=0.1, what="baseline job"
        )
        # The supervisor judges heartbeats only an executor timeout after connecting.
        default_timeout = supervisor_defaults().rules.executor_timeout_ms / 1000
        timeout_s = float(
            p.overrides_supervisor.get("SUPERVISOR_EXECUTOR_TIMEOUT", default_timeout)
        )
        await asyncio.sleep(max(0.0, up_since + timeout_s + 1.0 - time.monotonic()))

        timelines: list[Timeline] = []
        for index in range(p.runs):
            dedup = f"kill-{index}"
            workflow_id, victim, killed_at = await one_kill(ctx, url, workers, dedup)
            live = next(iter(workers.values()))
            timelines.append(await follow(url, workflow_id, victim, live, dedup, killed_at))
            if index < p.runs - 1:
                replacement = await asyncio.to_thread(start, url)
                workers[replacement.proc.env["WORKER_EXECUTOR_ID"]] = replacement
        audit = await fetch(url, "SELECT rule, action, outcome FROM limbo.audit")

    result.add_samples(
        "takeover_s",
        "kill to taken over by the live worker",
        [t.taken_over for t in timelines],
        "s",
        headline=True,
    )
    result.add_samples(
        "takeover_max_s",
        "kill to taken over (max)",
        [t.taken_over for t in timelines],
        "s",
        stat="max",
    )
    result.add_samples(
        "released_s", "kill to released by the supervisor", [t.released for t in timelines], "s"
    )
    result.add_samples("ended_s", "kill to job ended", [t.ended for t in timelines], "s")
    result.add_samples(
        "reusable_s", "kill to dedup ID accepted again", [t.reusable for t in timelines], "s"
    )
    result.ratio(
        "vs_conductor",
        "Conductor's 60 s dead-executor declaration / limbo median takeover",
        CONDUCTOR_DEAD_AFTER_S,
        result.value("takeover_s"),
    )
    result.target("takeover_s", "<=", 10.0, "median kill-to-takeover within 10 s")
    actions = sorted({f"{r['rule']}:{r['action']}:{r['outcome']}" for r in audit})
    result.notes.append(f"supervisor audit trail: {', '.join(actions) or 'empty'}")
    sup = supervisor_defaults()
    heartbeat = WorkerSettings.from_env({"DATABASE_URL": "postgresql://d@h/d"}).heartbeat_interval
    result.notes.append(
        f"Expected with the defaults: the executor timeout "
        f"({sup.rules.executor_timeout_ms / 1000:g} s) after the last heartbeat (every "
        f"{heartbeat:g} s, so up to that long before the kill), plus up to one supervisor poll "
        f"({sup.poll_interval:g} s), plus up to one DBOS queue poll (1 s) on the live worker. "
        "The 60 s of Conductor is its documented setting, not a measurement."
    )
    return result


async def _terminal(url: str, workflow_id: str) -> bool:
    return (await _row(url, workflow_id))["status"] in TERMINAL
