"""Resilience of the worker under supervisord: random SIGKILLs, and SIGTERM of the stack."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

from testkit.processes import wait_until
from tests.resilience.common import effect_counts, job_states, worker_pid
from tests.resilience.conftest import StackFactory, record
from tests.resilience.stack import process_alive


async def test_random_sigkills_while_200_jobs_run(stacks: StackFactory, database_url: str) -> None:
    # DBOS's own default of 100 recovery attempts, not the seed's demo value of 2: a job
    # in flight at three of the kills would otherwise be dead-lettered by DBOS, correctly,
    # which is the crash-loop scenario's subject, not this one's (no job lost or run twice).
    stack = stacks(
        database_url, DEMO_QUEUE_CONCURRENCY="20", DEMO_MAX_RECOVERY_ATTEMPTS="100"
    ).wait_ready()
    jobs, steps = 200, 3
    ids = []
    for i in range(jobs):
        response = stack.worker.enqueue(
            children=1, steps=steps, dedup_id=f"kill-{i}", step_seconds=0.05
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["workflow_id"])

    rng = random.Random(20261125)
    started = time.monotonic()
    kills = 0
    while kills < 5 and time.monotonic() - started < 120:
        states = await job_states(database_url, ids)
        if sum(s == "SUCCESS" for s in states.values()) >= jobs * 0.9:
            break  # too little work left for a kill to mean anything
        pid = await worker_pid(stack)
        if pid is None:
            await asyncio.sleep(0.2)
            continue
        await asyncio.sleep(rng.uniform(0.5, 2.5))
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
            kills += 1
            wait_until(lambda: not process_alive(pid), 10, what="the worker to die")  # noqa: B023

    async def all_done() -> bool:
        states = await job_states(database_url, ids)
        return len(states) == jobs and all(s == "SUCCESS" for s in states.values())

    deadline = time.monotonic() + 240
    while not await all_done():
        if time.monotonic() > deadline:
            states = await job_states(database_url, ids)
            stuck = {i: s for i, s in states.items() if s != "SUCCESS"}
            raise AssertionError(f"{len(stuck)} jobs unfinished after {kills} kills: {stuck}")
        await asyncio.sleep(0.5)
    elapsed = time.monotonic() - started
    counts = await effect_counts(database_url, ids)
    assert len(counts) == jobs * steps, f"{len(counts)} step effects, expected {jobs * steps}"
    duplicates = sum(1 for n in counts if n != 1)
    assert duplicates == 0, f"{duplicates} steps ran their effect more than once"
    assert kills >= 3, f"only {kills} kills landed while jobs ran"
    record(
        "random_sigkill_200_jobs",
        "pass",
        kills=kills,
        jobs=jobs,
        duplicate_effects=duplicates,
        seconds=round(elapsed, 1),
    )


async def test_sigterm_to_the_stack_mid_load_then_restart_loses_nothing(
    stacks: StackFactory, database_url: str
) -> None:
    stack = stacks(database_url, WORKER_SHUTDOWN_TIMEOUT="2").wait_ready()
    ids = []
    for i in range(40):
        response = stack.worker.enqueue(children=1, steps=5, dedup_id=f"term-{i}", step_seconds=0.1)
        assert response.status_code == 202
        ids.append(response.json()["workflow_id"])
    await asyncio.sleep(2.0)
    before = await job_states(database_url, ids)
    assert any(s != "SUCCESS" for s in before.values()), "the load finished before SIGTERM"
    stopping = time.monotonic()
    assert stack.terminate(timeout=90) == 0
    stop_seconds = time.monotonic() - stopping
    stack.kill()  # nothing should be left; make sure

    again = stacks(database_url, name="again").wait_ready()
    deadline = time.monotonic() + 180
    while True:
        states = await job_states(database_url, ids)
        if all(s == "SUCCESS" for s in states.values()):
            break
        assert time.monotonic() < deadline, states
        await asyncio.sleep(0.5)
    counts = await effect_counts(database_url, ids)
    assert len(counts) == 40 * 5
    assert set(counts) == {1}
    assert again.worker.http.get("/readyz").status_code == 200
    record(
        "sigterm_stack_mid_load",
        "pass",
        jobs=40,
        unfinished_at_sigterm=sum(s != "SUCCESS" for s in before.values()),
        stop_seconds=round(stop_seconds, 1),
        lost=0,
    )
