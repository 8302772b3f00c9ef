"""Safety: a row that moved on between observe and act is skipped; dry run changes nothing."""

from __future__ import annotations

from dataclasses import replace

import asyncpg

from services.supervisor.operating import Operator
from testkit.dbos_rows import (
    act,
    audit_rows,
    dump_dbos,
    insert_executor,
    insert_step,
    insert_workflow,
    make_operator,
    publish,
    row,
    settings_for,
)


async def test_row_dequeued_after_observation_is_skipped(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_executor(conn, "exec-b")
    await insert_workflow(conn, "w", dedup="d", updated_ago_ms=40_000)
    [verdict] = (await operator.candidates()).verdicts
    assert verdict.rule == "orphaned"
    # Meanwhile DBOS's dequeue claims the row for exec-b (what a racing re-enqueue leads to).
    await conn.execute(
        """UPDATE dbos.workflow_status SET status = 'PENDING', executor_id = 'exec-b',
               recovery_attempts = recovery_attempts + 1, updated_at = updated_at + 1
           WHERE workflow_uuid = 'w'"""
    )
    before = await row(conn, "w")
    outcome = await act(operator, verdict)
    assert outcome.outcome == "skipped"
    assert outcome.dedup_id_released is None
    assert outcome.current is not None
    assert outcome.current["executor_id"] == "exec-b"
    assert await row(conn, "w") == before
    [audit] = await audit_rows(conn, "w")
    assert (audit["outcome"], audit["rule"]) == ("skipped", "orphaned")
    assert audit["evidence"]["current"]["executor_id"] == "exec-b"


async def test_executor_revived_after_observation_is_skipped(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    """The guard carries the liveness the decision assumed, checked in the UPDATE itself:
    a new incarnation of the executor registered in between (its lock held, lease valid)."""
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "w", dedup="d", updated_ago_ms=40_000)
    [verdict] = (await operator.candidates()).verdicts
    await insert_executor(conn, "exec-a")  # a new incarnation, alive
    outcome = await act(operator, verdict)
    assert outcome.outcome == "skipped"
    assert (await row(conn, "w"))["status"] == "PENDING"


async def test_a_checkpoint_made_after_observation_vetoes_the_handover(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    """The executor looks dead, yet the row progresses: evidence of life, restated at the
    write ("no checkpoint newer than the one observed")."""
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "w", dedup="d", updated_ago_ms=40_000)
    await insert_step(conn, "w", 1, ago_ms=35_000)
    [verdict] = (await operator.candidates()).verdicts
    await insert_step(conn, "w", 2, ago_ms=0)
    assert (await act(operator, verdict)).outcome == "skipped"
    assert (await row(conn, "w"))["status"] == "PENDING"


async def test_the_executor_progressing_elsewhere_vetoes_the_handover(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    """Another of the executor's PENDING rows gets a step after the observation."""
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "w", dedup="d", updated_ago_ms=40_000)
    await insert_workflow(conn, "w2", dedup="e", updated_ago_ms=40_000)
    verdicts = (await operator.candidates()).verdicts
    assert {v.workflow_id for v in verdicts} == {"w", "w2"}
    await insert_step(conn, "w2", 1, ago_ms=0)
    outcomes = [await act(operator, v) for v in verdicts if v.workflow_id == "w"]
    assert [o.outcome for o in outcomes] == ["skipped"]


# An app host whose clock runs this far behind the database's: DBOS stamps step checkpoints
# with the app's clock, claims with the database's (docs/LIVENESS.md, "Clocks").
LAG_MS = 60_000


async def step_stamp(conn: asyncpg.Connection, workflow_id: str) -> int:
    """The completion stamp of the workflow's one step, as its app host's clock wrote it."""
    return int(
        await conn.fetchval(
            "SELECT completed_at_epoch_ms FROM dbos.operation_outputs WHERE workflow_uuid = $1",
            workflow_id,
        )
    )


async def test_a_checkpoint_stamped_by_a_lagging_clock_still_vetoes_the_handover(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    """The row's first step lands after the observation, stamped by an app clock a minute
    behind: older than the claim (database time), yet new. The guard compares checkpoints
    with the checkpoints observed, never with the claim."""
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "w", dedup="d", updated_ago_ms=40_000)
    [verdict] = (await operator.candidates()).verdicts
    await insert_step(conn, "w", 1, ago_ms=LAG_MS)
    # The control: the new checkpoint is stamped before the claim the verdict observed.
    stamp = await step_stamp(conn, "w")
    assert stamp < verdict.workflow.claimed_at
    assert (await act(operator, verdict)).outcome == "skipped"
    assert (await row(conn, "w"))["status"] == "PENDING"


async def test_a_lagging_clock_checkpointing_another_row_still_vetoes_the_handover(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    """The executor-wide veto, with the same lagging app clock: another of the executor's
    PENDING rows gets its first step after the observation, stamped before every claim."""
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "w", dedup="d", updated_ago_ms=40_000)
    await insert_workflow(conn, "w2", dedup="e", updated_ago_ms=40_000)
    verdicts = (await operator.candidates()).verdicts
    assert {v.workflow_id for v in verdicts} == {"w", "w2"}
    await insert_step(conn, "w2", 1, ago_ms=LAG_MS)
    # The control: stamped before both claims the verdicts observed.
    stamp = await step_stamp(conn, "w2")
    assert all(stamp < v.workflow.claimed_at for v in verdicts)
    outcomes = [await act(operator, v) for v in verdicts if v.workflow_id == "w"]
    assert [o.outcome for o in outcomes] == ["skipped"]


async def test_checkpoints_that_existed_when_observed_do_not_veto(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    """The other side of comparing checkpoints with checkpoints: steps already there at the
    observation, whatever their stamps (one a minute behind the claim), move nothing."""
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "w", dedup="d", updated_ago_ms=40_000)
    await insert_workflow(conn, "w2", dedup="e", updated_ago_ms=40_000)
    await insert_step(conn, "w", 1, ago_ms=LAG_MS)
    await insert_step(conn, "w2", 1, ago_ms=35_000)
    verdicts = sorted((await operator.candidates()).verdicts, key=lambda v: v.workflow_id)
    assert [v.workflow_id for v in verdicts] == ["w", "w2"]
    assert [(await act(operator, v)).outcome for v in verdicts] == ["applied", "applied"]


async def test_a_row_a_live_executor_reports_running_is_never_touched(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "w", dedup="d", updated_ago_ms=40_000)
    [verdict] = (await operator.candidates()).verdicts
    await insert_executor(conn, "exec-b", running=["w"])  # it runs "w" now, per its report
    assert (await act(operator, verdict)).outcome == "skipped"
    assert (await operator.candidates()).verdicts == []


async def test_an_alive_holder_whose_report_now_lists_the_row_keeps_it(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    # Alive and reporting, its report (made after the claim and the grace) omits "w" and
    # "w2": both orphaned. Then its report lists "w" after all: only "w2" is handed over.
    await insert_executor(conn, "exec-a", running=["other"])
    await insert_workflow(conn, "w", dedup="d", updated_ago_ms=40_000)
    await insert_workflow(conn, "w2", dedup="d2", updated_ago_ms=40_000)
    verdicts = (await operator.candidates()).verdicts
    assert {(v.workflow_id, v.evidence["holder"]) for v in verdicts} == {
        ("w", "not_listed"),
        ("w2", "not_listed"),
    }
    await conn.execute(
        "UPDATE limbo.executors SET running = ARRAY['other', 'w'] WHERE executor_id = 'exec-a'"
    )
    outcomes = {v.workflow_id: (await act(operator, v)).outcome for v in verdicts}
    assert outcomes == {"w": "skipped", "w2": "applied"}
    assert (await row(conn, "w"))["status"] == "PENDING"


async def test_dead_child_guard_sees_a_new_step(
    conn: asyncpg.Connection, operator: Operator
) -> None:
    await insert_workflow(conn, "p", updated_ago_ms=60_000)
    await insert_workflow(
        conn, "p-1", status="CANCELLED", queue=None, updated_ago_ms=60_000, parent="p"
    )
    await insert_step(conn, "p", 1, child="p-1", ago_ms=60_000)
    [verdict] = (await operator.candidates()).verdicts
    assert verdict.rule == "dead_child"
    await insert_step(conn, "p", 2, ago_ms=0)  # the parent progressed after all
    outcome = await act(operator, verdict)
    assert outcome.outcome == "skipped"
    assert (await row(conn, "p"))["status"] == "PENDING"


async def test_row_locked_by_another_transaction_is_skipped_not_waited_for(
    conn: asyncpg.Connection, database_url: str
) -> None:
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "w", updated_ago_ms=40_000)
    sup = await make_operator(
        database_url, settings=replace(settings_for(database_url), lock_timeout_ms=100)
    )
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
    await insert_workflow(conn, "exhausted", attempts=5, dedup="a", updated_ago_ms=40_000)
    await insert_workflow(conn, "orphan", dedup="b", updated_ago_ms=40_000)
    await insert_workflow(
        conn, "p", executor_id="exec-a", attempts=3, dedup="c", updated_ago_ms=40_000
    )
    await insert_workflow(
        conn, "p-1", status="CANCELLED", queue=None, updated_ago_ms=60_000, parent="p"
    )
    await insert_step(conn, "p", 1, child="p-1")
    await insert_workflow(
        conn, "old-q", status="ENQUEUED", executor_id=None, version="0.0.9", attempts=0
    )
    settings = settings_for(database_url, version_orphan_policy="dead_letter")
    sup = await make_operator(database_url, settings=replace(settings, dry_run=True))
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
    conn: asyncpg.Connection, operator: Operator
) -> None:
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await insert_workflow(conn, "w", updated_ago_ms=40_000)
    before = await dump_dbos(conn)
    report = await operator.sweep(dry_run=True)
    assert report.dry_run
    assert await dump_dbos(conn) == before
