"""Fixtures for the clients of the liveness contract in other languages: the TypeScript app's
npm dependencies (installed once per session by `npm ci`), its processes, and an empty
database for the TypeScript SDK to migrate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.node import TYPESCRIPT_APP, NodeApp, ensure_node_modules
from testkit.postgres import TestPostgres


@pytest.fixture(scope="session")
def ts_app_dir() -> Path:
    """tests/client/typescript with its node_modules installed (fails if npm is missing)."""
    ensure_node_modules(TYPESCRIPT_APP)
    return TYPESCRIPT_APP


@pytest.fixture
def empty_url(pg: TestPostgres) -> Iterator[str]:
    """An empty database (no DBOS schema, no limbo schema), dropped after the test."""
    url = pg.empty_database("ts")
    try:
        yield url
    finally:
        pg.drop_database(url)


@pytest.fixture
def ts_app(empty_url: str, ts_app_dir: Path, pg: TestPostgres, tmp_path: Path) -> Iterator[NodeApp]:
    """The TypeScript app's processes; every one still running is stopped at teardown,
    before the database is dropped."""
    app = NodeApp(ts_app_dir, tmp_path, on_start=pg.register_child, on_exit=pg.unregister_child)
    try:
        yield app
    finally:
        app.close()
