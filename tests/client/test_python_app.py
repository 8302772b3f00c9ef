"""`limbo.protect()` in a third-party DBOS Python app (tests/client/python_app/limbo_app.py,
which imports `limbo` and nothing else of Limbo's), with the real supervisor: a SIGKILLed
process's job is taken over by a replacement with another executor ID and succeeds, and
the dedup ID it held is free again; a second process with a held executor ID refuses to
start; and the DBOS internals the client reads are what it expects (dbos is pinned)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from dbos import DBOSClient, EnqueueOptions

from testkit.dbos_rows import db, metric_sum, spawn_supervisor
from testkit.processes import ServiceProcess, wait_until
from testkit.worker import TERMINAL
from tests.conftest import Spawn

APP = Path(__file__).resolve().parent / "python_app" / "limbo_app.py"


def start_app(spawn: Spawn, url: str, executor_id: str, **env: str) -> ServiceProcess:
    return spawn(
        "limbo_app",
        {"DATABASE_URL": url, **env},
        name=f"app-{executor_id}-{int(time.monotonic() * 1000)}",
        argv=[sys.executable, str(APP), executor_id],
    )


def workflow_of(proc: ServiceProcess) -> str:
    line = wait_until(
        lambda: next((x for x in proc.log_lines() if x.startswith("enqueued ")), None),
        60,
        what="the app to enqueue its job",
    )
    return str(line.split()[1])


def status(url: str, workflow_id: str) -> dict[str, Any]:
    async def read(conn: asyncpg.Connection) -> dict[str, Any]:
        found = await conn.fetchrow(
            "SELECT status, executor_id, deduplication_id, recovery_attempts "
            "FROM dbos.workflow_status WHERE workflow_uuid = $1",
            workflow_id,
        )
        return {} if found is None else dict(found)

    result: dict[str, Any] = db(url, read)
    return result


def effects(url: str, workflow_id: str) -> list[dict[str, Any]]:
    async def read(conn: asyncpg.Connection) -> list[dict[str, Any]]:
        rows = await conn.fetch(
            "SELECT step, pid FROM thirdparty.effects WHERE workflow_id = $1 ORDER BY at",
            workflow_id,
        )
        return [dict(r) for r in rows]

    result: list[dict[str, Any]] = db(url, read)
    return result


def test_a_killed_apps_job_is_taken_over_by_a_replacement_and_its_dedup_id_freed(
    database_url: str, spawn: Spawn
) -> None:
    supervisor, base = spawn_supervisor(spawn, database_url)
    supervisor.wait_http(f"{base}/readyz", timeout=30)
    a = start_app(spawn, database_url, "tp-a", ENQUEUE="tp-job-1", STEPS="10")
    workflow_id = workflow_of(a)
    wait_until(lambda: len(effects(database_url, workflow_id)) >= 2, 30, what="steps on tp-a")
    a.signal(signal.SIGKILL)
    a.wait(10)
    killed = time.monotonic()
    held = status(database_url, workflow_id)
    assert (held["status"], held["executor_id"], held["deduplication_id"]) == (
        "PENDING",
        "tp-a",
        "tp-job-1",
    )

    b = start_app(spawn, database_url, "tp-b")
    b.wait_line("serving", 60)
    done = wait_until(
        lambda: (s := status(database_url, workflow_id))["status"] in TERMINAL and s,
        60,
        what="the job to finish on tp-b",
    )
    assert done["status"] == "SUCCESS"
    assert done["executor_id"] == "tp-b"
    steps = effects(database_url, workflow_id)
    assert {e["step"] for e in steps} == set(range(10))
    assert {e["pid"] for e in steps if e["step"] == 9} == {b.pid}
    assert time.monotonic() - killed < 45

    # The audit trail names the handover, on the evidence of tp-a's death.
    audits = db(
        database_url,
        lambda c: c.fetch("SELECT rule, action, outcome, evidence FROM limbo.audit_entries"),
    )
    assert [(r["rule"], r["action"], r["outcome"]) for r in audits] == [
        ("orphaned", "reenqueue", "applied")
    ]
    assert audits[0]["evidence"]["holder"] == "dead"
    # The dedup ID is free again: a new enqueue with it is accepted.
    client = DBOSClient(system_database_url=database_url)
    try:
        options: EnqueueOptions = {
            "queue_name": "tp-queue",
            "workflow_name": "job",
            "deduplication_id": "tp-job-1",
            "app_version": "tp-1",
        }
        handle: Any = client.enqueue(options, 1)
        assert handle.get_result() == 1
    finally:
        client.destroy()


def test_a_second_process_with_a_held_executor_id_refuses_to_start(
    database_url: str, spawn: Spawn
) -> None:
    supervisor, base = spawn_supervisor(spawn, database_url)
    supervisor.wait_http(f"{base}/readyz", timeout=30)
    first = start_app(spawn, database_url, "tp-same")
    first.wait_line("serving", 60)
    second = start_app(spawn, database_url, "tp-same")
    assert second.wait(60) != 0
    output = "\n".join(second.log_lines())
    assert "ExecutorIdConflict" in output
    assert "'tp-same' is already held by a live process" in output
    assert f"(pid {first.pid})" in output
    assert first.alive()
    metric = 'limbo_supervisor_executor_id_conflicts{executor_id="tp-same"}'
    wait_until(lambda: metric_sum(base, metric) >= 1, 10, what="the conflict metric")


@pytest.mark.parametrize("max_attempts", [7])
def test_the_registry_comes_from_dbos_own_registry(
    database_url: str, spawn: Spawn, max_attempts: int
) -> None:
    app = start_app(spawn, database_url, "tp-reg")
    app.wait_line("serving", 60)
    rows = db(
        database_url,
        lambda c: c.fetch(
            "SELECT workflow_name, max_recovery_attempts, application_version "
            "FROM limbo.workflow_registry WHERE application_name = 'thirdparty'"
        ),
    )
    assert [
        (r["workflow_name"], r["max_recovery_attempts"], r["application_version"]) for r in rows
    ] == [("job", max_attempts, "tp-1")]
