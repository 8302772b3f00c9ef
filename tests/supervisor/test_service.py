"""The supervisor as a real process: readiness and role, leadership and takeover, admin API,
metrics, JSON decision logs, database outages, refusal of bad config and schemas."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

from services.shared.dsn import with_database
from testkit.dbos_rows import (
    audit_rows,
    db,
    insert_executor,
    insert_workflow,
    row,
    spawn_supervisor,
)
from testkit.executors import HeldExecutor
from testkit.localpg import psql
from testkit.postgres import TEMPLATE, TestPostgres
from testkit.processes import ServiceProcess, wait_until
from tests.conftest import Spawn

POLL = 0.3


def start(spawn: Spawn, url: str, name: str, **env: str) -> tuple[ServiceProcess, str]:
    return spawn_supervisor(spawn, url, name, SUPERVISOR_POLL_INTERVAL=str(POLL), **env)


def role(base: str) -> str | None:
    try:
        response = httpx.get(f"{base}/readyz", timeout=2)
    except httpx.HTTPError:
        return None
    return str(response.json().get("role")) if response.status_code == 200 else None


def test_one_leader_acts_and_standby_takes_over_after_sigkill(
    database_url: str, spawn: Spawn
) -> None:
    a, url_a = start(spawn, database_url, "sup-a")
    a.wait_http(f"{url_a}/readyz")
    wait_until(lambda: role(url_a) == "leader", 10, what="first supervisor leads")
    b, url_b = start(spawn, database_url, "sup-b")
    b.wait_http(f"{url_b}/readyz")
    assert role(url_b) == "standby"

    async def orphan(conn: asyncpg.Connection) -> None:
        await insert_executor(conn, "exec-a", seen_ago_s=60)
        await insert_workflow(conn, "o1", dedup="d1", updated_ago_ms=90_000)

    db(database_url, orphan)
    wait_until(
        lambda: db(database_url, lambda c: row(c, "o1"))["status"] == "ENQUEUED", 10, what="o1"
    )
    time.sleep(3 * POLL)
    audits = db(database_url, audit_rows)
    assert [(x["actor"], x["workflow_id"], x["outcome"]) for x in audits] == [
        ("sup-a", "o1", "applied")
    ]
    assert role(url_a) == "leader"
    assert role(url_b) == "standby"

    a.signal(signal.SIGKILL)
    a.wait(10)
    killed_at = time.monotonic()
    wait_until(lambda: role(url_b) == "leader", 10, interval=0.05, what="standby takes over")
    takeover = time.monotonic() - killed_at
    assert takeover < 2 * POLL + 1.0, takeover  # within about one poll (plus process noise)

    db(database_url, lambda c: insert_workflow(c, "o2", dedup="d2", updated_ago_ms=90_000))
    wait_until(
        lambda: db(database_url, lambda c: row(c, "o2"))["status"] == "ENQUEUED", 10, what="o2"
    )
    audits = db(database_url, lambda c: audit_rows(c, "o2"))
    assert [(x["actor"], x["outcome"]) for x in audits] == [("sup-b", "applied")]
    # Every decision is one JSON line naming workflow, rule, action, evidence, dedup ID.
    decisions = [line for line in b.json_lines() if line.get("event") == "decision"]
    assert [(d["workflow_id"], d["rule"], d["action"]) for d in decisions] == [
        ("o2", "orphaned", "reenqueue")
    ]
    assert "dedup_id_released" in decisions[0]
    assert decisions[0]["evidence"]["executor_id"] == "exec-a"


def test_graceful_stop_hands_leadership_over_at_once(database_url: str, spawn: Spawn) -> None:
    a, url_a = start(spawn, database_url, "sup-a")
    a.wait_http(f"{url_a}/readyz")
    wait_until(lambda: role(url_a) == "leader", 10, what="leader")
    b, url_b = start(spawn, database_url, "sup-b")
    b.wait_http(f"{url_b}/readyz")
    assert a.stop(timeout=15) == 0
    wait_until(lambda: role(url_b) == "leader", 5, interval=0.05, what="takeover")


def test_admin_api_requires_the_token(database_url: str, spawn: Spawn) -> None:
    plain, url_plain = start(spawn, database_url, "plain")
    admin, url_admin = start(spawn, database_url, "admin", SUPERVISOR_ADMIN_TOKEN="s3cret")
    plain.wait_http(f"{url_plain}/readyz")
    admin.wait_http(f"{url_admin}/readyz")
    assert httpx.get(f"{url_plain}/admin/candidates").status_code == 404
    assert httpx.get(f"{url_admin}/admin/candidates").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{url_admin}/admin/candidates", headers=wrong).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}

    with HeldExecutor(database_url, "exec-live"):
        db(database_url, lambda c: insert_workflow(c, "live", executor_id="exec-live", dedup="L"))
        candidates = httpx.get(f"{url_admin}/admin/candidates", headers=auth)
        assert candidates.status_code == 200
        assert candidates.json()["candidates"] == []
        explained = httpx.get(f"{url_admin}/admin/workflows/live", headers=auth).json()
        assert explained["decision"] is None
        assert "alive" in explained["rules"][2]["reason"]
        assert httpx.get(f"{url_admin}/admin/workflows/nope", headers=auth).status_code == 404
        sweep = httpx.post(f"{url_admin}/admin/sweeps", json={"dry_run": True}, headers=auth)
        assert sweep.status_code == 200
        assert sweep.json()["dry_run"] is True
        refused = httpx.post(
            f"{url_admin}/admin/workflows/live/release", json={"reason": "r"}, headers=auth
        )
        assert refused.status_code == 409
        released = httpx.post(
            f"{url_admin}/admin/workflows/live/release",
            json={"reason": "ticket 7", "force": True, "action": "cancel"},
            headers=auth,
        )
        assert released.status_code == 200, released.text
        assert (released.json()["outcome"], released.json()["dedup_id_released"]) == (
            "applied",
            "L",
        )
        assert db(database_url, lambda c: row(c, "live"))["status"] == "CANCELLED"
        audit = httpx.get(
            f"{url_admin}/admin/audit", params={"workflow_id": "live", "limit": 1}, headers=auth
        ).json()
        assert [(e["rule"], e["action"], e["reason"]) for e in audit["entries"]] == [
            ("manual", "cancel", "ticket 7")
        ]
        schema = httpx.get(f"{url_admin}/schema/openapi.json").json()
        assert "/admin/candidates" in schema["paths"]
        assert "SUPERVISOR_ADMIN_TOKEN" in schema["info"]["description"]
        assert (
            "/admin/candidates" not in httpx.get(f"{url_plain}/schema/openapi.json").json()["paths"]
        )


def test_metrics(database_url: str, spawn: Spawn) -> None:
    proc, base = start(spawn, database_url, "m")
    proc.wait_http(f"{base}/readyz")
    wait_until(lambda: role(base) == "leader", 10, what="leader")
    db(database_url, lambda c: insert_executor(c, "exec-a", seen_ago_s=60))
    db(database_url, lambda c: insert_workflow(c, "o", dedup="d", updated_ago_ms=90_000))
    wait_until(lambda: db(database_url, lambda c: row(c, "o"))["status"] == "ENQUEUED", 10)
    text = httpx.get(f"{base}/metrics").text
    for needle in (
        "limbo_supervisor_leader 1.0",
        'limbo_supervisor_sweeps_total{outcome="ok"}',
        "limbo_supervisor_sweep_duration_seconds_bucket",
        'limbo_supervisor_actions_total{action="reenqueue",outcome="applied",rule="orphaned"} 1.0',
        'limbo_supervisor_executors{state="expired"} 1.0',
        'limbo_supervisor_executors{state="alive"} 0.0',
        "limbo_supervisor_candidates{rule=",
        "limbo_supervisor_oldest_candidate_age_seconds",
        "limbo_supervisor_database_errors_total",
        'limbo_supervisor_build_info{dbos_schema="3.x"',
        "limbo_supervisor_http_requests_total",
    ):
        assert needle in text, needle


def test_database_outage_reports_not_ready_and_resumes(
    pg: TestPostgres, database_url: str, spawn: Spawn
) -> None:
    # A database that does not exist yet: the supervisor starts, is not ready, and waits.
    name = f"late_{int(time.time() * 1000)}"
    url = with_database(pg.base_url, name)
    proc, base = start(spawn, url, "late")
    response = proc.wait_http(f"{base}/readyz", status=503)
    assert response.json()["status"] == "not_ready"
    psql(with_database(pg.base_url, "postgres"), f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    try:
        proc.wait_http(f"{base}/readyz", timeout=40)
        wait_until(lambda: role(base) == "leader", 10, what="leader")
        # Every connection of the supervisor is cut: it recovers, still leader, still acting.
        db(
            url,
            lambda c: c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'limbo-supervisor%'"
            ),
        )
        db(url, lambda c: insert_executor(c, "exec-a", seen_ago_s=60))
        db(url, lambda c: insert_workflow(c, "o", dedup="d", updated_ago_ms=90_000))
        wait_until(lambda: db(url, lambda c: row(c, "o"))["status"] == "ENQUEUED", 40)
        assert proc.alive()
        assert any(line.get("event") == "database_unavailable" for line in proc.json_lines())
    finally:
        proc.stop(timeout=15)
        pg.drop_database(url)


def test_bad_config_exits_2_without_secrets(spawn: Spawn) -> None:
    proc = spawn(
        "services.supervisor",
        {
            "DATABASE_URL": "postgresql://u:topsecret@127.0.0.1:1/x",
            "SUPERVISOR_POLL_INTERVAL": "often",
        },
        name="badconf",
    )
    assert proc.wait(30) == 2
    output = "\n".join(proc.log_lines())
    assert "SUPERVISOR_POLL_INTERVAL" in output
    assert "topsecret" not in output


def test_incompatible_schema_is_refused(database_url: str, spawn: Spawn) -> None:
    db(
        database_url,
        lambda c: c.execute("ALTER TABLE dbos.workflow_status DROP COLUMN deduplication_id"),
    )
    proc, _ = start(spawn, database_url, "old")
    assert proc.wait(30) == 2
    assert "workflow_status.deduplication_id is missing" in "\n".join(proc.log_lines())


def test_dry_run_service_changes_nothing(database_url: str, spawn: Spawn) -> None:
    db(database_url, lambda c: insert_executor(c, "exec-a", seen_ago_s=60))
    db(database_url, lambda c: insert_workflow(c, "o", dedup="d", updated_ago_ms=90_000))
    proc, base = start(spawn, database_url, "dry", SUPERVISOR_DRY_RUN="1")
    proc.wait_http(f"{base}/readyz")
    assert httpx.get(f"{base}/readyz").json()["dry_run"] is True
    wait_until(lambda: db(database_url, lambda c: audit_rows(c, "o")), 10, what="dry audit")
    time.sleep(5 * POLL)  # several more sweeps: the same decision is not audited again
    assert db(database_url, lambda c: row(c, "o"))["status"] == "PENDING"
    assert [a["outcome"] for a in db(database_url, audit_rows)] == ["dry_run"]


def test_the_supervisor_creates_its_tables_and_never_the_demos(
    pg: TestPostgres, spawn: Spawn
) -> None:
    """Beside a user's app: a database DBOS made, none of ours yet. The supervisor creates
    the liveness contract and its audit trail, and nothing of the demo job."""
    url = pg.empty_database("users")
    try:
        subprocess.run(
            [str(Path(sys.executable).parent / "dbos"), "migrate", "-s", url],
            check=True,
            capture_output=True,
            timeout=120,
        )
        proc, base = start(spawn, url, "users-app")
        proc.wait_http(f"{base}/readyz", timeout=40)
        schemas = db(url, lambda c: c.fetch("SELECT nspname FROM pg_namespace"))
        names = {r["nspname"] for r in schemas}
        assert "limbo" in names
        assert "limbo_demo" not in names
        migrated = db(url, lambda c: c.fetch("SELECT DISTINCT component FROM limbo.migrations"))
        assert {r["component"] for r in migrated} == {"contract", "supervisor"}
        proc.stop(timeout=15)
    finally:
        pg.drop_database(url)
