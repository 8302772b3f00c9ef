"""The demo's own tables, in schema `limbo_demo`, created when the worker sets the demo up
(never by the supervisor, never in a database that does not host the demo)."""

from __future__ import annotations

import asyncpg

from limbo._migrations import migrate

SCHEMA = "limbo_demo"
COMPONENT = "demo"

MIGRATIONS: tuple[str, ...] = (
    # 1: the job's observable side effect, one row per step execution; and the chaos
    # crashes requested for a step, recorded just before the process dies, so a bounded
    # chaos request ("crash the first N times") survives the crash it causes.
    f"""
    CREATE SCHEMA IF NOT EXISTS {SCHEMA};
    CREATE TABLE {SCHEMA}.step_effects (
        id          bigserial PRIMARY KEY,
        workflow_id text NOT NULL,
        step        integer NOT NULL,
        executor_id text NOT NULL,
        pid         integer NOT NULL,
        at          timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX step_effects_workflow_idx ON {SCHEMA}.step_effects (workflow_id, step);
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


async def migrate_demo(conn: asyncpg.Connection) -> int:
    return await migrate(conn, COMPONENT, MIGRATIONS)
