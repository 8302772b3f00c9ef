"""The connection type every store function takes: our own, or one borrowed from a pool."""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn = asyncpg.Connection | PoolConnectionProxy

# Database time in epoch milliseconds, as DBOS writes it.
NOW_MS = "(extract(epoch FROM now()) * 1000)::bigint"
