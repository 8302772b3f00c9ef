"""The TypeScript app's dependencies come from the project's own files: `npm ci` from the
committed package-lock.json, run by the tests' set-up when node_modules is missing or stale,
offline from npm's cache once it holds the packages, and in a directory of mode 0700 (a
clone in root's home)."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

import testkit.node
from testkit.node import STAMP, NodeUnavailable, ensure_node_modules, installed


def private_copy(source: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    app = home / "app"
    app.mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(source / name, app / name)
    return app


def test_npm_ci_in_a_private_directory_then_reused_without_npm(
    ts_app_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = private_copy(ts_app_dir, tmp_path)
    assert stat.S_IMODE(app.parent.stat().st_mode) == 0o700
    assert not installed(app)
    modules = ensure_node_modules(app)
    assert (modules / "@dbos-inc" / "dbos-sdk" / "package.json").exists()
    assert (modules / STAMP).exists()
    assert installed(app)

    def no_npm() -> str:
        raise AssertionError("npm must not run for an installed, unchanged lock")

    monkeypatch.setattr(testkit.node, "_npm", no_npm)
    assert ensure_node_modules(app) == modules

    # A changed package.json (or lock) makes the install stale.
    package = json.loads((app / "package.json").read_text())
    (app / "package.json").write_text(json.dumps({**package, "description": "changed"}))
    assert not installed(app)


def test_a_missing_npm_fails_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    for name in ("package.json", "package-lock.json"):
        (app / name).write_text("{}")
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd: None if cmd == "npm" else real_which(cmd))
    with pytest.raises(NodeUnavailable, match=r"`npm` is not on PATH"):
        ensure_node_modules(app)
