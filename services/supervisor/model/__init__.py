"""What the supervisor decides on and what it decides: plain values, no I/O, no clock.

Everything here is read by the rules (rules/) and written by the store (store/).
"""

from services.supervisor.model.decisions import Action, Outcome, OutcomeKind, Verdict
from services.supervisor.model.rows import (
    ChildRow,
    ExecutorRow,
    ExecutorState,
    RegistryEntry,
    WorkflowRow,
)
from services.supervisor.model.snapshot import Snapshot
from services.supervisor.model.status import DEAD_CHILD, IN_FLIGHT, TERMINAL, Status

__all__ = [
    "DEAD_CHILD",
    "IN_FLIGHT",
    "TERMINAL",
    "Action",
    "ChildRow",
    "ExecutorRow",
    "ExecutorState",
    "Outcome",
    "OutcomeKind",
    "RegistryEntry",
    "Snapshot",
    "Status",
    "Verdict",
    "WorkflowRow",
]
