"""The test run's own PostgreSQL server and a fresh database per test (template clone)."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.shared.dsn import with_database
from testkit.localpg import OwnedServer, psql, start_owned_server

TEMPLATE = "limbo_template"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class TestPostgres:
    """Either our throwaway server or the one TEST_DATABASE_URL names."""

    __test__ = False
    base_url: str
    owned: OwnedServer | None = None
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def build_template(self) -> None:
        """A database with DBOS's schema and ours, cloned for every test."""
        psql(with_database(self.base_url, "postgres"), f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        psql(with_database(self.base_url, "postgres"), f'CREATE DATABASE "{TEMPLATE}"')
        url = with_database(self.base_url, TEMPLATE)
        subprocess.run(
            [str(Path(sys.executable).parent / "dbos"), "migrate", "-s", url],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        subprocess.run(
            [sys.executable, "-m", "services.migrate", "--demo", url],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )

    def fresh_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{os.getpid()}_{next(self._counter)}"
        admin = with_database(self.base_url, "postgres")
        psql(admin, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        return with_database(self.base_url, name)

    def empty_database(self, prefix: str = "e") -> str:
        name = f"{prefix}_{os.getpid()}_{next(self._counter)}"
        psql(with_database(self.base_url, "postgres"), f'CREATE DATABASE "{name}"')
        return with_database(self.base_url, name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with contextlib.suppress(Exception):
            psql(
                with_database(self.base_url, "postgres"),
                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            )

    def register_child(self, pid: int) -> None:
        if self.owned is not None:
            self.owned.register_child(pid)

    def unregister_child(self, pid: int) -> None:
        if self.owned is not None:
            self.owned.unregister_child(pid)

    def close(self) -> None:
        if self.owned is not None:
            self.owned.close()


def start_test_postgres(database_url: str | None = None) -> TestPostgres:
    """`database_url` (default: TEST_DATABASE_URL) when given, else a throwaway server."""
    given = database_url or os.environ.get("TEST_DATABASE_URL")
    if given:
        pg = TestPostgres(base_url=given)
    else:
        owned = start_owned_server()
        pg = TestPostgres(base_url=owned.server.url, owned=owned)
    try:
        pg.build_template()
    except BaseException:
        pg.close()
        raise
    return pg
