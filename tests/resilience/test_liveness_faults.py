"""Partial faults against the liveness protocol (docs/LIVENESS.md), with real worker
processes, the real supervisor sweeping continuously at its defaults, and a real PostgreSQL.

Each scenario shows that its fault really happened (a control), and asserts: no audit row
acts on a workflow while the process holding it was still running it unfenced; the job
ends SUCCESS; every step effect happened exactly once. Workers run with a 3 s lease (so
"3x the lease" is 9 s), the default 1 s grace and 0.25 s beat.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from services.shared.dsn import asyncpg_dsn
from testkit.dbos_rows import spawn_supervisor
from testkit.processes import ServiceProcess, wait_until
from testkit.tcp_proxy import TcpProxy
from testkit.worker import TERMINAL, Worker, fetch, start_worker
from tests.conftest import Spawn
from tests.resilience.conftest import record

LEASE_S = 3.0
WORKER_ENV: dict[str, str] = {
    "LIMBO_LEASE": str(LEASE_S),
    "DEMO_CHAOS": "1",
    "DEMO_MAX_RECOVERY_ATTEMPTS": "10",
}
FENCED = 75
APP = Path(__file__).resolve().parents[1] / "client" / "python_app" / "limbo_app.py"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Deaths:
    """Watches processes and records when each one died (wall clock, ms)."""

    procs: dict[int, ServiceProcess] = field(default_factory=dict)
    died_ms: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def watch(self, *procs: ServiceProcess) -> None:
        for proc in procs:
            self.procs[proc.pid] = proc

    def __post_init__(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            for pid, proc in list(self.procs.items()):
                if pid not in self.died_ms and not proc.alive():
                    self.died_ms[pid] = now_ms()

    def stop(self) -> None:
        self._stop.set()


async def job_children(url: str, parent: str) -> list[str]:
    rows = await fetch(
        url, "SELECT workflow_uuid FROM dbos.workflow_status WHERE parent_workflow_id = $1", parent
    )
    return [r["workflow_uuid"] for r in rows]


async def holder(url: str, workflow_id: str) -> str | None:
    rows = await fetch(
        url,
        "SELECT executor_id FROM dbos.workflow_status "
        "WHERE workflow_uuid = $1 AND status = 'PENDING'",
        workflow_id,
    )
    return rows[0]["executor_id"] if rows else None


async def effects(url: str, parent: str) -> list[dict[str, Any]]:
    rows = await fetch(
        url,
        "SELECT e.workflow_id, e.step, e.pid, e.executor_id, "
        "(extract(epoch FROM e.at) * 1000)::bigint AS at_ms FROM limbo_demo.step_effects e "
        "WHERE e.workflow_id LIKE $1 ORDER BY e.id",
        parent + "%",
    )
    return [dict(r) for r in rows]


async def applied(url: str) -> list[dict[str, Any]]:
    rows = await fetch(
        url,
        "SELECT workflow_id, rule, action, evidence, (extract(epoch FROM at) * 1000)::bigint "
        "AS at_ms FROM limbo.audit_entries WHERE outcome = 'applied' ORDER BY id",
    )
    return [{**dict(r), "evidence": _json(r["evidence"])} for r in rows]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def check_outcome(
    url: str, parent: str, steps: int, deaths: Deaths, *, frozen_pid: int | None = None
) -> list[dict[str, Any]]:
    """The three things every scenario asserts; returns the applied audit rows."""
    status = (
        await fetch(url, "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = $1", parent)
    )[0]
    assert status["status"] == "SUCCESS", status
    done = await effects(url, parent)
    counts: dict[tuple[str, int], int] = {}
    for e in done:
        counts[(e["workflow_id"], e["step"])] = counts.get((e["workflow_id"], e["step"]), 0) + 1
    assert len(counts) == steps, counts
    assert set(counts.values()) == {1}, counts
    actions = await applied(url)
    for action in actions:
        evidence = action["evidence"]
        pid = evidence.get("pid")
        if evidence.get("holder") != "dead" or pid == frozen_pid:
            continue
        # The holder had stopped running anything before the handover was written.
        died = deaths.died_ms.get(pid)
        assert died is not None, (action, deaths.died_ms)
        assert died <= action["at_ms"], (action, deaths.died_ms)
    return actions


async def wait_terminal(worker: Worker, url: str, workflow_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rows = await fetch(
            url, "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = $1", workflow_id
        )
        if rows and rows[0]["status"] in TERMINAL:
            return
        assert time.monotonic() < deadline, f"{workflow_id} unfinished after {timeout}s"
        await asyncio.sleep(0.2)


def long_job(worker: Worker, dedup: str, steps: int = 16, **extra: Any) -> str:
    response = worker.enqueue(children=1, steps=steps, step_seconds=1.0, dedup_id=dedup, **extra)
    assert response.status_code == 202, response.text
    return str(response.json()["workflow_id"])


async def wait_running_on(url: str, parent: str, executor_id: str, steps_done: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        done = await effects(url, parent)
        if len(done) >= steps_done and await holder(url, parent) == executor_id:
            return
        assert time.monotonic() < deadline, "the job never ran on its first worker"
        await asyncio.sleep(0.2)


async def test_a_slow_heartbeat_write_fences_the_worker_before_its_work_moves(
    database_url: str, spawn: Spawn
) -> None:
    """The lease row locked by another transaction for 3x the lease: the beat waits, the
    worker cannot renew, fences itself before its lease ends; only then does its job move."""
    supervisor, _ = spawn_supervisor(spawn, database_url)
    a = start_worker(spawn, database_url, "exec-a", env=WORKER_ENV)
    deaths = Deaths()
    deaths.watch(a.proc)
    parent = long_job(a, "slow-write")
    await wait_running_on(database_url, parent, "exec-a", 2)
    b = start_worker(spawn, database_url, "exec-b", env=WORKER_ENV)
    deaths.watch(b.proc)
    locker = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with locker.transaction():
            await locker.execute(
                "SELECT 1 FROM limbo.executors WHERE executor_id = 'exec-a' FOR UPDATE"
            )
            locked_at = time.monotonic()
            await asyncio.sleep(1.5)
            # Control: the fault is real, the lease is not renewed.
            age = await locker.fetchval(
                "SELECT extract(epoch FROM clock_timestamp() - last_seen_at) FROM limbo.executors "
                "WHERE executor_id = 'exec-a'"
            )
            assert age > 1.2, age
            while time.monotonic() - locked_at < 3 * LEASE_S:
                await asyncio.sleep(0.2)
    finally:
        await locker.close()
    assert a.proc.wait(20) == FENCED
    await wait_terminal(b, database_url, parent, 90)
    actions = await check_outcome(database_url, parent, 16, deaths)
    assert any(x["evidence"]["holder"] == "dead" for x in actions)
    assert b.proc.alive()
    assert supervisor.alive()
    record(
        "slow_heartbeat_write", "pass", locked_s=3 * LEASE_S, fenced=True, handovers=len(actions)
    )
    deaths.stop()


async def test_the_lease_connection_killed_again_and_again_moves_nothing(
    database_url: str, spawn: Spawn
) -> None:
    """pg_terminate_backend of the worker's lease connection, six times during a long job:
    it reconnects within the grace each time; nothing is handed over."""
    supervisor, _ = spawn_supervisor(spawn, database_url)
    a = start_worker(spawn, database_url, "exec-a", env=WORKER_ENV)
    deaths = Deaths()
    deaths.watch(a.proc)
    parent = long_job(a, "killed-conn", steps=12)
    await wait_running_on(database_url, parent, "exec-a", 1)
    killed = 0
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        for _ in range(6):
            killed += await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'limbo-lease:exec-a'"
            )
            await asyncio.sleep(1.5)
    finally:
        await conn.close()
    assert killed == 6  # control: each kill hit a live lease connection
    reconnects = [line for line in a.proc.json_lines() if line.get("event") == "lease_reconnected"]
    assert len(reconnects) >= 6
    await wait_terminal(a, database_url, parent, 60)
    actions = await check_outcome(database_url, parent, 12, deaths)
    assert actions == [], actions
    assert a.proc.alive()
    assert supervisor.alive()
    record("lease_connection_killed", "pass", kills=killed, handovers=0)
    deaths.stop()


async def test_a_worker_cut_off_from_the_database_fences_and_its_job_moves_once(
    database_url: str, spawn: Spawn
) -> None:
    """Worker A reaches PostgreSQL through a TCP proxy, cut for 3x the lease: A cannot
    re-register, fences itself within the grace; its job moves to B once, nothing twice."""
    supervisor, _ = spawn_supervisor(spawn, database_url)
    proxy, via_proxy = TcpProxy.for_url(database_url)
    try:
        a = start_worker(spawn, via_proxy, "exec-a", env=WORKER_ENV)
        deaths = Deaths()
        deaths.watch(a.proc)
        parent = long_job(a, "cut")
        await wait_running_on(database_url, parent, "exec-a", 2)
        b = start_worker(spawn, database_url, "exec-b", env=WORKER_ENV)
        deaths.watch(b.proc)
        proxy.cut()
        cut_at = now_ms()
        await asyncio.sleep(3 * LEASE_S)
        proxy.restore()
        assert a.proc.wait(10) == FENCED
        fenced_after_ms = deaths.died_ms[a.proc.pid] - cut_at
        lost = [
            line for line in a.proc.json_lines() if line.get("event") == "lease_connection_lost"
        ]
        assert lost, "control: A never saw its connection go"
        await wait_terminal(b, database_url, parent, 90)
        actions = await check_outcome(database_url, parent, 16, deaths)
        assert [x["workflow_id"] for x in actions if x["rule"] == "orphaned"], actions
        # Handed over once: each workflow at most one handover.
        ids = [x["workflow_id"] for x in actions]
        assert len(ids) == len(set(ids)), ids
        assert supervisor.alive()
        record(
            "network_cut",
            "pass",
            cut_s=3 * LEASE_S,
            fenced_after_ms=fenced_after_ms,
            handovers=len(ids),
        )
        deaths.stop()
    finally:
        proxy.close()


async def test_a_frozen_interpreter_is_handed_over_after_its_lease_and_writes_nothing_after(
    database_url: str, spawn: Spawn
) -> None:
    """The GIL held 10 s in a C call: the worker can neither beat nor fence. A handover
    after its lease expired is right; when it thaws, DBOS's fencing token and the fencer
    keep it from writing anything the new owner's run contradicts."""
    _supervisor, _ = spawn_supervisor(spawn, database_url)
    a = start_worker(spawn, database_url, "exec-a", env=WORKER_ENV)
    deaths = Deaths()
    deaths.watch(a.proc)
    parent = long_job(a, "frozen", steps=8, chaos={"step": 3, "mode": "freeze", "times": 1})
    await wait_running_on(database_url, parent, "exec-a", 2)
    b = start_worker(spawn, database_url, "exec-b", env=WORKER_ENV)
    deaths.watch(b.proc)
    frozen_pid = a.proc.pid
    wait_until(
        lambda: any(line.get("event") == "chaos" for line in a.proc.json_lines()),
        30,
        what="the freeze",
    )
    await wait_terminal(b, database_url, parent, 120)
    assert a.proc.wait(30) == FENCED  # it thawed, found its lease gone, and fenced itself
    actions = await check_outcome(database_url, parent, 8, deaths, frozen_pid=frozen_pid)
    handovers = [x for x in actions if x["evidence"].get("pid") == frozen_pid]
    assert handovers, actions
    assert {x["evidence"]["executor_state"] for x in handovers} == {"expired"}
    # Nothing the frozen process did after the handover survived.
    first_handover = min(x["at_ms"] for x in handovers)
    late = [
        e
        for e in await effects(database_url, parent)
        if e["pid"] == frozen_pid and e["at_ms"] > first_handover
    ]
    assert late == [], late
    record("frozen_interpreter", "pass", frozen_s=10, handovers=len(handovers), late_writes=0)
    deaths.stop()


def start_plain_app(spawn: Spawn, url: str, executor_id: str, **env: str) -> ServiceProcess:
    """The third-party app without `limbo.protect()`: it takes no part in the contract."""
    return spawn(
        "limbo_app",
        {"DATABASE_URL": url, "LIMBO_PROTECT": "0", **env},
        name=f"plain-{executor_id}-{now_ms()}",
        argv=[sys.executable, str(APP), executor_id],
    )


async def test_apps_that_do_not_heartbeat_are_judged_by_progress_never_by_claim_age(
    database_url: str, spawn: Spawn
) -> None:
    """The opt-in `stalled` rule beside a non-heartbeating app with a long workflow (1 s
    steps, far longer in all than the stall timeout): nothing moves while it progresses;
    once its process is gone, its job moves after the stall timeout, and finishes."""
    supervisor, _ = spawn_supervisor(
        spawn, database_url, SUPERVISOR_ENABLE_RULES="stalled", SUPERVISOR_STALL_TIMEOUT="4"
    )
    first = start_plain_app(
        spawn, database_url, "plain-a", ENQUEUE="plain-1", STEPS="14", STEP_SECONDS="1"
    )
    line = wait_until(
        lambda: next((x for x in first.log_lines() if x.startswith("enqueued ")), None), 60
    )
    workflow_id = str(line.split()[1])
    deadline = time.monotonic() + 30
    while await holder(database_url, workflow_id) != "plain-a":  # claimed by the first app
        assert time.monotonic() < deadline, "plain-a never claimed its job"
        await asyncio.sleep(0.1)
    second = start_plain_app(spawn, database_url, "plain-b")
    await asyncio.sleep(8)  # twice the stall timeout, with a checkpoint every second
    assert await applied(database_url) == []
    registered = await fetch(database_url, "SELECT executor_id FROM limbo.executors")
    assert registered == []  # control: these apps take no part in the contract
    first.signal(signal.SIGKILL)
    first.wait(10)
    deadline = time.monotonic() + 60
    while True:
        rows = await fetch(
            database_url,
            "SELECT status, executor_id FROM dbos.workflow_status WHERE workflow_uuid = $1",
            workflow_id,
        )
        if rows[0]["status"] == "SUCCESS":
            break
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.3)
    assert rows[0]["executor_id"] == "plain-b"
    actions = await applied(database_url)
    assert [(x["rule"], x["action"]) for x in actions] == [("stalled", "reenqueue")]
    assert second.alive()
    assert supervisor.alive()
    record("non_heartbeating_app", "pass", handovers_while_alive=0, handovers_after_kill=1)


async def test_a_claim_its_live_executor_does_not_run_is_taken_over(
    database_url: str, spawn: Spawn
) -> None:
    """dbos-transact-py #804's end state: a PENDING row claimed under executor ID exec-a by
    a draining incarnation that then died, while exec-a's live incarnation (really running,
    reporting its work) does not run it. Today it would stay PENDING forever."""
    supervisor, _ = spawn_supervisor(spawn, database_url)
    a = start_worker(spawn, database_url, "exec-a", env=WORKER_ENV)
    live = long_job(a, "keeps-running", steps=14)
    await wait_running_on(database_url, live, "exec-a", 1)
    orphan = a.enqueue(children=1, steps=2, step_seconds=0.1, dedup_id="drained")
    orphan_id = str(orphan.json()["workflow_id"])
    await wait_terminal(a, database_url, orphan_id, 30)
    # Back to how the draining process left it: PENDING under exec-a, claimed 10 s ago.
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(
            "UPDATE dbos.workflow_status SET status = 'PENDING', executor_id = 'exec-a', "
            "deduplication_id = 'drained', output = NULL, completed_at = NULL, "
            "updated_at = (extract(epoch FROM now()) * 1000)::bigint - 10000, "
            "started_at_epoch_ms = (extract(epoch FROM now()) * 1000)::bigint - 10000 "
            "WHERE workflow_uuid = $1",
            orphan_id,
        )
        await conn.execute("DELETE FROM dbos.operation_outputs WHERE workflow_uuid = $1", orphan_id)
        # The report lags the orphan's end by up to a beat: wait for the beat that drops it.
        deadline = time.monotonic() + 5
        while True:
            report = await conn.fetchval(
                "SELECT running FROM limbo.executors WHERE executor_id = 'exec-a'"
            )
            if orphan_id not in report or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert live in report
        assert orphan_id not in report
    finally:
        await conn.close()
    await wait_terminal(a, database_url, orphan_id, 30)
    actions = await applied(database_url)
    assert [(x["workflow_id"], x["evidence"]["holder"]) for x in actions] == [
        (orphan_id, "not_listed")
    ]
    await wait_terminal(a, database_url, live, 60)
    statuses = await fetch(
        database_url,
        "SELECT workflow_uuid, status FROM dbos.workflow_status WHERE workflow_uuid = ANY($1)",
        [live, orphan_id],
    )
    assert {r["status"] for r in statuses} == {"SUCCESS"}
    assert a.proc.alive()
    assert supervisor.alive()
    record("claim_not_run_by_live_executor", "pass", handovers=1)
