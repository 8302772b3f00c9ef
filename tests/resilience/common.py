"""Reading the outcome of a resilience scenario from the database."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from testkit.worker import fetch
from tests.resilience.stack import Stack, process_alive, processes_of_run


async def job_states(database_url: str, ids: list[str]) -> dict[str, str]:
    rows = await fetch(
        database_url,
        "SELECT workflow_uuid, status FROM dbos.workflow_status WHERE workflow_uuid = ANY($1)",
        ids,
    )
    return {r["workflow_uuid"]: r["status"] for r in rows}


async def wait_states(
    database_url: str, ids: list[str], accept: Callable[[Counter[str]], bool], timeout: float
) -> Counter[str]:
    """Poll the jobs' statuses until `accept` likes their counts."""
    deadline = time.monotonic() + timeout
    while True:
        counts = Counter((await job_states(database_url, ids)).values())
        if accept(counts):
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"statuses never reached the expected state: {dict(counts)}")
        await asyncio.sleep(0.2)


async def wait_all_success(database_url: str, ids: list[str], timeout: float) -> float:
    """Seconds until every job is SUCCESS; fails naming the ones that are not."""
    started = time.monotonic()
    while True:
        states = await job_states(database_url, ids)
        if len(states) == len(ids) and all(s == "SUCCESS" for s in states.values()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            stuck = {i: s for i, s in states.items() if s != "SUCCESS"}
            raise AssertionError(f"{len(stuck)} of {len(ids)} jobs unfinished: {stuck}")
        await asyncio.sleep(0.5)


async def effect_counts(database_url: str, ids: list[str]) -> list[int]:
    """How many times each step effect of these jobs' children happened."""
    rows = await fetch(
        database_url,
        "SELECT count(*) AS n FROM limbo_demo.step_effects e"
        " JOIN dbos.workflow_status w ON w.workflow_uuid = e.workflow_id"
        " WHERE w.parent_workflow_id = ANY($1) GROUP BY e.workflow_id, e.step",
        ids,
    )
    return [r["n"] for r in rows]


async def worker_pid(stack: Stack) -> int | None:
    """The stack's live worker process (not the relay supervisord started)."""
    rows = await fetch(
        stack.database_url,
        "SELECT pid FROM limbo.executors WHERE executor_id = $1 AND stopped_at IS NULL",
        stack.executor_id,
    )
    pid = rows[0]["pid"] if rows else None
    return pid if pid is not None and process_alive(pid) else None


def supervisor_pids(run_dir: Path) -> list[int]:
    """Our supervisor service processes started by this stack (not their stdout relays)."""
    return [
        pid
        for pid, cmdline in processes_of_run(run_dir)
        if b"services.supervisor" in cmdline
        and b"-m" in cmdline
        and b"deploy/stdout_relay.py" not in cmdline
    ]


async def audit_applied(database_url: str) -> list[dict[str, object]]:
    rows = await fetch(
        database_url,
        "SELECT workflow_id, rule, action, actor FROM limbo.audit WHERE outcome = 'applied'",
    )
    return [dict(r) for r in rows]
