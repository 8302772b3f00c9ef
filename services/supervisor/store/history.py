"""What the console's chart draws: the leader's candidate counts (`limbo.candidate_samples`,
one row every few seconds, kept two days) and the audit trail's actions, per time bucket."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.supervisor.store.connection import NOW_MS, Conn

INSERT_SQL = f"""
    INSERT INTO limbo.candidate_samples (candidates, by_rule, oldest_age_ms)
    VALUES ($1, $2::jsonb,
            CASE WHEN $3::bigint IS NOT NULL THEN greatest(0, {NOW_MS} - $3::bigint) END)"""

PRUNE_SQL = "DELETE FROM limbo.candidate_samples WHERE at < now() - interval '2 days'"

# One row per bucket of the last `$1` minutes (`$2` seconds each), the newest last: the
# largest candidate count sampled in it (NULL: no sample, e.g. no leader), and the audited
# actions by outcome. Both through their `at` indexes.
HISTORY_SQL = """
    WITH buckets AS (
        SELECT generate_series(
                   to_timestamp(floor(extract(epoch FROM now() - make_interval(mins => $1))
                                      / $2) * $2),
                   now(), make_interval(secs => $2)) AS bucket)
    SELECT b.bucket, s.candidates, a.applied, a.skipped, a.dry_run
      FROM buckets b
     CROSS JOIN LATERAL (
           SELECT max(cs.candidates) AS candidates FROM limbo.candidate_samples cs
            WHERE cs.at >= b.bucket AND cs.at < b.bucket + make_interval(secs => $2)) s
     CROSS JOIN LATERAL (
           SELECT count(*) FILTER (WHERE au.outcome = 'applied') AS applied,
                  count(*) FILTER (WHERE au.outcome = 'skipped') AS skipped,
                  count(*) FILTER (WHERE au.outcome = 'dry_run') AS dry_run
             FROM limbo.audit au
            WHERE au.at >= b.bucket AND au.at < b.bucket + make_interval(secs => $2)) a
     ORDER BY b.bucket"""


async def record(
    conn: Conn, candidates: int, by_rule: Mapping[str, int], oldest_progress_ms: int | None
) -> None:
    """One sample: the candidates now, per rule, and the age of the oldest one's last
    progress (`oldest_progress_ms` in database epoch milliseconds)."""
    async with conn.transaction():
        await conn.execute(INSERT_SQL, candidates, dict(by_rule), oldest_progress_ms)
        await conn.execute(PRUNE_SQL)


async def history(conn: Conn, minutes: int, bucket_s: int) -> list[dict[str, Any]]:
    return [
        {
            "at": row["bucket"].isoformat(),
            "candidates": row["candidates"],
            "applied": row["applied"],
            "skipped": row["skipped"],
            "dry_run": row["dry_run"],
        }
        for row in await conn.fetch(HISTORY_SQL, minutes, bucket_s)
    ]
