"""`make container-test`: build the image offline and drive a job through a real container.

On this machine (no Docker engine, no registry, see shared notes "containers here"):

 1. podman, runc and debootstrap from apt if missing;
 2. a base image without a registry: debootstrap bookworm minbase with python3, python3-venv
    and ca-certificates, imported as localhost/limbo-base:bookworm (the root filesystem's
    tarball is cached in .data/container/, keyed by the package list);
 3. a wheelhouse from uv.lock (`uv export --frozen --no-dev` + `pip download` of manylinux
    x86_64 cp311 wheels) in .data/container/wheels, rebuilt when uv.lock changes;
 4. `podman build --network=none` of deploy/Dockerfile from the wheelhouse;
 5. a throwaway PostgreSQL (testkit.localpg), the schemas created by the image itself
    (`dbos migrate`, `python -m services.migrate`, as a migration job would);
 6. the container with `--network=host`: both health endpoints, a job POSTed to the worker and
    polled to SUCCESS, every process non-root, every stdout line JSON, the HEALTHCHECK, and a
    graceful `podman stop` (supervisord drains the worker, exit code 0);
 7. cleanup of the container and the server, whatever happened;
 8. deploy/compose.yaml for real, under podman-compose (the dev group's), with the images built
    here: the limbo image and a PostgreSQL image from Debian's packages on the same base
    (deploy/postgres/, built with apt). On the compose project's own network, as written, given
    only its variables: every healthcheck green, a job to SUCCESS, the seed's crash loop (the
    worker segfaults at the same step on every attempt, DEMO_CHAOS=1) ended and its dedup ID
    "6/5" accepted again within 90 s while the supervisor program is never restarted, a stop
    in dependency order with every exit code 0, and `down --volumes` leaving no container,
    pod, network or volume of the project (whatever happened, they are removed in `finally`).
    See "8. compose" below for what podman 4.3 cannot do and what is done instead.

Options: --build-only (steps 1-4 and the PostgreSQL image), --skip-compose (no step 8).
Environment: LIMBO_CT_WORKER_PORT / LIMBO_CT_SUPERVISOR_PORT (default 8000/8001) and
LIMBO_CT_COMPOSE_WORKER_PORT / LIMBO_CT_COMPOSE_SUPERVISOR_PORT (8010/8011), a free port being
chosen when the default is taken; LIMBO_CT_IMAGE (default localhost/limbo:test),
LIMBO_CT_POSTGRES_IMAGE (localhost/limbo-postgres:15). Everything cached lives in
.data/container/ (the wheelhouse must be inside the build context); `rm -rf .data/container`
and `podman rmi` of the three images for a cold run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from testkit.localpg import free_port, start_owned_server  # noqa: E402
from testkit.wheelhouse import ensure_wheelhouse as testkit_wheelhouse  # noqa: E402

RUNC = "/usr/sbin/runc"
BASE_IMAGE = "localhost/limbo-base:bookworm"
POSTGRES_DIR = ROOT / "deploy" / "postgres"
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
TERMINAL = {"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}
# README "Resilience" item 1: the seed's crash loop ends and its dedup ID is free within 90 s.
CRASH_LOOP_RELEASE_BOUND_S = 90
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
SUITE = "bookworm"
# bookworm's glibc is 2.36: every manylinux tag up to it (pip does not expand them itself).


class Step:
    """Prints and records how long each step took."""

    timings: list[tuple[str, float]] = []

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> Step:
        self.started = time.monotonic()
        print(f"== {self.name}", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self.started
        Step.timings.append((self.name, elapsed))
        print(f"   {self.name}: {elapsed:.1f} s", flush=True)


def run(
    args: Sequence[str], *, check: bool = True, capture: bool = False, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    print("   $ " + " ".join(args), flush=True)
    return subprocess.run(list(args), check=check, text=True, capture_output=capture, **kwargs)


def podman(
    *args: str, check: bool = True, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    return run(["podman", "--runtime", RUNC, *args], check=check, capture=capture)


# -- 1. tools ------------------------------------------------------------------------------


def ensure_tools() -> None:
    missing = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
    if not Path(RUNC).exists():
        missing.append("runc")
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"missing {', '.join(missing)}: install them (apt-get) or run as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "podman", "runc", "debootstrap"], env=env)


def containers_conf(cache: Path) -> Path:
    """The sandbox refuses to raise ulimits: no default ulimits for containers. And runc, not
    crun, for every podman call, podman-compose's included."""
    conf = cache / "containers.conf"
    conf.write_text(
        f'[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n\n'
        f'[engine.runtimes]\nrunc = ["{RUNC}"]\n'
    )
    return conf


# -- 2. base image -----------------------------------------------------------------------------


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def ensure_base_image(cache: Path) -> None:
    key = hashlib.sha256(f"{SUITE} {' '.join(BASE_PACKAGES)}".encode()).hexdigest()[:12]
    tarball = cache / f"base-{SUITE}-{key}.tar"
    label = cache / "base-image.key"
    if image_exists(BASE_IMAGE) and label.exists() and label.read_text() == key:
        print(f"   {BASE_IMAGE} present")
        return
    if not tarball.exists():
        rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))
        try:
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    SUITE,
                    str(rootfs),
                ],
                stdout=subprocess.DEVNULL,
            )
            # Smaller image: package lists and caches are not needed at run time.
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                shutil.rmtree(rootfs / junk, ignore_errors=True)
            partial = tarball.with_suffix(".partial")
            run(["tar", "-C", str(rootfs), "-cf", str(partial), "."])
            partial.rename(tarball)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
    podman("import", str(tarball), BASE_IMAGE)
    label.write_text(key)


# -- 3. wheelhouse -----------------------------------------------------------------------------


def ensure_wheelhouse(cache: Path) -> Path:
    wheels = testkit_wheelhouse(cache / "wheels")
    print(f"   wheelhouse up to date with uv.lock ({len(list(wheels.glob('*.whl')))} wheels)")
    return wheels


# -- 4. image ------------------------------------------------------------------------------------


def build_image(image: str, wheels: Path) -> None:
    podman(
        "build",
        "--network=none",
        "--format", "docker",  # HEALTHCHECK exists in docker-format images only
        "--file", str(ROOT / "deploy" / "Dockerfile"),
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg", "INSTALL_FROM=wheelhouse",
        "--build-arg", f"WHEELHOUSE={wheels.relative_to(ROOT)}",
        "--tag", image,
        str(ROOT),
    )  # fmt: skip
    if not image_exists(image):
        raise SystemExit(f"build did not produce {image}")


def build_postgres_image(image: str) -> None:
    """PostgreSQL from Debian's packages on the same debootstrap base (apt needs the archive)."""
    podman(
        "build",
        "--file", str(POSTGRES_DIR / "Dockerfile"),
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
        "--tag", image,
        str(POSTGRES_DIR),
    )  # fmt: skip
    if not image_exists(image):
        raise SystemExit(f"build did not produce {image}")


# -- 5.-7. run ----------------------------------------------------------------------------------


def pick_port(variable: str, default: int) -> int:
    given = os.environ.get(variable)
    if given:
        return int(given)
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", default))
        except OSError:
            port = free_port()
            print(f"   port {default} is taken; using {port} (set {variable} to choose)")
            return port
    return default


@contextlib.contextmanager
def container(image: str, name: str, env: dict[str, str]) -> Iterator[str]:
    # Read-only root as in deploy/k8s (readOnlyRootFilesystem) and compose (read_only).
    # podman mounts a tmpfs on /tmp (LIMBO_RUN_DIR) itself.
    args = ["run", "--detach", "--name", name, "--network=host", "--read-only"]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    try:
        podman(*args, image)
        yield name
    finally:
        logs = podman("logs", name, check=False, capture=True)
        (Path(tempfile.gettempdir()) / f"{name}.log").write_text(logs.stdout + logs.stderr)
        print(f"   container logs kept in {tempfile.gettempdir()}/{name}.log")
        podman("rm", "--force", "--time", "0", name, check=False, capture=True)


def container_state(name: str) -> dict[str, Any]:
    result = podman("inspect", "--format", "{{json .State}}", name, check=False, capture=True)
    state: dict[str, Any] = json.loads(result.stdout) if result.returncode == 0 else {}
    return state


def wait_http(name: str, url: str, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        state = container_state(name)
        if state and not state.get("Running"):
            tail = podman("logs", "--tail", "40", name, check=False, capture=True)
            raise SystemExit(f"container exited ({state.get('ExitCode')}):\n{tail.stdout}")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return response
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise SystemExit(f"{url} not 200 after {timeout:.0f} s (last: {last})")


def enqueue(worker: str, token: str, job: dict[str, Any]) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.post(f"{worker}/workflows", json=job, headers=headers, timeout=10)
    if response.status_code != 202:
        raise SystemExit(f"POST /workflows {job}: HTTP {response.status_code}: {response.text}")
    return str(response.json()["workflow_id"])


def wait_terminal(worker: str, token: str, workflow_id: str, timeout: float) -> dict[str, Any]:
    """Poll GET /workflows/{id} until a terminal status; the worker may be down meanwhile."""
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            polled = httpx.get(f"{worker}/workflows/{workflow_id}", headers=headers, timeout=5)
            if polled.status_code == 200:
                view: dict[str, Any] = polled.json()
                last = view.get("status")
                if last in TERMINAL:
                    return view
            else:
                last = f"HTTP {polled.status_code}"
        except httpx.HTTPError as exc:  # between two crashes of a crash-looping worker
            last = repr(exc)
        time.sleep(0.5)
    raise SystemExit(f"workflow {workflow_id} not terminal after {timeout:.0f} s (last: {last})")


def drive_job(worker: str, token: str, job: dict[str, Any] | None = None) -> str:
    workflow_id = enqueue(worker, token, job or {})
    view = wait_terminal(worker, token, workflow_id, 120)
    if view["status"] != "SUCCESS":
        raise SystemExit(f"workflow {workflow_id} ended as {view['status']}, not SUCCESS")
    return workflow_id


UIDS_SCRIPT = """
import os
rows = []
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        status = open(f'/proc/{pid}/status').read()
        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode()
    except OSError:
        continue
    uid = next(line.split()[2] for line in status.splitlines() if line.startswith('Uid:'))
    rows.append(f'{pid} {uid} ' + ' '.join(cmd.split()))
print('\\n'.join(rows))
"""


def check_processes(name: str) -> None:
    uid = podman("exec", name, "id", "-u", capture=True).stdout.strip()
    rows = podman("exec", name, "python3", "-c", UIDS_SCRIPT, capture=True).stdout.splitlines()
    print("\n".join(f"   {row}" for row in rows))
    root = [row for row in rows if row.split()[1] == "0"]
    if uid == "0" or root:
        raise SystemExit(f"processes run as root (id -u: {uid}): {root}")
    commands = " ".join(rows)
    for expected in ("supervisord", "services.worker", "services.supervisor"):
        if expected not in commands:
            raise SystemExit(f"no {expected} process in the container")
    print(f"   every process runs as uid {uid}")


def check_json_logs(name: str) -> int:
    logs = podman("logs", name, capture=True)
    lines = [line for line in logs.stdout.splitlines() if line.strip()]
    bad = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    if bad:
        raise SystemExit(f"{len(bad)} of {len(lines)} stdout lines are not JSON, e.g. {bad[:3]}")
    if logs.stderr.strip():
        print(f"   stderr (supervisord's own): {logs.stderr.strip()[:500]}")
    return len(lines)


def graceful_stop(name: str) -> None:
    started = time.monotonic()
    podman("stop", "--time", "60", name, capture=True)
    elapsed = time.monotonic() - started
    state = container_state(name)
    code = state.get("ExitCode")
    print(f"   podman stop took {elapsed:.1f} s, exit code {code}")
    if code != 0:
        raise SystemExit(f"container exit code {code} after SIGTERM (expected 0)")


def run_stack(image: str) -> None:
    worker_port = pick_port("LIMBO_CT_WORKER_PORT", 8000)
    supervisor_port = pick_port("LIMBO_CT_SUPERVISOR_PORT", 8001)
    with Step("postgres"):
        owned = start_owned_server()
    try:
        url = owned.server.url
        name = f"limbo-ct-{os.getpid()}"
        token = "ct-worker-token"  # noqa: S105 - a throwaway value for this run
        env = {
            "DATABASE_URL": url,
            "WORKER_PORT": str(worker_port),
            "SUPERVISOR_PORT": str(supervisor_port),
            "WORKER_API_TOKEN": token,
            "SUPERVISOR_ADMIN_TOKEN": "ct-admin-token",
            "WORKER_EXECUTOR_ID": f"ct-{os.getpid()}",
            "DEMO_STEP_SECONDS": "0.05",
            "DEMO_SLEEP_SECONDS": "0.05",
        }
        with Step("migrations (in the image)"):
            for command in (
                ["dbos", "migrate", "-s", url],
                ["python", "-m", "services.migrate", url],
            ):
                podman("run", "--rm", "--network=host", image, *command)
        with container(image, name, env):
            with Step("container up (both /healthz, worker /readyz)"):
                wait_http(name, f"http://127.0.0.1:{worker_port}/healthz", 120)
                wait_http(name, f"http://127.0.0.1:{supervisor_port}/healthz", 120)
                wait_http(name, f"http://127.0.0.1:{worker_port}/readyz", 120)
                wait_http(name, f"http://127.0.0.1:{supervisor_port}/readyz", 120)
            with Step("a job to SUCCESS"):
                workflow_id = drive_job(f"http://127.0.0.1:{worker_port}", token)
                print(f"   workflow {workflow_id}: SUCCESS")
            with Step("HEALTHCHECK, users, logs"):
                podman("healthcheck", "run", name)
                check_processes(name)
                count = check_json_logs(name)
                print(f"   {count} stdout lines, all JSON")
            with Step("graceful stop"):
                graceful_stop(name)
                check_json_logs(name)
    finally:
        owned.close()


# -- 8. compose, for real ----------------------------------------------------------------------
#
# deploy/compose.yaml under podman-compose (PyPI, in the dev group), on its own project network
# with service-name DNS, exactly as written, given only its variables (the images, the published
# ports, the tokens, DEMO_CHAOS=1). Two things Debian bookworm's podman 4.3 cannot do, and
# what we do instead:
#   - podman runs healthchecks from systemd timers; without systemd they never run by
#     themselves. `podman healthcheck run` here plays the timer.
#   - podman-compose ignores `condition: service_healthy` before podman 4.6, and starting a
#     container whose dependency (migrate) depends on a running one (postgres) fails in podman
#     < 5.6 ("depends on container ... not found in input list", podman PR 26193). So each
#     service is brought up on its own (`up --no-deps`), in the file's depends_on order, once
#     the conditions the file states are met: service_healthy, service_completed_successfully
#     (exit code 0), service_started.


def compose_services() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    services: dict[str, Any] = data["services"]
    return services


def dependencies(service: dict[str, Any]) -> dict[str, str]:
    """depends_on as {service: condition}; the short (list) form means service_started."""
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def start_order(services: dict[str, Any]) -> list[str]:
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise SystemExit(f"depends_on cycle: {' -> '.join((*path, name))}")
        for dependency in dependencies(services[name]):
            visit(dependency, (*path, name))
        order.append(name)

    for name in services:
        visit(name, ())
    return order


class ComposeStack:
    """One podman-compose project of deploy/compose.yaml; everything it makes carries its name."""

    def __init__(self, project: str, variables: dict[str, str]) -> None:
        self.project = project
        self.env = {**os.environ, **variables}
        self.executable = str(Path(sys.executable).parent / "podman-compose")
        self.services = compose_services()
        self.down_done = False

    def compose(self, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
        return run(
            [self.executable, "--project-name", self.project, "--file", str(COMPOSE_FILE), *args],
            env=self.env,
            capture=capture,
            timeout=300,
        )

    def container(self, service: str) -> str:
        names = podman(
            "ps", "--all", "--format", "{{.Names}}",
            "--filter", f"label=io.podman.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
            capture=True,
        ).stdout.split()  # fmt: skip
        if len(names) != 1:
            raise SystemExit(f"service {service}: expected one container, found {names}")
        return names[0]

    def healthy(self, name: str) -> bool:
        """One run of the container's healthcheck (what podman's systemd timer would do)."""
        result = podman("healthcheck", "run", name, check=False, capture=True)
        health = container_state(name).get("Health") or {}
        return result.returncode == 0 and health.get("Status") == "healthy"

    def wait_condition(self, service: str, condition: str, timeout: float) -> None:
        name = self.container(service)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = container_state(name)
            if condition == "service_completed_successfully":
                if state.get("Status") == "exited":
                    if state.get("ExitCode") != 0:
                        tail = podman("logs", "--tail", "40", name, check=False, capture=True)
                        raise SystemExit(
                            f"{service} exited with {state.get('ExitCode')}:\\n"
                            f"{tail.stdout}{tail.stderr}"
                        )
                    return
            elif not state.get("Running"):
                raise SystemExit(f"{service} is {state.get('Status')}, not running")
            elif condition == "service_started" or self.healthy(name):
                return
            time.sleep(1)
        raise SystemExit(f"{service}: {condition} not met after {timeout:.0f} s")

    def up(self, timeout: float = 180) -> None:
        for service in start_order(self.services):
            for dependency, condition in dependencies(self.services[service]).items():
                self.wait_condition(dependency, condition, timeout)
                print(f"   {dependency}: {condition}")
            self.compose("up", "--detach", "--no-build", "--no-deps", service)

    def check_healthchecks(self) -> None:
        """Every running container of the stack that has a healthcheck passes it."""
        checked = []
        for service in self.services:
            name = self.container(service)
            state = container_state(name)
            if not state.get("Running"):
                continue
            config = podman(
                "inspect", "--format", "{{json .Config.Healthcheck}}", name, capture=True
            ).stdout.strip()
            if config in {"", "null", "{}"}:
                continue
            if not self.healthy(name):
                raise SystemExit(f"{service}: healthcheck fails ({container_state(name)})")
            checked.append(service)
        print(f"   healthchecks green: {', '.join(checked)}")
        if "postgres" not in checked or "limbo" not in checked:
            raise SystemExit(f"postgres and limbo must have passing healthchecks, got {checked}")

    def save_logs(self) -> None:
        for service in self.services:
            with contextlib.suppress(SystemExit):
                name = self.container(service)
                logs = podman("logs", name, check=False, capture=True)
                path = Path(tempfile.gettempdir()) / f"{self.project}-{service}.log"
                path.write_text(logs.stdout + logs.stderr)
        print(f"   compose logs kept in {tempfile.gettempdir()}/{self.project}-<service>.log")

    def stop(self) -> dict[str, float]:
        """`stop`, one service at a time, dependents first, as docker compose does (podman-compose
        1.6 stops them all at once, and the database would vanish under the draining worker),
        each with its own stop_grace_period. Every container must exit 0: supervisord drained
        the worker, PostgreSQL shut down fast, migrate had finished."""
        took = {}
        for service in reversed(start_order(self.services)):
            started = time.monotonic()
            self.compose("stop", service)
            took[service] = round(time.monotonic() - started, 1)
        codes = {
            service: container_state(self.container(service)).get("ExitCode")
            for service in self.services
        }
        print(f"   stop took {took} s; exit codes: {codes}")
        if any(code != 0 for code in codes.values()):
            raise SystemExit(f"compose stop: not every container exited 0: {codes}")
        return took

    def down(self) -> float:
        started = time.monotonic()
        self.compose("down", "--volumes", "--timeout", "60")
        self.down_done = True
        return time.monotonic() - started

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=io.podman.compose.project={self.project}"
        found = {
            "containers": podman(
                "ps", "--all", "--filter", label, "--format", "{{.Names}}", capture=True
            ).stdout.split(),
            "volumes": podman(
                "volume", "ls", "--filter", label, "--format", "{{.Name}}", capture=True
            ).stdout.split(),
            "networks": [
                name
                for name in podman(
                    "network", "ls", "--format", "{{.Name}}", capture=True
                ).stdout.split()
                if name.startswith(f"{self.project}_")
            ],
            "pods": [
                name
                for name in podman(
                    "pod", "ps", "--format", "{{.Name}}", capture=True
                ).stdout.split()
                if name == f"pod_{self.project}"
            ],
        }
        return {kind: names for kind, names in found.items() if names}

    def force_clean(self) -> None:
        """Whatever is left of this project, however the run ended."""
        if not self.down_done:
            with contextlib.suppress(subprocess.SubprocessError):
                run(
                    [self.executable, "--project-name", self.project, "--file",
                     str(COMPOSE_FILE), "down", "--volumes", "--timeout", "0"],
                    env=self.env, check=False, capture=True, timeout=120,
                )  # fmt: skip
        left = self.leftovers()
        for name in left.get("containers", []):
            podman("rm", "--force", "--time", "0", name, check=False, capture=True)
        for name in left.get("pods", []):
            podman("pod", "rm", "--force", name, check=False, capture=True)
        for name in left.get("volumes", []):
            podman("volume", "rm", "--force", name, check=False, capture=True)
        for name in left.get("networks", []):
            podman("network", "rm", "--force", name, check=False, capture=True)


def program_events(logs: str, program: str) -> list[dict[str, Any]]:
    """supervisord's program state changes (JSON lines of deploy/process_policy.py)."""
    events = []
    for line in logs.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("logger") == "supervisord" and record.get("program") == program:
                events.append(record)
    return events


def crash_loop(stack: ComposeStack, worker: str, supervisor: str, token: str) -> None:
    """The seed's limbo: the child's step 1 segfaults the worker on every attempt; DBOS and the
    supervisor end the job and release its dedup ID, and a new job with that ID is accepted."""
    started = time.monotonic()
    seed = {"children": 1, "steps": 2, "dedup_id": "6/5", "chaos": {"step": 1, "mode": "segfault"}}
    seed_id = enqueue(worker, token, seed)
    view = wait_terminal(worker, token, seed_id, CRASH_LOOP_RELEASE_BOUND_S)
    ended = time.monotonic() - started
    children = [(child["status"], child["recovery_attempts"]) for child in view["children"]]
    print(f"   {seed_id}: {view['status']} after {ended:.1f} s (children: {children})")
    if view["status"] not in {"ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}:
        raise SystemExit(f"the crash-looping job ended as {view['status']}")
    if view["dedup_id"] is not None:
        raise SystemExit(f"the job ended but still holds its dedup ID {view['dedup_id']!r}")
    # The worker is restarted by supervisord after each crash: wait for it, then reuse 6/5.
    wait_http(stack.container("limbo"), f"{worker}/readyz", 120)
    again = enqueue(worker, token, {"children": 1, "steps": 1, "dedup_id": "6/5"})
    released = time.monotonic() - started
    print(f"   a new 6/5 accepted (202) {released:.1f} s after the seed was enqueued")
    if (final := wait_terminal(worker, token, again, 120)["status"]) != "SUCCESS":
        raise SystemExit(f"the new 6/5 job ended as {final}")
    logs = podman("logs", stack.container("limbo"), capture=True).stdout
    # a worker that dies within startsecs goes to BACKOFF; later, to EXITED (unexpected)
    crashes = [
        event
        for event in program_events(logs, "worker")
        if event.get("state") == "BACKOFF"
        or (event.get("state") == "EXITED" and event.get("expected") is False)
    ]
    supervisor_starts = [
        event for event in program_events(logs, "supervisor") if event.get("state") == "RUNNING"
    ]
    starts = len(supervisor_starts)
    print(f"   worker crashes: {len(crashes)}; supervisor program started {starts} time(s)")
    if len(crashes) < 2:
        raise SystemExit(f"the worker did not crash-loop ({len(crashes)} unexpected exits)")
    if len(supervisor_starts) != 1:
        raise SystemExit(f"the supervisor program was restarted: {supervisor_starts}")
    health = httpx.get(f"{supervisor}/readyz", timeout=5)
    if health.status_code != 200:
        raise SystemExit(f"supervisor /readyz after the crash loop: {health.status_code}")


def run_compose(image: str, postgres_image: str) -> None:
    # a missing image would send podman to a registry, which is not reachable here
    for name in (image, postgres_image):
        if not image_exists(name):
            raise SystemExit(f"{name} is not built")
    worker_port = pick_port("LIMBO_CT_COMPOSE_WORKER_PORT", 8010)
    supervisor_port = pick_port("LIMBO_CT_COMPOSE_SUPERVISOR_PORT", 8011)
    token = "ct-compose-token"  # noqa: S105 - throwaway values for this run
    stack = ComposeStack(
        f"limbo-ct-{os.getpid()}",
        {
            "POSTGRES_IMAGE": postgres_image,
            "LIMBO_IMAGE": image,
            "BASE_IMAGE": BASE_IMAGE,
            "POSTGRES_PASSWORD": f"ct-{os.getpid()}",
            "WORKER_PUBLISH": f"127.0.0.1:{worker_port}",
            "SUPERVISOR_PUBLISH": f"127.0.0.1:{supervisor_port}",
            "WORKER_API_TOKEN": token,
            "SUPERVISOR_ADMIN_TOKEN": "ct-compose-admin-token",
            "DEMO_CHAOS": "1",
        },
    )
    worker = f"http://127.0.0.1:{worker_port}"
    supervisor = f"http://127.0.0.1:{supervisor_port}"
    try:
        with Step("compose up (depends_on order, healthchecks green)"):
            stack.up()
            limbo = stack.container("limbo")
            wait_http(limbo, f"{worker}/readyz", 120)
            wait_http(limbo, f"{supervisor}/readyz", 120)
            stack.check_healthchecks()
        with Step("compose: a job to SUCCESS"):
            job_id = drive_job(worker, token, {"children": 1, "steps": 1, "dedup_id": "ct-1"})
            print(f"   workflow {job_id}: SUCCESS")
        with Step("compose: the seed's crash loop released"):
            crash_loop(stack, worker, supervisor, token)
        with Step("compose stop, down --volumes"):
            stack.stop()
            stack.save_logs()
            elapsed = stack.down()
            left = stack.leftovers()
            print(f"   down took {elapsed:.1f} s; left behind: {left or 'nothing'}")
            if left:
                raise SystemExit(f"compose down left {left}")
    finally:
        if not stack.down_done:
            stack.save_logs()
        stack.force_clean()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--build-only", action="store_true", help="stop after the image builds")
    parser.add_argument(
        "--skip-compose", action="store_true", help="leave out the compose scenario (step 8)"
    )
    args = parser.parse_args(argv)
    cache = ROOT / ".data" / "container"
    cache.mkdir(parents=True, exist_ok=True)
    image = os.environ.get("LIMBO_CT_IMAGE", "localhost/limbo:test")
    postgres_image = os.environ.get("LIMBO_CT_POSTGRES_IMAGE", "localhost/limbo-postgres:15")
    started = time.monotonic()
    try:
        with Step("tools"):
            ensure_tools()
            os.environ["CONTAINERS_CONF"] = str(containers_conf(cache))
        with Step("base image"):
            ensure_base_image(cache)
        with Step("wheelhouse"):
            wheels = ensure_wheelhouse(cache)
        with Step("image build (offline)"):
            build_image(image, wheels)
        if not args.skip_compose:
            with Step("PostgreSQL image build (Debian's packages)"):
                build_postgres_image(postgres_image)
        if not args.build_only:
            run_stack(image)
            if not args.skip_compose:
                run_compose(image, postgres_image)
    finally:
        print("== timings")
        for name, elapsed in Step.timings:
            print(f"   {elapsed:6.1f} s  {name}")
        print(f"   {time.monotonic() - started:6.1f} s  total")
    print("container-test: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
