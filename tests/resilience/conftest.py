"""Fixtures of the resilience suite: whole stacks under supervisord, and one summary line
per scenario (scenario, outcome, the figure that matters) printed at the end of the run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testkit.postgres import TestPostgres
from tests.resilience.stack import Stack

SUMMARY: list[str] = []

StackFactory = Callable[..., Stack]


def record(scenario: str, outcome: str, **figures: object) -> None:
    parts = " ".join(f"{key}={value}" for key, value in figures.items())
    SUMMARY.append(f"RESILIENCE scenario={scenario} outcome={outcome} {parts}".rstrip())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section("resilience summary")
        for line in SUMMARY:
            terminalreporter.write_line(line)


@pytest.fixture
def stacks(pg: TestPostgres, tmp_path: Path) -> Iterator[StackFactory]:
    """Start stacks (supervisord + worker + supervisor); all are torn down after the test."""
    started: list[Stack] = []

    def _start(database_url: str, name: str = "stack", **env: str) -> Stack:
        stack = Stack(
            database_url,
            tmp_path / f"{name}-{len(started)}",
            on_start=pg.register_child,
            on_exit=pg.unregister_child,
            **env,
        )
        started.append(stack)
        return stack.start()

    try:
        yield _start
    finally:
        for stack in reversed(started):
            stack.close()
