"""A fresh clone in a directory of mode 0700, as in root's home: `make run`, and the
PostgreSQL servers `make test` and `make bench` start.

As root, initdb and the server run as the `postgres` user, which cannot traverse such a
directory: `make run` must place its cluster where that user can reach it, say where, and
find the same cluster at the next start. Tests and benchmarks keep their throwaway servers
on tmpfs, but the wheel's binaries they also use live in the clone's .venv.

The clone is of this checkout's HEAD (commit first to test a change). It reuses .tools (uv)
through a link, and uv's cache makes its `uv sync` take seconds. Every process started in it
carries a marker in its environment; whatever is left at the end is stopped, and the
relocated cluster goes to a directory of this test's own (LIMBO_PG_RELOCATE_DIR) instead of
/var/lib/limbo, removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.localpg import (
    RELOCATE_ENV,
    SERVER_USER,
    clean_project_cluster,
    free_port,
    reap_stale_servers,
)
from testkit.processes import ROOT, ServiceProcess, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git") is None, reason="needs git"),
]

MARK = "LIMBO_PRIVATE_CLONE_TEST"  # names this test's home in every process it starts
TERMINAL = {"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}


def marked_processes(home: Path, *, skip_uid: int | None = None) -> list[int]:
    """PIDs of the processes started in the clone, whatever their process group."""
    marker = f"{MARK}={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if skip_uid is not None and entry.stat().st_uid == skip_uid:
                continue
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Clone:
    home: Path  # mode 0700
    path: Path  # the clone, inside it
    relocate: Path  # where its cluster may go
    env: dict[str, str] = field(default_factory=dict)

    def make(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "--no-print-directory", *args],
            cwd=self.path,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def localpg(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.path / ".venv" / "bin" / "python"), "-m", "testkit.localpg", command],
            cwd=self.path,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def make_run(self, log: Path, **env: str) -> ServiceProcess:
        """`make run` as a user types it, in its own process group."""
        return ServiceProcess(
            "make run", {**self.env, **env}, log, argv=["make", "run"], cwd=self.path
        ).start()

    def cleanup(self) -> None:
        """Whatever a failed test left: its processes, the cluster, throwaway servers."""
        kill_all(marked_processes(self.home, skip_uid=_server_uid()))
        with contextlib.suppress(Exception):
            clean_project_cluster(self.path)  # stops the relocated server gracefully
        reap_stale_servers()  # throwaway servers whose owner was killed above
        kill_all(marked_processes(self.home))


def _server_uid() -> int | None:
    try:
        return pwd.getpwnam(SERVER_USER).pw_uid
    except KeyError:
        return None


@pytest.fixture(scope="module")
def clone() -> Iterator[Clone]:
    home = Path(tempfile.mkdtemp(prefix="home-"))  # 0700, like /root
    relocate = Path(tempfile.mkdtemp(prefix="limbo-relocated-", dir="/var/tmp"))
    os.chmod(relocate, 0o755)  # noqa: S103 - the postgres user must traverse it
    repo = Clone(home=home, path=home / "limbo", relocate=relocate)
    repo.env = {
        MARK: str(home),
        RELOCATE_ENV: str(relocate),
        # The clone starts its own servers, whatever this run was given.
        "DATABASE_URL": "",
        "TEST_DATABASE_URL": "",
        "MAKEFLAGS": "",
    }
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo.path)], check=True)
        subprocess.run(["git", "checkout", "--quiet", "--detach", head], cwd=repo.path, check=True)
        if (ROOT / ".tools" / "bin" / "uv").exists():
            (repo.path / ".tools").symlink_to(ROOT / ".tools")
        synced = repo.make("sync", timeout=300)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        yield repo
    finally:
        repo.cleanup()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(relocate, ignore_errors=True)


def get_json(url: str) -> Any:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.json()


def stop_stack(stack: ServiceProcess, home: Path) -> None:
    """SIGTERM to make, which passes it on and waits; then nothing of the stack is left."""
    stack.stop(timeout=90)
    wait_until(lambda: not marked_processes(home), 30, what="every process of the stack to end")


@pytest.mark.timeout(180)
def test_make_run_in_a_private_clone_keeps_its_cluster_outside_across_restarts(
    clone: Clone, tmp_path: Path
) -> None:
    assert stat.S_IMODE(clone.home.stat().st_mode) == 0o700
    ports = {"WORKER_PORT": free_port(), "SUPERVISOR_PORT": free_port()}
    env = {
        **{key: str(value) for key, value in ports.items()},
        "LIMBO_PG_PORT": str(free_port()),
        "WORKER_EXECUTOR_ID": f"private-clone-{os.getpid()}",
    }
    worker = f"http://127.0.0.1:{ports['WORKER_PORT']}"
    supervisor = f"http://127.0.0.1:{ports['SUPERVISOR_PORT']}"

    started = time.monotonic()
    first = clone.make_run(tmp_path / "run-1.log", **env)
    try:
        first.wait_http(f"{worker}/readyz", timeout=90)
        first.wait_http(f"{supervisor}/readyz", timeout=60)
        ready_after = time.monotonic() - started
        body = {"children": 1, "steps": 1, "dedup_id": f"private-clone-{os.getpid()}"}
        accepted = httpx.post(f"{worker}/workflows", json=body, timeout=10)
        assert accepted.status_code == 202, accepted.text
        workflow_id = accepted.json()["workflow_id"]
        view = wait_until(
            lambda: (
                (v := get_json(f"{worker}/workflows/{workflow_id}"))["status"] in TERMINAL and v
            ),
            60,
            what="the job to finish",
        )
        assert view["status"] == "SUCCESS", view
    finally:
        stop_stack(first, clone.home)
    said = first.log_lines()
    assert "run: supervisord exited with status 0" in said, said[-20:]
    assert "run: stopping local PostgreSQL" in said

    # The cluster is outside the 0700 directory, where run_local said, and .data links there.
    link = clone.path / ".data" / "postgres"
    assert link.is_symlink()
    data_dir = Path(os.path.realpath(link))
    assert not data_dir.is_relative_to(clone.home)
    assert data_dir.is_relative_to(clone.relocate)
    assert (data_dir / "PG_VERSION").exists()
    assert any(f"the cluster goes to {data_dir} instead" in line for line in said), said[:10]
    where = clone.localpg("where")
    assert where.stdout.strip() == str(data_dir), where.stderr
    assert clone.localpg("status").stdout.strip() == "stopped"

    second = clone.make_run(tmp_path / "run-2.log", **env)
    try:
        second.wait_http(f"{worker}/readyz", timeout=90)
        second.wait_http(f"{supervisor}/readyz", timeout=60)
        kept = get_json(f"{worker}/workflows/{workflow_id}")
        assert kept["status"] == "SUCCESS", kept
    finally:
        stop_stack(second, clone.home)
    said = second.log_lines()
    assert not any("goes to" in line for line in said), said[:10]
    assert any(
        f"starting local PostgreSQL in {data_dir} (.data/postgres links there)" in line
        for line in said
    ), said[:10]
    assert "run: supervisord exited with status 0" in said

    cleaned = clone.make("clean-data", timeout=60)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert not data_dir.parent.exists()
    assert not (clone.path / ".data").exists()
    assert stat.S_IMODE(clone.home.stat().st_mode) == 0o700  # never made traversable
    print(f"PRIVATE-CLONE make run ready after {ready_after:.1f} s")


@pytest.mark.timeout(180)
def test_make_tests_and_benchs_postgres_start_in_a_private_clone(clone: Clone) -> None:
    tested = clone.make("pytest", "PYTEST_ARGS=tests/shared -q -rs", timeout=150)
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-2000:]
    if os.geteuid() == 0:  # every test ran, the wheel's too, from a mirror the server user reaches
        assert "skipped" not in tested.stdout, tested.stdout[-2000:]
        assert list(clone.relocate.glob("pgbin-*/.complete")), list(clone.relocate.iterdir())

    out = clone.home / "bench"
    # make bench passes `--size full` first; argparse keeps the last value given.
    benched = clone.make(
        "bench", f"BENCH_ARGS=--size smoke --only pg_insert --out {out}", timeout=150
    )
    assert benched.returncode == 0, benched.stdout[-3000:] + benched.stderr[-3000:]
    (result,) = json.loads((out / "latest.json").read_text())["results"]
    assert result["name"] == "pg_insert"
    assert result["size"] == "smoke"
    assert result["error"] is None
    tps = {metric["key"]: metric["value"] for metric in result["metrics"]}
    assert tps["insert_tps_max"] > 0
