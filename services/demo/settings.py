"""The demo job's settings (DEMO_*), read when the worker sets the demo up."""

from __future__ import annotations

from dataclasses import dataclass

from services.shared.config import env_field


@dataclass(frozen=True)
class DemoSettings:
    queue_name: str = env_field("DEMO_QUEUE_NAME", "example-queue", "str", "the demo's queue")
    concurrency: int = env_field(
        "DEMO_QUEUE_CONCURRENCY",
        50,
        "int",
        "jobs one worker runs at once from the demo's queue",
        minimum=1,
        maximum=1000,
    )
    poll_interval: float = env_field(
        "DEMO_QUEUE_POLL_INTERVAL",
        0.1,
        "float",
        "seconds between the worker's dequeue polls of the demo's queue",
        minimum=0.01,
        maximum=60,
    )
    max_recovery_attempts: int | None = env_field(
        "DEMO_MAX_RECOVERY_ATTEMPTS",
        2,
        "optional_int",
        "max_recovery_attempts of the job's workflows (the seed's 2; `unlimited` allowed)",
        minimum=0,
    )
    step_seconds: float = env_field(
        "DEMO_STEP_SECONDS", 0.2, "float", "how long each step sleeps", minimum=0, maximum=3600
    )
    sleep_seconds: float = env_field(
        "DEMO_SLEEP_SECONDS",
        0.1,
        "float",
        "durable sleep between steps",
        minimum=0,
        maximum=3600,
    )
    chaos_enabled: bool = env_field(
        "DEMO_CHAOS", False, "flag", "1 honours chaos requests (crash or freeze at a step)"
    )
