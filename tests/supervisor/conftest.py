"""Fixtures for the supervisor's tests: a connection and an Operator on a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.shared.db import connect
from services.supervisor.operating import Operator
from testkit.dbos_rows import make_operator


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await connect(database_url, application_name="test")
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def operator(database_url: str) -> AsyncIterator[Operator]:
    op = await make_operator(database_url)
    try:
        yield op
    finally:
        await op.pool.close()
