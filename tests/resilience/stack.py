"""The whole stack as production runs it: supervisord with deploy/supervisord.conf,
running the worker and the supervisor sidecar, against a real PostgreSQL.

Faults are injected into the real processes: the worker's own PID (from its heartbeat
row, not the relay supervisord started) gets SIGKILL; the stack gets SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from testkit.localpg import free_port
from testkit.processes import ROOT, ServiceProcess, wait_until
from testkit.worker import Worker

CONFIG = ROOT / "deploy" / "supervisord.conf"


class Stack:
    def __init__(
        self,
        database_url: str,
        run_dir: Path,
        *,
        on_start: Callable[[int], None] | None = None,
        on_exit: Callable[[int], None] | None = None,
        **env: str,
    ) -> None:
        self.database_url = database_url
        self.run_dir = run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.worker_port = free_port()
        self.supervisor_port = free_port()
        self.executor_id = env.get("WORKER_EXECUTOR_ID", "exec-stack")
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "LIMBO_RUN_DIR": str(run_dir),
            "DATABASE_URL": database_url,
            "WORKER_PORT": str(self.worker_port),
            "WORKER_HOST": "127.0.0.1",
            "WORKER_EXECUTOR_ID": self.executor_id,
            "DEMO_CHAOS": "1",
            "DEMO_STEP_SECONDS": "0.02",
            "DEMO_SLEEP_SECONDS": "0.01",
            "WORKER_SHUTDOWN_TIMEOUT": "10",
            "SUPERVISOR_PORT": str(self.supervisor_port),
            "SUPERVISOR_HOST": "127.0.0.1",
            "SUPERVISOR_POLL_INTERVAL": "0.5",
            "LOG_FORMAT": "json",
            **env,
        }
        self.log_path = run_dir / "stdout.log"
        self.supervisord = ServiceProcess(
            "supervisord",
            self.env,
            self.log_path,
            on_start=on_start,
            on_exit=on_exit,
            argv=[sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(CONFIG)],
        )
        self.worker = Worker(self.worker_port)
        self.supervisor = httpx.Client(
            base_url=f"http://127.0.0.1:{self.supervisor_port}", timeout=10
        )

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> Stack:
        self.supervisord.start()
        return self

    def wait_ready(self, timeout: float = 90.0) -> Stack:
        def ready() -> bool:
            self._check_alive()
            try:
                return (
                    httpx.get(f"{self.worker.base}/readyz", timeout=2).status_code == 200
                    and self.supervisor.get("/readyz", timeout=2).status_code == 200
                )
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, interval=0.3, what="worker and supervisor ready")
        return self

    def _check_alive(self) -> None:
        if self.supervisord.proc is not None and not self.supervisord.alive():
            tail = "\n".join(self.log_lines()[-40:])
            code = self.supervisord.proc.returncode
            raise RuntimeError(f"supervisord exited with {code}:\n{tail}")

    def terminate(self, timeout: float = 90.0) -> int:
        """SIGTERM to supervisord (PID 1 in a container): graceful stop of everything."""
        self.supervisord.signal(signal.SIGTERM)
        try:
            return self.supervisord.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        self.supervisord.kill()
        # Programs run in their own process groups under supervisord: end them too.
        for pid, _ in processes_of_run(self.run_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        if self.supervisord.alive():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.terminate(timeout=60)
        self.kill()
        self.worker.http.close()
        self.supervisor.close()

    # -- observation ---------------------------------------------------------------
    def log_lines(self) -> list[str]:
        return self.supervisord.log_lines()

    def json_lines(self) -> list[dict[str, Any]]:
        return self.supervisord.json_lines()

    def ctl(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(CONFIG), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.stdout


def processes_of_run(run_dir: Path) -> list[tuple[int, list[bytes]]]:
    """Processes (PID, command line) whose environment names this stack's run directory:
    ours, by construction, whatever process group supervisord gave them."""
    marker = f"LIMBO_RUN_DIR={run_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append((int(entry.name), cmdline))
    return found


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    return wait_until(predicate, timeout, interval=0.2, what=what)


def now() -> float:
    return time.monotonic()
