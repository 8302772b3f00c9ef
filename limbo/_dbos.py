"""What the lease needs from DBOS Transact in this process: who we are, which workflows are
declared (with their `max_recovery_attempts`), and which ones run here now.

These read DBOS internals (`_registry.workflow_info_map`, `_active_workflows_set`, the
queue's claim functions), so `dbos` is pinned (~=3.4.0) and tests/client/ checks each one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from limbo.exceptions import NotConfigured

# A claim stays in the report this long at most without the workflow appearing as active:
# between the queue's claim and the workflow's start DBOS hops threads (and the event loop).
_CLAIM_HOLD_S = 60.0


@dataclass(frozen=True)
class DbosIdentity:
    database_url: str
    executor_id: str
    application_name: str
    application_version: str
    system_schema: str


def instance() -> Any:
    """The process's DBOS object; `DBOS(config=...)` must have been called."""
    from dbos import _dbos

    dbos = _dbos._dbos_global_instance
    if dbos is None:
        raise NotConfigured(
            "limbo.protect() needs a DBOS instance: call it after DBOS(config=...) "
            "and before DBOS.launch()"
        )
    return dbos


def identity(dbos: Any) -> DbosIdentity:
    """Executor ID, application name and version as DBOS will use them once launched.

    An unset version is computed as DBOS does at launch (a hash of the workflows' source)
    and pinned, so DBOS and the lease agree on it."""
    from dbos._utils import GlobalParams

    config = dbos._config
    url = config.get("system_database_url")
    if not url or not str(url).startswith("postgres"):
        raise NotConfigured(
            "limbo.protect() needs a PostgreSQL system database "
            f"(DBOS config system_database_url), got {_scheme(url)!r}"
        )
    name = config["name"]
    if not GlobalParams.app_version:
        GlobalParams.app_version = dbos._registry.compute_app_version(name)
    return DbosIdentity(
        database_url=str(url),
        executor_id=GlobalParams.executor_id,
        application_name=name,
        application_version=GlobalParams.app_version,
        system_schema=config.get("dbos_system_schema") or "dbos",
    )


def _scheme(url: object) -> str:
    return str(url).split(":", 1)[0] if url else "none"


def declared_workflows(dbos: Any) -> dict[str, Any]:
    """Every declared workflow function by its DBOS name (DBOS's registry of decorated
    functions; temporary registrations left out)."""
    return {
        name: func
        for name, func in dbos._registry.workflow_info_map.items()
        if not name.startswith("<temp>.")
    }


def workflow_registry(dbos: Any) -> dict[str, int | None]:
    """Every declared workflow name with its max_recovery_attempts (None: unlimited)."""
    from dbos._registrations import get_func_info

    registry: dict[str, int | None] = {}
    for name, func in declared_workflows(dbos).items():
        info = get_func_info(func)
        registry[name] = None if info is None else info.max_recovery_attempts
    return registry


class WorkReport:
    """The workflow IDs this process is executing: DBOS's active set, plus what its queue
    claimed and has not started yet (so a claim in flight is never mistaken for an orphan)."""

    def __init__(self, dbos: Any) -> None:
        self._dbos = dbos
        self._lock = threading.Lock()
        self._claimed: dict[str, float] = {}
        _install_hooks(self._note_claims, self._note_started)

    def _note_claims(self, workflow_ids: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for workflow_id in workflow_ids:
                self._claimed[workflow_id] = now

    def _note_started(self, workflow_id: str) -> None:
        # In DBOS's active set from now on: that set speaks for it.
        with self._lock:
            self._claimed.pop(workflow_id, None)

    def active(self) -> list[str]:
        return list(self._dbos._active_workflows_set.activeList())

    def running(self) -> list[str]:
        active = set(self.active())
        now = time.monotonic()
        with self._lock:
            for workflow_id, claimed_at in list(self._claimed.items()):
                if now - claimed_at > _CLAIM_HOLD_S:  # claimed, never started
                    del self._claimed[workflow_id]
            return sorted(active | set(self._claimed))


_claim_listeners: list[Callable[[list[str]], None]] = []
_start_listeners: list[Callable[[str], None]] = []
_hook_lock = threading.Lock()


def _install_hooks(
    on_claims: Callable[[list[str]], None], on_started: Callable[[str], None]
) -> None:
    """Wrap, once per process and at class level (so the objects DBOS creates at launch use
    them), the system database's claim functions and the active set's `add`."""
    from dbos._core import ActiveWorkflowById
    from dbos._sys_db import SystemDatabase

    with _hook_lock:
        _claim_listeners.append(on_claims)
        _start_listeners.append(on_started)
        if getattr(SystemDatabase, "_limbo_hooked", False):
            return
        plain = SystemDatabase.start_queued_workflows
        partitioned = SystemDatabase.start_queued_partitioned_workflows
        add = ActiveWorkflowById.add

        def start_queued_workflows(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = plain(self, *args, **kwargs)
            _notify_claims(list(result[0]))
            return result

        def start_queued_partitioned_workflows(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = partitioned(self, *args, **kwargs)
            _notify_claims(list(result))
            return result

        def add_active(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
            entry = add(self, key, *args, **kwargs)
            for listener in list(_start_listeners):
                listener(key)
            return entry

        SystemDatabase.start_queued_workflows = start_queued_workflows  # type: ignore[method-assign]
        SystemDatabase.start_queued_partitioned_workflows = start_queued_partitioned_workflows  # type: ignore[method-assign]
        ActiveWorkflowById.add = add_active  # type: ignore[method-assign]
        SystemDatabase._limbo_hooked = True  # type: ignore[attr-defined]


def _notify_claims(workflow_ids: list[str]) -> None:
    if workflow_ids:
        for listener in list(_claim_listeners):
            listener(workflow_ids)
