"""`exhausted`: a PENDING or ENQUEUED workflow that used up its recovery attempts.

DBOS dead-letters a workflow when an execution would make `recovery_attempts` exceed
`max_recovery_attempts + 1`; a row past that bound still in flight is one DBOS failed to
dead-letter (2.8's recovery thread stopped at the first such workflow). Dead-lettered as
DBOS does it: MAX_RECOVERY_ATTEMPTS_EXCEEDED, dedup ID and queue released.
"""

from __future__ import annotations

from typing import ClassVar

from services.supervisor.model import Action, Snapshot, Status, Verdict, WorkflowRow
from services.supervisor.rules.attempts import max_attempts_for, smallest_finite_limit
from services.supervisor.rules.base import (
    CommonSettings,
    NoConfig,
    PrefilterContext,
    Rule,
    Signal,
    SqlParams,
)


class Exhausted(Rule[NoConfig]):
    name = "exhausted"
    summary = "recovery_attempts > max_recovery_attempts + 1: dead-lettered as DBOS does"
    statuses = (Status.PENDING, Status.ENQUEUED)
    reads = frozenset({Signal.REGISTRY})
    actions: ClassVar[frozenset[Action]] = frozenset({Action.DEAD_LETTER})

    def evaluate(
        self, wf: WorkflowRow, snap: Snapshot, common: CommonSettings, config: NoConfig
    ) -> Verdict:
        if wf.status not in self.statuses:
            return self.no_match(wf, f"status is {wf.status}, not PENDING or ENQUEUED")
        limit, source = max_attempts_for(wf, snap, common)
        attempts = wf.recovery_attempts or 0
        evidence = {
            "recovery_attempts": attempts,
            "max_recovery_attempts": limit,
            "limit_source": source,
        }
        if limit is None:
            return self.no_match(wf, f"unlimited recovery attempts ({source})", **evidence)
        if attempts <= limit + 1:
            return self.no_match(
                wf,
                f"recovery_attempts {attempts} <= max_recovery_attempts + 1 = {limit + 1}",
                **evidence,
            )
        return self.match(
            wf,
            Action.DEAD_LETTER,
            f"recovery_attempts {attempts} > max_recovery_attempts + 1 = {limit + 1} ({source})",
            evidence,
        )

    def prefilter(
        self,
        status: Status,
        p: SqlParams,
        ctx: PrefilterContext,
        common: CommonSettings,
        config: NoConfig,
    ) -> str:
        smallest = smallest_finite_limit(ctx.snap, common)
        if smallest is None:
            return "FALSE"
        return f"ws.recovery_attempts > {p('exhausted_threshold', smallest + 1, 'bigint')}"


RULE = Exhausted()
