"""After (re)connecting, the supervisor does not judge executors by their heartbeats until a
full executor timeout has passed: a database outage makes every heartbeat stale at once."""

from __future__ import annotations

import time

import asyncpg

from services.supervisor.runner import Runner
from services.supervisor.settings import RuleSettings, Settings
from services.supervisor.sweeper import Supervisor
from tests.supervisor.support import insert_executor, insert_workflow, publish, row


def test_heartbeats_trusted_only_after_a_full_executor_timeout_connected() -> None:
    settings = Settings(
        database_url="postgresql://u@127.0.0.1:1/db",
        rules=RuleSettings(executor_timeout_ms=6_000),
    )
    runner = Runner(settings)
    assert not runner.heartbeats_trusted()  # never connected
    runner._connected_since = time.monotonic() - 5.0
    assert not runner.heartbeats_trusted()
    runner._connected_since = time.monotonic() - 6.5
    assert runner.heartbeats_trusted()


async def test_untrusted_sweep_holds_heartbeat_rules_but_not_exhausted(
    conn: asyncpg.Connection, supervisor: Supervisor
) -> None:
    await insert_executor(conn, "exec-a", seen_ago_s=30)
    await publish(conn, "limbo.job", 2)
    await insert_workflow(conn, "orphan", name="limbo.job", attempts=1, executor_id="exec-a")
    await insert_workflow(conn, "spent", name="limbo.job", attempts=4, executor_id="exec-a")

    held = await supervisor.sweep(trust_heartbeats=False)
    assert [(o.verdict.workflow_id, o.verdict.rule) for o in held.outcomes] == [
        ("spent", "exhausted")
    ]
    assert (await row(conn, "orphan"))["status"] == "PENDING"

    trusted = await supervisor.sweep(trust_heartbeats=True)
    assert [(o.verdict.workflow_id, o.verdict.rule) for o in trusted.outcomes] == [
        ("orphan", "orphaned")
    ]
    assert (await row(conn, "orphan"))["status"] == "ENQUEUED"
