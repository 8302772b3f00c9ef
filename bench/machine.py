"""What the numbers were measured on: hardware, software versions, PostgreSQL settings, load."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import asyncpg

from services.shared.dsn import asyncpg_dsn

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dbos", "litestar", "uvicorn", "fastapi", "httpx", "asyncpg", "psycopg", "sqlalchemy")
PG_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "max_connections",
    "data_directory",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _git_revision() -> str:
    given = os.environ.get("LIMBO_BENCH_REVISION")  # a run from an exported tree says what
    if given:
        return given
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def _versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _filesystem_of(path: str) -> str:
    """The mount type holding `path` (tmpfs matters: fsync there is nearly free)."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount, fstype = parts[1], parts[2]
            if path.startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except (OSError, IndexError):
        pass
    return kind


async def postgres_description(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        described: dict[str, Any] = {"version": await conn.fetchval("SHOW server_version")}
        for name in PG_SETTINGS:
            described[name] = await conn.fetchval(f"SHOW {name}")
    finally:
        await conn.close()
    described["data_directory_fs"] = _filesystem_of(str(described["data_directory"]))
    described["host"] = "127.0.0.1 (TCP loopback), same machine as every process measured"
    return described


async def describe(url: str) -> dict[str, Any]:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return {
        "cpu": _cpu_model(),
        "cores": f"{cores} ({usable} usable by this process)",
        "memory_gib": _memory_gib(),
        "os": f"{_os_name()}, kernel {platform.release()}",
        "python": sys.version.split()[0],
        "postgresql": await postgres_description(url),
        "packages": _versions(),
        "git": _git_revision(),
        "load_average_at_start": load_average(),
    }
