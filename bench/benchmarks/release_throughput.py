"""(3) Release throughput: 10k workflows in limbo at once; time until all are released.

10k PENDING workflows (5k parents and their children) appear at once under a dead executor,
in one committed transaction, beside 100k rows of history. Two measurements, each bounded
in time (a phase cut short reports its rate and the projected time for all):

- `service`: the supervisor process (`python -m services.supervisor`, default settings,
  already leader and past its post-connection grace period) releases them by itself; the
  clock runs from the commit until none is left in limbo (polled every 20 ms);
- `back to back`: the same code path in-process, `Supervisor.sweep` called again as soon as
  it returns: the release machinery without the service's poll interval between batches.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from bench import limbo_data as data
from bench.harness import BenchContext
from bench.results import BenchResult
from services.shared.dsn import asyncpg_dsn
from tests.supervisor.support import spawn_supervisor

NAME = "release_throughput"
TITLE = "Release throughput: 10k workflows in limbo at once"


def counts(ctx: BenchContext) -> tuple[int, int]:
    """(in limbo, history rows)."""
    return (200, 2_000) if ctx.smoke else (10_000, 100_000)


def deadlines(ctx: BenchContext) -> tuple[float, float]:
    """Seconds allowed to (the service, the back-to-back sweeps): the benchmark stays near
    two minutes; a phase cut short reports its rate and the projected time for all."""
    return (30.0, 20.0) if ctx.smoke else (75.0, 25.0)


async def _wait_released(conn: asyncpg.Connection, total: int, seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    left = total
    while left and time.perf_counter() < deadline:
        await asyncio.sleep(0.02)
        left = await data.in_limbo(conn)
    return total - left


async def _refill(conn: asyncpg.Connection, in_limbo: int) -> None:
    """A new set in limbo, in one transaction: all at once."""
    async with conn.transaction():
        await conn.execute("DELETE FROM dbos.workflow_status WHERE workflow_uuid LIKE 'limbo-%'")
        await conn.execute("DELETE FROM dbos.operation_outputs WHERE workflow_uuid LIKE 'limbo-%'")
        await data.refresh_live(conn)
        await data.insert_limbo(conn, in_limbo)


async def run(ctx: BenchContext) -> BenchResult:
    in_limbo, history = counts(ctx)
    service_s, sweeps_s = deadlines(ctx)
    # Smoke only: a shorter post-connection grace; the full run keeps every default.
    grace = {"SUPERVISOR_EXECUTOR_TIMEOUT": "1.5"} if ctx.smoke else {}
    result = BenchResult(NAME, TITLE, ctx.size)
    result.params = {
        "in_limbo": f"{in_limbo} workflows ({in_limbo // 2} parents + their children)",
        "history_rows": history,
        "settings": data.describe_defaults(),
        "phase_limits_s": {"service": service_s, "back_to_back": sweeps_s},
    }
    async with ctx.database("release") as url:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await data.register_executors(conn)
            await data.insert_history(conn, 0, history)
            await conn.execute("ANALYZE")

            # The service, as deployed: leader, past its post-connection grace period.
            supervisor, base = spawn_supervisor(ctx.spawn, url, "supervisor-release", **grace)
            up_since = time.monotonic()
            await asyncio.to_thread(supervisor.wait_http, f"{base}/readyz", 60.0)
            # It judges heartbeats only an executor timeout after connecting (default 6 s).
            default_timeout = data.supervisor_defaults().rules.executor_timeout_ms / 1000
            timeout_s = float(grace.get("SUPERVISOR_EXECUTOR_TIMEOUT", default_timeout))
            await asyncio.sleep(max(0.0, up_since + timeout_s + 1.0 - time.monotonic()))
            await _refill(conn, in_limbo)
            appeared = time.perf_counter()
            service_released = await _wait_released(conn, in_limbo, service_s)
            service_elapsed = time.perf_counter() - appeared
            ctx.stop(supervisor)

            # The same code path in-process, sweeps back to back (no poll interval).
            await _refill(conn, in_limbo)
            opened = await data.open_supervisor(url)
            try:
                sweeps = 0
                started = time.perf_counter()
                while time.perf_counter() - started < sweeps_s:
                    report = await opened.supervisor.sweep(repeat_dry_runs=False)
                    sweeps += 1
                    if not report.outcomes:
                        break
                sweeps_elapsed = time.perf_counter() - started
                batch = opened.supervisor.settings.batch_size
            finally:
                await opened.close()
            sweeps_released = in_limbo - await data.in_limbo(conn)
        finally:
            await conn.close()

    service_rate = service_released / service_elapsed
    result.add(
        "service_rows_per_s",
        "service: rows released/s (defaults)",
        service_rate,
        "/s",
        headline=True,
    )
    done = service_released == in_limbo
    result.add(
        "service_s",
        f"service: time until all {in_limbo} released" + ("" if done else " (projected)"),
        service_elapsed if done else in_limbo / service_rate,
        "s",
    )
    sweeps_rate = sweeps_released / sweeps_elapsed
    result.add("sweeps_rows_per_s", "back-to-back sweeps: rows released/s", sweeps_rate, "/s")
    result.ratio(
        "sweeps_vs_service",
        "back-to-back sweeps / service (what the poll interval costs)",
        sweeps_rate,
        service_rate,
    )
    result.target("service_rows_per_s", ">=", 20_000.0, "at least 20k rows/s")
    result.notes.append(
        f"service: {service_released} of {in_limbo} released in {service_elapsed:.1f} s"
        + ("" if done else f" (phase limit {service_s:.0f} s; the rest would follow at that rate)")
        + f". Back to back: {sweeps} sweeps of at most {batch} actions, {sweeps_released} "
        f"released in {sweeps_elapsed:.1f} s."
    )
    return result
