"""(6) The physical limit: single-row INSERT commits per second on the run's PostgreSQL.

pgbench runs a custom script of one INSERT per transaction (autocommit), prepared statements,
at a few client counts including the enqueue benchmark's concurrency; the best is the limit
that any enqueue path (each enqueue is at least one such commit) can approach.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from bench.benchmarks.enqueue_http import concurrency
from bench.harness import BenchContext, fetchval
from bench.results import BenchResult
from services.shared.dsn import database_name
from testkit.localpg import find_bindir

NAME = "pg_insert"
TITLE = "Physical limit: single-row insert commits per second (pgbench)"

SCRIPT = "INSERT INTO bench_insert (payload) VALUES (:payload);\n"
TABLE = """CREATE TABLE bench_insert (
    id bigserial PRIMARY KEY,
    payload text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)"""
_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


def pgbench_path() -> str:
    bindir = find_bindir()
    candidates = [str(bindir / "pgbench")] if bindir else []
    found = shutil.which("pgbench")
    if found:
        candidates.append(found)
    for path in candidates:
        if Path(path).exists():
            return path
    raise FileNotFoundError("pgbench not found (looked beside the server binaries and on PATH)")


def pgbench(url: str, script: Path, clients: int, seconds: int) -> tuple[float, str]:
    parts = urlsplit(url)
    command = [
        pgbench_path(),
        "--no-vacuum",
        "--protocol=prepared",
        f"--file={script}",
        f"--client={clients}",
        f"--jobs={min(clients, 2)}",
        f"--time={seconds}",
        "--define=payload=x",
        f"--host={parts.hostname or '127.0.0.1'}",
        f"--port={parts.port or 5432}",
        f"--username={parts.username or 'postgres'}",
        database_name(url),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    match = _TPS.search(done.stdout)
    if match is None:
        raise RuntimeError(f"no tps in pgbench's output:\n{done.stdout[-800:]}")
    return float(match.group(1)), done.stdout


async def run(ctx: BenchContext) -> BenchResult:
    seconds = 1 if ctx.smoke else 8
    client_counts = sorted({1, 8, concurrency(ctx)} if not ctx.smoke else {concurrency(ctx)})
    result = BenchResult(NAME, TITLE, ctx.size)
    result.params = {"clients": client_counts, "seconds_each": seconds}
    async with ctx.database("pgbench") as url:
        await fetchval(url, TABLE)
        with tempfile.TemporaryDirectory(prefix="limbo-pgbench-") as tmp:
            script = Path(tmp) / "insert.sql"
            script.write_text(SCRIPT)
            rates = {}
            for clients in client_counts:
                tps, _ = pgbench(url, script, clients, seconds)
                rates[clients] = tps
                result.add(
                    f"insert_tps_c{clients}", f"insert commits/s, {clients} clients", tps, "/s"
                )
        rows = await fetchval(url, "SELECT count(*) FROM bench_insert")
    best = max(rates, key=lambda c: rates[c])
    result.add(
        "insert_tps_max", "insert commits/s, best (the limit)", rates[best], "/s", headline=True
    )
    result.notes.append(
        f"best at {best} clients; {rows} rows inserted in all. Every enqueue is at least one "
        "such commit, so this bounds any enqueue path on this server."
    )
    return result
