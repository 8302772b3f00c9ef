"""A live executor of the liveness contract for tests: registered on a dedicated connection
and beating on a thread of its own, without fencing the test process (that is the real
client's job, tested with real processes)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from types import TracebackType

import asyncpg

from services.shared.dsn import asyncpg_dsn


class HeldExecutor:
    """`with HeldExecutor(url, "exec-live"):` the executor is alive for the block."""

    def __init__(
        self,
        url: str,
        executor_id: str,
        *,
        version: str = "0.1.0",
        app: str = "limbo",
        running: list[str] | None = None,
        beat_s: float = 0.2,
    ) -> None:
        self.url = asyncpg_dsn(url)
        self.executor_id = executor_id
        self.version = version
        self.app = app
        self.running = running
        self.beat_s = beat_s
        self.incarnation = uuid.uuid4()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"held-{executor_id}")

    def __enter__(self) -> HeldExecutor:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(self.url, server_settings={"application_name": "held"})
            row = await conn.fetchrow(
                "SELECT * FROM limbo.executor_register($1, $2, $3, $4, 'test-host', 1, "
                "'test', 3600000, 1000, 250, $5)",
                self.executor_id,
                self.incarnation,
                self.app,
                self.version,
                self.running is not None,
            )
            if row is None or row["outcome"] != "registered":
                raise RuntimeError(f"test executor {self.executor_id} not registered: {row}")
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            if conn is not None:
                conn.terminate()
            return
        self._ready.set()
        try:
            while not self._stop.wait(self.beat_s):
                await conn.fetchval(
                    "SELECT limbo.executor_beat($1, $2, $3)",
                    self.executor_id,
                    self.incarnation,
                    self.running,
                )
        finally:
            with contextlib.suppress(Exception):
                await conn.close()


@contextlib.contextmanager
def held_executors(url: str, *executor_ids: str) -> Iterator[list[HeldExecutor]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(HeldExecutor(url, e)) for e in executor_ids]
