"""DBOS's workflow statuses (dbos._sys_db.WorkflowStatusString), and the sets we reason with."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    ENQUEUED = "ENQUEUED"
    DELAYED = "DELAYED"  # 3.x: enqueued with a delay not yet reached
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"
    MAX_RECOVERY_ATTEMPTS_EXCEEDED = "MAX_RECOVERY_ATTEMPTS_EXCEEDED"

    @property
    def sql(self) -> str:
        """The status as an SQL literal (values are fixed identifiers, never user data)."""
        return f"'{self.value}'"


# What a sweep reads: the rows DBOS may still run, each through its own index.
IN_FLIGHT: tuple[Status, ...] = (Status.ENQUEUED, Status.PENDING)
TERMINAL = frozenset(
    {Status.SUCCESS, Status.ERROR, Status.CANCELLED, Status.MAX_RECOVERY_ATTEMPTS_EXCEEDED}
)
# Children a parent may wait on forever (DBOS < 2.12 polls them).
DEAD_CHILD: tuple[Status, ...] = (Status.MAX_RECOVERY_ATTEMPTS_EXCEEDED, Status.CANCELLED)


def sql_list(statuses: tuple[Status, ...]) -> str:
    return "(" + ", ".join(s.sql for s in statuses) + ")"
