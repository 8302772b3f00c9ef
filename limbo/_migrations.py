"""Schema `limbo` migrations: each component (the liveness contract, the supervisor, the demo)
owns an append-only list of migrations, applied once, in order, under an advisory lock.

Every Limbo process migrates at start: a DBOS app calling `limbo.protect()`, the worker, the
supervisor. Concurrent starts are safe (one transaction, one transaction-level lock).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

SCHEMA = "limbo"
_LOCK = "limbo.migrate"


class SchemaTooNew(RuntimeError):
    """The database holds migrations of a component newer than this build knows."""


async def migrate(conn: asyncpg.Connection, component: str, migrations: Sequence[str]) -> int:
    """Apply `component`'s pending migrations; returns the version now in place."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _LOCK)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.migrations (
                    component  text NOT NULL,
                    version    integer NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (component, version)
                )"""
        )
        current = await conn.fetchval(
            f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.migrations WHERE component = $1",
            component,
        )
        if current > len(migrations):
            raise SchemaTooNew(
                f"schema {SCHEMA}: component {component!r} is at version {current}, newer "
                f"than this build knows ({len(migrations)}): upgrade this program"
            )
        for version, sql in enumerate(migrations[current:], start=current + 1):
            await conn.execute(sql)
            await conn.execute(
                f"INSERT INTO {SCHEMA}.migrations (component, version) VALUES ($1, $2)",
                component,
                version,
            )
        return len(migrations)
