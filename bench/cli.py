"""`python -m bench [--size smoke|full] [--only NAME ...] [--out DIR]`.

Starts one throwaway PostgreSQL for the whole run (or uses `--database-url`, a server whose
`postgres` database we may create databases from), runs the benchmarks one after another,
prints the table, and writes `latest.json` and `REPORT.md` into the output directory.
Exits 0 when every benchmark ran (missed targets included: this is not a gate), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import structlog

from bench.benchmarks import Benchmark, all_benchmarks
from bench.harness import BenchContext, Size
from bench.machine import describe, load_average
from bench.results import BenchResult, Run, render_table
from testkit.postgres import start_test_postgres

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def build_parser(names: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("smoke", "full"), default="full")
    parser.add_argument(
        "--only", action="append", choices=list(names), metavar="NAME", help=", ".join(names)
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: bench/results")
    parser.add_argument(
        "--database-url", help="an existing server to use instead of a throwaway one"
    )
    return parser


def cross_ratios(results: dict[str, BenchResult]) -> None:
    """Ratios between benchmarks of the same run: the worker against the physical limit."""
    limit = results.get("pg_insert")
    enqueue = results.get("enqueue")
    if limit is None or enqueue is None or limit.error or enqueue.error:
        return
    ceiling = limit.value("insert_tps_max")
    for key, label in (
        ("limbo_rate", "limbo worker enqueue"),
        ("direct_rate", "DBOS in-process enqueue"),
    ):
        found = enqueue.metric(key)
        if found is not None:
            limit.ratio(f"{key}_vs_insert", f"{label} / insert limit", found.value, ceiling)


async def run_benchmark(bench: Benchmark, ctx: BenchContext) -> BenchResult:
    started = time.monotonic()
    print(f"[bench] {bench.name}: {bench.title} ...", file=sys.stderr, flush=True)
    try:
        result = await bench.run(ctx)
    except Exception:
        result = BenchResult(bench.name, bench.title, ctx.size, error=traceback.format_exc())
    finally:
        ctx.stop_all()
    result.seconds = time.monotonic() - started
    state = "failed" if result.error else "done"
    print(f"[bench] {bench.name}: {state} in {result.seconds:.1f} s", file=sys.stderr, flush=True)
    return result


async def run(size: Size, only: Sequence[str] | None, out: Path, database_url: str | None) -> Run:
    chosen = [b for b in all_benchmarks() if not only or b.name in only]
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    clock = time.monotonic()
    pg = await asyncio.to_thread(start_test_postgres, database_url)
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for old_log in log_dir.glob("*.log"):  # this run's logs only
        old_log.unlink()
    ctx = BenchContext(pg=pg, size=size, log_dir=log_dir)
    try:
        machine = await describe(pg.base_url)
        results: dict[str, BenchResult] = {}
        for bench in chosen:
            results[bench.name] = await run_benchmark(bench, ctx)
        cross_ratios(results)
    finally:
        ctx.stop_all()
        pg.close()
    machine["load_average_at_end"] = load_average()
    machine["logs"] = _shown(log_dir)
    return Run(size, started_at, machine, list(results.values()), time.monotonic() - clock)


def quiet_in_process_logs() -> None:
    """The supervisor's code runs in this process for some benchmarks: keep its decision
    lines (one per release) off the table's stdout; warnings still reach stderr."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def _shown(path: Path) -> str:
    """A path relative to the project when it is inside it (the report gets committed)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    names = [b.name for b in all_benchmarks()]
    args = build_parser(names).parse_args(argv)
    quiet_in_process_logs()
    result = asyncio.run(run(args.size, args.only, args.out, args.database_url))
    json_path, md_path = result.write(args.out)
    print(render_table(result.results))
    print(f"\nwrote {json_path} and {md_path}")
    return 1 if any(r.error for r in result.results) else 0
