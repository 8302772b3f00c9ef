"""promtool (Prometheus' rule checker) for the tests, without installing a Prometheus service.

Debian's `prometheus` package ships it: `apt-get download prometheus` and only `usr/bin/promtool`
taken out of the package into `.tools/promtool/` (git-ignored), once. `PROMTOOL` names another
binary instead. `python -m testkit.promtool` prints its path (installing it if needed).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".tools" / "promtool"
BINARY = CACHE / "promtool"
PACKAGE = "prometheus"
MEMBER = "./usr/bin/promtool"


class PromtoolUnavailable(RuntimeError):
    pass


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _apt(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def _download(into: Path) -> Path:
    """The package's .deb, refreshing apt's lists once if they do not know it yet."""
    if shutil.which("apt-get") is None:
        raise PromtoolUnavailable("no apt-get here: install promtool and set PROMTOOL")
    result = _apt("download", PACKAGE, cwd=into)
    if result.returncode != 0:
        if os.geteuid() != 0:
            raise PromtoolUnavailable(f"apt-get download {PACKAGE} failed: {result.stderr}")
        update = _apt("update", "-qq", cwd=into)
        if update.returncode != 0:
            raise PromtoolUnavailable(f"apt-get update failed: {update.stderr}")
        result = _apt("download", PACKAGE, cwd=into)
        if result.returncode != 0:
            raise PromtoolUnavailable(f"apt-get download {PACKAGE} failed: {result.stderr}")
    debs = sorted(into.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise PromtoolUnavailable(f"apt-get download {PACKAGE} left no .deb in {into}")
    return debs[-1]


def ensure_promtool() -> Path:
    given = os.environ.get("PROMTOOL")
    if given:
        return Path(given)
    with _locked(CACHE / ".lock"):
        if BINARY.exists():
            return BINARY
        with tempfile.TemporaryDirectory(prefix="promtool-", dir=CACHE) as tmp:
            work = Path(tmp)
            # apt's sandbox user must be able to write the download directory
            work.chmod(0o777)
            deb = _download(work)
            with subprocess.Popen(
                ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE
            ) as unpack:
                subprocess.run(
                    ["tar", "-x", "-C", str(work), MEMBER], stdin=unpack.stdout, check=True
                )
            if unpack.returncode != 0:
                raise PromtoolUnavailable(f"dpkg-deb --fsys-tarfile {deb.name} failed")
            extracted = work / MEMBER
            extracted.chmod(0o755)
            extracted.replace(BINARY)
    return BINARY


if __name__ == "__main__":
    print(ensure_promtool())
