"""Fixtures shared by every test: one real PostgreSQL per run, one database per test,
and real service processes that are always stopped again."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from testkit.localpg import free_port
from testkit.postgres import TestPostgres, start_test_postgres
from testkit.processes import ServiceProcess

Spawn = Callable[..., ServiceProcess]


@pytest.fixture(scope="session")
def pg() -> Iterator[TestPostgres]:
    server = start_test_postgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def database_url(pg: TestPostgres) -> Iterator[str]:
    """A fresh database holding DBOS's schema and ours, dropped after the test."""
    url = pg.fresh_database()
    try:
        yield url
    finally:
        pg.drop_database(url)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def spawn(pg: TestPostgres, tmp_path: Path) -> Iterator[Spawn]:
    """Start `python -m MODULE` with an environment; every process is stopped at teardown."""
    started: list[ServiceProcess] = []

    def _spawn(
        module: str,
        env: Mapping[str, str],
        name: str | None = None,
        argv: Sequence[str] | None = None,
    ) -> ServiceProcess:
        label = name or f"{module.rsplit('.', 1)[-1]}-{len(started)}"
        proc = ServiceProcess(
            module,
            env,
            tmp_path / f"{label}.log",
            on_start=pg.register_child,
            on_exit=pg.unregister_child,
            argv=argv,
        )
        started.append(proc)
        return proc.start()

    try:
        yield _spawn
    finally:
        for proc in reversed(started):
            proc.stop(timeout=20)
