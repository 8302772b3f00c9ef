"""A real browser for the console's tests: Debian's Chromium, driven by Playwright.

Playwright cannot download its own browser builds here, so it drives the system's Chromium
(`executable_path`). `ensure_chromium()` installs Debian's `chromium` and `chromium-driver`
with apt-get when they are missing (CI runs as root on a clean machine) and fails with a
clear message when it cannot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
PACKAGES = ("chromium", "chromium-driver")
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


class BrowserUnavailable(RuntimeError):
    pass


def find_chromium() -> Path | None:
    for candidate in (os.environ.get("LIMBO_CHROMIUM"), *CANDIDATES):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    found = shutil.which("chromium")
    return Path(found) if found else None


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def ensure_chromium() -> Path:
    """The system Chromium, installed first with apt-get if it is missing."""
    found = find_chromium()
    if found is not None:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise BrowserUnavailable(
            "the console tests need Debian's Chromium: run `apt-get install chromium "
            "chromium-driver` as root (or set LIMBO_CHROMIUM to a Chromium binary)"
        )
    steps = (("update", "-qq"), ("install", "-y", "-qq", "--no-install-recommends", *PACKAGES))
    for step in steps:
        done = _apt(*step)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise BrowserUnavailable(f"apt-get {' '.join(step)} failed:\n{tail}")
    found = find_chromium()
    if found is None:
        raise BrowserUnavailable(f"apt-get installed {', '.join(PACKAGES)} but no chromium found")
    return found
