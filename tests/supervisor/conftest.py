"""Fixtures for the supervisor's tests: a connection and a Supervisor on a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.shared.db import connect
from services.supervisor.sweeper import Supervisor
from tests.supervisor.support import make_supervisor


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await connect(database_url, application_name="test")
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def supervisor(database_url: str) -> AsyncIterator[Supervisor]:
    sup = await make_supervisor(database_url)
    try:
        yield sup
    finally:
        await sup.pool.close()
