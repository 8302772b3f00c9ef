"""Prometheus metrics, prefix `limbo_supervisor_` (HTTP metrics come from Litestar's plugin).

Label values of `rule` come from the registry of rules; `state` from ExecutorState."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from prometheus_client import Counter, Gauge, Histogram, Info

from services.supervisor.model import ExecutorState
from services.supervisor.rules import RULE_NAMES

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
    "Decisions carried out, by rule, action and outcome (applied, skipped, dry_run, alerted).",
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
    f"{PREFIX}_executors",
    "Registered executors by liveness state (alive, suspect, lost, expired, stopped).",
    ["state"],
)
EXECUTOR_ID_CONFLICTS = Gauge(
    f"{PREFIX}_executor_id_conflicts",
    "Starts refused in the last 15 minutes because a live process held the executor ID.",
    ["executor_id"],
)
EXECUTORS_FORGOTTEN = Counter(
    f"{PREFIX}_executors_forgotten",
    "Dead executors with no PENDING or ENQUEUED work, forgotten after their retention.",
)
DB_ERRORS = Counter(f"{PREFIX}_database_errors", "Database errors met by the supervisor loop.")
INTERNAL_ERRORS = Counter(
    f"{PREFIX}_internal_errors", "Unexpected errors (bugs) met by the supervisor loop."
)
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


def reset(enabled: tuple[str, ...] = RULE_NAMES) -> None:
    """Every label a dashboard expects, present from the start."""
    for rule in enabled:
        CANDIDATES.labels(rule=rule).set(0)
    for state in ExecutorState:
        EXECUTORS.labels(state=state.value).set(0)
