"""The worker's own Prometheus metrics (Litestar's plugin adds the HTTP ones)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Info

WORKFLOWS_ENQUEUED = Counter(
    "limbo_worker_workflows_enqueued_total", "Jobs accepted by POST /workflows.", ["queue"]
)
DEDUP_REJECTIONS = Counter(
    "limbo_worker_dedup_rejections_total",
    "Enqueues refused because another workflow holds the deduplication ID.",
    ["queue"],
)
WORKFLOWS_FINISHED = Counter(
    "limbo_worker_workflows_finished_total",
    "Workflow executions that ended in this process, by workflow name and final status.",
    ["workflow", "status"],
)
STEPS_EXECUTED = Counter(
    "limbo_worker_steps_executed_total", "Step bodies executed in this process."
)
HEARTBEAT_AGE = Gauge(
    "limbo_worker_heartbeat_age_seconds",
    "Seconds since this worker last recorded its heartbeat in the database.",
)
HEARTBEAT_FAILURES = Counter(
    "limbo_worker_heartbeat_failures_total", "Heartbeat writes that failed."
)
BUILD_INFO = Info("limbo_worker_build", "Worker identity and version.")
