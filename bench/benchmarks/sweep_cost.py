"""(2) Sweep cost against table size: `workflow_status` at 10k, 100k and 1M rows.

One database per size (built with SQL, parents and children with their `operation_outputs`
rows; history a mix of SUCCESS, ERROR, CANCELLED and dead-lettered; vacuumed and analyzed,
as a table of that size is in production). Two in-flight mixes are measured:

- `issue mix`: 1% of the rows PENDING, 100 of them in limbo (under a dead executor), the rest
  on live executors, whose work reports list them (as the shipped worker's beats do); so the
  pending work grows with the table, 100 -> 1,000 -> 10,000 rows;
- `fixed in-flight`: the same table with only the 100 in limbo PENDING (the other PENDING
  rows made SUCCESS for the measurement, then restored, the live executors' work reports
  following each change): only history grows.

A sweep is timed through the service's own code (`Sweeper.sweep`, the call its loop makes
as leader): stamp lost sessions, observe the candidates in one snapshot, decide, and act on
all 100 (one guarded re-enqueue UPDATE, one audit row each). The rows are put back in limbo
between sweeps (not timed); each point's first scan and sweep warm up and are not recorded.
The sizes take turns, one sweep each per round, their order rotating: this shared machine's
speed drifts by up to 2x over minutes, and a ratio of points timed minutes apart measured
that drift (10k medians of 16-26 ms in successive runs of the same code).
The scan alone (`Operator.candidates`: observe + decide, what every idle poll costs) is
timed too, and EXPLAIN ANALYZE of the PENDING read (with the prefilter the sweep uses) is
recorded at the largest size.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench import limbo_data as data
from bench.harness import BenchContext
from bench.results import BenchResult
from services.shared.db import SESSION_SETTINGS
from services.shared.dsn import asyncpg_dsn
from services.supervisor.model import Snapshot, Status
from services.supervisor.rules.base import PrefilterContext
from services.supervisor.store import executors as executor_store
from services.supervisor.store.connection import NOW_MS
from services.supervisor.store.reads import in_flight_query, prefilter_for

NAME = "sweep_cost"
TITLE = "Sweep cost against workflow_status size (10k, 100k, 1M rows)"
IN_LIMBO = 100
TARGET_MS = 50.0


def sizes(ctx: BenchContext) -> tuple[int, ...]:
    return (2_000, 6_000) if ctx.smoke else (10_000, 100_000, 1_000_000)


def repeats(ctx: BenchContext) -> int:
    return 2 if ctx.smoke else 7


def label(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1_000}k"


# Untimed scan + sweep before each point's timed ones. The first sweeps after a new size and
# its ANALYZE pay for planning and for the pool's statement preparation: in run 9 the 10k
# point, timed first on a fresh pool, came out slower than 100k (29.6 against 20.8 ms), and
# its first three of nine samples in an interleaved run were 35-60 ms against ~21 after.
WARMUP = 1


@dataclass
class Point:
    """One size's database, as the supervisor service opens it."""

    size: int
    conn: asyncpg.Connection
    opened: data.OpenSupervisor
    pending: int


async def _sweep_once(point: Point) -> tuple[float, float]:
    """Put the 100 back in limbo, then time a scan and a sweep that acts on all of them."""
    conn, operator = point.conn, point.opened.operator
    await data.reset_limbo(conn)
    started = time.perf_counter()
    verdicts = (await operator.candidates()).verdicts
    scan_ms = (time.perf_counter() - started) * 1000
    if len(verdicts) != IN_LIMBO:
        raise RuntimeError(f"expected {IN_LIMBO} candidates, the scan found {len(verdicts)}")
    started = time.perf_counter()
    report = await operator.sweeper.sweep(repeat_dry_runs=False)
    sweep_ms = (time.perf_counter() - started) * 1000
    acted = sum(1 for o in report.outcomes if o.outcome == "applied")
    if acted != IN_LIMBO:
        raise RuntimeError(f"sweep applied {acted} of {IN_LIMBO}: {report.describe()}")
    return sweep_ms, scan_ms


async def _interleaved(
    points: list[Point], count: int
) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """`count` sweeps per point after WARMUP untimed ones, the points taking turns."""
    sweeps: dict[int, list[float]] = {p.size: [] for p in points}
    scans: dict[int, list[float]] = {p.size: [] for p in points}
    for point in points:
        for _ in range(WARMUP):
            await _sweep_once(point)
    for round_ in range(count):
        shift = round_ % len(points)
        for point in points[shift:] + points[:shift]:
            sweep_ms, scan_ms = await _sweep_once(point)
            sweeps[point.size].append(sweep_ms)
            scans[point.size].append(scan_ms)
    return sweeps, scans


async def _build(conn: asyncpg.Connection, size: int) -> int:
    """1% PENDING in all: the 100 in limbo plus live pairs; the rest history. Returns the
    number of PENDING rows."""
    await data.register_executors(conn, reporting=True)
    await data.insert_limbo(conn, IN_LIMBO)
    live = max(0, size // 100 - IN_LIMBO) // 2 * 2
    await data.insert_live_pending(conn, 0, live)
    await data.insert_history(conn, IN_LIMBO, size - live)
    # Vacuumed as a table of that size is in production: left to autovacuum, the 1M
    # build's vacuum started in the middle of the timed sweeps.
    await conn.execute("VACUUM (ANALYZE) dbos.workflow_status, dbos.operation_outputs")
    return IN_LIMBO + live


async def _fix_in_flight(conn: asyncpg.Connection, fixed: bool) -> None:
    """Fixed in-flight: the live PENDING rows out of the way (SUCCESS), or back; the live
    executors report what they run then, as the worker's beats do."""
    before, after = ("PENDING", "SUCCESS") if fixed else ("SUCCESS", "PENDING")
    await conn.execute(
        "UPDATE dbos.workflow_status SET status = $2"
        " WHERE workflow_uuid LIKE 'live-%' AND status = $1",
        before,
        after,
    )
    await data.report_live_work(conn)


async def explain_pending_read(
    conn: asyncpg.Connection, opened: data.OpenSupervisor
) -> list[asyncpg.Record]:
    """EXPLAIN ANALYZE of the sweep's PENDING read, with the prefilter it uses now."""
    operator = opened.operator
    now_ms = await conn.fetchval(f"SELECT {NOW_MS}")
    base = Snapshot(
        now_ms=now_ms,
        executors=await executor_store.executors(conn),
        registry=await executor_store.registry(conn),
    )
    ctx = PrefilterContext(now_ms=now_ms, snap=base, schema=operator.schema)
    narrowed = prefilter_for(Status.PENDING, ctx, operator.settings.rules)
    prefilter, params = narrowed if narrowed is not None else (None, [])
    # Under the supervisor's own session settings: with the server's JIT on, the plan
    # reported 40 ms of compiling that the sweep never pays.
    async with conn.transaction():
        for name, value in SESSION_SETTINGS.items():
            await conn.execute(f"SET LOCAL {name} = {value}")
        return list(
            await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
                + in_flight_query(operator.schema, Status.PENDING, prefilter),
                operator.settings.scan_limit + 1,
                *params,
            )
        )


def describe_plan(plan: list[asyncpg.Record]) -> str:
    """The scan, the rows it visited and kept, each subplan's loops and time, JIT if any."""
    top = json.loads(plan[0][0])[0] if isinstance(plan[0][0], str) else plan[0][0][0]
    node = top["Plan"]
    while node.get("Plans") and node["Node Type"] in ("Limit", "Sort", "Result"):
        node = next((n for n in node["Plans"] if "Subplan Name" not in n), node["Plans"][0])
    kept = node.get("Actual Rows", 0)
    removed = node.get("Rows Removed by Filter", 0)
    parts = [
        f"{node['Node Type']}{' on ' + node['Index Name'] if 'Index Name' in node else ''} "
        f"visiting {kept + removed} rows, keeping {kept}",
    ]

    def subplans(n: dict[str, Any]) -> None:
        for child in n.get("Plans", []):
            if "Subplan Name" in child:
                loops = child.get("Actual Loops", 1)
                spent = child.get("Actual Total Time", 0.0) * loops
                parts.append(f"{child['Subplan Name']}: {loops} loops, {spent:.1f} ms")
            subplans(child)

    subplans(top["Plan"])
    jit = top.get("JIT", {}).get("Timing", {}).get("Total")
    if jit:
        parts.append(f"JIT {jit:.1f} ms")
    return f"{'; '.join(parts)}; {top['Execution Time']:.2f} ms in all."


async def run(ctx: BenchContext) -> BenchResult:
    result = BenchResult(NAME, TITLE, ctx.size)
    steps = sizes(ctx)
    result.params = {
        "sizes": [label(s) for s in steps],
        "in_limbo": f"{IN_LIMBO} workflows ({IN_LIMBO // 2} parents + their children)",
        "pending": "1% of rows (issue mix); only the 100 in limbo (fixed in-flight)",
        "sweeps_per_point": f"{repeats(ctx)} timed, after {WARMUP} untimed",
        "settings": data.describe_defaults(),
    }
    build_s: dict[int, float] = {}
    series: dict[str, list[list[float]]] = {"issue": [], "scan": [], "fixed": [], "scan_fixed": []}
    async with contextlib.AsyncExitStack() as stack:
        points: list[Point] = []
        for size in steps:
            url = await stack.enter_async_context(ctx.database(f"sweep{label(size)}"))
            conn = await asyncpg.connect(asyncpg_dsn(url))
            stack.push_async_callback(conn.close)
            opened = await data.open_supervisor(url)
            stack.push_async_callback(opened.close)
            started = time.perf_counter()
            pending = await _build(conn, size)
            build_s[size] = time.perf_counter() - started
            rows = await conn.fetchval("SELECT count(*) FROM dbos.workflow_status")
            if rows != size:
                result.notes.append(f"size {label(size)}: built {rows} rows")
            points.append(Point(size, conn, opened, pending))

        sweeps, scans = await _interleaved(points, repeats(ctx))
        for point in points:
            await _fix_in_flight(point.conn, fixed=True)
        sweeps_f, scans_f = await _interleaved(points, repeats(ctx))
        for point in points:
            await _fix_in_flight(point.conn, fixed=False)

        for point in points:
            tag, size = label(point.size), point.size
            series["issue"].append(sweeps[size])
            series["scan"].append(scans[size])
            series["fixed"].append(sweeps_f[size])
            series["scan_fixed"].append(scans_f[size])
            result.add_samples(
                f"sweep_ms_{tag}",
                f"sweep at {tag} rows ({point.pending} PENDING), acting on {IN_LIMBO}",
                sweeps[size],
                "ms",
                headline=size == steps[-1],
            )
            result.add_samples(
                f"scan_ms_{tag}", f"scan alone at {tag} (issue mix)", scans[size], "ms"
            )
            result.add_samples(
                f"sweep_fixed_ms_{tag}",
                f"sweep at {tag} rows, only the {IN_LIMBO} in limbo PENDING",
                sweeps_f[size],
                "ms",
            )
            result.add_samples(
                f"scan_fixed_ms_{tag}",
                f"scan alone at {tag} (fixed in-flight)",
                scans_f[size],
                "ms",
            )
        largest = points[-1]
        await data.reset_limbo(largest.conn)  # the issue mix at the largest size, as swept
        plan = await explain_pending_read(largest.conn, largest.opened)

    small, large = label(steps[0]), label(steps[-1])
    result.ratio(
        "ratio",
        f"sweep {large} / {small} (issue mix)",
        result.value(f"sweep_ms_{large}"),
        result.value(f"sweep_ms_{small}"),
    )
    result.ratio(
        "ratio_fixed",
        f"sweep {large} / {small} (fixed in-flight)",
        result.value(f"sweep_fixed_ms_{large}"),
        result.value(f"sweep_fixed_ms_{small}"),
    )
    result.target(f"sweep_ms_{large}", "<=", TARGET_MS, f"median sweep under 50 ms at {large}")
    result.series = {
        "sizes": list(steps),
        "labels": [label(s) for s in steps],
        "ms": series,
        "target_ms": TARGET_MS,
    }
    result.target("ratio", "<=", 2.0, f"sweep {large} / {small} at most 2")
    result.notes.append(f"EXPLAIN ANALYZE of the PENDING read at {large}: {describe_plan(plan)}")
    result.notes.append(
        "Build (SQL, parents + children + operation_outputs, VACUUM ANALYZE): "
        + ", ".join(f"{label(s)} {t:.1f} s" for s, t in build_s.items())
        + " (not timed in the results)."
    )
    return result
