"""(2) Sweep cost against table size: `workflow_status` at 10k, 100k and 1M rows.

One database grows from 10k to 100k to 1M rows (built with SQL, parents and children with
their `operation_outputs` rows; history a mix of SUCCESS, ERROR, CANCELLED and dead-lettered).
At each size two in-flight mixes are measured:

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
The scan alone (`Operator.candidates`: observe + decide, what every idle poll costs) is
timed too, and EXPLAIN ANALYZE of the PENDING read (with the prefilter the sweep uses) is
recorded at the largest size.
"""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg

from bench import limbo_data as data
from bench.harness import BenchContext
from bench.results import BenchResult
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


async def _sweeps(
    conn: asyncpg.Connection, opened: data.OpenSupervisor, count: int
) -> tuple[list[float], list[float], int]:
    sweep_ms: list[float] = []
    scan_ms: list[float] = []
    acted = 0
    for _ in range(WARMUP + count):
        await data.reset_limbo(conn)
        started = time.perf_counter()
        verdicts = (await opened.operator.candidates()).verdicts
        scan_ms.append((time.perf_counter() - started) * 1000)
        if len(verdicts) != IN_LIMBO:
            raise RuntimeError(f"expected {IN_LIMBO} candidates, the scan found {len(verdicts)}")
        started = time.perf_counter()
        report = await opened.operator.sweeper.sweep(repeat_dry_runs=False)
        sweep_ms.append((time.perf_counter() - started) * 1000)
        acted = sum(1 for o in report.outcomes if o.outcome == "applied")
        if acted != IN_LIMBO:
            raise RuntimeError(f"sweep applied {acted} of {IN_LIMBO}: {report.describe()}")
    return sweep_ms[WARMUP:], scan_ms[WARMUP:], acted


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
    async with ctx.database("sweep") as url:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        opened = await data.open_supervisor(url)
        try:
            await data.register_executors(conn, reporting=True)
            await data.insert_limbo(conn, IN_LIMBO)
            history = IN_LIMBO
            live = 0
            for size in steps:
                started = time.perf_counter()
                # 1% PENDING in all: the 100 in limbo plus live pairs; the rest history.
                live_target = max(0, size // 100 - IN_LIMBO) // 2 * 2
                await data.insert_live_pending(conn, live, live_target)
                live = max(live, live_target)
                await data.insert_history(conn, history, size - live)
                history = size - live
                await conn.execute("ANALYZE dbos.workflow_status")
                await conn.execute("ANALYZE dbos.operation_outputs")
                build_s[size] = time.perf_counter() - started
                rows = await conn.fetchval("SELECT count(*) FROM dbos.workflow_status")
                pending = IN_LIMBO + live

                sweep_ms, scan_ms, _ = await _sweeps(conn, opened, repeats(ctx))
                series["issue"].append(sweep_ms)
                series["scan"].append(scan_ms)
                tag = label(size)
                result.add_samples(
                    f"sweep_ms_{tag}",
                    f"sweep at {tag} rows ({pending} PENDING), acting on {IN_LIMBO}",
                    sweep_ms,
                    "ms",
                    headline=size == steps[-1],
                )
                result.add_samples(
                    f"scan_ms_{tag}", f"scan alone at {tag} (issue mix)", scan_ms, "ms"
                )

                # Fixed in-flight: the live PENDING rows out of the way, then back; the live
                # executors report what they run then (nothing), as the worker's beats do.
                await conn.execute(
                    "UPDATE dbos.workflow_status SET status = 'SUCCESS'"
                    " WHERE workflow_uuid LIKE 'live-%' AND status = 'PENDING'"
                )
                await data.report_live_work(conn)
                sweep_f, scan_f, _ = await _sweeps(conn, opened, repeats(ctx))
                series["fixed"].append(sweep_f)
                series["scan_fixed"].append(scan_f)
                await conn.execute(
                    "UPDATE dbos.workflow_status SET status = 'PENDING'"
                    " WHERE workflow_uuid LIKE 'live-%' AND status = 'SUCCESS'"
                )
                await data.report_live_work(conn)
                result.add_samples(
                    f"sweep_fixed_ms_{tag}",
                    f"sweep at {tag} rows, only the {IN_LIMBO} in limbo PENDING",
                    sweep_f,
                    "ms",
                )
                result.add_samples(
                    f"scan_fixed_ms_{tag}", f"scan alone at {tag} (fixed in-flight)", scan_f, "ms"
                )
                if rows != size:
                    result.notes.append(f"size {tag}: built {rows} rows")
            await data.reset_limbo(conn)  # the issue mix at the largest size, as swept
            plan = await explain_pending_read(conn, opened)
        finally:
            await opened.close()
            await conn.close()

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
        "Build (SQL, parents + children + operation_outputs, ANALYZE): "
        + ", ".join(f"{label(s)} {t:.1f} s" for s, t in build_s.items())
        + " (not timed in the results)."
    )
    return result
