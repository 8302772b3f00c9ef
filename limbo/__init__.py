"""Limbo's liveness client: one call makes a DBOS Python app safe to supervise.

    from dbos import DBOS
    import limbo

    DBOS(config=config)
    limbo.protect()      # after DBOS(config=...), before DBOS.launch()
    DBOS.launch()

`protect()` holds a lease on the process's executor ID in the database (the SQL contract
in schema `limbo`), reports the workflows this process runs, publishes the declared
workflows with their `max_recovery_attempts`, and fences the process (exit status 75)
when it can no longer prove it is alive. The Limbo supervisor then hands the work of a
dead process over in about a second, and never the work of a live one.

Timing comes from LIMBO_BEAT_INTERVAL, LIMBO_SESSION_GRACE and LIMBO_LEASE (seconds) or a
`LeaseTiming`. `protect_async()` is the same call for code running on an event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading

from limbo import _dbos
from limbo._contract import LOCK_NAMESPACE, migrate_contract
from limbo._lease import FENCED_EXIT_CODE, FenceHook, Lease
from limbo._timing import LeaseTiming
from limbo.exceptions import (
    ExecutorIdConflict,
    LimboError,
    NotConfigured,
    RegistrationTimeout,
)

__all__ = [
    "FENCED_EXIT_CODE",
    "LOCK_NAMESPACE",
    "ExecutorIdConflict",
    "Lease",
    "LeaseTiming",
    "LimboError",
    "NotConfigured",
    "Protection",
    "RegistrationTimeout",
    "migrate_contract",
    "protect",
    "protect_async",
]

log = logging.getLogger("limbo")
_lock = threading.Lock()
_current: Protection | None = None


class Protection:
    """A DBOS process under Limbo's protection: its lease and its work report."""

    def __init__(self, lease: Lease, report: _dbos.WorkReport) -> None:
        self.lease = lease
        self.report = report

    @property
    def executor_id(self) -> str:
        return self.lease.identity.executor_id

    def running(self) -> list[str]:
        return self.report.running()

    def stop(self) -> bool:
        """End the lease if nothing runs here any more (then the supervisor may hand this
        executor's PENDING rows over at once); otherwise keep beating until the process
        exits, so that work still running is never handed over. Returns whether released."""
        idle = not self.report.active()
        if idle:
            self.lease.stop(release=True)
        return idle


def protect(
    *,
    timing: LeaseTiming | None = None,
    on_fence: FenceHook | None = None,
    database_url: str | None = None,
    migrate: bool = True,
    timeout: float | None = None,
) -> Protection:
    """Register this DBOS process with Limbo and keep it registered (see the module doc).

    Call it after `DBOS(config=...)` and after every workflow is declared (imported), before
    `DBOS.launch()`. Raises ExecutorIdConflict when a live process already holds the executor
    ID, NotConfigured when there is no DBOS instance or no PostgreSQL system database.
    A second call returns the first protection.
    """
    global _current
    with _lock:
        if _current is not None:
            return _current
        dbos = _dbos.instance()
        if getattr(dbos, "_launched", False):
            log.warning(
                "protect_after_launch",
                extra={"detail": "DBOS launched before limbo.protect(): protection starts now"},
            )
        ident = _dbos.identity(dbos)
        report = _dbos.WorkReport(dbos)
        lease = Lease(
            database_url=database_url or ident.database_url,
            executor_id=ident.executor_id,
            application_name=ident.application_name,
            application_version=ident.application_version,
            timing=timing or LeaseTiming.from_env(),
            running=report.running,
            on_fence=on_fence,
        )
        lease.start(registry=_dbos.workflow_registry(dbos), migrate=migrate, timeout=timeout)
        _current = Protection(lease, report)
        atexit.register(_current.stop)
        return _current


async def protect_async(
    *,
    timing: LeaseTiming | None = None,
    on_fence: FenceHook | None = None,
    database_url: str | None = None,
    migrate: bool = True,
    timeout: float | None = None,
) -> Protection:
    """`protect()` off the event loop (registration may wait for a predecessor's lease)."""
    return await asyncio.to_thread(
        protect,
        timing=timing,
        on_fence=on_fence,
        database_url=database_url,
        migrate=migrate,
        timeout=timeout,
    )


def current() -> Protection | None:
    """The protection `protect()` set up in this process, if any."""
    return _current
