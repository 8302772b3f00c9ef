"""Run the real deploy/supervisord.conf with stand-in programs (tests/deploy/stub_program.py).

Only each program's final command (`python -m services.worker` / `...supervisor`) and the
settings a test names are replaced; everything else (relay, listener, retries, stop waits,
priorities) is the file as shipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "supervisord.conf"
STUB = Path(__file__).with_name("stub_program.py")
STARTS_FILE = "@STARTS@"
SERVICE_MODULES = {"worker": "services.worker", "supervisor": "services.supervisor"}


def stub_command(name: str, *args: str) -> str:
    return " ".join([sys.executable, str(STUB), name, *args])


def derived_config(
    commands: Mapping[str, str],
    overrides: Mapping[tuple[str, str], str] | None = None,
    *,
    replace: Mapping[str, str] | None = None,
    relay: bool = True,
) -> str:
    """The shipped config with program commands (and optionally settings) replaced."""
    text = CONFIG.read_text().replace("%(here)s/..", str(ROOT))
    for program, command in commands.items():
        module = f"python -m {SERVICE_MODULES[program]}"
        assert module in text, f"{module!r} not in {CONFIG}"
        text = text.replace(module, command)
    if not relay:  # supervisord's own forwarding, for comparison only
        text = re.sub(r"python deploy/stdout_relay\.py --lock \S+\s+-- ", "", text)
    for old, new in (replace or {}).items():
        assert old in text, f"{old!r} not in {CONFIG}"
        text = text.replace(old, new)
    for (section, key), value in (overrides or {}).items():
        pattern = re.compile(rf"(\[{re.escape(section)}\][^\[]*?^{re.escape(key)}=)[^\n]*", re.M)
        text, count = pattern.subn(lambda m: m.group(1) + value, text)  # noqa: B023 - used at once
        assert count == 1, f"{section}/{key} not found in {CONFIG}"
    return text


class Supervisord:
    """supervisord -n with a derived config; stdout collected by a (optionally slow) reader."""

    def __init__(self, config_text: str, *, slow_reader: bool = False) -> None:
        # Short path: the control socket's path must fit in sun_path (108 bytes).
        self.run_dir = Path(tempfile.mkdtemp(prefix="sv-", dir="/tmp"))
        self.config = self.run_dir / "supervisord.conf"
        self.starts = self.run_dir / "starts.txt"
        # STARTS_FILE in a stub's arguments: where stubs record their starts.
        self.config.write_text(config_text.replace(STARTS_FILE, str(self.starts)))
        self.slow_reader = slow_reader
        self.output = bytearray()
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> Supervisord:
        env = {
            **os.environ,
            "LIMBO_RUN_DIR": str(self.run_dir),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(self.config)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        reads = 0
        while True:
            chunk = os.read(fd, 4096 if self.slow_reader else 1 << 16)
            if not chunk:
                return
            with self._lock:
                self.output += chunk
            reads += 1
            if self.slow_reader and reads % 8 == 0:
                time.sleep(0.01)  # let the pipe fill up: writers then block mid-write

    def lines(self) -> list[bytes]:
        with self._lock:
            data = bytes(self.output)
        return data.split(b"\n")[:-1]  # the last piece is an unfinished line, if any

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        value = predicate()
        if value:
            return value
        raise AssertionError(f"timed out waiting for {what}; log:\n{self.log_tail()}")

    def log_tail(self) -> str:
        log = self.run_dir / "supervisord.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(10)
        return self.proc.returncode

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self.proc is not None:  # anything left in the group (a stub's orphan)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def start_times(self, name: str) -> list[tuple[int, float]]:
        if not self.starts.exists():
            return []
        rows = [line.split() for line in self.starts.read_text().splitlines()]
        return [(int(pid), float(at)) for who, pid, at in rows if who == name]
