"""deploy/Dockerfile, deploy/compose.yaml and the image's health check.

The image itself is built and run by `make container-test` (deploy/container/test.py): too slow
for the test suite. These tests check what must agree between the files, and run the health
check script against real HTTP servers.
"""

from __future__ import annotations

import configparser
import fnmatch
import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"
POSTGRES_DOCKERFILE = ROOT / "deploy" / "postgres" / "Dockerfile"
POSTGRES_ENTRYPOINT = ROOT / "deploy" / "postgres" / "entrypoint.sh"
HEALTHCHECK = ROOT / "deploy" / "container" / "healthcheck.py"


def dockerfile() -> str:
    return DOCKERFILE.read_text()


def supervisord_stop_budget() -> int:
    """The longest a supervisord stop can take: programs are stopped one after another."""
    parser = configparser.RawConfigParser(interpolation=None)
    parser.read(ROOT / "deploy" / "supervisord.conf")
    return sum(
        int(parser[section].get("stopwaitsecs", "10"))
        for section in parser.sections()
        if section.startswith(("program:", "eventlistener:"))
    )


def seconds(value: str) -> int:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", value)
    assert match, value
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def test_dockerfile_shape() -> None:
    text = dockerfile()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS runtime$", text, re.M)
    user = re.search(r"^USER (\d+):(\d+)$", text, re.M)
    assert user is not None
    assert int(user.group(1)) != 0
    assert 'CMD ["supervisord", "-n", "-c", "/app/deploy/supervisord.conf"]' in text
    assert "HEALTHCHECK" in text
    assert "/app/deploy/container/healthcheck.py" in text
    # offline installs never reach an index; online ones follow uv.lock exactly
    assert "--no-index --find-links /wheels" in text
    assert "uv sync --locked --no-dev --no-install-project" in text
    # the runtime stage has neither uv nor pip
    runtime = text.split("AS runtime", 1)[1]
    assert "/bin/uv" not in runtime
    assert "pip install" not in runtime
    assert "pip uninstall --yes pip setuptools" in text


def test_every_copied_file_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    included = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    sources = []
    for line in dockerfile().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    sources += re.findall(r"source=([\w./-]+)", dockerfile())
    assert sources
    for source in sources:
        if source.startswith("${"):  # the wheelhouse: its default must be included
            default = re.search(r"^ARG WHEELHOUSE=(\S+)$", dockerfile(), re.M)
            assert default is not None
            source = default.group(1)
        else:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert any(
            source == inc or source.startswith(inc + "/") or fnmatch.fnmatch(source, inc)
            for inc in included
        ), f"{source} is excluded by .dockerignore"


def test_image_environment_matches_supervisord() -> None:
    env = dict(
        re.findall(r"(\w+)=(\S+)", dockerfile().split("AS runtime", 1)[1].split("WORKDIR")[0])
    )
    # /tmp is writable with a read-only root in compose (tmpfs) and Kubernetes (emptyDir)
    assert env["LIMBO_RUN_DIR"] == "/tmp"  # noqa: S108 - a path inside the image
    assert env["WORKER_PORT"] == "8000"
    assert env["SUPERVISOR_PORT"] == "8001"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_waits_for_a_healthy_database_and_the_migrations() -> None:
    services = compose()["services"]
    assert services["postgres"]["healthcheck"]["test"]
    limbo = services["limbo"]
    assert limbo["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert limbo["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("limbo", "migrate"):
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgresql://")
    # secrets come from the environment, not from the file
    for key in ("WORKER_API_TOKEN", "SUPERVISOR_ADMIN_TOKEN"):
        assert limbo["environment"][key].startswith("${")


def test_compose_stop_grace_period_exceeds_supervisords_stop() -> None:
    limbo = compose()["services"]["limbo"]
    grace = seconds(limbo["stop_grace_period"])
    assert grace > supervisord_stop_budget(), (
        f"stop_grace_period {grace}s <= supervisord's sequential stop waits "
        f"{supervisord_stop_budget()}s"
    )
    assert limbo["restart"] in {"always", "unless-stopped"}
    # a read-only root needs the run directory supervisord writes to
    assert limbo["read_only"] is True
    assert "/tmp" in limbo["tmpfs"]  # noqa: S108 - a path inside the container


def test_the_debian_postgres_image_takes_what_compose_gives_it() -> None:
    """deploy/postgres/ stands in for the official image: same variables, data directory and
    healthcheck tool (`make container-test` runs compose with it)."""
    postgres = compose()["services"]["postgres"]
    entrypoint = POSTGRES_ENTRYPOINT.read_text()
    for variable in postgres["environment"]:
        assert f"${{{variable}" in entrypoint, f"the entrypoint ignores {variable}"
    dockerfile = POSTGRES_DOCKERFILE.read_text()
    pgdata = re.search(r"^\s+PGDATA=(\S+)$", dockerfile, re.M)  # in the ENV instruction
    assert pgdata is not None
    assert any(volume.endswith(f":{pgdata.group(1)}") for volume in postgres["volumes"])
    assert f"VOLUME {pgdata.group(1)}" in dockerfile
    # pg_isready (the healthcheck) and postgres come from the server's bin directory on PATH
    assert "pg_isready" in postgres["healthcheck"]["test"][1]
    assert "ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:$PATH" in dockerfile
    assert "STOPSIGNAL SIGINT" in dockerfile  # fast shutdown, not smart
    assert os.access(POSTGRES_ENTRYPOINT, os.X_OK)
    assert 'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]' in dockerfile


class _Handler(http.server.BaseHTTPRequestHandler):
    statuses: dict[str, int] = {}

    def do_GET(self) -> None:
        self.send_response(self.statuses.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_servers() -> Iterator[list[http.server.HTTPServer]]:
    servers: list[http.server.HTTPServer] = []
    for _ in range(2):
        handler = type("Handler", (_Handler,), {"statuses": {}})
        server = http.server.HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def run_healthcheck(worker: int, supervisor: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORKER_PORT": str(worker), "SUPERVISOR_PORT": str(supervisor)}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=30
    )


def test_healthcheck_needs_worker_ready_and_supervisor_alive(
    http_servers: list[http.server.HTTPServer],
) -> None:
    worker, supervisor = http_servers
    worker_statuses: dict[str, int] = worker.RequestHandlerClass.statuses  # type: ignore[attr-defined]
    supervisor_statuses: dict[str, int] = supervisor.RequestHandlerClass.statuses  # type: ignore[attr-defined]
    ports = (worker.server_address[1], supervisor.server_address[1])
    worker_statuses.update({"/healthz": 200, "/readyz": 503})
    supervisor_statuses.update({"/healthz": 200, "/readyz": 503})
    result = run_healthcheck(*ports)
    assert result.returncode == 1
    assert "worker" in result.stdout
    assert "503" in result.stdout
    worker_statuses["/readyz"] = 200
    result = run_healthcheck(*ports)
    assert result.returncode == 0, result.stdout  # a supervisor that is not ready is alive
    supervisor_statuses["/healthz"] = 500
    assert run_healthcheck(*ports).returncode == 1
    supervisor_statuses["/healthz"] = 200
    worker.shutdown()
    worker.server_close()
    result = run_healthcheck(*ports)
    assert result.returncode == 1
    assert "refused" in result.stdout.lower()
