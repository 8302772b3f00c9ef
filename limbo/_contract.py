"""The liveness contract, in SQL: the tables, view and functions every Limbo client calls.

Any DBOS app, in any language, takes part by calling these functions on one dedicated
connection it keeps open (docs/LIVENESS.md has the protocol and a TypeScript client):

- `limbo.executor_register(...)` once, and again after every reconnect: takes the executor
  ID's session advisory lock, so PostgreSQL itself reports the process gone the moment its
  connection ends, and starts a lease of `lease_ms` (database time).
- `limbo.executor_beat(executor_id, incarnation, running)` every `beat_ms`: renews the lease
  and reports the workflow IDs this incarnation is executing. It refuses (SQLSTATE L0001) a
  lease that has ended: the caller must stop running workflows.
- `limbo.executor_stop(executor_id, incarnation)` on a graceful stop, once nothing runs.

The caller's promise, on which the supervisor's safety rests: it stops running workflows
(exits) before `lease_ms` has passed since the last beat it sent that succeeded, and within
`grace_ms` of losing its connection unless it re-registered by then.

`limbo.executor_liveness` is the one reading of that promise: an executor is `alive` (lease
valid, lock held), `suspect` (lease valid, lock free for less than the grace), `lost` (lock
free for the grace and no beat for the grace), `expired` (lease over) or `stopped`;
`dead_since` is the newest evidence of death. The supervisor, the clients and the console
all read this view.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from limbo._migrations import SCHEMA, migrate

COMPONENT: Final = "contract"
# First key of the executors' two-key session advisory locks ("limb"); the second is lock_key.
LOCK_NAMESPACE: Final = 0x6C696D62
# Raised by the contract's functions when the caller's lease has ended: fence at once.
LEASE_ENDED_SQLSTATE: Final = "L0001"

_S = SCHEMA
# Which pg_locks rows are an executor's session lock. pg_locks shows the whole server's locks
# and advisory locks are per database, while several DBOS apps on one server each count their
# lock keys from 1: the match names this database. Version 1 did not, so another database's
# live executor could make a dead one here look alive, and a new incarnation here could end
# that executor's session.
_LOCK_MATCH_1 = (
    "l.locktype = 'advisory' AND l.classid = {ns}::oid AND l.objid = {key}::oid "
    "AND l.objsubid = 2 AND l.granted"
)
_LOCK_MATCH = (
    _LOCK_MATCH_1 + " AND l.database = "
    "(SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())"
)


def _liveness_objects(create: str, match: str) -> str:
    """The view and the functions that read pg_locks, made by `create` (CREATE, or CREATE OR
    REPLACE to redefine them), finding executors' session locks by `match`."""

    def lock_held(key: str, extra: str = "") -> str:
        found = match.format(ns=LOCK_NAMESPACE, key=key)
        return f"EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE {found}{extra})"

    return f"""    {create} VIEW {_S}.executor_liveness AS
    SELECT e.executor_id, e.incarnation, e.application_name, e.application_version,
           e.hostname, e.pid, e.sdk, e.lock_key, e.lease_ms, e.grace_ms, e.beat_ms,
           e.started_at, e.last_seen_at, e.lease_expires_at, e.stopped_at, e.backend_pid,
           e.session_lost_seen_at, e.reports_work, e.running, e.report_at,
           h.lock_held,
           CASE WHEN e.stopped_at IS NOT NULL THEN 'stopped'
                WHEN ev.lease_over THEN 'expired'
                WHEN ev.session_over THEN 'lost'
                WHEN h.lock_held THEN 'alive'
                ELSE 'suspect' END AS state,
           CASE WHEN e.stopped_at IS NOT NULL OR ev.lease_over OR ev.session_over
                THEN greatest(e.stopped_at,
                              CASE WHEN ev.lease_over THEN e.lease_expires_at END,
                              CASE WHEN ev.session_over THEN e.session_lost_seen_at END)
           END AS dead_since
      FROM {_S}.executors e
     CROSS JOIN LATERAL (SELECT {lock_held("e.lock_key")} AS lock_held) h
     CROSS JOIN LATERAL (
           SELECT e.lease_expires_at <= now() AS lease_over,
                  coalesce(NOT h.lock_held
                           AND e.session_lost_seen_at <= now() - e.grace_ms * interval '1 ms'
                           AND e.last_seen_at <= now() - e.grace_ms * interval '1 ms',
                           false) AS session_over) ev;
    COMMENT ON VIEW {_S}.executor_liveness IS
        'Limbo liveness contract: the state of every executor (alive, suspect, lost, '
        'expired, stopped) and dead_since, the newest evidence of its death.';

    -- Record, once, when an executor's session lock is first seen free. Rows another
    -- transaction holds locked are skipped (marked on a later call), never waited for.
    {create} FUNCTION {_S}.mark_lost_sessions() RETURNS integer LANGUAGE sql AS $$
        WITH candidates AS (
            SELECT e.executor_id FROM {_S}.executors e
             WHERE e.session_lost_seen_at IS NULL AND e.stopped_at IS NULL
               AND NOT {lock_held("e.lock_key")}
               FOR UPDATE SKIP LOCKED
        ), marked AS (
            UPDATE {_S}.executors e SET session_lost_seen_at = now()
              FROM candidates c
             WHERE e.executor_id = c.executor_id AND NOT {lock_held("e.lock_key")}
            RETURNING 1
        )
        SELECT count(*)::integer FROM marked
    $$;

    {create} FUNCTION {_S}.executor_register(
        p_executor_id text, p_incarnation uuid, p_application_name text,
        p_application_version text, p_hostname text, p_pid integer, p_sdk text,
        p_lease_ms integer, p_grace_ms integer, p_beat_ms integer, p_reports_work boolean)
    RETURNS TABLE (outcome text, lease_expires_at timestamptz, holder_hostname text,
                   holder_pid integer, holder_state text, detail text)
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
        cur {_S}.executor_liveness%ROWTYPE;
        got boolean;
        expires timestamptz;
    BEGIN
        IF p_beat_ms IS NULL OR p_grace_ms IS NULL OR p_lease_ms IS NULL
           OR p_beat_ms <= 0 OR p_beat_ms >= p_grace_ms OR p_grace_ms >= p_lease_ms THEN
            RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
                'limbo.executor_register: need 0 < beat_ms (%s) < grace_ms (%s) < lease_ms (%s)',
                p_beat_ms, p_grace_ms, p_lease_ms);
        END IF;
        PERFORM {_S}.mark_lost_sessions();
        -- One registration of an executor ID at a time.
        PERFORM pg_advisory_xact_lock(hashtext('limbo.executor:' || p_executor_id));
        SELECT * INTO cur FROM {_S}.executor_liveness l WHERE l.executor_id = p_executor_id;
        IF FOUND AND cur.incarnation = p_incarnation AND cur.state NOT IN ('alive', 'suspect') THEN
            -- Our own lease ended while we were away: the incarnation is dead for good.
            RETURN QUERY SELECT 'ended'::text, NULL::timestamptz, cur.hostname, cur.pid,
                cur.state, format('the lease of incarnation %s ended (%s since %s)',
                                  p_incarnation, cur.state, cur.dead_since);
            RETURN;
        END IF;
        IF FOUND AND cur.incarnation <> p_incarnation AND cur.state IN ('alive', 'suspect') THEN
            IF cur.lock_held THEN
                INSERT INTO {_S}.executor_conflicts (executor_id, hostname, pid,
                        holder_hostname, holder_pid, holder_incarnation)
                VALUES (p_executor_id, p_hostname, p_pid, cur.hostname, cur.pid, cur.incarnation);
                RETURN QUERY SELECT 'conflict'::text, NULL::timestamptz, cur.hostname, cur.pid,
                    cur.state, format('executor ID %s is held by a live process (host %s, pid %s)',
                                      p_executor_id, cur.hostname, cur.pid);
                RETURN;
            END IF;
            RETURN QUERY SELECT 'busy'::text, NULL::timestamptz, cur.hostname, cur.pid, cur.state,
                format('the previous holder (host %s, pid %s) lost its session less than %s ms '
                       'ago and may still be running; its lease runs until %s',
                       cur.hostname, cur.pid, cur.grace_ms, cur.lease_expires_at);
            RETURN;
        END IF;
        IF NOT FOUND THEN
            INSERT INTO {_S}.executors (executor_id, incarnation, application_name,
                    application_version, hostname, pid, sdk, lease_ms, grace_ms, beat_ms,
                    reports_work, started_at, last_seen_at, lease_expires_at)
            VALUES (p_executor_id, p_incarnation, p_application_name, p_application_version,
                    p_hostname, p_pid, p_sdk, p_lease_ms, p_grace_ms, p_beat_ms, p_reports_work,
                    now(), now(), now() + p_lease_ms * interval '1 ms');
            SELECT * INTO cur FROM {_S}.executor_liveness l WHERE l.executor_id = p_executor_id;
        END IF;
        got := pg_try_advisory_lock({LOCK_NAMESPACE}, cur.lock_key);
        IF NOT got AND cur.incarnation <> p_incarnation THEN
            -- A previous incarnation whose lease ended still holds the lock: by the lease's
            -- promise it runs nothing, so its session may be ended. Retry after it is gone.
            BEGIN
                PERFORM pg_terminate_backend(l.pid) FROM pg_catalog.pg_locks l
                 WHERE {match.format(ns=LOCK_NAMESPACE, key="cur.lock_key")}
                   AND l.pid <> pg_backend_pid();
            EXCEPTION WHEN insufficient_privilege THEN NULL;
            END;
            RETURN QUERY SELECT 'busy'::text, NULL::timestamptz, cur.hostname, cur.pid, cur.state,
                format('the session of the previous holder (host %s, pid %s, %s) still holds '
                       'the lock; it is being ended', cur.hostname, cur.pid, cur.state);
            RETURN;
        END IF;
        UPDATE {_S}.executors e SET
               incarnation = p_incarnation,
               application_name = p_application_name,
               application_version = p_application_version,
               hostname = p_hostname, pid = p_pid, sdk = p_sdk,
               lease_ms = p_lease_ms, grace_ms = p_grace_ms, beat_ms = p_beat_ms,
               reports_work = p_reports_work,
               started_at = CASE WHEN e.incarnation = p_incarnation THEN e.started_at
                                 ELSE now() END,
               -- A new incarnation runs nothing yet: that is its first report.
               running = CASE WHEN NOT p_reports_work THEN NULL
                              WHEN e.incarnation = p_incarnation THEN e.running
                              ELSE '{{}}'::text[] END,
               report_at = CASE WHEN NOT p_reports_work THEN NULL
                                WHEN e.incarnation = p_incarnation THEN e.report_at
                                ELSE now() END,
               last_seen_at = now(),
               lease_expires_at = now() + p_lease_ms * interval '1 ms',
               stopped_at = NULL,
               backend_pid = CASE WHEN got THEN pg_backend_pid() ELSE e.backend_pid END,
               session_lost_seen_at = NULL
         WHERE e.executor_id = p_executor_id
        RETURNING e.lease_expires_at INTO expires;
        RETURN QUERY SELECT 'registered'::text, expires, p_hostname, p_pid, 'alive'::text,
            CASE WHEN got THEN 'lease started' ELSE 'lease renewed; an earlier session of this '
                 'incarnation still holds the lock' END;
    END
    $$;
    COMMENT ON FUNCTION {_S}.executor_register(text, uuid, text, text, text, integer, text,
        integer, integer, integer, boolean) IS
        'Limbo liveness contract: call on a dedicated connection (it takes a session lock) at '
        'start and after every reconnect. outcome: registered | busy (retry shortly) | '
        'conflict (a live process holds the ID: refuse to start) | ended (this incarnation '
        'is dead: stop running workflows).';

    {create} FUNCTION {_S}.executor_beat(
        p_executor_id text, p_incarnation uuid, p_running text[] DEFAULT NULL)
    RETURNS timestamptz LANGUAGE plpgsql AS $$
    DECLARE
        cur {_S}.executor_liveness%ROWTYPE;
        held boolean;
        expires timestamptz;
    BEGIN
        SELECT * INTO cur FROM {_S}.executor_liveness l
         WHERE l.executor_id = p_executor_id AND l.incarnation = p_incarnation;
        IF NOT FOUND OR cur.state NOT IN ('alive', 'suspect') THEN
            RAISE EXCEPTION USING ERRCODE = '{LEASE_ENDED_SQLSTATE}', MESSAGE = format(
                'limbo: the lease of executor %s incarnation %s has ended (%s): stop running '
                'workflows', p_executor_id, p_incarnation, coalesce(cur.state, 'superseded'));
        END IF;
        held := {lock_held("cur.lock_key", " AND l.pid = pg_backend_pid()")};
        IF NOT held THEN
            -- False only while an earlier session of ours still holds it.
            held := pg_try_advisory_lock({LOCK_NAMESPACE}, cur.lock_key);
        END IF;
        UPDATE {_S}.executors e SET
               last_seen_at = now(),
               lease_expires_at = now() + e.lease_ms * interval '1 ms',
               backend_pid = CASE WHEN held THEN pg_backend_pid() ELSE e.backend_pid END,
               session_lost_seen_at = NULL,
               running = CASE WHEN e.reports_work THEN coalesce(p_running, e.running) END,
               report_at = CASE WHEN e.reports_work THEN now() END
         WHERE e.executor_id = p_executor_id AND e.incarnation = p_incarnation
           AND e.stopped_at IS NULL AND e.lease_expires_at > now()
        RETURNING e.lease_expires_at INTO expires;
        IF expires IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = '{LEASE_ENDED_SQLSTATE}', MESSAGE = format(
                'limbo: the lease of executor %s incarnation %s has ended: stop running '
                'workflows', p_executor_id, p_incarnation);
        END IF;
        RETURN expires;
    END
    $$;
    COMMENT ON FUNCTION {_S}.executor_beat(text, uuid, text[]) IS
        'Limbo liveness contract: renew the lease (every beat_ms) and report the workflow IDs '
        'this incarnation executes (NULL: unchanged). Raises SQLSTATE L0001 once the lease '
        'has ended: the caller must stop running workflows at once.';

"""


# Append only: a released migration is never edited; a change is a new entry.
MIGRATIONS: tuple[str, ...] = (
    # 1: executors with leases and session locks, the workflow registry, refused starts.
    # Written to upgrade the tables of Limbo 0.1 (schema_version 1) in place.
    f"""
    CREATE TABLE IF NOT EXISTS {_S}.executors (
        executor_id         text PRIMARY KEY,
        application_name    text NOT NULL,
        application_version text NOT NULL,
        hostname            text NOT NULL,
        pid                 integer NOT NULL,
        incarnation         uuid NOT NULL,
        started_at          timestamptz NOT NULL,
        last_seen_at        timestamptz NOT NULL,
        stopped_at          timestamptz
    );
    ALTER TABLE {_S}.executors
        ADD COLUMN IF NOT EXISTS lock_key integer GENERATED ALWAYS AS IDENTITY,
        ADD COLUMN IF NOT EXISTS sdk text NOT NULL DEFAULT 'unknown',
        ADD COLUMN IF NOT EXISTS lease_ms integer NOT NULL DEFAULT 6000,
        ADD COLUMN IF NOT EXISTS grace_ms integer NOT NULL DEFAULT 3000,
        ADD COLUMN IF NOT EXISTS beat_ms integer NOT NULL DEFAULT 2000,
        ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz,
        ADD COLUMN IF NOT EXISTS backend_pid integer,
        ADD COLUMN IF NOT EXISTS session_lost_seen_at timestamptz,
        ADD COLUMN IF NOT EXISTS reports_work boolean NOT NULL DEFAULT false,
        ADD COLUMN IF NOT EXISTS running text[],
        ADD COLUMN IF NOT EXISTS report_at timestamptz;
    UPDATE {_S}.executors SET lease_expires_at = last_seen_at + interval '6 seconds'
     WHERE lease_expires_at IS NULL;
    ALTER TABLE {_S}.executors ALTER COLUMN lease_expires_at SET NOT NULL;
    ALTER TABLE {_S}.executors ADD CONSTRAINT executors_timing_check
        CHECK (beat_ms > 0 AND beat_ms < grace_ms AND grace_ms < lease_ms);
    CREATE UNIQUE INDEX IF NOT EXISTS executors_lock_key_idx ON {_S}.executors (lock_key);
    CREATE INDEX IF NOT EXISTS executors_version_idx
        ON {_S}.executors (application_name, application_version);

    CREATE TABLE IF NOT EXISTS {_S}.workflow_registry (
        application_name      text NOT NULL,
        application_version   text NOT NULL,
        workflow_name         text NOT NULL,
        max_recovery_attempts integer,  -- NULL means unlimited
        published_by          text NOT NULL,
        published_at          timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (application_name, application_version, workflow_name)
    );

    -- Starts refused because a live process already holds the executor ID.
    CREATE TABLE {_S}.executor_conflicts (
        id                 bigserial PRIMARY KEY,
        at                 timestamptz NOT NULL DEFAULT now(),
        executor_id        text NOT NULL,
        hostname           text NOT NULL,
        pid                integer NOT NULL,
        holder_hostname    text NOT NULL,
        holder_pid         integer NOT NULL,
        holder_incarnation uuid NOT NULL
    );
    CREATE INDEX executor_conflicts_at_idx ON {_S}.executor_conflicts (at);

"""
    + _liveness_objects("CREATE", _LOCK_MATCH_1)
    + f"""    CREATE FUNCTION {_S}.executor_stop(p_executor_id text, p_incarnation uuid)
    RETURNS boolean LANGUAGE plpgsql AS $$
    DECLARE
        key integer;
    BEGIN
        UPDATE {_S}.executors e SET stopped_at = now(),
               lease_expires_at = least(e.lease_expires_at, now()),
               running = CASE WHEN e.reports_work THEN '{{}}'::text[] END,
               report_at = CASE WHEN e.reports_work THEN now() END
         WHERE e.executor_id = p_executor_id AND e.incarnation = p_incarnation
           AND e.stopped_at IS NULL
        RETURNING e.lock_key INTO key;
        IF key IS NULL THEN
            RETURN false;
        END IF;
        WHILE pg_advisory_unlock({LOCK_NAMESPACE}, key) LOOP END LOOP;
        RETURN true;
    END
    $$;
    COMMENT ON FUNCTION {_S}.executor_stop(text, uuid) IS
        'Limbo liveness contract: a graceful stop, called only once this incarnation runs no '
        'workflow any more: its PENDING rows are handed over at once.';

    CREATE FUNCTION {_S}.publish_workflows(
        p_application_name text, p_application_version text, p_published_by text,
        p_workflows jsonb)
    RETURNS integer LANGUAGE sql AS $$
        WITH published AS (
            INSERT INTO {_S}.workflow_registry (application_name, application_version,
                    workflow_name, max_recovery_attempts, published_by, published_at)
            SELECT p_application_name, p_application_version, w.key,
                   CASE WHEN jsonb_typeof(w.value) = 'number'
                        THEN (w.value #>> '{{}}')::integer END,
                   p_published_by, now()
              FROM jsonb_each(p_workflows) w
            ON CONFLICT (application_name, application_version, workflow_name) DO UPDATE SET
                   max_recovery_attempts = excluded.max_recovery_attempts,
                   published_by = excluded.published_by, published_at = now()
            RETURNING 1
        )
        SELECT count(*)::integer FROM published
    $$;
    COMMENT ON FUNCTION {_S}.publish_workflows(text, text, text, jsonb) IS
        'Limbo liveness contract: publish each workflow name with its max_recovery_attempts '
        '({{"name": 3, "other": null}}; null means unlimited) for an application version.';
    """,
    # 2: the session locks looked up in this database only (see _LOCK_MATCH).
    _liveness_objects("CREATE OR REPLACE", _LOCK_MATCH),
)


async def migrate_contract(conn: asyncpg.Connection) -> int:
    """Create or upgrade the contract's tables, view and functions."""
    return await migrate(conn, COMPONENT, MIGRATIONS)
