"""Our own tables, in our own schema (never inside DBOS's): created and migrated at start.

Both services run `migrate` on start; an advisory lock makes concurrent starts safe, and
each migration is applied once, in order, inside one transaction.
"""

from __future__ import annotations

import asyncpg

SCHEMA = "limbo"
_MIGRATE_LOCK = "limbo.migrate"

# Append only: a released migration is never edited, a change is a new entry.
MIGRATIONS: tuple[str, ...] = (
    # 1: executor heartbeats, the published workflow registry, the audit trail, and the demo
    # workflow's step effects and chaos crashes.
    f"""
    CREATE TABLE {SCHEMA}.executors (
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
    CREATE INDEX executors_version_idx
        ON {SCHEMA}.executors (application_name, application_version);

    CREATE TABLE {SCHEMA}.workflow_registry (
        application_name      text NOT NULL,
        application_version   text NOT NULL,
        workflow_name         text NOT NULL,
        max_recovery_attempts integer,  -- NULL means unlimited
        published_by          text NOT NULL,
        published_at          timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (application_name, application_version, workflow_name)
    );

    CREATE TABLE {SCHEMA}.audit (
        id                bigserial PRIMARY KEY,
        at                timestamptz NOT NULL DEFAULT now(),
        actor             text NOT NULL,
        rule              text NOT NULL,
        action            text NOT NULL,
        workflow_id       text NOT NULL,
        outcome           text NOT NULL CHECK (outcome IN ('applied', 'skipped', 'dry_run')),
        dry_run           boolean NOT NULL,
        dedup_id_released text,
        reason            text,
        evidence          jsonb NOT NULL DEFAULT '{{}}'::jsonb
    );
    CREATE INDEX audit_workflow_idx ON {SCHEMA}.audit (workflow_id, id);

    -- The demo workflow's observable side effect: one row per step execution.
    CREATE TABLE {SCHEMA}.step_effects (
        id          bigserial PRIMARY KEY,
        workflow_id text NOT NULL,
        step        integer NOT NULL,
        executor_id text NOT NULL,
        pid         integer NOT NULL,
        at          timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX step_effects_workflow_idx ON {SCHEMA}.step_effects (workflow_id, step);

    -- Chaos crashes requested for a step, recorded just before the process dies, so a
    -- bounded chaos request ("crash the first N times") survives the crash it causes.
    CREATE TABLE {SCHEMA}.chaos_crashes (
        id          bigserial PRIMARY KEY,
        workflow_id text NOT NULL,
        step        integer NOT NULL,
        mode        text NOT NULL,
        executor_id text NOT NULL,
        at          timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX chaos_crashes_workflow_idx ON {SCHEMA}.chaos_crashes (workflow_id, step);
    """,
)


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring our schema up to date; returns the version now in place."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _MIGRATE_LOCK)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (
                    version    integer PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )"""
        )
        current = await conn.fetchval(
            f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_version"
        )
        if current > len(MIGRATIONS):
            raise RuntimeError(
                f"schema {SCHEMA} is at version {current}, newer than this build "
                f"knows ({len(MIGRATIONS)}): upgrade this service"
            )
        for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
            await conn.execute(sql)
            await conn.execute(
                f"INSERT INTO {SCHEMA}.schema_version (version) VALUES ($1)", version
            )
        return len(MIGRATIONS)
