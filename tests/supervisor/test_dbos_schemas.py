"""The supervisor adapts to dbos 2.8's system schema (the seed's) and refuses unknown ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from limbo import migrate_contract
from services.shared.db import connect
from services.supervisor.store.audit import migrate_audit
from services.supervisor.store.dbos_schema import (
    IncompatibleSchema,
    SchemaNotReady,
    inspect_schema,
)
from testkit.dbos_rows import (
    audit_rows,
    insert_executor,
    insert_step,
    insert_workflow,
    make_operator,
    publish,
    row,
)
from testkit.postgres import TestPostgres

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "dbos-2.8.0-schema.sql"


async def load_dbos_28(url: str) -> None:
    """The real 2.8.0 schema (pg_dump of what `dbos migrate` 2.8.0 made), then ours."""
    conn = await connect(url, application_name="test-fixture")
    try:
        await conn.execute(FIXTURE.read_text())
    finally:
        await conn.close()
    conn = await connect(url, application_name="test-fixture")
    try:
        await migrate_contract(conn)
        await migrate_audit(conn)
    finally:
        await conn.close()


@pytest.fixture
async def url_28(pg: TestPostgres) -> AsyncIterator[str]:
    url = pg.empty_database()
    try:
        await load_dbos_28(url)
        yield url
    finally:
        pg.drop_database(url)


async def test_inspects_3x_and_28(database_url: str, url_28: str) -> None:
    cases = ((database_url, "3.x", True, 125), (url_28, "2.x", False, None))
    for url, flavor, has_parent, migration in cases:
        conn = await connect(url, application_name="test")
        try:
            schema = await inspect_schema(conn, "dbos")
        finally:
            await conn.close()
        assert schema.flavor == flavor
        assert schema.has("parent_workflow_id") is has_parent
        assert schema.has("completed_at") is has_parent
        assert schema.has("owner_xid")
        assert schema.migration_version == migration


async def test_rules_act_on_a_dbos_28_database(url_28: str) -> None:
    conn = await connect(url_28, application_name="test")
    sup = await make_operator(url_28)
    try:
        await publish(conn, "dbos_workflow", 2)
        await insert_executor(conn, "exp22-executor-1")  # alive, polling forever (the seed)
        await insert_executor(conn, "gone", seen_ago_s=60)
        # The seed after the 5th start: parent PENDING, child dead-lettered.
        await insert_workflow(
            conn, "fe5f", executor_id="exp22-executor-1", attempts=3, dedup="6/5",
            updated_ago_ms=60_000,
        )  # fmt: skip
        await insert_workflow(
            conn, "fe5f-1", status="MAX_RECOVERY_ATTEMPTS_EXCEEDED", executor_id="exp22-executor-1",
            attempts=4, queue=None, updated_ago_ms=60_000,
        )  # fmt: skip
        await insert_step(conn, "fe5f", 1, child="fe5f-1", ago_ms=61_000)
        await insert_workflow(conn, "exh", attempts=9, dedup="x")
        await insert_workflow(conn, "orphan", executor_id="gone", dedup="o", updated_ago_ms=90_000)

        report = await sup.sweep()

        assert sorted(
            (o.verdict.workflow_id, o.verdict.rule, o.outcome) for o in report.outcomes
        ) == [
            ("exh", "exhausted", "applied"),
            ("fe5f", "dead_child", "applied"),
            ("orphan", "orphaned", "applied"),
        ]
        parent = await row(conn, "fe5f")
        assert (parent["status"], parent["deduplication_id"]) == ("ERROR", None)
        assert parent["error"]
        exh = await row(conn, "exh")
        assert (exh["status"], exh["deduplication_id"], exh["queue_name"]) == (
            "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
            None,
            None,
        )
        assert (await row(conn, "orphan"))["status"] == "ENQUEUED"
        assert len(await audit_rows(conn)) == 3
        # The 2.8 dedup constraint no longer holds "6/5": a new enqueue is accepted.
        await insert_workflow(conn, "again", status="ENQUEUED", executor_id=None, dedup="6/5")
    finally:
        await sup.pool.close()
        await conn.close()


async def test_missing_dbos_schema_is_not_ready(pg: TestPostgres) -> None:
    url = pg.empty_database()
    try:
        conn = await connect(url, application_name="test")
        try:
            with pytest.raises(SchemaNotReady, match="workflow_status"):
                await inspect_schema(conn, "dbos")
        finally:
            await conn.close()
    finally:
        pg.drop_database(url)


async def test_incompatible_schema_is_refused_naming_the_column(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("ALTER TABLE dbos.workflow_status RENAME COLUMN recovery_attempts TO tries")
    with pytest.raises(IncompatibleSchema, match=r"workflow_status\.recovery_attempts is missing"):
        await inspect_schema(conn, "dbos")
