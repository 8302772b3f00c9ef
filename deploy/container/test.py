"""`make container-test`: build the image offline and drive a job through a real container.

On this machine (no Docker engine, no registry, see shared notes "containers here"):

 1. podman, runc and debootstrap from apt if missing;
 2. a base image without a registry: debootstrap bookworm minbase with python3, python3-venv
    and ca-certificates, imported as localhost/limbo-base:bookworm (the root filesystem's
    tarball is cached in .data/container/, keyed by the package list);
 3. a wheelhouse from uv.lock (`uv export --frozen --no-dev` + `pip download` of manylinux
    x86_64 cp311 wheels) in .data/container/wheels, rebuilt when uv.lock changes;
 4. `podman build --network=none` of deploy/Dockerfile from the wheelhouse;
 5. a throwaway PostgreSQL (services.shared.localpg), the schemas created by the image itself
    (`dbos migrate`, `python -m services.shared.migrate`, as a migration job would);
 6. the container with `--network=host`: both health endpoints, a job POSTed to the worker and
    polled to SUCCESS, every process non-root, every stdout line JSON, the HEALTHCHECK, and a
    graceful `podman stop` (supervisord drains the worker, exit code 0);
 7. cleanup of the container and the server, whatever happened.

Options: --build-only (steps 1-4). Environment: LIMBO_CT_WORKER_PORT / LIMBO_CT_SUPERVISOR_PORT
(default 8000/8001, a free port is chosen when the default is taken), LIMBO_CT_IMAGE (default
localhost/limbo:test). Everything cached lives in .data/container/ (the wheelhouse must be
inside the build context); `rm -rf .data/container` and `podman rmi` of both images for a cold run.
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.shared.localpg import free_port, start_owned_server  # noqa: E402

RUNC = "/usr/sbin/runc"
BASE_IMAGE = "localhost/limbo-base:bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
SUITE = "bookworm"
# bookworm's glibc is 2.36: every manylinux tag up to it (pip does not expand them itself).
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]


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
    """The sandbox refuses to raise ulimits: no default ulimits for containers."""
    conf = cache / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
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
    wheels = cache / "wheels"
    lock_hash = hashlib.sha256((ROOT / "uv.lock").read_bytes()).hexdigest()
    stamp = wheels / ".uv-lock-sha256"
    if stamp.exists() and stamp.read_text() == lock_hash:
        print(f"   wheelhouse up to date with uv.lock ({len(list(wheels.glob('*.whl')))} wheels)")
        return wheels
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    uv = ROOT / ".tools" / "bin" / "uv"
    requirements = wheels / "requirements.txt"
    run(
        [str(uv), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project",
         "--quiet", "-o", str(requirements)],
        cwd=ROOT,
    )  # fmt: skip
    pip = [str(ROOT / ".tools" / "bin" / "python"), "-m", "pip"]
    run(
        [*pip, "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
         *(f"--platform={platform}" for platform in PLATFORMS),
         "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
         "--dest", str(wheels), "-r", str(requirements)],
        cwd=ROOT,
    )  # fmt: skip
    stamp.write_text(lock_hash)
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


def drive_job(worker: str, token: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.post(f"{worker}/workflows", json={}, headers=headers, timeout=10)
    if response.status_code >= 300:
        raise SystemExit(f"POST /workflows: HTTP {response.status_code}: {response.text}")
    body = response.json()
    workflow_id = str(body.get("workflow_id") or body.get("id"))
    deadline = time.monotonic() + 120
    status = None
    while time.monotonic() < deadline:
        polled = httpx.get(f"{worker}/workflows/{workflow_id}", headers=headers, timeout=10)
        status = polled.json().get("status") if polled.status_code == 200 else polled.status_code
        if status == "SUCCESS":
            return workflow_id
        if status in {"ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}:
            break
        time.sleep(0.5)
    raise SystemExit(f"workflow {workflow_id} ended as {status}, not SUCCESS")


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
            "WORKER_STEP_SECONDS": "0.05",
            "WORKER_SLEEP_SECONDS": "0.05",
        }
        with Step("migrations (in the image)"):
            for command in (
                ["dbos", "migrate", "-s", url],
                ["python", "-m", "services.shared.migrate", url],
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--build-only", action="store_true", help="stop after the image build")
    args = parser.parse_args(argv)
    cache = ROOT / ".data" / "container"
    cache.mkdir(parents=True, exist_ok=True)
    image = os.environ.get("LIMBO_CT_IMAGE", "localhost/limbo:test")
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
        if not args.build_only:
            run_stack(image)
    finally:
        print("== timings")
        for name, elapsed in Step.timings:
            print(f"   {elapsed:6.1f} s  {name}")
        print(f"   {time.monotonic() - started:6.1f} s  total")
    print("container-test: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
