"""What a rule is: one module declaring its name, settings, the statuses and signals it
reads, its pure predicate, and the SQL that finds its candidates and guards its action.

- `evaluate(wf, snap, common, config)` is the judge: pure, no I/O, no clock (time is the
  snapshot's database time).
- `prefilter(status, p, ctx, common, config)` is an SQL condition over the row `ws` that
  every row `evaluate` could match satisfies (tests/supervisor/test_rule_properties.py
  checks it on generated snapshots). It only spares the judge rows that cannot match.
- `guard(schema)` is an SQL condition over `ws` (the row now) and `o` (what the verdict
  observed and assumed, one column per `guard_columns` entry, filled from
  `Verdict.guard`) that the UPDATE's WHERE clause adds to the store's restatement of the
  observed row: what the decision assumed still holds at the instant of the write.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from services.shared.config import env_field
from services.supervisor.model import Action, Snapshot, Status, Verdict, WorkflowRow
from services.supervisor.model.schema import DbosSchema

C = TypeVar("C")

DBOS_DEFAULT_MAX_RECOVERY_ATTEMPTS = 100  # a decorator default in code, never stored


class Signal(StrEnum):
    """What a rule reads beyond the workflow row; the store reads only what enabled rules need."""

    EXECUTORS = "executors"  # limbo.executor_liveness
    REGISTRY = "registry"  # limbo.workflow_registry (max_recovery_attempts)
    CHECKPOINTS = "checkpoints"  # each row's latest step (operation_outputs)
    EXECUTOR_PROGRESS = "executor_progress"  # newest claim/step among an executor's rows
    DEAD_CHILDREN = "dead_children"  # children in MAX_RECOVERY_ATTEMPTS_EXCEEDED/CANCELLED


@dataclass(frozen=True)
class GuardColumn:
    name: str
    sql_type: str  # the SQL type its JSON values are read as


@dataclass(frozen=True)
class CommonSettings:
    """Settings more than one rule reads."""

    default_max_recovery_attempts: int | None = env_field(
        "SUPERVISOR_DEFAULT_MAX_RECOVERY_ATTEMPTS",
        DBOS_DEFAULT_MAX_RECOVERY_ATTEMPTS,
        "optional_int",
        "max_recovery_attempts of workflow names no registry publishes (`none` = unlimited)",
        minimum=0,
    )
    max_recovery_overrides: dict[str, int | None] = env_field(
        "SUPERVISOR_MAX_RECOVERY_ATTEMPTS",
        {},
        "name_map_int",
        "per-name overrides of max_recovery_attempts, `job=3,other=none`; win over registries",
        shown_default="",
    )


def stall_timeout_field() -> Any:
    """SUPERVISOR_STALL_TIMEOUT, one variable read by every rule that judges by progress."""
    return env_field(
        "SUPERVISOR_STALL_TIMEOUT",
        60_000,
        "seconds_ms",
        "seconds without progress after which a stalled workflow counts as stuck",
        minimum=0.5,
    )


@dataclass(frozen=True)
class NoConfig:
    """For rules with no setting of their own."""


class SqlParams:
    """Numbered query parameters for a prefilter, one per name, each with its SQL type.

    `first` is the number of the first one (the read's own parameters come before)."""

    def __init__(self, first: int = 2) -> None:
        self.values: list[Any] = []
        self._first = first
        self._index: dict[str, str] = {}

    def __call__(self, name: str, value: Any, sql_type: str) -> str:
        if name not in self._index:
            self.values.append(value)
            self._index[name] = f"${self._first + len(self.values) - 1}::{sql_type}"
        return self._index[name]


@dataclass(frozen=True)
class PrefilterContext:
    """What a prefilter may use: the snapshot's executors and registry, its database time."""

    now_ms: int
    snap: Snapshot
    schema: DbosSchema


class Rule(ABC, Generic[C]):
    """A limbo case. Subclasses are singletons, listed once in rules/__init__.py."""

    name: ClassVar[str]
    summary: ClassVar[str]
    statuses: ClassVar[tuple[Status, ...]]
    reads: ClassVar[frozenset[Signal]]
    actions: ClassVar[frozenset[Action]]
    config_type: ClassVar[type[Any]] = NoConfig
    default_enabled: ClassVar[bool] = True
    guard_columns: ClassVar[tuple[GuardColumn, ...]] = ()
    # Only an operator's forced release may touch a row a live executor reports running.
    may_override_listing: ClassVar[bool] = False
    # The names of `guard_columns`: every verdict that changes a row sets them all.
    guard_names: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.guard_names = frozenset(c.name for c in cls.guard_columns)

    @abstractmethod
    def evaluate(
        self, wf: WorkflowRow, snap: Snapshot, common: CommonSettings, config: C
    ) -> Verdict:
        """This rule's verdict on one observed workflow."""

    @abstractmethod
    def prefilter(
        self,
        status: Status,
        p: SqlParams,
        ctx: PrefilterContext,
        common: CommonSettings,
        config: C,
    ) -> str:
        """SQL over `ws` true for every row of `status` this rule could match."""

    def reads_every_pending_row_of(self, ctx: PrefilterContext) -> frozenset[str]:
        """Executors all of whose PENDING rows this rule's PENDING prefilter selects: their
        progress (Signal.EXECUTOR_PROGRESS) is then derived from the rows read, unless the
        read was truncated, instead of scanning every PENDING row once more."""
        return frozenset()

    def guard(self, schema: DbosSchema) -> str:
        """SQL over `ws` and `o`: the rule's assumptions, restated at the write."""
        return "TRUE"

    def ctes(self, schema: DbosSchema) -> tuple[str, ...]:
        """Extra named subqueries the guard refers to (after `o` and `live`)."""
        return ()

    # -- helpers for subclasses -----------------------------------------------------------
    def no_match(self, wf: WorkflowRow, reason: str, **evidence: Any) -> Verdict:
        return Verdict(rule=self.name, workflow=wf, matched=False, reason=reason, evidence=evidence)

    def match(
        self,
        wf: WorkflowRow,
        action: Action,
        reason: str,
        evidence: dict[str, Any],
        guard: dict[str, Any] | None = None,
        **payload: Any,
    ) -> Verdict:
        assert action in self.actions, (self.name, action)
        assert not action.changes_row or self.guard_names <= (guard or {}).keys(), (
            self.name,
            self.guard_names - (guard or {}).keys(),
        )
        return Verdict(
            rule=self.name,
            workflow=wf,
            matched=True,
            reason=reason,
            action=action,
            evidence=evidence,
            guard=guard or {},
            **payload,
        )
