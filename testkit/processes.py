"""Real service processes for tests: started with `python -m`, killed with real signals.

Each process runs in its own process group, its stdout goes to a file the test can read
line by line, and it is registered with the PostgreSQL watchdog so that a killed test run
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


class ServiceProcess:
    def __init__(
        self,
        module: str,
        env: Mapping[str, str],
        log_path: Path,
        *,
        on_start: Callable[[int], None] | None = None,
        on_exit: Callable[[int], None] | None = None,
        argv: Sequence[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        """`python -m module` from the project, or `argv` (then `module` only names it) from
        `cwd`."""
        self.module = module
        self.argv = list(argv) if argv else [sys.executable, "-m", module]
        self.cwd = cwd or ROOT
        self.env = dict(env)
        self.log_path = log_path
        self._on_start = on_start
        self._on_exit = on_exit
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServiceProcess:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        if self._on_start:
            self._on_start(self.proc.pid)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        if self._on_exit:
            self._on_exit(self.pid)
        return code

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL of the whole group if it does not exit in time."""
        if self.proc is None:
            return None
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(10)

    def log_lines(self) -> list[str]:
        if not self.log_path.exists():
            return []
        return self.log_path.read_text(errors="replace").splitlines()

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_lines() if line.strip()]

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_lines()[-lines:])

    def raise_if_exited(self, waiting_for: str = "", lines: int = 30) -> None:
        """RuntimeError with the log's tail if the process has ended (a wait that would
        only time out should say why at once)."""
        if not self.alive():
            during = f" while waiting for {waiting_for}" if waiting_for else ""
            raise RuntimeError(
                f"{self.module} exited ({self.proc and self.proc.poll()}){during}:\n"
                f"{self.log_tail(lines)}"
            )

    def wait_line(self, text: str, timeout: float = 30.0) -> str:
        """Poll the log until a line contains `text`; fail early if the process died, and
        with the log's tail either way (what a flaky start needs to be understood)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in self.log_lines() if text in line), None)
            if found is not None:
                return found
            self.raise_if_exited(repr(text))
            time.sleep(0.2)
        raise TimeoutError(f"{self.module} logged no {text!r} in {timeout}s:\n{self.log_tail()}")

    def wait_http(self, url: str, timeout: float = 30.0, status: int = 200) -> httpx.Response:
        """Poll `url` until it answers `status`; fail early if the process died."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            self.raise_if_exited(url)
            try:
                response = httpx.get(url, timeout=2.0)
                if response.status_code == status:
                    return response
                last = response.status_code
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(
            f"{url} not {status} after {timeout}s (last: {last}):\n{self.log_tail()}"
        )


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = ""
) -> Any:
    """Poll until `predicate()` is truthy; return its value or raise with `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)
