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
    # Per executor with an in-flight row read, among all its PENDING rows (evidence that
    # the executor itself still lives): the newest claim or update, in database time; and
    # the newest step checkpoint (absent if none), stamped by the app host's clock. Kept
    # apart so that the guard compares each with its own kind (docs/LIVENESS.md, "Clocks").
    executor_claimed_ms: Mapping[str, int] = field(default_factory=dict)
    executor_checkpoint_ms: Mapping[str, int] = field(default_factory=dict)
    truncated: bool = False
    # Per-snapshot memo for what rules derive identically for many rows (pure: the snapshot
    # never changes). Not part of the snapshot's value.
    memo: dict[tuple[Any, ...], Any] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )

    @cached_property
    def executor_progress_ms(self) -> Mapping[str, int]:
        """Per executor: the newest of its claims and checkpoints, the judge's evidence."""
        progress = dict(self.executor_claimed_ms)
        for executor_id, checkpoint in self.executor_checkpoint_ms.items():
            progress[executor_id] = max(progress.get(executor_id, 0), checkpoint)
        return progress

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
