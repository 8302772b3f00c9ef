"""Fixtures for the console's browser tests: Debian's Chromium (installed here when missing),
one Playwright browser per module, pages that record every console message and page error,
and real supervisor processes that live for a whole module."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Error,
    Page,
    sync_playwright,
)

from testkit.browser import ARGS, BrowserUnavailable, ensure_chromium
from testkit.postgres import TestPostgres
from testkit.processes import ROOT, ServiceProcess

ARTIFACTS = ROOT / ".data" / "artifacts" / "console"
ModuleSpawn = Callable[..., ServiceProcess]


@pytest.fixture(scope="session")
def chromium() -> Path:
    try:
        return ensure_chromium()
    except BrowserUnavailable as exc:
        pytest.fail(f"no browser for the console tests: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def browser(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One Chromium with a fresh profile (its own --user-data-dir) for the module."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(chromium),
            headless=True,
            args=list(ARGS),
            viewport={"width": 1280, "height": 900},
            locale="en-US",
            timezone_id="UTC",
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


@dataclass
class Watched:
    """A page whose console messages (warnings and errors) and page errors are recorded."""

    page: Page
    problems: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """An expected message, e.g. the browser's note on a deliberate 401 response."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(a.search(p) for a in self.allowed)]


@pytest.fixture
def watched(browser: BrowserContext) -> Iterator[Watched]:
    page = browser.new_page()
    seen = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            seen.problems.append(f"console {message.type}: {message.text} ({message.location})")

    def on_error(error: Error) -> None:
        seen.problems.append(f"page error: {error}")

    page.on("console", on_console)
    page.on("pageerror", on_error)

    def on_dialog(dialog: Dialog) -> None:
        seen.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield seen
        assert seen.unexpected() == [], "the browser reported problems"
    finally:
        page.close()


@pytest.fixture(scope="module")
def module_spawn(
    pg: TestPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModuleSpawn]:
    """`spawn` for a module: processes that live until the module's last test."""
    logs = tmp_path_factory.mktemp("console-logs")
    started: list[ServiceProcess] = []

    def _spawn(module: str, env: Mapping[str, str], name: str | None = None) -> ServiceProcess:
        label = name or f"{module.rsplit('.', 1)[-1]}-{len(started)}"
        proc = ServiceProcess(
            module,
            env,
            logs / f"{label}.log",
            on_start=pg.register_child,
            on_exit=pg.unregister_child,
        )
        started.append(proc)
        return proc.start()

    try:
        yield _spawn
    finally:
        for proc in reversed(started):
            proc.stop(timeout=20)


def screenshot(page: Page, artifacts: Path, name: str, **options: Any) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True, **options)
    return path
