"""`version_orphaned`: ENQUEUED workflows of an application version nobody runs any more.

DBOS dequeues a row only in a process of the row's application version. When no live
executor of that version (and application) has been seen for
`SUPERVISOR_VERSION_ORPHAN_AFTER`, the deployment's policy applies: `alert` (metric and
log only), `dead_letter`, or `upgrade` (move the row to the newest live version of the
application, the open equivalent of DBOS's enterprise auto-upgrade). PENDING rows of a dead
version are first handed over by `orphaned` (re-enqueued), then judged here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.shared.config import env_field
from services.supervisor.model import Action, ExecutorRow, Snapshot, Status, Verdict, WorkflowRow
from services.supervisor.model.schema import DbosSchema
from services.supervisor.rules.base import (
    CommonSettings,
    GuardColumn,
    PrefilterContext,
    Rule,
    Signal,
    SqlParams,
)

POLICIES = ("alert", "dead_letter", "upgrade")


@dataclass(frozen=True)
class VersionOrphanedConfig:
    version_orphan_after_ms: int = env_field(
        "SUPERVISOR_VERSION_ORPHAN_AFTER",
        300_000,
        "seconds_ms",
        "seconds a version has had no live executor before its queued rows count as orphaned",
        minimum=0.0,
    )
    version_orphan_policy: str = env_field(
        "SUPERVISOR_VERSION_ORPHAN_POLICY",
        "alert",
        "choice",
        "what to do with them: alert, dead_letter or upgrade (to the newest live version)",
        choices=POLICIES,
    )


def _same_application(executor: ExecutorRow, wf: WorkflowRow) -> bool:
    return wf.application_name is None or executor.application_name == wf.application_name


def newest_live_version(wf: WorkflowRow, snap: Snapshot) -> str | None:
    """The version of the most recently started live executor of the same application."""
    live = [e for e in snap.live_executors() if _same_application(e, wf)]
    if not live:
        return None
    return max(live, key=lambda e: (e.started_at_ms, e.application_version)).application_version


class VersionOrphaned(Rule[VersionOrphanedConfig]):
    name = "version_orphaned"
    summary = "ENQUEUED on a version without a live executor: alert, dead-letter or upgrade"
    statuses = (Status.ENQUEUED,)
    reads = frozenset({Signal.EXECUTORS})
    actions: ClassVar[frozenset[Action]] = frozenset(
        {Action.ALERT, Action.DEAD_LETTER, Action.UPGRADE}
    )
    config_type = VersionOrphanedConfig
    guard_columns = (GuardColumn("version_not_live", "text"), GuardColumn("app_not_live", "text"))

    def evaluate(
        self,
        wf: WorkflowRow,
        snap: Snapshot,
        common: CommonSettings,
        config: VersionOrphanedConfig,
    ) -> Verdict:
        if wf.status != Status.ENQUEUED:
            return self.no_match(wf, f"status is {wf.status}, not ENQUEUED")
        version = wf.application_version
        if version is None:
            return self.no_match(wf, "no application version: any latest-version executor takes it")
        of_version = [
            e
            for e in snap.executors.values()
            if e.application_version == version and _same_application(e, wf)
        ]
        if any(e.live for e in of_version):
            return self.no_match(wf, f"version {version!r} has a live executor")
        if not of_version:
            return self.no_match(wf, f"no executor of version {version!r} ever registered here")
        last_live = max(e.dead_since_ms or e.last_seen_ms for e in of_version)
        dead_for = snap.now_ms - last_live
        evidence = {
            "application_version": version,
            "version_dead_for_ms": dead_for,
            "after_ms": config.version_orphan_after_ms,
            "policy": config.version_orphan_policy,
        }
        if dead_for <= config.version_orphan_after_ms:
            return self.no_match(
                wf,
                f"version {version!r} without a live executor for only {dead_for} ms",
                **evidence,
            )
        reason = f"version {version!r} has had no live executor for {dead_for} ms"
        guard = {"version_not_live": version, "app_not_live": wf.application_name}
        if config.version_orphan_policy == "dead_letter":
            return self.match(wf, Action.DEAD_LETTER, reason, evidence, guard)
        if config.version_orphan_policy == "upgrade":
            target = newest_live_version(wf, snap)
            if target is not None and target != version:
                evidence["target_version"] = target
                return self.match(
                    wf, Action.UPGRADE, f"{reason}; moved to {target!r}", evidence, guard,
                    target_version=target,
                )  # fmt: skip
            reason = f"{reason}; no live version to upgrade to"
        return self.match(wf, Action.ALERT, reason, evidence)

    def prefilter(
        self,
        status: Status,
        p: SqlParams,
        ctx: PrefilterContext,
        common: CommonSettings,
        config: VersionOrphanedConfig,
    ) -> str:
        """Its version has no live executor of its application."""
        if status != Status.ENQUEUED:
            return "FALSE"
        live = ctx.snap.live_executors()
        apps = p("live_apps", [e.application_name for e in live], "text[]")
        versions = p("live_versions", [e.application_version for e in live], "text[]")
        app = "ws.application_name" if ctx.schema.has("application_name") else "NULL::text"
        return (
            f"(ws.application_version IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
            f"unnest({apps}, {versions}) AS l(app, version) "
            f"WHERE l.version = ws.application_version AND ({app} IS NULL OR l.app = {app})))"
        )

    def guard(self, schema: DbosSchema) -> str:
        """Still no live executor of that version of that application."""
        return (
            "NOT EXISTS (SELECT 1 FROM holders v WHERE v.application_version = o.version_not_live "
            "AND v.state IN ('alive', 'suspect') "
            "AND (o.app_not_live IS NULL OR v.application_name = o.app_not_live))"
        )


RULE = VersionOrphaned()
