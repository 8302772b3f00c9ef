"""Prometheus metrics, prefix `limbo_supervisor_` (HTTP metrics come from Litestar's plugin)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from prometheus_client import Counter, Gauge, Histogram, Info

PREFIX = "limbo_supervisor"

SWEEPS = Counter(f"{PREFIX}_sweeps", "Sweeps run, by outcome (ok, error).", ["outcome"])
SWEEP_SECONDS = Histogram(
    f"{PREFIX}_sweep_duration_seconds",
    "Duration of one sweep: observe, decide, act.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CANDIDATES = Gauge(
    f"{PREFIX}_candidates", "Workflows in limbo at the last sweep, by rule.", ["rule"]
)
ACTIONS = Counter(
    f"{PREFIX}_actions",
    "Decisions carried out, by rule, action and outcome (applied, skipped, dry_run).",
    ["rule", "action", "outcome"],
)
DEDUP_RELEASED = Counter(
    f"{PREFIX}_dedup_ids_released", "Deduplication IDs released, by rule.", ["rule"]
)
OLDEST_CANDIDATE = Gauge(
    f"{PREFIX}_oldest_candidate_age_seconds",
    "Age (since its last update) of the oldest workflow in limbo at the last sweep; 0 if none.",
)
LEADER = Gauge(f"{PREFIX}_leader", "1 while this supervisor holds leadership, else 0.")
EXECUTORS = Gauge(
    f"{PREFIX}_executors", "Executors in the heartbeat table, by state (alive, dead).", ["state"]
)
DB_ERRORS = Counter(f"{PREFIX}_database_errors", "Database errors met by the supervisor loop.")
IN_FLIGHT = Gauge(
    f"{PREFIX}_in_flight_workflows",
    "ENQUEUED or PENDING workflows the last sweep examined: those no cheap check ruled out.",
)
BUILD = Info(f"{PREFIX}_build", "Build of the supervisor and the DBOS schema it adapted to.")


def package_version() -> str:
    try:
        return version("limbo")
    except PackageNotFoundError:
        return "unknown"


def reset_candidates(rules: tuple[str, ...]) -> None:
    for rule in rules:
        CANDIDATES.labels(rule=rule).set(0)
