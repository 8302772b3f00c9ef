"""The operating layer's payloads for the console (and `GET /admin/overview`,
`/admin/workflows/{id}/detail`, `limbo-supervisor overview | show`): the overview, one
workflow in full, the supervisors' heartbeats, the history, and dry runs that say whether
the guard held. In process, on a real database."""

from __future__ import annotations

import io
import json

import asyncpg

from services.supervisor import cli
from services.supervisor.leadership import LOCK_NAME
from services.supervisor.model import Action
from services.supervisor.operating import Operator
from services.supervisor.store import history as history_store
from services.supervisor.store import supervisors as supervisor_store
from testkit.dbos_rows import insert_executor, insert_step, insert_workflow


async def limbo(conn: asyncpg.Connection) -> None:
    await insert_executor(conn, "exec-dead", seen_ago_s=60)
    await insert_executor(conn, "exec-gone", lost=True, seen_ago_s=30)
    await insert_workflow(conn, "orph", executor_id="exec-dead", dedup="d1", updated_ago_ms=90_000)
    await insert_workflow(conn, "child", status="ERROR", parent="orph", queue=None)
    await insert_step(conn, "orph", 1, child="child")
    await conn.execute(
        "UPDATE dbos.workflow_status SET error = 'boom <b>' WHERE workflow_uuid = 'orph'"
    )
    await insert_workflow(conn, "exh", executor_id="exec-gone", attempts=150, dedup="d2")


async def test_overview_groups_executors_and_candidates(
    operator: Operator, conn: asyncpg.Connection
) -> None:
    await limbo(conn)
    await supervisor_store.beat(
        conn, instance="00000000-0000-0000-0000-000000000001", actor="sup-x", hostname="h",
        pid=1, version="0.1.0", dry_run=False, role="leader",
        lock_backend_pid=await conn.fetchval("SELECT pg_backend_pid()"), beat_ms=1000,
    )  # fmt: skip
    await supervisor_store.beat(
        conn, instance="00000000-0000-0000-0000-000000000002", actor="sup-y", hostname="h",
        pid=2, version="0.1.0", dry_run=False, role="standby", lock_backend_pid=None,
        beat_ms=1000,
    )  # fmt: skip
    data = (await operator.overview(instance="00000000-0000-0000-0000-000000000002")).describe()
    groups = {e["executor_id"]: (e["group"], e["executor_state"]) for e in data["executors"]}
    assert groups == {"exec-dead": ("fenced", "expired"), "exec-gone": ("dead", "lost")}
    holds = {e["executor_id"]: e["pending"] for e in data["executors"]}
    assert holds == {"exec-dead": ["orph"], "exec-gone": ["exh"]}
    by_rule = data["candidates"]["by_rule"]
    assert {rule: [c["workflow_id"] for c in found] for rule, found in by_rule.items()} == {
        "orphaned": ["orph"],
        "exhausted": ["exh"],
    }
    assert by_rule["orphaned"][0]["deduplication_id"] == "d1"
    assert by_rule["orphaned"][0]["stuck_ms"] >= 60_000  # since its last step, 60 s ago
    assert data["candidates"]["oldest"]["workflow_id"] == "orph"
    # Nobody holds the leadership lock: a leader that only says so is not shown as one.
    roles = {s["actor"]: (s["state"], s["role"], s["this"]) for s in data["supervisors"]}
    assert roles == {"sup-x": ("up", "standby", False), "sup-y": ("up", "standby", True)}
    await conn.execute("SELECT pg_advisory_lock(hashtext($1))", LOCK_NAME)
    data = (await operator.overview()).describe()
    assert {s["actor"]: s["role"] for s in data["supervisors"]} == {
        "sup-x": "leader",
        "sup-y": "standby",
    }
    await supervisor_store.stopped(conn, "00000000-0000-0000-0000-000000000002")
    data = (await operator.overview()).describe()
    assert {s["actor"]: s["state"] for s in data["supervisors"]}["sup-y"] == "stopped"
    assert len(data["history"]["buckets"]) >= 60


async def test_history_counts_samples_and_actions(
    operator: Operator, conn: asyncpg.Connection
) -> None:
    await limbo(conn)
    await history_store.record(conn, 2, {"orphaned": 1, "exhausted": 1}, None)
    await history_store.record(conn, 3, {"orphaned": 3}, 0)
    await operator.release("orph", reason="r", dry_run=True)
    await operator.release("orph", reason="r")
    buckets = await operator.history(minutes=5, bucket_s=60)
    assert max(b["candidates"] or 0 for b in buckets) == 3
    assert sum(b["applied"] for b in buckets) == 1
    assert sum(b["dry_run"] for b in buckets) == 1
    assert buckets[-1]["at"] > buckets[0]["at"]


async def test_detail_and_dry_run_guard(operator: Operator, conn: asyncpg.Connection) -> None:
    await limbo(conn)
    detail = (await operator.detail("orph")).describe()
    assert detail["decision"]["rule"] == "orphaned"
    assert detail["error"] == "boom <b>"
    assert [c["workflow_id"] for c in detail["children"]] == ["child"]
    assert [(s["function_id"], s["child_workflow_id"]) for s in detail["steps"]] == [(1, "child")]
    assert detail["releasable"] is True
    assert set(detail["release_actions"]) == {"dead_letter", "cancel", "reenqueue"}
    dry = await operator.release("orph", reason="look first", action=Action.CANCEL, dry_run=True)
    assert (dry.outcome.value, dry.guard_held, dry.dedup_id_released) == ("dry_run", True, "d1")
    assert (await operator.detail("orph")).describe()["audit"][0]["outcome"] == "dry_run"


def test_cli_overview_and_show(database_url: str) -> None:
    from testkit.dbos_rows import db

    db(database_url, limbo)
    out = io.StringIO()
    assert cli.main(["overview", "--json", "--database-url", database_url], out=out) == 0
    assert json.loads(out.getvalue())["candidates"]["count"] == 2
    out = io.StringIO()
    assert cli.main(["show", "orph", "--database-url", database_url], out=out) == 0
    assert "child child ERROR" in out.getvalue()
    assert "rule orphaned" in out.getvalue()
