"""Each rule on the real DBOS 3.4 schema: the stuck state built by SQL, the sweep's action,
its audit row, and the control (the same state, without the supervisor, stays stuck)."""

from __future__ import annotations

import base64
import pickle
from dataclasses import replace

import asyncpg
import pytest

from services.supervisor.model import OutcomeKind
from services.supervisor.operating import Operator
from services.supervisor.sweeping import PIPELINE, ROWS_PER_TRANSACTION
from testkit.dbos_rows import (
    audit_rows,
    insert_executor,
    insert_many_workflows,
    insert_step,
    insert_workflow,
    make_operator,
    publish,
    row,
    settings_for,
)


async def dedup_taken(conn: asyncpg.Connection, dedup: str, queue: str = "example-queue") -> bool:
    """Whether a new enqueue with this dedup ID is rejected (DBOS's partial unique index)."""
    try:
        async with conn.transaction():
            await insert_workflow(
                conn,
                f"probe-{dedup}",
                status="ENQUEUED",
                executor_id=None,
                dedup=dedup,
                queue=queue,
            )
            raise _Rollback
    except asyncpg.UniqueViolationError:
        return True
    except _Rollback:
        return False


class _Rollback(Exception):
    pass


async def test_control_without_supervisor_the_row_stays_stuck(conn: asyncpg.Connection) -> None:
    await publish(conn, "dbos_workflow", 2)
    await insert_executor(conn, "exec-a", seen_ago_s=60)
    await insert_workflow(conn, "stuck", attempts=4, dedup="6/5", updated_ago_ms=60_000)
    before = await row(conn, "stuck")
    assert await dedup_taken(conn, "6/5")
    assert await row(conn, "stuck") == before
    assert before["status"] == "PENDING"
    assert await audit_rows(conn) == []


async def test_exhausted_dead_letters_like_dbos(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    await publish(conn, "dbos_workflow", 2)
    await insert_executor(conn, "exec-a")  # alive: exhausted does not depend on it
    await insert_workflow(conn, "parent", attempts=4, dedup="6/5")
    assert await dedup_taken(conn, "6/5")

    report = await operator.sweep()

    [outcome] = report.outcomes
    assert (outcome.verdict.rule, outcome.outcome) == ("exhausted", "applied")
    after = await row(conn, "parent")
    assert after["status"] == "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
    assert after["deduplication_id"] is None
    assert after["queue_name"] is None
    assert after["started_at_epoch_ms"] is None
    assert after["owner_xid"] is None
    assert after["completed_at"] is not None
    assert after["recovery_attempts"] == 4
    [audit] = await audit_rows(conn, "parent")
    assert audit["rule"] == "exhausted"
    assert audit["action"] == "dead_letter"
    assert audit["outcome"] == "applied"
    assert audit["dedup_id_released"] == "6/5"
    assert audit["evidence"]["max_recovery_attempts"] == 2
    assert audit["evidence"]["observed"]["recovery_attempts"] == 4
    assert not await dedup_taken(conn, "6/5")


async def test_orphaned_hands_over_to_the_queue(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    await insert_executor(conn, "exec-a", seen_ago_s=30)  # SIGKILLed 30 s ago
    await insert_executor(conn, "exec-b")  # its replacement, alive
    await insert_workflow(
        conn, "orphan", attempts=1, dedup="job-1", executor_id="exec-a", updated_ago_ms=40_000
    )
    await insert_workflow(conn, "running", attempts=1, dedup="job-2", executor_id="exec-b")

    report = await operator.sweep()

    assert [(o.verdict.workflow_id, o.outcome) for o in report.outcomes] == [("orphan", "applied")]
    after = await row(conn, "orphan")
    assert after["status"] == "ENQUEUED"
    assert after["deduplication_id"] == "job-1"  # kept, as DBOS recovery keeps it
    assert after["recovery_attempts"] == 1
    assert after["queue_name"] == "example-queue"
    assert after["started_at_epoch_ms"] is None
    assert (await row(conn, "running"))["status"] == "PENDING"
    [audit] = await audit_rows(conn, "orphan")
    assert (audit["rule"], audit["action"], audit["outcome"]) == (
        "orphaned",
        "reenqueue",
        "applied",
    )
    assert audit["dedup_id_released"] is None
    assert audit["evidence"]["live_executors_of_version"] == ["exec-b"]
    assert await audit_rows(conn, "running") == []


async def test_orphaned_without_queue_goes_to_dbos_internal_queue(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    await insert_executor(conn, "exec-a", stopped=True, seen_ago_s=1)
    await insert_workflow(conn, "direct", queue=None, updated_ago_ms=5_000)
    await operator.sweep()
    after = await row(conn, "direct")
    assert (after["status"], after["queue_name"]) == ("ENQUEUED", "_dbos_internal_queue")


async def test_orphaned_without_attempts_left_is_dead_lettered(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    await publish(conn, "dbos_workflow", 2)
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "last", attempts=3, dedup="j", updated_ago_ms=40_000)
    await operator.sweep()
    after = await row(conn, "last")
    assert (after["status"], after["deduplication_id"]) == ("MAX_RECOVERY_ATTEMPTS_EXCEEDED", None)
    [audit] = await audit_rows(conn, "last")
    assert (audit["rule"], audit["action"], audit["dedup_id_released"]) == (
        "orphaned",
        "dead_letter",
        "j",
    )


async def test_orphaned_leaves_unknown_executors_alone(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    await insert_workflow(conn, "foreign", executor_id="local", updated_ago_ms=3_600_000)
    report = await operator.sweep()
    assert report.outcomes == []
    assert (await row(conn, "foreign"))["status"] == "PENDING"


async def test_dead_child_fails_the_parent_and_releases_its_dedup(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    await insert_executor(conn, "exec-a")  # the parent's process is alive, polling forever
    await insert_workflow(conn, "p", attempts=2, dedup="6/5", updated_ago_ms=60_000)
    await insert_workflow(
        conn, "p-1", status="MAX_RECOVERY_ATTEMPTS_EXCEEDED", attempts=4, queue=None,
        updated_ago_ms=50_000, parent="p",
    )  # fmt: skip
    await insert_step(conn, "p", 1, child="p-1", ago_ms=55_000)
    assert await dedup_taken(conn, "6/5")

    await operator.sweep()

    after = await row(conn, "p")
    assert after["status"] == "ERROR"
    assert after["deduplication_id"] is None
    assert after["completed_at"] is not None
    error = pickle.loads(base64.b64decode(after["error"]))  # noqa: S301 - our own test payload
    assert isinstance(error, RuntimeError)
    assert "p-1" in str(error)
    [audit] = await audit_rows(conn, "p")
    assert (audit["rule"], audit["action"], audit["dedup_id_released"]) == (
        "dead_child",
        "fail",
        "6/5",
    )
    assert not await dedup_taken(conn, "6/5")


async def test_dead_child_waits_while_the_parent_progresses(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    await insert_executor(conn, "exec-a")
    await insert_workflow(conn, "p", updated_ago_ms=60_000)
    await insert_workflow(
        conn, "p-1", status="CANCELLED", queue=None, updated_ago_ms=50_000, parent="p"
    )
    await insert_step(conn, "p", 1, child="p-1", ago_ms=55_000)
    await insert_step(conn, "p", 2, ago_ms=500)  # a step just ran
    assert (await operator.sweep()).outcomes == []
    assert (await row(conn, "p"))["status"] == "PENDING"


@pytest.mark.parametrize(
    ("policy", "status", "version", "dedup"),
    [
        ("upgrade", "ENQUEUED", "0.2.0", "v-1"),
        ("dead_letter", "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "0.1.0", None),
        ("alert", "ENQUEUED", "0.1.0", "v-1"),
    ],
)
async def test_version_orphaned_policies(
    conn: asyncpg.Connection,
    database_url: str,
    policy: str,
    status: str,
    version: str,
    dedup: str | None,
) -> None:
    await insert_executor(conn, "old", version="0.1.0", stopped=True, seen_ago_s=60)
    await insert_executor(conn, "new", version="0.2.0", started_ago_s=120)
    await insert_workflow(
        conn, "queued", status="ENQUEUED", executor_id=None, attempts=0, dedup="v-1"
    )
    sup = await make_operator(database_url, version_orphan_policy=policy)
    try:
        report = await sup.sweep()
    finally:
        await sup.pool.close()
    after = await row(conn, "queued")
    assert (after["status"], after["application_version"], after["deduplication_id"]) == (
        status,
        version,
        dedup,
    )
    audits = await audit_rows(conn, "queued")
    if policy == "alert":
        assert audits == []
        assert [v.action for v in report.candidates] == ["alert"]
    else:
        assert [(a["rule"], a["action"], a["outcome"]) for a in audits] == [
            ("version_orphaned", policy, "applied")
        ]


async def test_upgrade_reenqueues_pending_rows(conn: asyncpg.Connection, database_url: str) -> None:
    await insert_executor(conn, "old", version="0.1.0", stopped=True, seen_ago_s=60)
    await insert_executor(conn, "new", version="0.2.0", started_ago_s=120)
    await insert_workflow(conn, "was-running", executor_id="old", dedup="u", updated_ago_ms=90_000)
    sup = await make_operator(
        database_url,
        version_orphan_policy="upgrade",
        enabled=frozenset({"orphaned", "version_orphaned"}),
    )
    try:
        # orphaned re-enqueues it (its holder stopped), then its version is upgraded.
        await sup.sweep()
        await sup.sweep()
    finally:
        await sup.pool.close()
    after = await row(conn, "was-running")
    assert (after["status"], after["application_version"], after["deduplication_id"]) == (
        "ENQUEUED",
        "0.2.0",
        "u",
    )


async def test_sweep_acts_in_bounded_batches(conn: asyncpg.Connection, database_url: str) -> None:
    await insert_executor(conn, "exec-a", seen_ago_s=60)
    for i in range(5):
        await insert_workflow(
            conn, f"o{i}", created_ago_ms=120_000 + 1_000 * i, updated_ago_ms=90_000
        )
    sup = await make_operator(
        database_url, settings=replace(settings_for(database_url), batch_size=2)
    )
    try:
        first = await sup.sweep()
        assert (len(first.outcomes), first.deferred) == (2, 3)
        assert [o.verdict.workflow_id for o in first.outcomes] == ["o4", "o3"]  # oldest first
        second = await sup.sweep()
        third = await sup.sweep()
        assert (len(second.outcomes), len(third.outcomes), third.deferred) == (2, 1, 0)
    finally:
        await sup.pool.close()


async def test_a_long_queue_never_hides_a_pending_row_in_limbo(
    conn: asyncpg.Connection, database_url: str
) -> None:
    await insert_executor(conn, "exec-a", seen_ago_s=60)
    await insert_executor(conn, "exec-b")
    for i in range(10):  # an old, legitimate backlog
        await insert_workflow(
            conn, f"q{i}", status="ENQUEUED", executor_id=None, attempts=0,
            created_ago_ms=3_600_000 + i,
        )  # fmt: skip
    await insert_workflow(conn, "orphan", created_ago_ms=100_000, updated_ago_ms=90_000)
    sup = await make_operator(
        database_url, settings=replace(settings_for(database_url), scan_limit=3)
    )
    try:
        report = await sup.sweep()
    finally:
        await sup.pool.close()
    # The healthy backlog is not even read: only rows some rule could match are.
    assert (report.observed, report.truncated) == (1, False)
    assert [(o.verdict.workflow_id, o.outcome) for o in report.outcomes] == [("orphan", "applied")]


async def test_more_candidates_than_the_scan_limit_are_flagged_and_taken_in_turn(
    conn: asyncpg.Connection, database_url: str
) -> None:
    await insert_executor(conn, "exec-a", seen_ago_s=60)
    for i in range(5):
        await insert_workflow(conn, f"o{i}", created_ago_ms=120_000 + i, updated_ago_ms=90_000)
    sup = await make_operator(
        database_url, settings=replace(settings_for(database_url), scan_limit=3)
    )
    try:
        first = await sup.sweep()
        second = await sup.sweep()
    finally:
        await sup.pool.close()
    assert (first.truncated, len(first.outcomes)) == (True, 3)
    assert (second.truncated, len(second.outcomes)) == (False, 2)


async def test_a_sweep_of_several_transactions_acts_once_on_each_row(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    """More verdicts than one transaction holds: the transactions run pipelined, and still
    each row is handed over exactly once, with one audit row each; the live executor's
    rows, interleaved with them, are untouched."""
    count = ROWS_PER_TRANSACTION * PIPELINE + 7  # more transactions than are in flight
    await publish(conn, "dbos_workflow", 5)
    await insert_executor(conn, "exec-a", seen_ago_s=30)  # dead
    await insert_executor(conn, "exec-live")
    dead_ids = await insert_many_workflows(conn, "dead", count, stride_ms=2)
    live_ids = await insert_many_workflows(conn, "live", 50, executor_id="exec-live")

    report = await operator.sweep()

    assert len(report.outcomes) == count
    assert {o.outcome for o in report.outcomes} == {OutcomeKind.APPLIED}
    assert sorted(o.verdict.workflow_id for o in report.outcomes) == sorted(dead_ids)
    audit = await audit_rows(conn)
    assert sorted(r["workflow_id"] for r in audit) == sorted(dead_ids)
    rows = await conn.fetch(
        "SELECT workflow_uuid, status FROM dbos.workflow_status WHERE workflow_uuid = ANY($1)",
        dead_ids + live_ids,
    )
    statuses: dict[str, str] = {r["workflow_uuid"]: r["status"] for r in rows}
    assert {statuses[i] for i in dead_ids} == {"ENQUEUED"}
    assert {statuses[i] for i in live_ids} == {"PENDING"}
    assert (await operator.sweep()).outcomes == []  # once: nothing is handed over again


async def test_a_sweep_that_loses_leadership_stops_between_transactions(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    """`should_continue` (still the leader) turns false after the first transaction was
    sent: that one commits, every later verdict is deferred untouched, and the next sweep
    (the new leader's) hands them over."""
    count = 2 * ROWS_PER_TRANSACTION + 7
    await publish(conn, "dbos_workflow", 5)
    await insert_executor(conn, "exec-a", seen_ago_s=30)  # dead
    dead_ids = await insert_many_workflows(conn, "dead", count, stride_ms=2)
    asked: list[bool] = []

    def leading() -> bool:
        asked.append(not asked)  # True the first time only
        return asked[-1]

    report = await operator.sweeper.sweep(should_continue=leading)

    # Control: asked before each transaction, and leadership was really lost.
    assert asked == [True, False]
    assert len(report.outcomes) == ROWS_PER_TRANSACTION
    assert {o.outcome for o in report.outcomes} == {OutcomeKind.APPLIED}
    assert report.deferred == count - ROWS_PER_TRANSACTION
    moved = await conn.fetchval(
        "SELECT count(*) FROM dbos.workflow_status WHERE workflow_uuid = ANY($1)"
        " AND status = 'ENQUEUED'",
        dead_ids,
    )
    assert moved == ROWS_PER_TRANSACTION
    assert len(await audit_rows(conn)) == ROWS_PER_TRANSACTION

    rest = await operator.sweeper.sweep()
    assert len(rest.outcomes) == count - ROWS_PER_TRANSACTION
    assert {o.outcome for o in rest.outcomes} == {OutcomeKind.APPLIED}
