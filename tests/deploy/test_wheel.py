"""`uv build` makes a wheel that installs with pip into a clean virtualenv from a local
wheelhouse (no index), and whose console scripts work: `limbo-worker` serves the demo job,
`limbo-supervisor serve` runs the sidecar, `limbo-supervisor scan` talks to the database;
`import limbo` is there, the test kit is not."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from testkit.localpg import free_port
from testkit.processes import ROOT, wait_until
from testkit.wheelhouse import ensure_wheelhouse
from tests.conftest import Spawn


def run(*argv: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{argv}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


def test_the_wheel_installs_offline_and_its_commands_work(
    tmp_path: Path, database_url: str, spawn: Spawn
) -> None:
    dist = tmp_path / "dist"
    run(str(ROOT / ".tools" / "bin" / "uv"), "build", "--wheel", "--out-dir", str(dist), "--quiet")
    [wheel] = dist.glob("limbo-*.whl")
    wheels = ensure_wheelhouse(ROOT / ".data" / "wheelhouse")
    python = shutil.which("python3.11") or sys.executable
    venv = tmp_path / "venv"
    run(python, "-m", "venv", str(venv))
    pip = str(venv / "bin" / "pip")
    run(pip, "install", "--quiet", "--no-index", "--find-links", str(wheels), str(wheel))

    probe = run(
        str(venv / "bin" / "python"),
        "-c",
        "import importlib.util, limbo;"
        "print(limbo.protect.__name__, importlib.util.find_spec('testkit') is None)",
        cwd=tmp_path,
    )
    assert probe.stdout.split() == ["protect", "True"]
    assert "scan" in run(str(venv / "bin" / "limbo-supervisor"), "--help", cwd=tmp_path).stdout
    scan = subprocess.run(
        [str(venv / "bin" / "limbo-supervisor"), "scan", "--database-url", database_url],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert scan.returncode == 0, scan.stderr
    assert "no workflow in limbo" in scan.stdout

    worker_port, supervisor_port = free_port(), free_port()
    env = {"DATABASE_URL": database_url, "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}
    worker = spawn(
        "limbo-worker",
        {**env, "WORKER_PORT": str(worker_port), "WORKER_HOST": "127.0.0.1",
         "WORKER_EXECUTOR_ID": "wheel-1", "DEMO_STEP_SECONDS": "0.01"},
        name="wheel-worker",
        argv=[str(venv / "bin" / "limbo-worker")],
    )  # fmt: skip
    supervisor = spawn(
        "limbo-supervisor",
        {**env, "SUPERVISOR_PORT": str(supervisor_port), "SUPERVISOR_HOST": "127.0.0.1"},
        name="wheel-supervisor",
        argv=[str(venv / "bin" / "limbo-supervisor"), "serve"],
    )
    worker.wait_http(f"http://127.0.0.1:{worker_port}/readyz", timeout=60)
    supervisor.wait_http(f"http://127.0.0.1:{supervisor_port}/readyz", timeout=60)
    base = f"http://127.0.0.1:{worker_port}"
    job = httpx.post(f"{base}/workflows", json={"children": 1, "steps": 1, "dedup_id": "wheel"})
    assert job.status_code == 202, job.text
    workflow_id = job.json()["workflow_id"]
    wait_until(
        lambda: httpx.get(f"{base}/workflows/{workflow_id}").json()["status"] == "SUCCESS",
        60,
        what="the job to succeed on the installed worker",
    )
    for proc in (worker, supervisor):
        proc.signal(signal.SIGTERM)
        assert proc.wait(40) == 0
