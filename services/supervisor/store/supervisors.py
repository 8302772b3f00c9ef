"""`limbo.supervisors`: every supervisor process's heartbeat, for the console's "leader and
standby supervisors".

Each process writes its own row (actor, host, pid, version, the backend PID of its
leadership connection) about once a second. Who leads is not taken from that report: it is
read from `pg_locks`, as the backend that holds the leadership advisory lock now, so a
leader that froze or lost its connection stops showing as one at once. A row whose beats
stopped for three beats is shown as gone; rows of processes gone for a day are removed.
"""

from __future__ import annotations

from typing import Any

from services.supervisor.rules.liveness import ms
from services.supervisor.store.connection import Conn

BEAT_SQL = """
    INSERT INTO limbo.supervisors AS s (instance, actor, hostname, pid, version, dry_run, role,
                                        lock_backend_pid, beat_ms)
    VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (instance) DO UPDATE SET
        role = excluded.role, lock_backend_pid = excluded.lock_backend_pid,
        dry_run = excluded.dry_run, beat_ms = excluded.beat_ms, last_seen_at = now(),
        stopped_at = NULL"""

PRUNE_SQL = "DELETE FROM limbo.supervisors WHERE last_seen_at < now() - interval '1 day'"

STOPPED_SQL = """
    UPDATE limbo.supervisors SET stopped_at = now(), role = 'standby', lock_backend_pid = NULL
     WHERE instance = $1::uuid"""

# The leadership lock is `pg_try_advisory_lock(hashtext(name))`: one bigint key, which
# pg_locks shows split into classid (high 32 bits) and objid (low 32 bits), objsubid 1,
# among the whole server's locks: in this database (another app's supervisor takes the same).
SUPERVISORS_SQL = f"""
    SELECT s.instance::text AS instance, s.actor, s.hostname, s.pid, s.version, s.dry_run,
           s.role AS reported_role, s.beat_ms,
           {ms("s.started_at")} AS started_at_ms, {ms("s.last_seen_at")} AS last_seen_ms,
           {ms("s.stopped_at")} AS stopped_at_ms,
           s.stopped_at IS NULL
             AND s.last_seen_at > now() - (3 * s.beat_ms + 2000) * interval '1 ms' AS up,
           EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                      AND l.pid = s.lock_backend_pid
                      AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                                         WHERE d.datname = current_database())
                      AND l.objid::bigint = (hashtext($1)::bigint & 4294967295)
                      AND l.classid::bigint = ((hashtext($1)::bigint >> 32) & 4294967295))
             AS holds_lock
      FROM limbo.supervisors s
     WHERE s.last_seen_at > now() - interval '1 hour'
     ORDER BY s.started_at, s.instance"""


async def beat(
    conn: Conn,
    *,
    instance: str,
    actor: str,
    hostname: str,
    pid: int,
    version: str,
    dry_run: bool,
    role: str,
    lock_backend_pid: int | None,
    beat_ms: int,
) -> None:
    async with conn.transaction():
        await conn.execute(
            BEAT_SQL,
            instance,
            actor,
            hostname,
            pid,
            version,
            dry_run,
            role,
            lock_backend_pid,
            beat_ms,
        )
        await conn.execute(PRUNE_SQL)


async def stopped(conn: Conn, instance: str) -> None:
    await conn.execute(STOPPED_SQL, instance)


async def supervisors(conn: Conn, lock_name: str) -> list[dict[str, Any]]:
    """Supervisors seen in the last hour, oldest first, with `state` (up, stopped, gone)
    and `role` (leader, standby; None unless up) as the database sees them now."""
    found = []
    for row in await conn.fetch(SUPERVISORS_SQL, lock_name):
        entry = dict(row)
        up, holds = entry.pop("up"), entry.pop("holds_lock")
        if entry["stopped_at_ms"] is not None:
            entry["state"] = "stopped"
        else:
            entry["state"] = "up" if up else "gone"
        entry["role"] = ("leader" if holds else "standby") if up else None
        found.append(entry)
    return found
