"""The worker's own Prometheus metrics (Litestar's plugin adds the HTTP ones)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Info

WORKFLOWS_ENQUEUED = Counter(
    "limbo_worker_workflows_enqueued_total",
    "Workflows enqueued through the worker's API.",
    ["queue"],
)
DEDUP_REJECTIONS = Counter(
    "limbo_worker_dedup_rejections_total",
    "Enqueues refused because another workflow holds the deduplication ID.",
    ["queue"],
)
LEASE_AGE = Gauge(
    "limbo_worker_lease_age_seconds",
    "Seconds since the database last confirmed this worker's lease.",
)
ACTIVE_WORKFLOWS = Gauge(
    "limbo_worker_active_workflows", "Workflows this worker reports running (its work report)."
)
BUILD_INFO = Info("limbo_worker_build", "Worker identity and version.")
