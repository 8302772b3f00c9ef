"""The demo job's own metrics (the worker's are in services/worker/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter

WORKFLOWS_FINISHED = Counter(
    "limbo_demo_workflows_finished_total",
    "Demo workflow executions that ended in this process, by workflow and final status.",
    ["workflow", "status"],
)
STEPS_EXECUTED = Counter("limbo_demo_steps_executed_total", "Demo step bodies executed here.")
