"""Every error the `limbo` client raises."""

from __future__ import annotations


class LimboError(RuntimeError):
    """Base class of the client's errors."""


class ExecutorIdConflict(LimboError):
    """Another live process holds this executor ID: this one must not start.

    Two processes sharing an executor ID recover each other's running work; DBOS's default
    ID, `local`, is shared by every process that keeps it.
    """

    def __init__(self, executor_id: str, holder_hostname: str, holder_pid: int, detail: str):
        super().__init__(
            f"executor ID {executor_id!r} is already held by a live process on host "
            f"{holder_hostname!r} (pid {holder_pid}): give each process its own executor ID "
            f"(DBOS config `executor_id`, or DBOS__VMID). {detail}"
        )
        self.executor_id = executor_id
        self.holder_hostname = holder_hostname
        self.holder_pid = holder_pid


class RegistrationTimeout(LimboError):
    """The executor ID stayed busy (its previous holder's lease had not ended) too long."""


class NotConfigured(LimboError):
    """`protect()` could not find what it needs (a DBOS instance, a database URL...)."""
