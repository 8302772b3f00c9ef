"""PostgreSQL restarted during sweeps: no partial change, the supervisor recovers by itself.

A dedicated throwaway server (it is stopped and started again on the same port, which the
session's shared server must never be) holds 3000 workflows in limbo on the real DBOS 3.4
schema: half `exhausted` (dead-letter), half `orphaned` (re-enqueue), interleaved oldest
first. The real supervisor process sweeps them in batches; while it does, PostgreSQL is
stopped twice (`-m fast`, then `-m immediate`, a crash) and started again.

The supervisor process survives both outages, reports 503 on `/readyz` while the database
is away and 200 again after, resumes on its own and releases every candidate. At every
restart and at the end, one snapshot of DBOS's rows and `limbo.audit` agrees: a row is
either untouched with no audit row, or fully changed with exactly one `applied` audit row
naming the right rule, action and released dedup ID; no audit row names anything else.
Every decision the process logged as applied is in the audit trail under its audit ID (the
database keeps `synchronous_commit = on`, as production does, so a crash loses no commit
that was acknowledged), and none was decided twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from testkit.dbos_rows import (
    db,
    insert_executor,
    insert_many_workflows,
    metric_sum,
    publish,
    spawn_supervisor,
)
from testkit.localpg import start_owned_server
from testkit.postgres import TestPostgres
from testkit.processes import ServiceProcess, wait_until
from tests.conftest import Spawn

EACH = 1500  # rows per rule: 3000 candidates
BATCH = 50  # rows acted on per sweep: about 60 sweeps to release them all
MAX_ATTEMPTS = 2  # published for JOB: 5 attempts > 2 + 1 is `exhausted`
JOB = "limbo.job"
DOWN_S = 3.0  # how long PostgreSQL stays down each time


async def seed(conn: asyncpg.Connection) -> None:
    await publish(conn, JOB, MAX_ATTEMPTS)
    # `orphaned`: its executor's heartbeat is a minute old.
    await insert_executor(conn, "exec-dead", seen_ago_s=60)
    # Interleaved by created_at (2 ms apart each), so both rules act in every batch.
    await insert_many_workflows(
        conn, "ex", EACH, name=JOB, executor_id="exec-gone", attempts=5, stride_ms=2
    )
    await insert_many_workflows(
        conn,
        "or",
        EACH,
        name=JOB,
        executor_id="exec-dead",
        attempts=1,
        stride_ms=2,
        created_ago_ms=120_001,
    )


@dataclass(frozen=True)
class Consistency:
    released: int  # rows fully changed, each with its one `applied` audit row
    untouched: int  # rows as seeded, without any audit row
    problems: list[str]


async def consistency(conn: asyncpg.Connection) -> Consistency:
    """DBOS's rows against the audit trail, read in one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(
            """SELECT w.workflow_uuid AS id, w.status, w.deduplication_id, w.queue_name,
                      w.recovery_attempts, w.executor_id,
                      coalesce(jsonb_agg(jsonb_build_object(
                          'outcome', a.outcome, 'rule', a.rule, 'action', a.action,
                          'released', a.dedup_id_released, 'dry_run', a.dry_run))
                        FILTER (WHERE a.id IS NOT NULL), '[]'::jsonb) AS audits
                 FROM dbos.workflow_status w
                 LEFT JOIN limbo.audit a ON a.workflow_id = w.workflow_uuid
                GROUP BY w.workflow_uuid"""
        )
        strays = await conn.fetch(
            """SELECT a.id, a.workflow_id FROM limbo.audit a WHERE NOT EXISTS
                 (SELECT 1 FROM dbos.workflow_status w WHERE w.workflow_uuid = a.workflow_id)"""
        )
    problems = [f"audit row {r['id']} names unknown workflow {r['workflow_id']}" for r in strays]
    released = untouched = 0
    for r in rows:
        wid = r["id"]
        kind = wid.split("-", 1)[0]
        state = (r["status"], r["deduplication_id"], r["queue_name"], r["recovery_attempts"])
        audits = r["audits"]
        seeded: tuple[str, str | None, str | None, int]
        changed: tuple[str, str | None, str | None, int]
        entry: dict[str, Any]
        if kind == "ex":
            seeded = ("PENDING", wid, "example-queue", 5)
            changed = ("MAX_RECOVERY_ATTEMPTS_EXCEEDED", None, None, 5)
            entry = {
                "outcome": "applied",
                "rule": "exhausted",
                "action": "dead_letter",
                "released": wid,
                "dry_run": False,
            }
        elif kind == "or":
            seeded = ("PENDING", wid, "example-queue", 1)
            changed = ("ENQUEUED", wid, "example-queue", 1)
            entry = {
                "outcome": "applied",
                "rule": "orphaned",
                "action": "reenqueue",
                "released": None,
                "dry_run": False,
            }
        else:
            problems.append(f"unexpected workflow {wid}")
            continue
        if state == seeded and r["executor_id"] in ("exec-gone", "exec-dead"):
            if audits:
                problems.append(f"{wid} unchanged but audited: {audits}")
            untouched += 1
        elif state == changed:
            if audits != [entry]:
                problems.append(f"{wid} changed to {state}, audit trail {audits}")
            released += 1
        else:
            problems.append(f"{wid} in a partial or foreign state {state}, audits {audits}")
    return Consistency(released, untouched, problems)


def check(url: str) -> Consistency:
    result: Consistency = db(url, consistency)
    assert not result.problems, result.problems[:10]
    assert result.released + result.untouched == 2 * EACH
    return result


def released_at_least(url: str, count: int) -> Callable[[], bool]:
    return lambda: check(url).released >= count


def readyz(base: str) -> int | None:
    try:
        return httpx.get(f"{base}/readyz", timeout=1.0).status_code
    except httpx.HTTPError:
        return None


def test_postgres_restarted_during_sweeps(spawn: Spawn) -> None:
    started = time.monotonic()
    owned = start_owned_server()
    proc: ServiceProcess | None = None
    try:
        own = TestPostgres(base_url=owned.server.url, owned=owned)
        own.build_template()
        url = own.fresh_database("restart")
        # The throwaway server runs with synchronous_commit=off (speed): a crash would lose
        # commits already acknowledged. Production keeps it on; so does this database, so
        # that every decision the supervisor logged as applied must still be there after
        # `-m immediate`.
        db(
            url,
            lambda c: c.execute(
                f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" SET synchronous_commit = on'
            ),
        )
        assert db(url, lambda c: c.fetchval("SHOW synchronous_commit")) == "on"
        db(url, seed)
        assert check(url).untouched == 2 * EACH

        proc, base = spawn_supervisor(
            spawn,
            url,
            "restart-test",
            SUPERVISOR_POLL_INTERVAL="0.1",
            SUPERVISOR_BATCH_SIZE=str(BATCH),
        )
        proc.wait_http(f"{base}/readyz", timeout=30)

        for round_, (mode, progress) in enumerate((("fast", 400), ("immediate", 1200))):
            # Mid-sweep: some candidates released already, many still to go.
            wait_until(
                released_at_least(url, progress),
                40,
                interval=0.1,
                what=f"{progress} released before outage {round_ + 1}",
            )
            owned.server.stop(mode=mode)
            down_at = time.monotonic()
            assert not owned.server.running()
            proc.wait_http(f"{base}/readyz", status=503, timeout=15)
            body = httpx.get(f"{base}/readyz", timeout=1.0).json()
            assert body["status"] == "not_ready"
            assert "database unavailable" in body["reason"]
            # Not ready for as long as the database is away, and never gone.
            while time.monotonic() - down_at < DOWN_S:
                assert readyz(base) == 503
                time.sleep(0.1)
            assert proc.alive(), "the supervisor process exited"

            owned.server.start()
            at_restart = check(url)  # whatever the outage cut short left no trace
            assert at_restart.untouched > 0, "outage came too late: nothing left to sweep"
            proc.wait_http(f"{base}/readyz", timeout=40)
            wait_until(
                released_at_least(url, at_restart.released + 1),
                30,
                what=f"sweeping resumed after outage {round_ + 1}",
            )

        final = wait_until(
            lambda: (c := check(url)).untouched == 0 and c,
            60,
            interval=0.3,
            what="every candidate released",
        )
        assert final.released == 2 * EACH
        assert proc.alive(), "the supervisor process exited"
        assert readyz(base) == 200
        assert metric_sum(base, "limbo_supervisor_database_errors_total") >= 2
        assert proc.stop(timeout=15) == 0
        lines = proc.json_lines()
        assert sum(line.get("event") == "database_unavailable" for line in lines) >= 2
        decisions = [line for line in lines if line.get("event") == "decision"]
        # Acts are sequential: an outage can cut at most one acknowledgement short (the
        # change committed, the process never heard), and nothing is decided twice.
        assert 2 * EACH - 2 <= len(decisions) <= 2 * EACH
        assert {d["outcome"] for d in decisions} == {"applied"}
        assert len({d["workflow_id"] for d in decisions}) == len(decisions)
        # Every decision logged as applied is in the audit trail, under its audit ID.
        audits = db(url, lambda c: c.fetch("SELECT id, workflow_id FROM limbo.audit"))
        audit_ids = {a["id"]: a["workflow_id"] for a in audits}
        assert len(audit_ids) == 2 * EACH
        assert {(d["audit_id"], d["workflow_id"]) for d in decisions} <= set(audit_ids.items())
        assert time.monotonic() - started < 90
    finally:
        if proc is not None:
            proc.stop(timeout=15)
        owned.close()
