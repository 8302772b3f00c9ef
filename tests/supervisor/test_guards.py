"""Safety: a row that moved on between observe and act is skipped; dry run changes nothing."""

from __future__ import annotations

import asyncpg

from services.supervisor.rules import decide
from services.supervisor.sweeper import Supervisor
from tests.supervisor.support import (
    act,
    audit_rows,
    dump_dbos,
    insert_executor,
    insert_step,
    insert_workflow,
    make_supervisor,
    publish,
    row,
)


async def test_row_dequeued_after_observation_is_skipped(
    conn: asyncpg.Connection, supervisor: Supervisor
) -> None:
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_executor(conn, "exec-b")
    await insert_workflow(conn, "w", dedup="d")
    snap = await supervisor.snapshot()
    [verdict] = decide(snap, supervisor.settings.rules)
    assert verdict.rule == "orphaned"
    # Meanwhile DBOS's dequeue claims the row for exec-b (what a racing re-enqueue leads to).
    await conn.execute(
        """UPDATE dbos.workflow_status SET status = 'PENDING', executor_id = 'exec-b',
               recovery_attempts = recovery_attempts + 1, updated_at = updated_at + 1
           WHERE workflow_uuid = 'w'"""
    )
    before = await row(conn, "w")
    outcome = await act(supervisor, verdict)
    assert outcome.outcome == "skipped"
    assert outcome.dedup_id_released is None
    assert outcome.current is not None
    assert outcome.current["executor_id"] == "exec-b"
    assert await row(conn, "w") == before
    [audit] = await audit_rows(conn, "w")
    assert (audit["outcome"], audit["rule"]) == ("skipped", "orphaned")
    assert audit["evidence"]["current"]["executor_id"] == "exec-b"


async def test_executor_revived_after_observation_is_skipped(
    conn: asyncpg.Connection, supervisor: Supervisor
) -> None:
    """The guard carries the liveness the decision assumed, checked in the UPDATE itself."""
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "w", dedup="d")
    snap = await supervisor.snapshot()
    [verdict] = decide(snap, supervisor.settings.rules)
    await conn.execute("UPDATE limbo.executors SET last_seen_at = now()")  # heartbeat resumes
    outcome = await act(supervisor, verdict)
    assert outcome.outcome == "skipped"
    assert (await row(conn, "w"))["status"] == "PENDING"


async def test_dead_child_guard_sees_a_new_step(
    conn: asyncpg.Connection, supervisor: Supervisor
) -> None:
    await insert_workflow(conn, "p", updated_ago_ms=60_000)
    await insert_workflow(conn, "p-1", status="CANCELLED", queue=None, updated_ago_ms=60_000)
    await insert_step(conn, "p", 1, child="p-1", ago_ms=60_000)
    snap = await supervisor.snapshot()
    [verdict] = decide(snap, supervisor.settings.rules)
    assert verdict.rule == "dead_child"
    await insert_step(conn, "p", 2, ago_ms=0)  # the parent progressed after all
    outcome = await act(supervisor, verdict)
    assert outcome.outcome == "skipped"
    assert (await row(conn, "p"))["status"] == "PENDING"


async def test_row_locked_by_another_transaction_is_skipped_not_waited_for(
    conn: asyncpg.Connection, database_url: str
) -> None:
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "w")
    sup = await make_supervisor(database_url)
    sup.settings = sup.settings.__class__(**{**vars(sup.settings), "lock_timeout_ms": 100})
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM dbos.workflow_status WHERE workflow_uuid = 'w' FOR UPDATE"
            )
            report = await sup.sweep()
        [outcome] = report.outcomes
        assert outcome.outcome == "skipped"
        assert "locked" in outcome.reason
        assert (await sup.sweep()).outcomes[0].outcome == "applied"  # next sweep acts
    finally:
        await sup.pool.close()


async def test_dry_run_changes_nothing_in_dbos_tables(
    conn: asyncpg.Connection, database_url: str
) -> None:
    await publish(conn, "dbos_workflow", 2)
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_executor(conn, "old", version="0.0.9", stopped=True, seen_ago_s=600)
    await insert_workflow(conn, "exhausted", attempts=5, dedup="a")
    await insert_workflow(conn, "orphan", dedup="b")
    await insert_workflow(conn, "p", executor_id="exec-a", attempts=3, dedup="c")
    await insert_workflow(conn, "p-1", status="CANCELLED", queue=None, updated_ago_ms=60_000)
    await insert_step(conn, "p", 1, child="p-1")
    await insert_workflow(
        conn, "old-q", status="ENQUEUED", executor_id=None, version="0.0.9", attempts=0
    )
    sup = await make_supervisor(database_url, version_orphan_policy="dead_letter")
    sup.settings = sup.settings.__class__(**{**vars(sup.settings), "dry_run": True})
    before = await dump_dbos(conn)
    try:
        report = await sup.sweep()
    finally:
        await sup.pool.close()
    assert await dump_dbos(conn) == before
    assert {o.outcome for o in report.outcomes} == {"dry_run"}
    assert len(report.outcomes) == 4
    audits = await audit_rows(conn)
    assert {(a["workflow_id"], a["outcome"], a["dry_run"]) for a in audits} == {
        ("exhausted", "dry_run", True),
        ("orphan", "dry_run", True),
        ("p", "dry_run", True),
        ("old-q", "dry_run", True),
    }


async def test_per_call_dry_run_overrides_settings(
    conn: asyncpg.Connection, supervisor: Supervisor
) -> None:
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "w")
    before = await dump_dbos(conn)
    report = await supervisor.sweep(dry_run=True)
    assert report.dry_run
    assert await dump_dbos(conn) == before
