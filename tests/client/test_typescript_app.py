"""A real DBOS TypeScript app (tests/client/typescript: @dbos-inc/dbos-sdk 5.3) keeps the
liveness contract with its own ~100-line client, and the supervisor serves it as it serves
Python apps.

- On a database the TypeScript SDK migrated (to 123), app A is SIGKILLed mid-job. Its
  replacement B (another executor ID) does not recover the job, and its dedup ID stays
  taken (the control); once the supervisor runs, it hands the orphan over, B finishes it,
  every step's side effect happened exactly once, and the dedup ID is accepted again.
- The supervisor reads the TypeScript-made schema (same columns as Python 3.4's, version 123).
- The FAIL action's error, written by the supervisor for TypeScript-serialized rows, is read
  by the TypeScript SDK as an Error naming the dead child (and the portable one, too).
- Rows of an app that publishes no registry get DBOS's default of 100 attempts, overridable
  per name, whatever registry another app publishes.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from typing import Any

import asyncpg
import pytest

from services.shared.db import connect
from services.supervisor.model import Action
from services.supervisor.settings import load_settings
from services.supervisor.store.dbos_schema import inspect_schema
from testkit.dbos_rows import (
    insert_step,
    insert_workflow,
    make_operator,
    publish,
    spawn_supervisor,
)
from testkit.node import NodeApp, events
from testkit.processes import ROOT, ServiceProcess, wait_until
from testkit.tcp_proxy import TcpProxy
from tests.conftest import Spawn

pytestmark = pytest.mark.slow

TS_MIGRATION = 123  # where @dbos-inc/dbos-sdk 5.3 leaves dbos.dbos_migrations
PY_MIGRATION = 125  # where dbos 3.4 leaves it (the template the `database_url` fixture clones)
APP, VERSION, STEPS = "ts-demo", "ts-demo-1", 6


def query(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def _run() -> list[dict[str, Any]]:
        conn = await connect(url, application_name="test")
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(_run())


def migration_version(url: str) -> int:
    [row] = query(url, "SELECT max(version) AS v FROM dbos.dbos_migrations")
    return int(row["v"])


def status_of(url: str, workflow_id: str) -> dict[str, Any]:
    [row] = query(
        url,
        "SELECT status, executor_id, deduplication_id, recovery_attempts, serialization "
        "FROM dbos.workflow_status WHERE workflow_uuid = $1",
        workflow_id,
    )
    return row


def wait_event(proc: ServiceProcess, name: str, timeout: float = 60.0) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        proc.raise_if_exited(name, lines=40)
        return next((e for e in events(proc) if e["event"] == name), None)

    event: dict[str, Any] = wait_until(found, timeout, 0.05, f"{proc.module}: {name}")
    return event


def env(url: str, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": url, "APP_VERSION": VERSION, "JOB_STEPS": str(STEPS), **extra}


def migrate_limbo(url: str) -> None:
    """The contract's functions, as a deployment's migration job (or the supervisor) makes
    them: the TypeScript client only calls them."""
    subprocess.run(
        [sys.executable, "-m", "services.migrate", url], check=True, capture_output=True, cwd=ROOT
    )


def test_typescript_orphan_is_taken_over_and_finishes(
    empty_url: str, ts_app: NodeApp, spawn: Spawn
) -> None:
    url, workflow_id = empty_url, "ts-wf-1"
    migrate_limbo(url)
    a = ts_app.start(
        "ts-a", "serve", "ts-job-1", workflow_id, env=env(url, LIMBO_EXECUTOR_ID="ts-a")
    )
    wait_event(a, "enqueued")
    # The TypeScript SDK migrated the empty database itself.
    assert migration_version(url) == TS_MIGRATION
    [executor] = query(url, "SELECT * FROM limbo.executor_liveness WHERE executor_id = 'ts-a'")
    assert (executor["state"], executor["sdk"], executor["reports_work"]) == (
        "alive",
        "typescript",
        True,
    )
    assert (executor["beat_ms"], executor["grace_ms"], executor["lease_ms"]) == (250, 1000, 5000)

    # SIGKILL once two steps are checkpointed: A is then asleep in step 3 (700 ms).
    def checkpointed() -> int:
        rows = query(
            url,
            "SELECT count(*) AS n FROM dbos.operation_outputs WHERE workflow_uuid = $1",
            workflow_id,
        )
        return int(rows[0]["n"])

    wait_until(lambda: checkpointed() >= 2, 30, 0.05, "two steps checkpointed")
    # A reports the job it runs, from the SDK's own map of running workflows.
    [report] = query(url, "SELECT running FROM limbo.executors WHERE executor_id = 'ts-a'")
    assert report["running"] == [workflow_id]
    a.signal(signal.SIGKILL)
    assert a.wait(10) == -signal.SIGKILL
    done_by_a = checkpointed()

    b = ts_app.start("ts-b", "serve", env=env(url, LIMBO_EXECUTOR_ID="ts-b"))
    wait_event(b, "launched")

    # The control: B is alive and idle, yet the job stays PENDING on ts-a holding its
    # dedup ID, and a new enqueue of that ID is refused. Nothing else would ever free it.
    time.sleep(5)
    stuck = status_of(url, workflow_id)
    assert (stuck["status"], stuck["executor_id"], stuck["deduplication_id"]) == (
        "PENDING",
        "ts-a",
        "ts-job-1",
    )
    assert stuck["serialization"] == "js_superjson"
    [refused] = ts_app.run("enqueue", "enqueue", "ts-job-1", "ts-wf-2", env=env(url))
    assert refused["accepted"] is False
    assert refused["error_name"] == "DBOSQueueDuplicatedError"

    supervisor, base = spawn_supervisor(spawn, url, "ts-supervisor")
    supervisor.wait_http(f"{base}/readyz", timeout=30)
    wait_until(
        lambda: status_of(url, workflow_id)["status"] == "SUCCESS", 60, 0.2, "the job to finish"
    )

    [handover] = query(url, "SELECT * FROM limbo.audit_entries WHERE workflow_id = $1", workflow_id)
    evidence = handover["evidence"]
    assert (handover["rule"], handover["action"], handover["outcome"]) == (
        "orphaned",
        "reenqueue",
        "applied",
    )
    assert (evidence["holder"], evidence["executor_id"]) == ("dead", "ts-a")
    assert handover["dedup_id_released"] is None  # handed over with its dedup ID
    finished = status_of(url, workflow_id)
    assert (finished["executor_id"], finished["deduplication_id"]) == ("ts-b", None)

    # Every step's effect exactly once: the first ones by A, the rest by B.
    effects = query(
        url,
        "SELECT step, pid FROM ts_demo.effects WHERE workflow_id = $1 ORDER BY step",
        workflow_id,
    )
    assert [e["step"] for e in effects] == list(range(1, STEPS + 1))
    assert {e["pid"] for e in effects[:done_by_a]} == {a.pid}
    assert {e["pid"] for e in effects[done_by_a:]} == {b.pid}
    adapted = [e for e in supervisor.json_lines() if e.get("event") == "dbos_schema_adapted"]
    assert adapted[0]["migration_version"] == TS_MIGRATION

    [accepted] = ts_app.run("enqueue", "enqueue", "ts-job-1", "ts-wf-2", env=env(url))
    assert accepted["accepted"] is True, accepted

    # B runs it too; stopped once idle, it ends its lease (executor_stop) on its way out.
    wait_until(lambda: status_of(url, "ts-wf-2")["status"] == "SUCCESS", 30, 0.2, "ts-wf-2")
    assert b.stop(timeout=15) == 0
    [stopped] = query(url, "SELECT state FROM limbo.executor_liveness WHERE executor_id = 'ts-b'")
    assert stopped["state"] == "stopped"


def lease_backend(url: str, executor_id: str) -> int | None:
    rows = query(
        url,
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
        f"limbo-lease:{executor_id}",
    )
    return rows[0]["pid"] if rows else None


def test_typescript_client_keeps_the_promise(empty_url: str, ts_app: NodeApp) -> None:
    """A killed connection is re-registered within the grace (nothing moves); a network cut
    makes the process exit 75 within the grace; a second process with a live executor ID
    refuses to start; a lease ended in the database (SQLSTATE L0001) makes it exit 75."""
    url = empty_url
    migrate_limbo(url)
    proxy, proxied = TcpProxy.for_url(url)
    try:
        a = ts_app.start("ts-f", "serve", env=env(proxied, LIMBO_EXECUTOR_ID="ts-f"))
        started = wait_event(a, "launched")
        [before] = query(url, "SELECT incarnation FROM limbo.executors WHERE executor_id = 'ts-f'")

        backend = lease_backend(url, "ts-f")
        assert backend is not None
        query(url, "SELECT pg_terminate_backend($1)", backend)
        wait_until(
            lambda: lease_backend(url, "ts-f") not in (None, backend), 5, 0.05, "a new session"
        )
        time.sleep(1.0)  # past the grace
        [after] = query(
            url, "SELECT state, incarnation FROM limbo.executor_liveness WHERE executor_id = 'ts-f'"
        )
        assert a.alive()
        assert (after["state"], after["incarnation"]) == ("alive", before["incarnation"])

        cut = time.monotonic()
        proxy.cut()
        assert a.wait(5) == 75
        fenced_after = time.monotonic() - cut
        assert fenced_after < 1.0, f"fenced {fenced_after:.2f}s after the cut; grace is 1 s"
        assert "fencing executor ts-f" in "\n".join(a.log_lines())
        assert started["executor_id"] == "ts-f"
    finally:
        proxy.close()

    g = ts_app.start("ts-g", "serve", env=env(url, LIMBO_EXECUTOR_ID="ts-g"))
    wait_event(g, "launched")
    twin = ts_app.start("ts-g-twin", "serve", env=env(url, LIMBO_EXECUTOR_ID="ts-g"))
    assert twin.wait(30) != 0
    assert "refused (conflict)" in "\n".join(twin.log_lines())
    [conflict] = query(url, "SELECT pid, holder_pid FROM limbo.executor_conflicts")
    assert (conflict["pid"], conflict["holder_pid"]) == (twin.pid, g.pid)

    query(url, "UPDATE limbo.executors SET lease_expires_at = now() WHERE executor_id = 'ts-g'")
    assert g.wait(5) == 75
    assert "has ended" in "\n".join(g.log_lines())


def test_supervisor_reads_the_typescript_schema(
    empty_url: str, ts_app: NodeApp, database_url: str
) -> None:
    ts_app.run("migrate", "migrate", env=env(empty_url))

    async def schemas() -> tuple[Any, Any]:
        found = []
        for url in (empty_url, database_url):
            conn = await connect(url, application_name="test")
            try:
                found.append(await inspect_schema(conn, "dbos"))
            finally:
                await conn.close()
        return found[0], found[1]

    typescript, python = asyncio.run(schemas())
    assert typescript.migration_version == TS_MIGRATION
    assert python.migration_version == PY_MIGRATION
    assert typescript.flavor == "3.x"
    # Every column either SDK's rows carry, the same in both.
    assert typescript.status_columns == python.status_columns
    assert typescript.operation_columns == python.operation_columns
    assert {"serialization", "owner_xid", "application_name"} <= typescript.status_columns


def test_fail_payload_is_read_by_the_typescript_sdk(
    empty_url: str, ts_app: NodeApp, spawn: Spawn
) -> None:
    url = empty_url
    ts_app.run("migrate", "migrate", env=env(url))

    async def build(conn: asyncpg.Connection) -> None:
        for parent, serialization in (
            ("ts-parent", "js_superjson"),
            ("pj-parent", "portable_json"),
        ):
            child = f"{parent}-child"
            await insert_workflow(
                conn,
                parent,
                name="parent",
                executor_id="ts-gone",
                version=VERSION,
                app_name=APP,
                updated_ago_ms=60_000,
            )
            await insert_workflow(
                conn,
                child,
                status="CANCELLED",
                name="child",
                executor_id="ts-gone",
                version=VERSION,
                app_name=APP,
                queue=None,
                parent=parent,
                updated_ago_ms=60_000,
            )
            await insert_step(conn, parent, 1, child=child)
            await conn.execute(
                "UPDATE dbos.workflow_status SET serialization = $2 WHERE workflow_uuid = ANY($1)",
                [parent, child],
                serialization,
            )

    asyncio.run(_on(url, build))
    supervisor, base = spawn_supervisor(spawn, url, "ts-fail", SUPERVISOR_STALL_TIMEOUT="0.5")
    supervisor.wait_http(f"{base}/readyz", timeout=30)

    def failed() -> bool:
        rows = query(
            url,
            "SELECT count(*) AS n FROM dbos.workflow_status WHERE status = 'ERROR' "
            "AND workflow_uuid IN ('ts-parent', 'pj-parent')",
        )
        return int(rows[0]["n"]) == 2

    wait_until(failed, 30, 0.2, "both parents failed")
    for parent in ("ts-parent", "pj-parent"):
        [audit] = query(url, "SELECT * FROM limbo.audit_entries WHERE workflow_id = $1", parent)
        assert (audit["rule"], audit["action"], audit["outcome"]) == (
            "dead_child",
            "fail",
            "applied",
        )

    [ts] = ts_app.run("result", "result", "ts-parent", env=env(url))
    assert ts["status"] == "ERROR"
    assert ts["is_error"] is True
    assert ts["error_name"] == "DBOSAwaitedWorkflowDeadChild"
    assert "ts-parent-child is CANCELLED" in ts["error_message"]
    [pj] = ts_app.run("result", "result", "pj-parent", env=env(url))
    assert pj["is_error"] is True  # the SDK's PortableWorkflowError
    assert pj["error_name"] == "DBOSAwaitedWorkflowDeadChild"
    assert "pj-parent-child is CANCELLED" in pj["error_message"]


async def _on(url: str, action: Any) -> None:
    conn = await connect(url, application_name="test")
    try:
        await action(conn)
    finally:
        await conn.close()


def test_unpublished_apps_get_dbos_default_attempts_overridable_per_name(
    empty_url: str, ts_app: NodeApp
) -> None:
    """TypeScript rows (app ts-demo, publishing nothing) beside a Python app that publishes
    `job` with 3 attempts: the TypeScript rows get DBOS's 100, unless overridden by name."""
    url = empty_url
    ts_app.run("migrate", "migrate", env=env(url))
    migrate_limbo(url)

    async def build(conn: asyncpg.Connection) -> None:
        await publish(conn, "job", 3, app="py-app", version=VERSION)
        for workflow_id, name, attempts in (
            ("at-101", "job", 101),
            ("at-102", "job", 102),
            ("other-5", "other", 5),
        ):
            await insert_workflow(
                conn,
                workflow_id,
                status="ENQUEUED",
                name=name,
                executor_id=None,
                version=VERSION,
                app_name=APP,
                attempts=attempts,
            )
        await conn.execute("UPDATE dbos.workflow_status SET serialization = 'js_superjson'")

    asyncio.run(_on(url, build))

    async def decisions(environ: dict[str, str]) -> dict[str, tuple[Action | None, Any, Any]]:
        operator = await make_operator(
            url, settings=load_settings({"DATABASE_URL": url, **environ})
        )
        try:
            found = {}
            for workflow_id in ("at-101", "at-102", "other-5"):
                explanation = await operator.explain(workflow_id)
                [verdict] = [v for v in explanation.verdicts if v.rule == "exhausted"]
                found[workflow_id] = (
                    verdict.action,
                    verdict.evidence["max_recovery_attempts"],
                    verdict.evidence["limit_source"],
                )
            return found
        finally:
            await operator.pool.close()

    default = asyncio.run(decisions({}))
    assert default == {
        "at-101": (None, 100, "DBOS default"),
        "at-102": (Action.DEAD_LETTER, 100, "DBOS default"),
        "other-5": (None, 100, "DBOS default"),
    }
    overridden = asyncio.run(decisions({"SUPERVISOR_MAX_RECOVERY_ATTEMPTS": "job=3"}))
    assert overridden == {
        "at-101": (Action.DEAD_LETTER, 3, "settings override"),
        "at-102": (Action.DEAD_LETTER, 3, "settings override"),
        "other-5": (None, 100, "DBOS default"),
    }
