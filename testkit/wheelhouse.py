"""A local wheelhouse of the project's locked runtime dependencies (manylinux x86_64,
CPython 3.11), for installs without an index: the container build and the wheel test.

Rebuilt only when uv.lock changes (a stamp file records its hash).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bookworm's glibc is 2.36: every manylinux tag up to it (pip does not expand them itself).
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]


def ensure_wheelhouse(wheels: Path) -> Path:
    lock_hash = hashlib.sha256((ROOT / "uv.lock").read_bytes()).hexdigest()
    stamp = wheels / ".uv-lock-sha256"
    if stamp.exists() and stamp.read_text() == lock_hash:
        return wheels
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    uv = ROOT / ".tools" / "bin" / "uv"
    requirements = wheels / "requirements.txt"
    subprocess.run(
        [str(uv), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project",
         "--quiet", "-o", str(requirements)],
        cwd=ROOT, check=True,
    )  # fmt: skip
    pip = [str(ROOT / ".tools" / "bin" / "python"), "-m", "pip"]
    subprocess.run(
        [*pip, "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
         *(f"--platform={platform}" for platform in PLATFORMS),
         "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
         "--dest", str(wheels), "-r", str(requirements)],
        cwd=ROOT, check=True,
    )  # fmt: skip
    stamp.write_text(lock_hash)
    return wheels
