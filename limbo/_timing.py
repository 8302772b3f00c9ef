"""The lease's timing: how often to beat, how long a lost session is tolerated, the lease."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from limbo.exceptions import NotConfigured


@dataclass(frozen=True)
class LeaseTiming:
    """`beat_s` < `grace_s` < `lease_s`, all published with the registration.

    - every `beat_s` the lease is renewed and the running workflows reported;
    - a process that lost its connection and could not re-register stops running
      workflows within `grace_s`, so the supervisor takes its work over `grace_s` after it
      first sees the session gone: a SIGKILLed process's work moves in about `grace_s`;
    - a process that cannot renew its lease (a slow write, a network partition) stops
      running workflows before `lease_s` has passed since its last successful beat.
    """

    beat_s: float = 0.25
    grace_s: float = 1.0
    lease_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.beat_s < self.grace_s < self.lease_s:
            raise NotConfigured(
                f"lease timing needs 0 < beat ({self.beat_s}s) < grace ({self.grace_s}s) "
                f"< lease ({self.lease_s}s)"
            )

    @property
    def lease_margin_s(self) -> float:
        """How long before the lease's end the process fences itself (clock drift, slack)."""
        return max(0.5, 0.2 * self.lease_s)

    @property
    def grace_margin_s(self) -> float:
        """How long before the grace's end: covers the delay in noticing a lost connection."""
        return max(0.1, 0.3 * self.grace_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LeaseTiming:
        """LIMBO_BEAT_INTERVAL, LIMBO_SESSION_GRACE, LIMBO_LEASE (seconds)."""
        env = os.environ if environ is None else environ
        defaults = cls()
        values = {}
        for field, variable in (
            ("beat_s", "LIMBO_BEAT_INTERVAL"),
            ("grace_s", "LIMBO_SESSION_GRACE"),
            ("lease_s", "LIMBO_LEASE"),
        ):
            raw = env.get(variable, "").strip()
            if not raw:
                values[field] = getattr(defaults, field)
                continue
            try:
                values[field] = float(raw)
            except ValueError:
                raise NotConfigured(
                    f"{variable}: must be a number of seconds, got {raw!r}"
                ) from None
            if not 0 < values[field] <= 3600:
                raise NotConfigured(f"{variable}: must be between 0 and 3600 s, got {raw}")
        try:
            return cls(**values)
        except NotConfigured as exc:
            raise NotConfigured(
                f"LIMBO_BEAT_INTERVAL / LIMBO_SESSION_GRACE / LIMBO_LEASE: {exc}"
            ) from None
