"""No false positives: 200 jobs progress and recover on two real workers while the real
supervisor sweeps continuously; no audit row ever names a workflow that was alive.

- Worker `exec-a` is the one that dies: chaos segfaults on three jobs (child 0, step 1,
  once each), then a SIGKILL of its real process in the middle of the run. Every time, a
  keeper restarts it with the SAME executor ID (a new incarnation), as supervisord or
  Kubernetes would, so DBOS's own recovery and the supervisor's `orphaned` rule race for
  the same rows while the sweeps go on.
- Worker `exec-b` is never killed. DBOS 3.4 lets every process dequeue every queue of the
  application, so a chaos job enqueued while `exec-b` runs could crash it too: the chaos
  jobs run first, on `exec-a` alone, and `exec-b` starts once all three crashes are spent.
  It then runs its own jobs and whatever it takes over from `exec-a`.
- The supervisor runs throughout with aggressive but legitimate settings: a 0.1 s poll,
  a 1 s stall timeout, a 1 s report grace; the workers keep the default lease timing
  (beat 0.25 s, grace 1 s, lease 5 s).

Then every job succeeds, every step's effect happened exactly once, and each audit row (if
any) concerns a workflow claimed by an `exec-a` incarnation that was already dead when the
row was written, with evidence naming the dead holder or the successor whose work report
omits the row.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from testkit.dbos_rows import metric_sum, spawn_supervisor
from testkit.localpg import free_port
from testkit.processes import ServiceProcess, wait_until
from testkit.worker import TERMINAL, Worker, fetch, start_worker, worker_env
from tests.conftest import Spawn

pytestmark = pytest.mark.slow

JOBS = 200
CHAOS_JOBS = 3
PHASE_1_JOBS = 30  # on exec-a alone, the chaos jobs among them
SWEEPS_OK = 'limbo_supervisor_sweeps_total{outcome="ok"}'
# A workflow in flight on exec-a at each of its deaths (up to four) counts one more
# execution each time; DBOS's default here (2) would dead-letter it, which is DBOS doing
# its job, not what this test is about.
WORKER_ENV = {
    "DEMO_CHAOS": "1",
    "DEMO_MAX_RECOVERY_ATTEMPTS": "20",
}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Incarnation:
    proc: ServiceProcess
    born_ms: int  # before the process existed: no claim of its can be older
    died_ms: int | None = None  # once it was seen dead: no claim of its can be newer
    exit_code: int | None = None


@dataclass
class Keeper:
    """Keeps one worker executor running, restarting it with the same executor ID whenever
    its process dies, and records every incarnation's lifetime (wall clock, ms)."""

    spawn: Spawn
    url: str
    executor_id: str
    port: int
    incarnations: list[Incarnation] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def current(self) -> Incarnation:
        return self.incarnations[-1]

    def _start_one(self) -> None:
        born = now_ms()
        proc = self.spawn(
            "services.worker",
            worker_env(self.url, self.port, self.executor_id, **WORKER_ENV),
            name=f"worker-{self.executor_id}-{len(self.incarnations)}",
        )
        self.incarnations.append(Incarnation(proc, born))

    def start(self) -> Keeper:
        self._start_one()
        self._thread = threading.Thread(target=self._run, name=f"keeper-{self.executor_id}")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            current = self.current
            if not current.proc.alive():
                current.died_ms = now_ms()
                current.exit_code = current.proc.wait(5)
                self._start_one()
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


@dataclass(frozen=True)
class Job:
    children: int
    steps: int
    chaos: bool = False

    def body(self, index: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "children": self.children,
            "steps": self.steps,
            "step_seconds": 0.02,
            "dedup_id": f"nfp-{index}",
        }
        if self.chaos:
            body["chaos"] = {"step": 1, "mode": "segfault", "times": 1}
        return body


def enqueue(workers: list[Worker], body: dict[str, Any], timeout: float = 60) -> str:
    """Through the first worker that answers (a restarting one does not)."""
    deadline = time.monotonic() + timeout
    while True:
        for worker in workers:
            try:
                response = worker.enqueue(**body)
            except httpx.HTTPError:
                continue
            if response.status_code == 202:
                return str(response.json()["workflow_id"])
            if response.status_code != 503:
                raise AssertionError(f"enqueue refused: {response.status_code} {response.text}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no worker accepted {body}")
        time.sleep(0.2)


def query(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in asyncio.run(fetch(url, sql, *args))]


def states(url: str, ids: list[str]) -> Counter[str]:
    rows = query(
        url,
        "SELECT status, count(*) AS n FROM dbos.workflow_status"
        " WHERE workflow_uuid = ANY($1::text[]) GROUP BY status",
        ids,
    )
    return Counter({r["status"]: r["n"] for r in rows})


def all_succeeded(url: str, ids: list[str]) -> bool:
    """True once every job succeeded; fails at once if one ended any other way."""
    counts = states(url, ids)
    failed = {status: n for status, n in counts.items() if status in TERMINAL - {"SUCCESS"}}
    assert not failed, f"jobs ended without success: {failed}"
    return counts["SUCCESS"] == len(ids)


def crashes(url: str) -> int:
    return int(query(url, "SELECT count(*) AS n FROM limbo_demo.chaos_crashes")[0]["n"])


def holding(url: str, executor_id: str, since_ms: int) -> int:
    """PENDING rows claimed by `executor_id` since `since_ms` (its current incarnation)."""
    rows = query(
        url,
        "SELECT count(*) AS n FROM dbos.workflow_status WHERE status = 'PENDING'"
        " AND executor_id = $1 AND greatest(coalesce(started_at_epoch_ms, 0), updated_at) > $2",
        executor_id,
        since_ms,
    )
    return int(rows[0]["n"])


def owner_incarnation(incarnations: list[Incarnation], claimed_ms: int) -> int:
    """The only incarnation alive when the claim was written."""
    owners = [
        i
        for i, inc in enumerate(incarnations)
        if inc.born_ms <= claimed_ms and (inc.died_ms is None or claimed_ms <= inc.died_ms)
    ]
    assert len(owners) == 1, (claimed_ms, [(x.born_ms, x.died_ms) for x in incarnations])
    return owners[0]


def test_no_false_positives_while_workflows_progress_and_recover(
    database_url: str, spawn: Spawn
) -> None:
    started = time.monotonic()
    rng = random.Random(20240611)
    jobs = [Job(rng.randint(1, 2), rng.randint(2, 3)) for _ in range(JOBS - CHAOS_JOBS)]
    chaos_jobs = [Job(2, 3, chaos=True) for _ in range(CHAOS_JOBS)]
    phase_1 = jobs[: PHASE_1_JOBS - CHAOS_JOBS] + chaos_jobs
    phase_2 = jobs[PHASE_1_JOBS - CHAOS_JOBS :]

    supervisor, base = spawn_supervisor(
        spawn,
        database_url,
        SUPERVISOR_POLL_INTERVAL="0.1",
        SUPERVISOR_REPORT_GRACE="1",
        SUPERVISOR_STALL_TIMEOUT="1",
        SUPERVISOR_VERSION_ORPHAN_AFTER="1",
    )
    supervisor.wait_http(f"{base}/readyz", timeout=30)

    keeper_a = Keeper(spawn, database_url, "exec-a", port=free_port())
    a = Worker(keeper_a.port)
    workers = [a]
    try:
        keeper_a.start()
        keeper_a.current.proc.wait_http(f"{a.base}/readyz", timeout=60)
        sweeps_before = metric_sum(base, SWEEPS_OK)
        jobs_started = time.monotonic()

        # Phase 1: exec-a alone runs the chaos jobs; each segfault kills its process.
        ids = [enqueue(workers, job.body(i)) for i, job in enumerate(phase_1)]
        wait_until(lambda: crashes(database_url) == CHAOS_JOBS, 60, what="the chaos crashes")
        # A crash is recorded before the segfault: the keeper's restart follows it.
        deadline = time.monotonic() + 20
        while len(keeper_a.incarnations) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(keeper_a.incarnations) >= 2, "no chaos crash killed exec-a"

        # Phase 2: exec-b, never killed, joins; the rest of the jobs go to both.
        b = start_worker(
            spawn,
            database_url,
            "exec-b",
            DEMO_CHAOS=WORKER_ENV["DEMO_CHAOS"],
            DEMO_MAX_RECOVERY_ATTEMPTS=WORKER_ENV["DEMO_MAX_RECOVERY_ATTEMPTS"],
        )
        workers = [a, b]
        for i, job in enumerate(phase_2, start=len(phase_1)):
            ids.append(enqueue(workers[i % 2 :] + workers[: i % 2], job.body(i)))

        # Mid-run: SIGKILL exec-a's real process while it holds workflows.
        wait_until(
            lambda: (
                states(database_url, ids)["SUCCESS"] >= PHASE_1_JOBS + 40
                and holding(database_url, "exec-a", keeper_a.current.born_ms) > 0
            ),
            60,
            interval=0.05,
            what="exec-a running part of the load",
        )
        victim = keeper_a.current
        victim.proc.signal(signal.SIGKILL)
        wait_until(lambda: victim.died_ms is not None, 10, what="the keeper to see the kill")

        wait_until(lambda: all_succeeded(database_url, ids), 90, what="every job to succeed")
        jobs_took = time.monotonic() - jobs_started
        sweeps_during = metric_sum(base, SWEEPS_OK) - sweeps_before
    finally:
        keeper_a.stop()

    # Every job, and every child workflow, succeeded.
    children = query(
        database_url,
        "SELECT workflow_uuid, parent_workflow_id, status FROM dbos.workflow_status"
        " WHERE parent_workflow_id = ANY($1::text[])",
        ids,
    )
    plan = dict(zip(ids, phase_1 + phase_2, strict=True))
    per_parent = Counter(c["parent_workflow_id"] for c in children)
    assert per_parent == {wid: job.children for wid, job in plan.items()}
    assert {c["status"] for c in children} == {"SUCCESS"}

    # Every step's effect happened exactly once (and no other effect happened at all).
    effects = query(
        database_url,
        "SELECT workflow_id, step, count(*) AS n FROM limbo_demo.step_effects GROUP BY 1, 2",
    )
    expected = {
        (c["workflow_uuid"], step)
        for c in children
        for step in range(plan[c["parent_workflow_id"]].steps)
    }
    assert {(e["workflow_id"], e["step"]) for e in effects} == expected
    assert {e["n"] for e in effects} == {1}

    # Recovery really happened: three chaos crashes and one SIGKILL, all of exec-a, and
    # workflows executed more than once.
    assert crashes(database_url) == CHAOS_JOBS
    deaths = [inc for inc in keeper_a.incarnations if inc.died_ms is not None]
    assert 2 <= len(deaths) <= CHAOS_JOBS + 1
    assert deaths[-1] is victim
    assert victim.exit_code == -signal.SIGKILL
    assert {inc.exit_code for inc in deaths[:-1]} == {-signal.SIGSEGV}
    assert b.proc.alive(), "exec-b must never die"
    retried = query(
        database_url,
        "SELECT count(*) AS n FROM dbos.workflow_status WHERE recovery_attempts > 1",
    )[0]["n"]
    assert retried > 0

    # The supervisor swept many times while the jobs ran.
    assert sweeps_during >= max(30, 2 * jobs_took), (sweeps_during, jobs_took)

    # No false positive: each audit row concerns a workflow claimed by an exec-a
    # incarnation that was already dead when the row was written.
    audits = query(database_url, "SELECT * FROM limbo.audit_entries ORDER BY id")
    for row in audits:
        evidence = json.loads(row["evidence"])
        observed = evidence["observed"]
        assert (row["rule"], row["action"]) == ("orphaned", "reenqueue"), row
        assert observed["status"] == "PENDING", row
        assert observed["executor_id"] == evidence["executor_id"] == "exec-a", row
        claimed = max(observed["started_at_epoch_ms"] or 0, observed["updated_at"])
        decided = int(row["at"].timestamp() * 1000)
        owner_index = owner_incarnation(keeper_a.incarnations, claimed)
        owner = keeper_a.incarnations[owner_index]
        assert owner.died_ms is not None, f"audit for a live incarnation's workflow: {row}"
        assert owner.died_ms <= decided, row
        if evidence["holder"] == "dead":
            assert evidence["executor_state"] in {"lost", "expired", "stopped"}, row
        else:
            # A successor's work report omitted the row: it is not the owner.
            assert evidence["holder"] == "not_listed", row
            assert evidence["executor_state"] in {"alive", "suspect"}, row
            assert any(inc.born_ms > owner.born_ms for inc in keeper_a.incarnations), row
    assert time.monotonic() - started < 120
