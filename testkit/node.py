"""Node.js apps the tests run (tests/client/typescript): their npm dependencies installed by
`npm ci` from the committed package-lock.json, once, then reused offline.

`ensure_node_modules(app_dir)` runs `npm ci` when node_modules is missing or stale: a stamp
file in node_modules records the digest of the package.json and package-lock.json it was
installed from, so a changed lock reinstalls and an unchanged one costs nothing (npm does not
even run). An install tries `npm ci --offline` first (npm's cache, ~/.npm, alone), and only
when the cache lacks a package `npm ci --prefer-offline` (the registry): a machine that
installed the lock once reinstalls it without a network. A missing `node` or `npm` fails
with a message saying so: nothing is skipped.

`NodeApp` runs the app's commands as real processes, the way testkit.processes runs ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from testkit.processes import ROOT, ServiceProcess

TYPESCRIPT_APP = ROOT / "tests" / "client" / "typescript"
STAMP = ".limbo-npm-ci.stamp"
NPM_CI_TIMEOUT_S = 600.0


class NodeUnavailable(RuntimeError):
    """node or npm is not installed, or `npm ci` failed."""


def lock_digest(app_dir: Path) -> str:
    """What node_modules is installed from: package.json and package-lock.json."""
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        path = app_dir / name
        if not path.exists():
            raise NodeUnavailable(f"{path} is missing: commit it (run `npm install` there once)")
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise NodeUnavailable(
            "`node` is not on PATH: the TypeScript client tests need Node.js >= 20 and npm "
            "(e.g. apt-get install nodejs npm)"
        )
    return node


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise NodeUnavailable(
            "`npm` is not on PATH: the TypeScript client tests install their dependencies "
            "with `npm ci` (install npm with Node.js >= 20)"
        )
    return npm


def installed(app_dir: Path) -> bool:
    stamp = app_dir / "node_modules" / STAMP
    return stamp.exists() and stamp.read_text().strip() == lock_digest(app_dir)


@contextlib.contextmanager
def _install_lock(app_dir: Path) -> Iterator[None]:
    """One installer at a time per app directory (two test sessions may start together)."""
    with (app_dir / ".npm-ci.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _npm_ci(
    npm: str, app_dir: Path, env: dict[str, str], mode: str
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [npm, "ci", "--no-audit", mode, "--loglevel=error"],
            cwd=app_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise NodeUnavailable(
            f"`npm ci {mode}` in {app_dir} took over {exc.timeout:.0f}s"
        ) from None


def ensure_node_modules(app_dir: Path = TYPESCRIPT_APP) -> Path:
    """node_modules of `app_dir`, installed by `npm ci` if missing or stale. Returns it."""
    node_binary()
    if installed(app_dir):
        return app_dir / "node_modules"
    npm = _npm()
    with _install_lock(app_dir):
        if installed(app_dir):  # another session installed it meanwhile
            return app_dir / "node_modules"
        digest = lock_digest(app_dir)
        env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"}
        # From npm's cache alone when it holds every package, else from the registry.
        offline = _npm_ci(npm, app_dir, env, "--offline")
        if offline.returncode != 0:
            online = _npm_ci(npm, app_dir, env, "--prefer-offline")
            if online.returncode != 0:
                raise NodeUnavailable(
                    f"`npm ci` in {app_dir} failed ({online.returncode}):\n"
                    f"{online.stdout[-3000:]}\n{online.stderr[-3000:]}"
                )
        (app_dir / "node_modules" / STAMP).write_text(digest + "\n")
    return app_dir / "node_modules"


def events(proc: ServiceProcess) -> list[dict[str, Any]]:
    """The JSON events a Node app printed (its lines starting with `{"event"`), in order."""
    found = []
    for line in proc.log_lines():
        if line.startswith('{"event"'):
            with contextlib.suppress(json.JSONDecodeError):
                found.append(json.loads(line))
    return found


class NodeApp:
    """Runs `node <script> ...` from a Node app's directory as real processes (own process
    group, output to a log file, registered with the PostgreSQL watchdog); `close()` stops
    every one still running (SIGTERM, then SIGKILL of the group)."""

    def __init__(
        self,
        app_dir: Path,
        log_dir: Path,
        *,
        script: str = "app.mjs",
        on_start: Callable[[int], None] | None = None,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.app_dir = app_dir
        self.log_dir = log_dir
        self.script = script
        self._node = node_binary()
        self._on_start = on_start
        self._on_exit = on_exit
        self._started: list[ServiceProcess] = []

    def start(self, label: str, *args: str, env: Mapping[str, str]) -> ServiceProcess:
        proc = ServiceProcess(
            f"node {self.script} {label}",
            env,
            self.log_dir / f"{label}-{len(self._started)}.log",
            on_start=self._on_start,
            on_exit=self._on_exit,
            argv=[self._node, self.script, *args],
            cwd=self.app_dir,
        )
        self._started.append(proc)
        return proc.start()

    def run(
        self, label: str, *args: str, env: Mapping[str, str], timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """Run a command to its end; its JSON events. Fails with its output unless it
        exits 0 within `timeout`."""
        proc = self.start(label, *args, env=env)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        if code != 0:
            tail = "\n".join(proc.log_lines()[-40:])
            raise RuntimeError(f"node {self.script} {' '.join(args)} exited {code}:\n{tail}")
        return events(proc)

    def close(self) -> None:
        for proc in reversed(self._started):
            proc.stop(timeout=15)
