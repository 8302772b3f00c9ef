"""The executor's lease, held through the SQL contract on a thread and connection of its own.

Two threads, so that neither a busy event loop nor a slow write can make the process lie:
- the heartbeat thread registers, beats every `beat_s` (renewing the lease and reporting
  the running workflows) and reconnects at once when its connection is lost;
- the fencer thread does nothing but compare the monotonic clock with the deadline the
  heartbeat last earned, and ends the process (exit status 75) when it passes: before the
  lease can end in the database, and within the grace of a lost session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import asyncpg

from limbo._contract import LEASE_ENDED_SQLSTATE, migrate_contract
from limbo._timing import LeaseTiming
from limbo.exceptions import ExecutorIdConflict, LimboError, RegistrationTimeout

log = logging.getLogger("limbo")

FENCED_EXIT_CODE = 75  # EX_TEMPFAIL: a process manager restarts it
_FENCER_TICK_S = 0.05
_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
)

RunningReport = Callable[[], Iterable[str]]
FenceHook = Callable[[str], None]


@dataclass(frozen=True)
class Identity:
    executor_id: str
    application_name: str
    application_version: str
    hostname: str
    pid: int
    sdk: str = "python"


class LeaseEnded(LimboError):
    """The database says this incarnation's lease is over: it must stop running workflows."""


def _dsn(url: str) -> str:
    # asyncpg takes postgresql:// and postgres:// only; DBOS configs often carry a driver.
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else url


class Lease:
    """One incarnation's lease on an executor ID. `start()` blocks until the lease is held."""

    def __init__(
        self,
        *,
        database_url: str,
        executor_id: str,
        application_name: str,
        application_version: str,
        timing: LeaseTiming | None = None,
        running: RunningReport | None = None,
        on_fence: FenceHook | None = None,
        sdk: str = "python",
    ) -> None:
        self.identity = Identity(
            executor_id=executor_id,
            application_name=application_name,
            application_version=application_version,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            sdk=sdk,
        )
        self.incarnation = uuid.uuid4()
        self.timing = timing or LeaseTiming()
        self._url = _dsn(database_url)
        self._running = running
        self._on_fence = on_fence
        # Monotonic send time of the last call the database confirmed (register or beat),
        # and whether the session that confirmed it is still believed open.
        self._last_good: float | None = None
        self._session_ok = False
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._release = False
        self._registry: Mapping[str, int | None] = {}
        self._migrate = True
        self._start_timeout = 30.0
        self._heartbeat = threading.Thread(
            target=self._run_heartbeat, name="limbo-heartbeat", daemon=True
        )
        self._fencer = threading.Thread(target=self._run_fencer, name="limbo-fencer", daemon=True)

    # -- public ---------------------------------------------------------------------------
    def start(
        self,
        *,
        registry: Mapping[str, int | None] | None = None,
        migrate: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Migrate the contract, register (waiting out a dead predecessor's lease), publish
        the workflow registry, then beat. Raises ExecutorIdConflict if a live process holds
        the executor ID."""
        self._registry = dict(registry or {})
        self._migrate = migrate
        self._start_timeout = (
            timeout if timeout is not None else self.timing.lease_s + self.timing.grace_s + 5.0
        )
        self._heartbeat.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error
        self._fencer.start()

    def stop(self, *, release: bool, timeout: float = 5.0) -> None:
        """Stop beating. With `release`, end the lease in the database first (only when
        nothing runs in this process any more: its PENDING work is handed over at once)."""
        if not self._heartbeat.is_alive():
            return
        self._release = release
        self._stopping.set()
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)
        self._heartbeat.join(timeout)

    def age(self) -> float:
        """Seconds since the database last confirmed the lease (infinite before)."""
        last = self._last_good
        return float("inf") if last is None else time.monotonic() - last

    @property
    def deadline(self) -> float:
        """The monotonic time at which this process must have stopped running workflows."""
        last = self._last_good
        if last is None:
            return float("inf")
        t = self.timing
        if self._session_ok:
            return last + t.lease_s - t.lease_margin_s
        return last + t.grace_s - t.grace_margin_s

    # -- fencing --------------------------------------------------------------------------
    def _run_fencer(self) -> None:
        while not self._stopping.wait(_FENCER_TICK_S):
            if time.monotonic() >= self.deadline:
                reason = (
                    "lease could not be renewed in time"
                    if self._session_ok
                    else "connection to the database lost and not re-established in time"
                )
                self._fence(reason)

    def _fence(self, reason: str) -> NoReturn:
        """Stop running workflows now, by ending the process: nothing it runs can then
        overlap with the work's next owner."""
        message = (
            f"limbo: fencing executor {self.identity.executor_id} "
            f"(incarnation {self.incarnation}): {reason}; exiting with status {FENCED_EXIT_CODE}"
        )
        with contextlib.suppress(Exception):
            log.critical(
                "lease_fenced",
                extra={
                    "executor_id": self.identity.executor_id,
                    "incarnation": str(self.incarnation),
                    "reason": reason,
                },
            )
        if not log.hasHandlers():  # an app that configured no logging still hears it
            with contextlib.suppress(Exception):
                print(message, file=sys.stderr, flush=True)
        if self._on_fence is not None:
            with contextlib.suppress(Exception):
                self._on_fence(reason)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(FENCED_EXIT_CODE)

    # -- the heartbeat thread ---------------------------------------------------------------
    def _run_heartbeat(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # the thread's last word, even on a bug
            if not self._started.is_set():
                self._start_error = exc
                self._started.set()
            elif not self._stopping.is_set():
                self._fence(f"heartbeat thread failed: {type(exc).__name__}: {exc}")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        conn: asyncpg.Connection | None = None
        try:
            conn = await self._connect()
            if self._migrate:
                await migrate_contract(conn)
            await self._register_first(conn)
            if self._registry:
                await self._publish(conn)
        except BaseException as exc:
            if conn is not None:
                conn.terminate()
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        try:
            while not self._stopping.is_set():
                # A lost connection is re-established at once, then retried every 50 ms.
                pause = self.timing.beat_s if self._session_ok else 0.05
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)
                self._wake.clear()
                if self._stopping.is_set():
                    break
                conn = await self._beat(conn)
        finally:
            if conn is not None and not conn.is_closed():
                if self._release:
                    await self._stop_lease(conn)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2.0)
                if not conn.is_closed():
                    conn.terminate()

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            self._url,
            timeout=max(self.timing.grace_s, 1.0),
            command_timeout=None,
            server_settings={
                "application_name": f"limbo-lease:{self.identity.executor_id}"[:63],
            },
        )
        conn.add_termination_listener(self._on_connection_closed)
        return conn

    def _on_connection_closed(self, _: Any) -> None:
        # Runs on this thread's loop as soon as the socket closes, even between beats:
        # the fencer's clock switches to the grace, and the loop reconnects now.
        if not self._stopping.is_set():
            self._session_ok = False
            if self._wake is not None:
                self._wake.set()

    async def _register(self, conn: asyncpg.Connection) -> asyncpg.Record:
        ident, t = self.identity, self.timing
        sent = time.monotonic()
        row = await conn.fetchrow(
            "SELECT * FROM limbo.executor_register($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            ident.executor_id,
            self.incarnation,
            ident.application_name,
            ident.application_version,
            ident.hostname,
            ident.pid,
            ident.sdk,
            round(t.lease_s * 1000),
            round(t.grace_s * 1000),
            round(t.beat_s * 1000),
            self._running is not None,
        )
        assert row is not None
        if row["outcome"] == "registered":
            self._confirmed(sent)
        return row

    async def _register_first(self, conn: asyncpg.Connection) -> None:
        deadline = time.monotonic() + self._start_timeout
        announced = False
        while True:
            row = await self._register(conn)
            outcome = row["outcome"]
            if outcome == "registered":
                log.info(
                    "lease_started",
                    extra={
                        "executor_id": self.identity.executor_id,
                        "incarnation": str(self.incarnation),
                        "lease_s": self.timing.lease_s,
                        "grace_s": self.timing.grace_s,
                        "beat_s": self.timing.beat_s,
                    },
                )
                return
            if outcome == "conflict":
                raise ExecutorIdConflict(
                    self.identity.executor_id,
                    row["holder_hostname"],
                    row["holder_pid"],
                    row["detail"],
                )
            if outcome != "busy":
                raise LimboError(f"registration refused: {outcome}: {row['detail']}")
            if time.monotonic() > deadline:
                raise RegistrationTimeout(
                    f"executor ID {self.identity.executor_id!r} still busy after "
                    f"{self._start_timeout:.0f}s: {row['detail']}"
                )
            if not announced:
                log.warning(
                    "lease_waiting_for_previous_holder",
                    extra={"executor_id": self.identity.executor_id, "detail": row["detail"]},
                )
                announced = True
            await asyncio.sleep(min(0.2, self.timing.beat_s))

    async def _publish(self, conn: asyncpg.Connection) -> None:
        import json

        await conn.execute(
            "SELECT limbo.publish_workflows($1, $2, $3, $4::jsonb)",
            self.identity.application_name,
            self.identity.application_version,
            self.identity.executor_id,
            json.dumps(dict(self._registry)),
        )

    def _confirmed(self, sent: float) -> None:
        self._last_good = sent
        self._session_ok = True

    async def _beat(self, conn: asyncpg.Connection | None) -> asyncpg.Connection | None:
        """One renewal; on a lost connection, reconnect and re-register at once."""
        try:
            if conn is None or conn.is_closed():
                conn = await self._connect()
                row = await self._register(conn)
                if row["outcome"] == "ended":
                    self._fence(f"lease ended while disconnected: {row['detail']}")
                if row["outcome"] != "registered":
                    raise LimboError(f"re-registration refused: {row['outcome']}")
                log.info("lease_reconnected", extra={"executor_id": self.identity.executor_id})
                return conn
            running = None if self._running is None else sorted(set(self._running()))
            sent = time.monotonic()
            await conn.fetchval(
                "SELECT limbo.executor_beat($1, $2, $3)",
                self.identity.executor_id,
                self.incarnation,
                running,
            )
            self._confirmed(sent)
            return conn
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == LEASE_ENDED_SQLSTATE:
                self._fence(str(exc))
            self._lost(conn, exc)
            return None
        except (*_CONNECTION_ERRORS, LimboError) as exc:
            self._lost(conn, exc)
            return None

    def _lost(self, conn: asyncpg.Connection | None, exc: BaseException) -> None:
        self._session_ok = False
        log.warning(
            "lease_connection_lost",
            extra={
                "executor_id": self.identity.executor_id,
                "error": f"{type(exc).__name__}: {exc}"[:300],
                "fence_in_s": round(max(0.0, self.deadline - time.monotonic()), 3),
            },
        )
        if conn is not None:
            conn.terminate()

    async def _stop_lease(self, conn: asyncpg.Connection) -> None:
        try:
            await asyncio.wait_for(
                conn.fetchval(
                    "SELECT limbo.executor_stop($1, $2)",
                    self.identity.executor_id,
                    self.incarnation,
                ),
                2.0,
            )
            log.info("lease_released", extra={"executor_id": self.identity.executor_id})
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            log.warning(
                "lease_release_failed",
                extra={"executor_id": self.identity.executor_id, "error": str(exc)[:300]},
            )
