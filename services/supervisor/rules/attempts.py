"""A workflow name's max_recovery_attempts: settings override, else the registry its own
application published (the exact version first, else the most permissive value any version
published), else DBOS's default (100, as in both the Python and the TypeScript SDK): the
rows of an app that publishes no registry get the default whatever other apps publish.
Read by `exhausted` and by `orphaned` (is an attempt left?)."""

from __future__ import annotations

from typing import Any

from services.supervisor.model import Action, RegistryEntry, Snapshot, Verdict, WorkflowRow
from services.supervisor.rules.base import CommonSettings, Rule


def max_attempts_for(
    wf: WorkflowRow, snap: Snapshot, common: CommonSettings
) -> tuple[int | None, str]:
    """(limit, where it came from); None means unlimited."""
    name = wf.name or ""
    if name in common.max_recovery_overrides:
        return common.max_recovery_overrides[name], "settings override"
    key = ("max_attempts", name, wf.application_version, wf.application_name)
    if key not in snap.memo:
        snap.memo[key] = _from_registry(wf, name, snap.registry, common)
    result: tuple[int | None, str] = snap.memo[key]
    return result


def _from_registry(
    wf: WorkflowRow, name: str, registry: tuple[RegistryEntry, ...], common: CommonSettings
) -> tuple[int | None, str]:
    # Only the row's own application's registry: another app (maybe in another language)
    # may publish a workflow of the same name. A row without an application name (2.8)
    # takes any.
    published = [
        entry
        for entry in registry
        if entry.workflow_name == name
        and (wf.application_name is None or entry.application_name == wf.application_name)
    ]
    exact = [entry for entry in published if entry.application_version == wf.application_version]
    chosen = exact or published
    if chosen:
        values = [entry.max_recovery_attempts for entry in chosen]
        source = "registry" if exact else "registry (other version)"
        if any(value is None for value in values):
            return None, source
        return max(v for v in values if v is not None), source
    return common.default_max_recovery_attempts, "DBOS default"


def smallest_finite_limit(snap: Snapshot, common: CommonSettings) -> int | None:
    """The smallest limit any row could have: below it + 1, no row is exhausted."""
    limits = [
        *common.max_recovery_overrides.values(),
        *(entry.max_recovery_attempts for entry in snap.registry),
        common.default_max_recovery_attempts,
    ]
    finite = [limit for limit in limits if limit is not None]
    return min(finite) if finite else None


def attempt_left(attempts: int, limit: int | None) -> bool:
    """Re-enqueued, the next dequeue counts one more attempt; DBOS dead-letters past max+1."""
    return limit is None or attempts + 1 <= limit + 1


def hand_over(
    rule: Rule[Any],
    wf: WorkflowRow,
    snap: Snapshot,
    common: CommonSettings,
    why: str,
    evidence: dict[str, Any],
    guard: dict[str, Any],
) -> Verdict:
    """Re-enqueue a row its holder no longer runs, as DBOS 3.x recovery does; dead-letter it
    instead when the next dequeue would exceed its recovery attempts."""
    limit, source = max_attempts_for(wf, snap, common)
    attempts = wf.recovery_attempts or 0
    evidence.update(recovery_attempts=attempts, max_recovery_attempts=limit, limit_source=source)
    if not attempt_left(attempts, limit):
        reason = f"{why}; no recovery attempt left ({attempts} of max {limit} + 1)"
        return rule.match(wf, Action.DEAD_LETTER, reason, evidence, guard)
    reason = f"{why}; handed over to a live executor of version {wf.application_version!r}"
    return rule.match(wf, Action.REENQUEUE, reason, evidence, guard)
