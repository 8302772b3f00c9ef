"""The handshake between the harness and an in-process baseline, through files in a
control directory (BENCH_CONTROL_DIR): the baseline writes `ready`, the harness writes
`go`, the baseline writes its figures as JSON, the harness writes `exit` once it has read
the costs (a backend that exits takes its CPU counters with it)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


async def wait_file(
    path: Path, timeout: float, alive: Callable[[], bool] | None = None, poll: float = 0.01
) -> None:
    """Until `path` exists; TimeoutError after `timeout`, RuntimeError once the process
    that should write it (`alive`) is gone."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if alive is not None and not alive():
            raise RuntimeError(f"process exited before writing {path.name}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name} not written within {timeout}s")
        await asyncio.sleep(poll)


def signal(path: Path, text: str = "") -> None:
    path.write_text(text or path.name)


def write_json(path: Path, data: Any) -> None:
    """Whole or not at all: the harness polls for the file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def run_and_leave(measure: Callable[[dict[str, str]], Awaitable[Any]]) -> int:
    """A baseline's main: measure, then leave at once. Its jobs may still sleep and the
    database is thrown away: cancelling them on the way out of asyncio.run would only add
    noise to the log."""

    async def measure_and_leave() -> None:
        await measure(dict(os.environ))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    asyncio.run(measure_and_leave())
    return 0
