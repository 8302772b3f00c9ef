"""(4) Worker enqueue over HTTP under concurrency, against DBOS in-process and a seed-shaped app.

Three contestants, each in a fresh database cloned from the same template on the same server,
in rounds whose order rotates (so that drift in the machine's load spreads over all three):

- `limbo`: the worker (`python -m services.worker`, default settings) over HTTP;
- `fastapi`: baseline (b), FastAPI + synchronous DBOS enqueue (`bench.baselines.fastapi_seed`);
- `direct`: baseline (a), DBOS's `enqueue_async` in-process (`bench.baselines.dbos_direct`).

Each request enqueues a 1-child, 1-step job under a unique deduplication ID. The job's step
sleeps 60 s, so the first `DEMO_QUEUE_CONCURRENCY` jobs fill every contestant's queue slots and the
rest stay ENQUEUED: what is measured is the enqueue path alone, the same in all three.
Per contestant: enqueues/s, latency, and per enqueue the write transactions, WAL bytes and the
CPU of the serving process and of PostgreSQL.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.baselines import control
from bench.harness import BenchContext, Cost
from bench.load import LoadResult, run_load
from bench.results import BenchResult
from testkit.localpg import free_port

NAME = "enqueue"
TITLE = "Worker enqueue over HTTP vs DBOS in-process (a) and a seed-shaped FastAPI app (b)"

CONTESTANTS = ("limbo", "fastapi", "direct")
LABELS = {
    "limbo": "limbo worker (HTTP)",
    "fastapi": "seed-shaped FastAPI (HTTP)",
    "direct": "DBOS in-process",
}
SATURATING_STEP_SECONDS = 60.0


def concurrency(ctx: BenchContext) -> int:
    return 8 if ctx.smoke else 32


@dataclass
class Plan:
    rounds: int
    max_requests: int
    max_seconds: float
    warmup: int


def plan(ctx: BenchContext) -> Plan:
    if ctx.smoke:
        return Plan(rounds=1, max_requests=40, max_seconds=3.0, warmup=8)
    return Plan(rounds=3, max_requests=100_000, max_seconds=8.0, warmup=200)


@dataclass
class Sample:
    ok: int
    seconds: float
    latencies_ms: list[float]
    cost: Cost
    client_cpu_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def _body(tag: str) -> Any:
    def body(index: int) -> dict[str, Any]:
        return {
            "children": 1,
            "steps": 1,
            "dedup_id": f"{tag}-{index}",
            "step_seconds": SATURATING_STEP_SECONDS,
        }

    return body


async def _http_round(
    ctx: BenchContext, url: str, base: str, pid: int, tag: str, p: Plan
) -> Sample:
    before = await ctx.cost_snapshot(url, (pid,))
    load: LoadResult = await run_load(
        f"{base}/workflows",
        _body(tag),
        concurrency=concurrency(ctx),
        max_requests=p.max_requests,
        max_seconds=p.max_seconds,
        warmup=0,
    )
    after = await ctx.cost_snapshot(url, (pid,))
    if load.ok == 0:
        raise RuntimeError(f"{tag}: no request succeeded: {load.describe()}")
    return Sample(
        ok=load.ok,
        seconds=load.seconds,
        latencies_ms=load.latencies_ms,
        cost=ctx.cost(before, after, (pid,)),
        client_cpu_s=load.client_cpu_seconds,
        detail=load.describe(),
    )


async def _warm(base: str, tag: str, ctx: BenchContext, p: Plan) -> None:
    load = await run_load(
        f"{base}/workflows",
        _body(f"{tag}-warm"),
        concurrency=concurrency(ctx),
        max_requests=p.warmup,
        max_seconds=30.0,
    )
    if load.ok == 0:
        raise RuntimeError(f"{tag}: warm-up failed: {load.describe()}")


async def limbo_round(ctx: BenchContext, round_no: int, p: Plan) -> Sample:
    async with ctx.database(f"enq_limbo_{round_no}") as url:
        worker = await asyncio.to_thread(ctx.start_worker, url, f"bench-enq-{round_no}")
        await _warm(worker.base, f"limbo{round_no}", ctx, p)
        sample = await _http_round(ctx, url, worker.base, worker.proc.pid, f"limbo{round_no}", p)
        worker.proc.kill()  # saturating jobs would make a graceful drain wait; DB is dropped
        return sample


async def fastapi_round(ctx: BenchContext, round_no: int, p: Plan) -> Sample:
    async with ctx.database(f"enq_fastapi_{round_no}") as url:
        port = free_port()
        proc = ctx.spawn(
            "bench.baselines.fastapi_seed",
            {
                "DATABASE_URL": url,
                "BENCH_PORT": str(port),
                "BENCH_EXECUTOR_ID": f"bench-seed-{round_no}",
            },
            name=f"fastapi-seed-{round_no}",
        )
        base = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(proc.wait_http, f"{base}/healthz", 90.0)
        await _warm(base, f"fastapi{round_no}", ctx, p)
        sample = await _http_round(ctx, url, base, proc.pid, f"fastapi{round_no}", p)
        proc.kill()
        return sample


async def direct_round(ctx: BenchContext, round_no: int, p: Plan) -> Sample:
    async with ctx.database(f"enq_direct_{round_no}") as url:
        with tempfile.TemporaryDirectory(prefix="limbo-bench-direct-") as tmp:
            control_dir = Path(tmp)
            proc = ctx.spawn(
                "bench.baselines.dbos_direct",
                {
                    "DATABASE_URL": url,
                    "BENCH_EXECUTOR_ID": f"bench-direct-{round_no}",
                    "BENCH_CONCURRENCY": str(concurrency(ctx)),
                    "BENCH_MAX_REQUESTS": str(p.max_requests),
                    "BENCH_MAX_SECONDS": str(p.max_seconds),
                    "BENCH_WARMUP": str(p.warmup),
                    "BENCH_STEP_SECONDS": str(SATURATING_STEP_SECONDS),
                    "BENCH_CONTROL_DIR": str(control_dir),
                },
                name=f"dbos-direct-{round_no}",
            )
            await control.wait_file(control_dir / "ready", 120, proc.alive, poll=0.02)
            before = await ctx.cost_snapshot(url, (proc.pid,))
            control.signal(control_dir / "go")
            await control.wait_file(
                control_dir / "result.json", p.max_seconds + 60, proc.alive, poll=0.02
            )
            after = await ctx.cost_snapshot(url, (proc.pid,))
            data = control.read_json(control_dir / "result.json")
            control.signal(control_dir / "exit")
            await asyncio.to_thread(proc.wait, 30)
    if data["ok"] == 0:
        raise RuntimeError(f"direct: no enqueue succeeded: {data['errors']}")
    return Sample(
        ok=int(data["ok"]),
        seconds=float(data["seconds"]),
        latencies_ms=list(data["latencies_ms"]),
        cost=ctx.cost(before, after, (proc.pid,)),
        detail={"errors": data["errors"], "process_cpu_seconds": data["cpu_seconds"]},
    )


ROUNDS = {"limbo": limbo_round, "fastapi": fastapi_round, "direct": direct_round}


async def run(ctx: BenchContext) -> BenchResult:
    p = plan(ctx)
    result = BenchResult(NAME, TITLE, ctx.size)
    result.params = {
        "concurrency": concurrency(ctx),
        "rounds": p.rounds,
        "seconds_per_round": p.max_seconds,
        "max_requests_per_round": p.max_requests,
        "warmup_requests": p.warmup,
        "job": "1 child x 1 step, unique dedup ID per request",
    }
    samples: dict[str, list[Sample]] = {name: [] for name in CONTESTANTS}
    for round_no in range(p.rounds):
        order = CONTESTANTS[round_no % 3 :] + CONTESTANTS[: round_no % 3]
        for name in order:
            samples[name].append(await ROUNDS[name](ctx, round_no, p))

    for name in CONTESTANTS:
        runs = samples[name]
        label = LABELS[name]
        result.add_samples(
            f"{name}_rate", f"{label}: enqueues/s", [s.rate for s in runs], "/s", headline=True
        )
        latencies = [ms for s in runs for ms in s.latencies_ms]
        result.add_samples(f"{name}_latency", f"{label}: latency", latencies, "ms")
        total = sum(s.ok for s in runs)
        per = _per_enqueue(runs, total)
        result.add(f"{name}_server_cpu", f"{label}: server CPU per enqueue", per[0], "ms")
        result.add(f"{name}_pg_cpu", f"{label}: PostgreSQL CPU per enqueue", per[1], "ms")
        result.add(f"{name}_xacts", f"{label}: write transactions per enqueue", per[2], "")
        result.add(f"{name}_wal", f"{label}: WAL per enqueue", per[3], "B")
        client = sum(s.client_cpu_s for s in runs)
        if client > 0:
            result.add(
                f"{name}_client_cpu",
                f"{label}: load client CPU per request",
                1000 * client / total,
                "ms",
            )
    cpu = {
        name: result.value(f"{name}_server_cpu")
        + result.value(f"{name}_pg_cpu")
        + (result.value(f"{name}_client_cpu") if result.metric(f"{name}_client_cpu") else 0.0)
        for name in CONTESTANTS
    }
    for name in CONTESTANTS:
        result.add(
            f"{name}_total_cpu",
            f"{LABELS[name]}: all CPU per enqueue (server + PostgreSQL + client)",
            cpu[name],
            "ms",
        )
    limbo = result.value("limbo_rate")
    result.ratio(
        "limbo_vs_fastapi", "limbo / seed-shaped FastAPI", limbo, result.value("fastapi_rate")
    )
    result.ratio("limbo_vs_direct", "limbo / DBOS in-process", limbo, result.value("direct_rate"))
    result.ratio(
        "limbo_vs_direct_cpu",
        "limbo / DBOS in-process, by CPU per enqueue (less sensitive to a busy machine)",
        cpu["direct"],
        cpu["limbo"],
    )
    per_round = [
        (round(a.rate / b.rate, 2), round(a.rate / c.rate, 2))
        for a, b, c in zip(samples["limbo"], samples["fastapi"], samples["direct"], strict=True)
    ]
    result.notes.append(
        "Per-round ratios (limbo/FastAPI, limbo/in-process): "
        + ", ".join(f"{x}x / {y}x" for x, y in per_round)
        + ": the spread between rounds is the noise of a shared 2-core machine."
    )
    result.target("limbo_vs_fastapi", ">=", 2.0, "limbo worker at least 2x the seed-shaped app (b)")
    result.target("limbo_vs_direct", ">=", 0.5, "limbo worker at least 0.5x DBOS in-process (a)")
    result.notes.append(
        "Rates are medians over rounds; latencies pool every round. The HTTP contestants share "
        "the machine's 2 cores with the load client (its CPU per request is listed), the "
        "in-process one has no client: that gap is part of what (a) measures."
    )
    return result


def _per_enqueue(runs: list[Sample], total: int) -> tuple[float, float, float, float]:
    total = max(total, 1)
    server = sum(s.cost.server_cpu_s for s in runs)
    postgres = sum(s.cost.postgres_cpu_s for s in runs)
    xacts = sum(s.cost.write_xacts for s in runs)
    wal = sum(s.cost.wal_bytes for s in runs)
    return 1000 * server / total, 1000 * postgres / total, xacts / total, wal / total
