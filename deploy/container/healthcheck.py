"""The image's HEALTHCHECK: the worker ready and the supervisor alive, on this host's ports.

Paths and ports follow the services' settings (WORKER_PORT, SUPERVISOR_PORT); the paths can be
changed with LIMBO_HEALTHCHECK_WORKER_PATH / LIMBO_HEALTHCHECK_SUPERVISOR_PATH. Exit 0 when
both answer 2xx, else 1 with the reason on stdout (shown by `docker inspect`).
Standard library only, so that it starts fast.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT = 3.0


def probe(name: str, port: str, path: str) -> str | None:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return f"{name} {url}: {exc}"
    return None if 200 <= status < 300 else f"{name} {url}: HTTP {status}"


def main() -> int:
    checks = [
        (
            "worker",
            os.environ.get("WORKER_PORT", "8000"),
            os.environ.get("LIMBO_HEALTHCHECK_WORKER_PATH", "/readyz"),
        ),
        (
            "supervisor",
            os.environ.get("SUPERVISOR_PORT", "8001"),
            os.environ.get("LIMBO_HEALTHCHECK_SUPERVISOR_PATH", "/healthz"),
        ),
    ]
    failures = [reason for reason in (probe(*check) for check in checks) if reason]
    print("; ".join(failures) if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
