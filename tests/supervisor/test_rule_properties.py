"""Properties of every rule, on generated states in a real database (hypothesis):

1. the prefilter is never too narrow: every row a rule matches in a full read passes that
   rule's prefilter (a prefilter that is too narrow would hide limbo without any error);
2. each guard admits the row it was built from, and rejects it once any single observed
   field of the row changes (status, attempts, executor, version, dedup ID, updated_at);
3. executor progress derived from the rows read (for executors a prefilter reads in full)
   equals the scan of every PENDING row that it spares.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.shared.db import connect
from services.supervisor.model import OutcomeKind, Verdict
from services.supervisor.model.schema import DbosSchema
from services.supervisor.rules import RULES, RuleSettings, decide, evaluate
from services.supervisor.store.dbos_schema import inspect_schema
from services.supervisor.store.reads import executor_progress_query, observe
from services.supervisor.store.writes import apply
from testkit.dbos_rows import insert_executor, insert_step, insert_workflow, publish

EVERY_RULE = RuleSettings.build(
    {rule.name for rule in RULES},
    stall_timeout_ms=20_000,
    version_orphan_after_ms=10_000,
    report_grace_ms=5_000,
)
EXECUTOR_STATES = ("alive", "alive_reporting", "lost", "expired", "stopped")
VERSIONS = ("1", "2")


@dataclass(frozen=True)
class ExecutorSpec:
    executor_id: str
    state: str
    version: str
    died_ago_s: float


@dataclass(frozen=True)
class WorkflowSpec:
    workflow_id: str
    status: str
    executor_id: str | None
    version: str
    attempts: int
    claimed_ago_ms: int
    checkpoint_ago_ms: int | None
    dead_child: str | None  # CANCELLED or MAX_RECOVERY_ATTEMPTS_EXCEEDED
    listed_by: str | None  # a live reporting executor that lists it


executor_specs = st.lists(
    st.builds(
        ExecutorSpec,
        executor_id=st.sampled_from(["e1", "e2", "e3"]),
        state=st.sampled_from(EXECUTOR_STATES),
        version=st.sampled_from(VERSIONS),
        died_ago_s=st.sampled_from([2.0, 15.0, 60.0]),
    ),
    max_size=3,
    unique_by=lambda e: e.executor_id,
)


def workflow_specs(index: int) -> st.SearchStrategy[WorkflowSpec]:
    return st.builds(
        WorkflowSpec,
        workflow_id=st.just(f"w{index}"),
        status=st.sampled_from(["PENDING", "PENDING", "ENQUEUED"]),
        executor_id=st.sampled_from(["e1", "e2", "e3", "unreg", None]),
        version=st.sampled_from(VERSIONS),
        attempts=st.sampled_from([0, 1, 3, 4, 102]),
        claimed_ago_ms=st.sampled_from([500, 8_000, 40_000, 90_000]),
        checkpoint_ago_ms=st.sampled_from([None, 300, 30_000]),
        dead_child=st.sampled_from([None, None, "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"]),
        listed_by=st.sampled_from([None, None, "e1", "e2"]),
    )


states = st.tuples(
    executor_specs,
    st.tuples(*(workflow_specs(i) for i in range(6))),
    st.sampled_from([None, 2, 5]),  # the registry's max_recovery_attempts for "job"
)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


async def build(
    conn: asyncpg.Connection,
    executors: list[ExecutorSpec],
    workflows: tuple[WorkflowSpec, ...],
    limit: int | None,
) -> None:
    await conn.execute("SELECT pg_advisory_unlock_all()")
    await conn.execute(
        "TRUNCATE dbos.workflow_status, dbos.operation_outputs, limbo.executors, "
        "limbo.workflow_registry CASCADE"
    )
    if limit is not None:
        await publish(conn, "job", limit, version="1")
    listed: dict[str, list[str]] = {}
    for wf in workflows:
        if wf.listed_by:
            listed.setdefault(wf.listed_by, []).append(wf.workflow_id)
    for e in executors:
        kwargs: dict[str, Any] = {"version": e.version}
        if e.state == "alive_reporting":
            kwargs["running"] = listed.get(e.executor_id, [])
        elif e.state == "lost":
            kwargs.update(lost=True, seen_ago_s=e.died_ago_s)
        elif e.state == "expired":
            kwargs.update(seen_ago_s=e.died_ago_s + 5.0)
        elif e.state == "stopped":
            kwargs.update(stopped=True, seen_ago_s=e.died_ago_s)
        await insert_executor(conn, e.executor_id, **kwargs)
    for wf in workflows:
        await insert_workflow(
            conn,
            wf.workflow_id,
            status=wf.status,
            name="job",
            executor_id=wf.executor_id if wf.status == "PENDING" else None,
            version=wf.version,
            attempts=wf.attempts,
            dedup=f"d-{wf.workflow_id}",
            updated_ago_ms=wf.claimed_ago_ms,
            created_ago_ms=wf.claimed_ago_ms + 1_000,
        )
        if wf.checkpoint_ago_ms is not None:
            await insert_step(conn, wf.workflow_id, 1, ago_ms=wf.checkpoint_ago_ms)
        if wf.dead_child is not None and wf.status == "PENDING":
            child = f"{wf.workflow_id}-1"
            await insert_workflow(
                conn, child, status=wf.dead_child, queue=None, parent=wf.workflow_id,
                updated_ago_ms=wf.claimed_ago_ms,
            )  # fmt: skip
            await insert_step(conn, wf.workflow_id, 2, child=child, ago_ms=wf.claimed_ago_ms)


MUTATIONS: tuple[tuple[str, str], ...] = (
    ("status", "status = CASE WHEN status = 'PENDING' THEN 'ENQUEUED' ELSE 'PENDING' END"),
    ("attempts", "recovery_attempts = recovery_attempts + 1"),
    ("executor", "executor_id = coalesce(executor_id, '') || '-other'"),
    ("version", "application_version = application_version || '.1'"),
    ("dedup", "deduplication_id = deduplication_id || '-other'"),
    ("updated_at", "updated_at = updated_at + 1"),
)


async def guard_holds(conn: asyncpg.Connection, schema: DbosSchema, verdict: Verdict) -> bool:
    async with conn.transaction():
        outcome = await apply(conn, schema, verdict, actor="property", dry_run=True)
        raise _Rollback(outcome)


class _Rollback(Exception):
    pass


async def admitted(conn: asyncpg.Connection, schema: DbosSchema, verdict: Verdict) -> bool:
    """The guard's dry run, leaving nothing behind (not even the audit row)."""
    try:
        await guard_holds(conn, schema, verdict)
    except _Rollback as done:
        outcome = done.args[0]
        assert outcome.outcome is OutcomeKind.DRY_RUN
        return "guard fails now" not in outcome.reason
    raise AssertionError("unreachable")


def test_prefilters_cover_every_match_and_guards_restate_the_row(
    database_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    matched: Counter[str] = Counter()

    @settings(
        max_examples=60,
        derandomize=True,  # the same states every run: the coverage check below is stable
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(state=states)
    def check(state: tuple[list[ExecutorSpec], tuple[WorkflowSpec, ...], int | None]) -> None:
        loop.run_until_complete(_check(database_url, *state, matched))

    check()
    # The generated states really exercised every rule that changes rows.
    assert {
        "exhausted",
        "dead_child",
        "orphaned",
        "stalled",
        "version_orphaned",
        "progress derived",
    } <= set(matched), matched


async def _check(
    url: str,
    executors: list[ExecutorSpec],
    workflows: tuple[WorkflowSpec, ...],
    limit: int | None,
    matched: Counter[str],
) -> None:
    conn = await connect(url, application_name="property")
    try:
        await build(conn, executors, workflows, limit)
        schema = await inspect_schema(conn, "dbos")
        full = await observe(conn, schema, 1_000)
        narrowed = await observe(conn, schema, 1_000, EVERY_RULE)
        read = {wf.workflow_id for wf in narrowed.workflows}
        for snap in (full, narrowed):
            ids = sorted({wf.executor_id for wf in snap.workflows if wf.executor_id})
            rows = await conn.fetch(executor_progress_query(schema), ids)
            claimed = {row["executor_id"]: int(row["claimed"]) for row in rows}
            checkpoint = {
                row["executor_id"]: int(row["checkpoint"])
                for row in rows
                if row["checkpoint"] is not None
            }
            assert (snap.executor_claimed_ms, snap.executor_checkpoint_ms) == (claimed, checkpoint)
            matched["progress derived"] += bool(claimed)
        for rule in EVERY_RULE.active():
            for wf in full.workflows:
                if wf.status not in rule.statuses:
                    continue
                verdict = evaluate(rule, wf, full, EVERY_RULE)
                if verdict.matched:
                    matched[rule.name] += 1
                    assert wf.workflow_id in read, (rule.name, verdict.reason, wf)
        verdicts = [v for v in decide(narrowed, EVERY_RULE) if v.changes_row]
        for verdict in verdicts:
            matched[f"guarded {verdict.rule}"] += 1
            assert await admitted(conn, schema, verdict), (verdict.rule, verdict.reason)
            for name, change in MUTATIONS:
                try:
                    async with conn.transaction():  # the mutation is rolled back after
                        await conn.execute(
                            f"UPDATE dbos.workflow_status SET {change} WHERE workflow_uuid = $1",
                            verdict.workflow_id,
                        )
                        still = await admitted(conn, schema, verdict)
                        assert not still, (verdict.rule, name, verdict.workflow_id)
                        raise _Rollback(None)
                except _Rollback:
                    pass
    finally:
        await conn.close()
