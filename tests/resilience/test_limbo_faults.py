"""Resilience of the whole stack around limbo: crash loops, replaced workers, database
outages and supervisor kills, each against the real processes under supervisord."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter

import httpx

from testkit.localpg import free_port, start_owned_server
from testkit.postgres import TestPostgres
from testkit.processes import ServiceProcess, wait_until
from testkit.worker import fetch
from tests.conftest import Spawn
from tests.resilience.common import (
    audit_applied,
    effect_counts,
    job_states,
    supervisor_pids,
    wait_all_success,
    wait_states,
    worker_pid,
)
from tests.resilience.conftest import StackFactory, record
from tests.resilience.stack import process_alive

# The bound we state for releasing the seed's crash-looping job (README).
CRASH_LOOP_RELEASE_BOUND_S = 90


async def test_the_seeds_crash_loop_releases_its_dedup_id(
    stacks: StackFactory, database_url: str
) -> None:
    """6 x 5 job, dedup 6/5, step 3 segfaults every time: the worker crash-loops."""
    stack = stacks(database_url).wait_ready()
    started = time.monotonic()
    seed = stack.worker.enqueue(
        children=6,
        steps=5,
        step_seconds=0.3,
        chaos={"child": 0, "step": 3, "mode": "segfault"},
    )
    assert seed.status_code == 202, seed.text
    assert seed.json()["dedup_id"] == "6/5"
    seed_id = seed.json()["workflow_id"]
    supervisor_before = supervisor_pids(stack.run_dir)
    assert len(supervisor_before) == 1

    # Other jobs enqueued while the worker crash-loops: they must all succeed.
    others: list[str] = []
    while time.monotonic() - started < CRASH_LOOP_RELEASE_BOUND_S:
        try:
            response = stack.worker.enqueue(
                children=1, steps=1, step_seconds=0, dedup_id=f"other-{len(others)}"
            )
            if response.status_code == 202:
                others.append(response.json()["workflow_id"])
        except httpx.HTTPError:
            pass  # the worker is down between crashes
        states = await job_states(database_url, [seed_id])
        if states.get(seed_id) in {"ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "CANCELLED"}:
            break
        await asyncio.sleep(0.5)
    released_after = time.monotonic() - started
    final = (await job_states(database_url, [seed_id]))[seed_id]
    assert final in {"ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}, final
    rows = await fetch(
        database_url,
        "SELECT deduplication_id FROM dbos.workflow_status WHERE workflow_uuid = $1",
        seed_id,
    )
    assert rows[0]["deduplication_id"] is None
    crashes = await fetch(database_url, "SELECT count(*) AS n FROM limbo_demo.chaos_crashes")
    assert crashes[0]["n"] >= 3, "the worker did not crash-loop"

    stack.wait_ready(timeout=60)
    again = stack.worker.enqueue(step_seconds=0)  # a new 6/5
    assert again.status_code == 202, again.text
    assert others, "no other job was accepted during the crash loop"
    await wait_all_success(database_url, [*others, again.json()["workflow_id"]], timeout=120)
    # The sidecar stayed up, untouched, the whole time.
    assert supervisor_pids(stack.run_dir) == supervisor_before
    record(
        "seed_crash_loop",
        "pass",
        crashes=crashes[0]["n"],
        final=final,
        dedup_released_s=round(released_after, 1),
        bound_s=CRASH_LOOP_RELEASE_BOUND_S,
        other_jobs_ok=len(others),
    )


async def test_a_replaced_worker_takes_over_the_orphaned_jobs(
    stacks: StackFactory, database_url: str
) -> None:
    """The node dies (every process SIGKILLed); its replacement has a new executor ID."""
    old = stacks(database_url, name="old", WORKER_EXECUTOR_ID="exec-old").wait_ready()
    ids = []
    for i in range(8):
        response = old.worker.enqueue(children=1, steps=20, step_seconds=0.2, dedup_id=f"r-{i}")
        assert response.status_code == 202
        ids.append(response.json()["workflow_id"])
    await wait_states(database_url, ids, lambda counts: counts["PENDING"] >= 4, timeout=30)
    old.kill()  # SIGKILL: supervisord, relays, worker, supervisor alike
    killed_at = time.monotonic()
    pending = await fetch(
        database_url,
        "SELECT count(*) AS n FROM dbos.workflow_status"
        " WHERE workflow_uuid = ANY($1) AND status = 'PENDING' AND executor_id = 'exec-old'",
        ids,
    )
    assert pending[0]["n"] >= 1

    new = stacks(database_url, name="new", WORKER_EXECUTOR_ID="exec-new").wait_ready()
    seconds = await wait_all_success(database_url, ids, timeout=120)
    took_over = time.monotonic() - killed_at
    owners = await fetch(
        database_url,
        "SELECT DISTINCT executor_id FROM dbos.workflow_status WHERE workflow_uuid = ANY($1)",
        ids,
    )
    assert {r["executor_id"] for r in owners} == {"exec-new"}
    applied = await audit_applied(database_url)
    assert {a["rule"] for a in applied} <= {"orphaned"}
    assert len(applied) >= pending[0]["n"]
    counts = await effect_counts(database_url, ids)
    assert len(counts) == 8 * 20
    assert new.worker.http.get("/readyz").status_code == 200
    record(
        "replaced_worker_new_executor",
        "pass",
        orphaned=pending[0]["n"],
        all_done_after_kill_s=round(took_over, 1),
        finish_s=round(seconds, 1),
    )


async def test_postgres_stopped_10s_mid_load(pg: TestPostgres, stacks: StackFactory) -> None:
    """The supervisor stays up (not ready meanwhile); the worker, unable to keep its lease
    without the database, fences itself (exit 75) and supervisord restarts it; both are
    ready again, no job is lost, no effect happens twice, and the supervisor acted only on
    work of the fenced incarnation."""
    owned = start_owned_server()
    try:
        own = TestPostgres(base_url=owned.server.url, owned=owned)
        own.build_template()
        database_url = own.fresh_database("outage")
        stack = stacks(database_url).wait_ready()
        ids = []
        for i in range(30):
            response = stack.worker.enqueue(
                children=1, steps=6, step_seconds=0.2, dedup_id=f"o-{i}"
            )
            assert response.status_code == 202
            ids.append(response.json()["workflow_id"])
        await asyncio.sleep(2)
        worker_before = await worker_pid(stack)
        supervisor_before = supervisor_pids(stack.run_dir)
        assert worker_before is not None

        owned.server.stop(mode="fast")
        down_at = time.monotonic()

        def both_not_ready() -> bool:
            w = stack.worker.http.get("/readyz").status_code
            s = stack.supervisor.get("/readyz").status_code
            return w == 503 and s == 503

        wait_until(both_not_ready, 10, what="both services to report not ready")
        await asyncio.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
        owned.server.start()
        stack.wait_ready(timeout=90)
        recovered = time.monotonic() - down_at

        assert not process_alive(worker_before), "a worker without its lease kept running"
        fenced = [
            line
            for line in stack.log_lines()
            if '"lease_fenced"' in line or "fencing executor" in line
        ]
        assert fenced, "the worker exited without fencing itself"
        worker_after = await worker_pid(stack)
        assert worker_after is not None
        assert worker_after != worker_before
        assert supervisor_pids(stack.run_dir) == supervisor_before
        await wait_all_success(database_url, ids, timeout=180)
        counts = await effect_counts(database_url, ids)
        assert len(counts) == 30 * 6
        assert set(counts) == {1}
        # Every handover (if any) concerns work the fenced incarnation had claimed.
        actions = await audit_applied(database_url)
        assert {(a["rule"], a["action"]) for a in actions} <= {("orphaned", "reenqueue")}
        for audit in await fetch(database_url, "SELECT evidence FROM limbo.audit_entries"):
            evidence = json.loads(audit["evidence"])  # asyncpg returns jsonb as text
            if evidence["holder"] == "dead":
                assert evidence["pid"] == worker_before, evidence  # the fenced incarnation
            else:
                assert evidence["holder"] == "not_listed", evidence
        record(
            "postgres_down_10s",
            "pass",
            ready_again_after_s=round(recovered, 1),
            jobs=30,
            lost=0,
            worker_fenced=True,
            supervisor_actions=len(actions),
        )
    finally:
        owned.close()


async def test_supervisor_sigkilled_repeatedly_while_two_run(
    stacks: StackFactory, database_url: str, spawn: Spawn
) -> None:
    """Two supervisors (one under supervisord, one standalone); the leader is SIGKILLed
    again and again while in-limbo rows keep appearing. Exactly one acts on each row."""
    poll = 0.5
    stack = stacks(database_url, SUPERVISOR_POLL_INTERVAL=str(poll)).wait_ready()

    def start_standalone() -> tuple[ServiceProcess, str]:
        port = free_port()
        proc = spawn(
            "services.supervisor",
            {
                "DATABASE_URL": database_url,
                "SUPERVISOR_PORT": str(port),
                "SUPERVISOR_HOST": "127.0.0.1",
                "SUPERVISOR_POLL_INTERVAL": str(poll),
                "LOG_FORMAT": "json",
            },
            name=f"standalone-{port}",
        )
        base = f"http://127.0.0.1:{port}"
        proc.wait_http(f"{base}/healthz", timeout=30)
        return proc, base

    standalone, standalone_base = start_standalone()

    def role(base: str) -> str | None:
        try:
            return str(httpx.get(f"{base}/readyz", timeout=2).json().get("role"))
        except (httpx.HTTPError, ValueError):
            return None

    stack_base = str(stack.supervisor.base_url).rstrip("/")
    takeovers: list[float] = []
    created = 0
    for round_ in range(6):
        # New in-limbo rows: exhausted (4 attempts, limit 2+1) on an unknown executor.
        for _ in range(20):
            created += 1
            await fetch(
                database_url,
                "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, executor_id,"
                " application_version, recovery_attempts, queue_name, deduplication_id,"
                " created_at, updated_at) VALUES ($1, 'PENDING', 'limbo.job', 'gone', '0.1.0',"
                " 4, 'example-queue', $1, 0, 0) RETURNING 1",
                f"limbo-{created}",
            )

        def current_leader(bases: tuple[str, str] = (stack_base, standalone_base)) -> str | None:
            return next((b for b in bases if role(b) == "leader"), None)

        leader_base: str = wait_until(current_leader, 10, what="a leader")
        other = standalone_base if leader_base == stack_base else stack_base
        if leader_base == stack_base:
            pids = supervisor_pids(stack.run_dir)
            assert len(pids) == 1
            os.kill(pids[0], signal.SIGKILL)
        else:
            standalone.kill()
        killed = time.monotonic()

        def standby_leads(base: str = other) -> bool:
            return role(base) == "leader"

        wait_until(standby_leads, 10, what="the standby to lead")
        takeovers.append(time.monotonic() - killed)
        if leader_base != stack_base:
            standalone, standalone_base = start_standalone()
        else:
            stack.wait_ready(timeout=60)  # supervisord restarts the killed sidecar
        del round_

    async def all_released() -> bool:
        rows = await fetch(
            database_url,
            "SELECT count(*) AS n FROM dbos.workflow_status"
            " WHERE workflow_uuid LIKE 'limbo-%' AND status = 'PENDING'",
        )
        return bool(rows[0]["n"] == 0)

    deadline = time.monotonic() + 30
    while not await all_released():
        assert time.monotonic() < deadline, "rows left in limbo"
        await asyncio.sleep(0.5)
    applied = await audit_applied(database_url)
    per_workflow = Counter(str(a["workflow_id"]) for a in applied)
    assert len(per_workflow) == created
    assert max(per_workflow.values()) == 1, "a workflow was acted on twice"
    # Within one poll of the kill (plus the time to observe it over HTTP).
    assert max(takeovers) <= poll + 1.5, takeovers
    record(
        "supervisor_sigkill_repeated",
        "pass",
        kills=len(takeovers),
        double_actions=0,
        max_takeover_s=round(max(takeovers), 2),
        poll_s=poll,
    )
