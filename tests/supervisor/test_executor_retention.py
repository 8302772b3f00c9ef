"""Dead executors are forgotten after SUPERVISOR_EXECUTOR_RETENTION, never while they hold
work, never while alive, never in a dry run; each deletion is audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest

from services.supervisor.operating import Operator
from testkit.dbos_rows import insert_executor, insert_workflow, make_operator, settings_for

HOUR_S = 3600.0


async def operator_with(url: str, retention_ms: int) -> Operator:
    # No rule enabled: only retention acts, so a held workflow keeps its status.
    settings = replace(settings_for(url, enabled=frozenset()), executor_retention_ms=retention_ms)
    return await make_operator(url, settings=settings)


@pytest.fixture
async def retaining(database_url: str) -> AsyncIterator[Operator]:
    op = await operator_with(database_url, retention_ms=round(HOUR_S * 1000))
    try:
        yield op
    finally:
        await op.pool.close()


async def executor_ids(conn: asyncpg.Connection) -> set[str]:
    return {r["executor_id"] for r in await conn.fetch("SELECT executor_id FROM limbo.executors")}


async def build_fleet(conn: asyncpg.Connection) -> None:
    await insert_executor(conn, "alive")
    await insert_executor(conn, "stopped-long-ago", stopped=True, seen_ago_s=2 * HOUR_S)
    await insert_executor(conn, "expired-long-ago", seen_ago_s=2 * HOUR_S)
    await insert_executor(conn, "expired-recently", seen_ago_s=60)
    await insert_executor(conn, "holds-pending", seen_ago_s=2 * HOUR_S)
    await insert_workflow(conn, "held", executor_id="holds-pending", updated_ago_ms=7_000_000)
    await insert_executor(conn, "holds-enqueued", stopped=True, seen_ago_s=2 * HOUR_S)
    await insert_workflow(conn, "queued", status="ENQUEUED", executor_id="holds-enqueued")


async def test_dead_executors_without_work_are_forgotten_and_audited(
    conn: asyncpg.Connection, retaining: Operator
) -> None:
    await build_fleet(conn)
    states = {
        r["executor_id"]: r["state"]
        for r in await conn.fetch("SELECT executor_id, state FROM limbo.executor_liveness")
    }
    # Control: the fleet is in the states the test is about.
    assert states["alive"] == "alive"
    assert states["stopped-long-ago"] == states["holds-enqueued"] == "stopped"
    assert states["expired-long-ago"] == states["expired-recently"] == "expired"
    assert states["holds-pending"] == "expired"

    report = await retaining.sweep()

    assert sorted(report.forgotten) == [
        ("expired-long-ago", "expired"),
        ("stopped-long-ago", "stopped"),
    ]
    assert await executor_ids(conn) == {
        "alive",
        "expired-recently",
        "holds-pending",
        "holds-enqueued",
    }
    audit = await conn.fetch(
        "SELECT actor, action, executor_id, state, dead_since, evidence "
        "FROM limbo.executor_audit ORDER BY executor_id"
    )
    assert [(r["actor"], r["action"], r["executor_id"], r["state"]) for r in audit] == [
        ("test", "forget", "expired-long-ago", "expired"),
        ("test", "forget", "stopped-long-ago", "stopped"),
    ]
    assert all(r["dead_since"] is not None for r in audit)
    # The held workflows were not touched.
    held = await conn.fetch("SELECT workflow_uuid, status FROM dbos.workflow_status ORDER BY 1")
    assert [(r["workflow_uuid"], r["status"]) for r in held] == [
        ("held", "PENDING"),
        ("queued", "ENQUEUED"),
    ]

    # Once its work is gone, the executor that held it is forgotten on the next sweep.
    await conn.execute(
        "UPDATE dbos.workflow_status SET status = 'SUCCESS' WHERE workflow_uuid = 'held'"
    )
    again = await retaining.sweep()
    assert again.forgotten == [("holds-pending", "expired")]


async def test_a_dry_run_and_a_zero_retention_forget_nothing(
    conn: asyncpg.Connection, retaining: Operator, database_url: str
) -> None:
    await build_fleet(conn)
    before = await executor_ids(conn)

    assert (await retaining.sweep(dry_run=True)).forgotten == []
    never = await operator_with(database_url, retention_ms=0)
    try:
        assert (await never.sweep()).forgotten == []
    finally:
        await never.pool.close()

    assert await executor_ids(conn) == before
    assert await conn.fetchval("SELECT count(*) FROM limbo.executor_audit") == 0


async def test_a_reregistered_executor_id_is_not_forgotten(
    conn: asyncpg.Connection, retaining: Operator
) -> None:
    await insert_executor(conn, "reused", stopped=True, seen_ago_s=2 * HOUR_S)
    await insert_executor(conn, "reused")  # a new process under the same ID: alive again

    assert (await retaining.sweep()).forgotten == []
    assert await executor_ids(conn) == {"reused"}
