"""Hosting your workflows: the modules `WORKER_APP` names, imported before DBOS launches.

A hosted module declares DBOS workflows (with `@DBOS.workflow`, at import or in its setup)
and, optionally:

    DBOS_QUEUES = {"reports": {"worker_concurrency": 4}}   # DBOS.register_queue arguments

    async def limbo_setup(host: Host) -> None:             # or a plain function
        host.declare_queue("reports", worker_concurrency=4)
        host.add_routes(MyController)                      # Litestar route handlers
        host.on_shutdown(close_my_pool)                    # after DBOS stopped

The worker imports each module, runs its setup, protects the process with `limbo.protect()`
(which reads the declared workflows from DBOS's own registry), launches DBOS, then
registers the queues (DBOS 3.x registers queues only once launched).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from dbos import DBOS

from services.shared.config import ConfigError
from services.worker.enqueue import HolderLookup

ShutdownHook = Callable[[], Awaitable[None] | None]
# DBOS.register_queue's keyword arguments a module may declare.
QUEUE_OPTIONS = frozenset(
    {
        "worker_concurrency",
        "global_concurrency",
        "partition_concurrency",
        "partition_worker_concurrency",
        "partition_limiter",
        "limiter",
        "polling_interval_sec",
    }
)


@dataclass
class Host:
    """What a hosted module's `limbo_setup` receives, and what it declares back."""

    database_url: str
    executor_id: str
    application_name: str
    application_version: str
    dbos_schema: str
    environ: Mapping[str, str]
    # Which workflow holds a dedup ID on a queue (for the 409 of an enqueue).
    dedup_holder: HolderLookup | None = None
    queue_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    route_handlers: list[Any] = field(default_factory=list)
    shutdown_hooks: list[ShutdownHook] = field(default_factory=list)
    # Filled once DBOS launched: the registered queues, by name.
    queues: dict[str, Any] = field(default_factory=dict)

    def declare_queue(self, name: str, **options: Any) -> None:
        unknown = set(options) - QUEUE_OPTIONS
        if unknown:
            raise ValueError(f"queue {name!r}: unknown option(s) {', '.join(sorted(unknown))}")
        if name in self.queue_options and self.queue_options[name] != options:
            raise ValueError(f"queue {name!r} declared twice with different options")
        self.queue_options[name] = dict(options)

    def add_routes(self, *handlers: Any) -> None:
        self.route_handlers.extend(handlers)

    def on_shutdown(self, hook: ShutdownHook) -> None:
        self.shutdown_hooks.append(hook)

    def queue(self, name: str) -> Any:
        """A registered queue (after launch)."""
        try:
            return self.queues[name]
        except KeyError:
            raise LookupError(f"queue {name!r} is not registered") from None


def import_apps(names: Sequence[str]) -> list[ModuleType]:
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            raise ConfigError("WORKER_APP", f"cannot import {name!r}: {exc}") from None
    return modules


async def set_up(modules: Sequence[ModuleType], host: Host) -> None:
    """Each module's queues and setup, in the order WORKER_APP names them."""
    for module in modules:
        for name, options in (getattr(module, "DBOS_QUEUES", None) or {}).items():
            host.declare_queue(name, **options)
        setup = getattr(module, "limbo_setup", None)
        if setup is not None:
            result = setup(host)
            if inspect.isawaitable(result):
                await result


async def register_queues(host: Host) -> None:
    for name, options in host.queue_options.items():
        host.queues[name] = await DBOS.register_queue_async(
            name, on_conflict="always_update", **options
        )


async def shut_down(host: Host) -> None:
    for hook in reversed(host.shutdown_hooks):
        result = hook()
        if inspect.isawaitable(result):
            await result
