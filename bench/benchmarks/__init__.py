"""One module per benchmark, each with `NAME`, `TITLE` and `async def run(ctx) -> BenchResult`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.harness import BenchContext
from bench.results import BenchResult


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    run: Callable[[BenchContext], Awaitable[BenchResult]]


def all_benchmarks() -> list[Benchmark]:
    """In the order they run: the physical limit first, then the worker, then the supervisor."""
    from bench.benchmarks import (
        e2e_throughput,
        enqueue_http,
        kill_release,
        pg_insert,
        release_throughput,
        sweep_cost,
    )

    modules = [
        pg_insert,
        enqueue_http,
        e2e_throughput,
        kill_release,
        sweep_cost,
        release_throughput,
    ]
    return [Benchmark(m.NAME, m.TITLE, m.run) for m in modules]
