"""One sweep's view of the world, read at one database instant."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from services.supervisor.model.rows import ChildRow, ExecutorRow, RegistryEntry, WorkflowRow


@dataclass(frozen=True)
class Snapshot:
    """Everything one sweep decides on, all read at the same database instant `now_ms`."""

    now_ms: int
    workflows: tuple[WorkflowRow, ...] = ()
    executors: Mapping[str, ExecutorRow] = field(default_factory=dict)
    registry: tuple[RegistryEntry, ...] = ()
    dead_children: Mapping[str, tuple[ChildRow, ...]] = field(default_factory=dict)
    # Per executor with an in-flight row read: the newest claim, update or step checkpoint
    # among all its PENDING rows (evidence that the executor itself still lives).
    executor_progress_ms: Mapping[str, int] = field(default_factory=dict)
    truncated: bool = False
    # Per-snapshot memo for what rules derive identically for many rows (pure: the snapshot
    # never changes). Not part of the snapshot's value.
    memo: dict[tuple[Any, ...], Any] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )

    def listing_executors(self) -> list[ExecutorRow]:
        """The live incarnations whose work reports list workflows (`listed`)."""
        return [e for e in self.executors.values() if e.live and e.running]

    @cached_property
    def listed(self) -> frozenset[str]:
        """Workflow IDs that a live incarnation reports running: never touched."""
        ids: set[str] = set()
        for executor in self.listing_executors():
            ids |= executor.running or frozenset()
        return frozenset(ids)

    def live_executors(self) -> list[ExecutorRow]:
        return [e for e in self.executors.values() if e.live]
