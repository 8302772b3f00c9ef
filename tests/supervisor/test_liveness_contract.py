"""The liveness contract's SQL functions and view, on a real PostgreSQL: what a client in any
language relies on, and what the supervisor reads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from services.shared.db import connect
from services.supervisor.operating import Operator
from testkit.dbos_rows import insert_workflow, row
from testkit.postgres import TestPostgres

GRACE_MS = 600


async def register(
    conn: asyncpg.Connection,
    executor_id: str,
    incarnation: uuid.UUID,
    *,
    reports: bool = True,
    lease_ms: int = 5_000,
) -> asyncpg.Record:
    record = await conn.fetchrow(
        "SELECT * FROM limbo.executor_register($1, $2, 'app', '1', 'host-t', 42, 'test', "
        "$3, $4, 100, $5)",
        executor_id,
        incarnation,
        lease_ms,
        GRACE_MS,
        reports,
    )
    assert record is not None
    return record


async def register_in_time(
    conn: asyncpg.Connection, executor_id: str, incarnation: uuid.UUID
) -> None:
    """Register, retrying while the predecessor's session is being ended (5 s at most)."""
    for _ in range(50):
        if (await register(conn, executor_id, incarnation))["outcome"] == "registered":
            return
        await asyncio.sleep(0.1)


async def state(conn: asyncpg.Connection, executor_id: str) -> dict[str, Any]:
    await conn.execute("SELECT limbo.mark_lost_sessions()")
    record = await conn.fetchrow(
        "SELECT * FROM limbo.executor_liveness WHERE executor_id = $1", executor_id
    )
    assert record is not None
    return dict(record)


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[list[asyncpg.Connection]]:
    """Connections a test opens as executors' dedicated sessions; closed at the end."""
    opened: list[asyncpg.Connection] = []

    async def _open() -> asyncpg.Connection:
        conn = await connect(database_url, application_name="test-executor")
        opened.append(conn)
        return conn

    opened_factory: Any = _open
    yield opened_factory
    for conn in opened:
        if not conn.is_closed():
            conn.terminate()


async def test_registration_holds_a_lock_and_refuses_a_second_live_process(
    conn: asyncpg.Connection, sessions: Any
) -> None:
    first = await sessions()
    assert (await register(first, "e", uuid.uuid4()))["outcome"] == "registered"
    assert (await state(conn, "e"))["state"] == "alive"
    second = await sessions()
    refused = await register(second, "e", uuid.uuid4())
    assert refused["outcome"] == "conflict"
    assert (refused["holder_hostname"], refused["holder_pid"]) == ("host-t", 42)
    [conflict] = await conn.fetch("SELECT * FROM limbo.executor_conflicts")
    assert conflict["executor_id"] == "e"


async def test_a_lost_session_is_dead_only_after_the_grace_from_its_first_sighting(
    conn: asyncpg.Connection, sessions: Any
) -> None:
    session = await sessions()
    await register(session, "e", uuid.uuid4())
    await session.close()  # the process died: PostgreSQL ends its lock with the backend
    first = await state(conn, "e")
    assert (first["state"], first["lock_held"]) == ("suspect", False)
    assert first["session_lost_seen_at"] is not None
    await asyncio.sleep(GRACE_MS / 1000 + 0.2)
    later = await state(conn, "e")
    assert later["state"] == "lost"
    assert later["dead_since"] == first["session_lost_seen_at"]


async def test_reregistering_within_the_grace_keeps_the_incarnation_alive(
    conn: asyncpg.Connection, sessions: Any
) -> None:
    incarnation = uuid.uuid4()
    session = await sessions()
    await register(session, "e", incarnation)
    session.terminate()  # a dropped connection, the process still alive
    assert (await state(conn, "e"))["state"] == "suspect"
    again = await sessions()
    assert (await register(again, "e", incarnation))["outcome"] == "registered"
    await asyncio.sleep(GRACE_MS / 1000 + 0.2)
    after = await state(conn, "e")
    assert (after["state"], after["session_lost_seen_at"]) == ("alive", None)


async def test_a_beat_after_the_lease_ended_is_refused(
    conn: asyncpg.Connection, sessions: Any
) -> None:
    incarnation = uuid.uuid4()
    session = await sessions()
    await register(session, "e", incarnation, lease_ms=800)
    assert await session.fetchval("SELECT limbo.executor_beat('e', $1, ARRAY['w'])", incarnation)
    await asyncio.sleep(1.0)
    assert (await state(conn, "e"))["state"] == "expired"
    with pytest.raises(asyncpg.PostgresError) as ended:
        await session.fetchval("SELECT limbo.executor_beat('e', $1, NULL)", incarnation)
    assert ended.value.sqlstate == "L0001"
    # Re-registering the same incarnation is refused too: it is dead for good.
    assert (await register(session, "e", incarnation))["outcome"] == "ended"


async def test_a_new_incarnation_waits_out_a_suspect_predecessor(
    conn: asyncpg.Connection, sessions: Any
) -> None:
    old = await sessions()
    await register(old, "e", uuid.uuid4())
    await old.close()
    new = await sessions()
    incarnation = uuid.uuid4()
    assert (await register(new, "e", incarnation))["outcome"] == "busy"
    await asyncio.sleep(GRACE_MS / 1000 + 0.2)
    assert (await register(new, "e", incarnation))["outcome"] == "registered"
    assert (await state(conn, "e"))["incarnation"] == incarnation


async def test_a_fenced_predecessor_still_holding_the_lock_is_ended(
    conn: asyncpg.Connection, sessions: Any
) -> None:
    """Its lease ended (so by its promise it runs nothing) but its backend lingers, as after a
    network partition: the new incarnation ends that session and takes over."""
    zombie = await sessions()
    await register(zombie, "e", uuid.uuid4(), lease_ms=700)
    await asyncio.sleep(0.9)
    new = await sessions()
    incarnation = uuid.uuid4()
    assert (await register(new, "e", incarnation))["outcome"] == "busy"
    await register_in_time(new, "e", incarnation)
    assert (await state(conn, "e"))["incarnation"] == incarnation
    assert zombie.is_closed() or not await _alive(zombie)


async def _alive(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1")
        return True
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False


@pytest.fixture
async def other_app(pg: TestPostgres) -> AsyncIterator[asyncpg.Connection]:
    """Another DBOS app's system database on the same server, with its own contract (whose
    executors' lock keys count from 1 too), and a connection to it."""
    url = pg.fresh_database("other_app")
    conn = await connect(url, application_name="test-other-app")
    try:
        yield conn
    finally:
        if not conn.is_closed():
            conn.terminate()
        pg.drop_database(url)


LOCK_KEY = "SELECT lock_key FROM limbo.executors WHERE executor_id = $1"


async def test_another_databases_lock_keeps_no_executor_here_alive(
    conn: asyncpg.Connection, sessions: Any, other_app: asyncpg.Connection
) -> None:
    """pg_locks lists the whole server's locks: a live executor of another app holding the
    same lock key must not make this app's dead executor look alive."""
    assert (await register(other_app, "x", uuid.uuid4()))["outcome"] == "registered"
    session = await sessions()
    await register(session, "e", uuid.uuid4())
    # The control: the other app's live executor holds a lock of the same key on this server.
    assert await conn.fetchval(LOCK_KEY, "e") == await other_app.fetchval(LOCK_KEY, "x")
    await session.close()
    first = await state(conn, "e")
    assert (first["state"], first["lock_held"]) == ("suspect", False)
    await asyncio.sleep(GRACE_MS / 1000 + 0.2)
    assert (await state(conn, "e"))["state"] == "lost"
    assert (await state(other_app, "x"))["state"] == "alive"


async def test_a_takeover_never_ends_another_databases_session(
    conn: asyncpg.Connection, sessions: Any, other_app: asyncpg.Connection
) -> None:
    """A new incarnation ends the session of its fenced predecessor that still holds the
    lock, and only that one: never the session of another app's executor with the same key."""
    assert (await register(other_app, "x", uuid.uuid4()))["outcome"] == "registered"
    zombie = await sessions()
    await register(zombie, "e", uuid.uuid4(), lease_ms=700)
    assert await conn.fetchval(LOCK_KEY, "e") == await other_app.fetchval(LOCK_KEY, "x")
    await asyncio.sleep(0.9)
    new = await sessions()
    incarnation = uuid.uuid4()
    await register_in_time(new, "e", incarnation)
    assert (await state(conn, "e"))["incarnation"] == incarnation
    # The control: the takeover did end a session, the predecessor's.
    assert zombie.is_closed() or not await _alive(zombie)
    assert await _alive(other_app)
    assert (await state(other_app, "x"))["state"] == "alive"


async def test_stop_ends_the_lease_and_the_lock(conn: asyncpg.Connection, sessions: Any) -> None:
    incarnation = uuid.uuid4()
    session = await sessions()
    await register(session, "e", incarnation)
    assert await session.fetchval("SELECT limbo.executor_stop('e', $1)", incarnation)
    after = await state(conn, "e")
    assert (after["state"], after["lock_held"], after["running"]) == ("stopped", False, [])


async def test_after_an_outage_live_executors_that_come_back_are_never_handed_over(
    conn: asyncpg.Connection, sessions: Any, operator: Operator
) -> None:
    """A database restart ends every session at once. The grace runs from the supervisor's
    first sighting after the restart, so executors that re-register in time keep their
    work; the one that never comes back loses it (the control)."""
    live_inc, gone_inc = uuid.uuid4(), uuid.uuid4()
    live, gone = await sessions(), await sessions()
    await register(live, "live", live_inc, reports=False)
    await register(gone, "gone", gone_inc, reports=False)
    await insert_workflow(conn, "w-live", executor_id="live", updated_ago_ms=0)
    await insert_workflow(conn, "w-gone", executor_id="gone", updated_ago_ms=0)
    await asyncio.sleep(0.05)
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'test-executor'"
    )
    await asyncio.sleep(0.1)
    assert (await operator.sweep()).outcomes == []  # first sighting: the grace starts now
    back = await sessions()
    assert (await register(back, "live", live_inc, reports=False))["outcome"] == "registered"
    for _ in range(30):
        await asyncio.sleep(0.1)
        await operator.sweep()
        await back.fetchval("SELECT limbo.executor_beat('live', $1, NULL)", live_inc)
    assert (await row(conn, "w-live"))["status"] == "PENDING"
    assert (await row(conn, "w-gone"))["status"] == "ENQUEUED"
