"""The sweep's queries use DBOS's indexes: no sequential scan of a large workflow_status.

200,000 rows, 1% of them in flight, ANALYZEd; the planner is left to its own choices
(enable_seqscan untouched). Run on the 3.4 schema and on the 2.8 fixture.
"""

from __future__ import annotations

import json
import re
from typing import Any

import asyncpg

from services.shared.db import connect
from services.supervisor.model import (
    Action,
    ExecutorRow,
    ExecutorState,
    Snapshot,
    Status,
    Verdict,
    WorkflowRow,
)
from services.supervisor.model.schema import DbosSchema
from services.supervisor.rules import RULES, RuleSettings, manual
from services.supervisor.rules.base import PrefilterContext
from services.supervisor.store.dbos_schema import inspect_schema
from services.supervisor.store.reads import (
    dead_children_query,
    executor_progress_query,
    in_flight_query,
    one_workflow_query,
    prefilter_for,
)
from services.supervisor.store.writes import observed_rows, update_statement
from testkit.postgres import TestPostgres
from tests.supervisor.test_dbos_schemas import load_dbos_28

ROWS = 200_000
IN_FLIGHT_EVERY = 100  # 1%


async def fill(conn: asyncpg.Connection, *, has_parent: bool) -> None:
    """History as production has it: mostly SUCCESS, some failures, 1% in flight; every
    tenth workflow a child of the one before (recorded as DBOS records it)."""
    parent = "CASE WHEN i % 10 = 0 THEN 'wf-' || (i - 1) END" if has_parent else None
    await conn.execute(
        f"""INSERT INTO dbos.workflow_status (workflow_uuid, status, name, executor_id,
                application_version, recovery_attempts, queue_name, created_at, updated_at
                {", parent_workflow_id" if parent else ""})
            SELECT 'wf-' || i,
                   CASE WHEN i % {IN_FLIGHT_EVERY} = 0 THEN
                            (CASE WHEN i % 200 = 0 THEN 'PENDING' ELSE 'ENQUEUED' END)
                        WHEN i % 97 = 0 THEN 'ERROR'
                        WHEN i % 89 = 0 THEN 'CANCELLED'
                        WHEN i % 83 = 0 THEN 'MAX_RECOVERY_ATTEMPTS_EXCEEDED'
                        ELSE 'SUCCESS' END,
                   'job', 'exec-' || (i % 7), '0.1.0', 1, 'q-' || (i % 3),
                   1700000000000 + i, 1700000000000 + i
                   {", " + parent if parent else ""}
              FROM generate_series(1, {ROWS}) AS i"""
    )
    await conn.execute(
        f"""INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name,
                child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms)
           SELECT 'wf-' || i, f, 'step', CASE WHEN f = 1 THEN 'wf-' || (i + 1) END, 1, 2
             FROM generate_series(1, {ROWS}) AS i, generate_series(1, 3) AS f"""
    )
    await conn.execute("ANALYZE dbos.workflow_status")
    await conn.execute("ANALYZE dbos.operation_outputs")


async def explain(conn: asyncpg.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Every node of the statement's plan (EXPLAIN's JSON format)."""
    text = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    found, stack = [], [(json.loads(text) if isinstance(text, str) else text)[0]["Plan"]]
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(node.get("Plans", []))
    return found


def scans(nodes: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    """(node type, relation, index) for every node."""
    return [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]


def filters(nodes: list[dict[str, Any]]) -> list[str]:
    """Every filter and join filter, as PostgreSQL prints them."""
    return [node[k] for node in nodes for k in ("Filter", "Join Filter") if k in node]


async def plan(
    conn: asyncpg.Connection, sql: str, *args: Any
) -> list[tuple[str, str | None, str | None]]:
    return scans(await explain(conn, sql, *args))


# A report's array searched for the row (PostgreSQL prints NOT = ANY as <> ALL).
ROW_BY_ROW = re.compile(r"(= ANY|<> ALL) \(\w+\.running\)")


def assert_listing_hashed(found: list[str], what: str) -> None:
    """Whether a row is in a live executor's report is one lookup in a set hashed once per
    statement: searched in each report's array for every row, it cost rows x reported IDs
    (1.3 s a sweep at 1M rows whose executors reported 10k)."""
    assert any("hashed SubPlan" in f for f in found), f"{what}: {found}"
    searched = [f for f in found if ROW_BY_ROW.search(f)]
    assert not searched, f"{what}: a report searched row by row in {searched}"


def assert_no_seq_scan(nodes: list[tuple[str, str | None, str | None]], what: str) -> None:
    seq = [
        n for n in nodes if n[0] == "Seq Scan" and n[1] in ("workflow_status", "operation_outputs")
    ]
    assert not seq, f"{what}: sequential scan in {nodes}"


SAMPLES = {"text": "wf-201", "bigint": 1, "boolean": False}
EVERY_RULE = RuleSettings.build({rule.name for rule in RULES})


def _verdicts(rule: object, action: Action) -> list[Verdict]:
    wf = WorkflowRow("wf-200", "PENDING", "job", "exec-4", "0.1.0", 1, "q-2", None, 1, 1)
    columns = getattr(rule, "guard_columns", ())
    guard = {c.name: SAMPLES[c.sql_type] for c in columns}
    name = getattr(rule, "name", "")
    verdict = Verdict(
        name, wf, True, "test", action, guard=guard, target_version="0.2.0", error_message="m"
    )
    return [verdict, verdict]


async def check_plans(conn: asyncpg.Connection, schema: DbosSchema) -> dict[str, Any]:
    pending = [f"wf-{i}" for i in range(200, ROWS + 1, 200)]
    results: dict[str, Any] = {}
    for status in (Status.PENDING, Status.ENQUEUED):
        nodes = await plan(conn, in_flight_query(schema, status), 10_001)
        assert_no_seq_scan(nodes, f"{status} scan")
        index_names = {n[2] for n in nodes if n[2]}
        # Driven by a status index, not a walk of the whole created_at index.
        assert index_names, nodes
        assert "workflow_status_created_at_index" not in index_names, nodes
        results[status] = nodes
    # The sweep's own reads: the same, narrowed to rows some rule (all enabled) could match.
    executors = {
        "exec-1": ExecutorRow("exec-1", "limbo", "0.1.0", ExecutorState.ALIVE, running=frozenset()),
        "exec-4": ExecutorRow("exec-4", "limbo", "0.1.0", ExecutorState.LOST, dead_since_ms=1),
    }
    ctx = PrefilterContext(2**41, Snapshot(2**41, executors=executors), schema)
    for status in (Status.PENDING, Status.ENQUEUED):
        narrowed = prefilter_for(status, ctx, EVERY_RULE)
        assert narrowed is not None
        sql, params = narrowed
        every = await explain(conn, in_flight_query(schema, status, sql), 10_001, *params)
        nodes = scans(every)
        assert_no_seq_scan(nodes, f"prefiltered {status} scan")
        if status == Status.PENDING:  # exec-1 reports its work
            assert_listing_hashed(filters(every), "prefiltered PENDING scan")
        results[f"prefiltered {status}"] = nodes
    for name, sql, args in (
        ("dead_children", dead_children_query(schema), (pending,)),
        ("executor_progress", executor_progress_query(schema), (["exec-4"],)),
        ("one", one_workflow_query(schema), ("wf-200",)),
    ):
        nodes = await plan(conn, sql, *args)
        assert_no_seq_scan(nodes, name)
        results[name] = nodes
    # Every rule's guarded UPDATE (and its dry run), for every action it takes.
    for rule in (*RULES, manual.RULE):
        for action in sorted(rule.actions):
            if not action.changes_row:
                continue
            verdicts = _verdicts(rule, action)
            for dry_run in (False, True):
                sql = update_statement(schema, rule, action, dry_run=dry_run)
                every = await explain(conn, sql, observed_rows(rule, action, verdicts))
                what = f"{rule.name} {action} (dry run: {dry_run})"
                assert_no_seq_scan(scans(every), what)
                assert_listing_hashed(filters(every), what)
    return results


async def test_sweep_queries_use_indexes_on_dbos_34(database_url: str) -> None:
    conn = await connect(database_url, application_name="test")
    try:
        await fill(conn, has_parent=True)
        schema = await inspect_schema(conn, "dbos")
        results = await check_plans(conn, schema)
        names = {n[2] for n in results[Status.PENDING] if n[2]}
        assert names & {"idx_workflow_status_in_flight_v2", "idx_workflow_status_pending"}
        names = {n[2] for n in results[Status.ENQUEUED] if n[2]}
        assert "idx_workflow_status_in_flight_v2" in names, results[Status.ENQUEUED]
    finally:
        await conn.close()


async def test_sweep_queries_use_indexes_on_dbos_28(pg: TestPostgres) -> None:
    url = pg.empty_database()
    try:
        await load_dbos_28(url)
        conn = await connect(url, application_name="test")
        try:
            await fill(conn, has_parent=False)
            schema = await inspect_schema(conn, "dbos")
            results = await check_plans(conn, schema)
            for status in (Status.PENDING, Status.ENQUEUED):
                names = {n[2] for n in results[status]}
                assert "workflow_status_status_index" in names, results[status]
        finally:
            await conn.close()
    finally:
        pg.drop_database(url)
