"""Whether the process that claimed a PENDING row can still be running it: the one reading
of liveness every rule uses, in Python (the judge) and in SQL (prefilter and guard).

The executor's own state comes from the contract's view `limbo.executor_liveness` (lease,
session lock, stop mark; see limbo/_contract.py). On top of it, for one row:

- LISTED: a live incarnation reports running it. Never touched, by any rule.
- NOT_LISTED: its executor is alive and reports its work, and a report made more than the
  report grace after the claim omits it (a draining process that re-claimed work and died,
  a claim that never started): orphaned, evidence time = the report.
- DEAD: its executor is lost, expired or stopped, with that evidence newer than the claim.
- DEAD_BEFORE_CLAIM: dead, but claimed after its last evidence of death (a zombie's claim):
  not handed over on those grounds; only once the row itself shows no progress for the
  stall timeout since the claim.
- ALIVE: its executor's lease is valid. UNREGISTERED: it never registered with Limbo.

Even then, evidence of life vetoes a handover: a step checkpoint of the row, an update of
the row, or a claim or checkpoint of another of the executor's PENDING rows, newer than the
executor's grace. The guard restates all of it at the write: the holder still dead (same
incarnation, evidence still newer than the claim) or still omitting the row, no checkpoint
newer than observed, no newer progress of the executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services.supervisor.model import ExecutorRow, ExecutorState, Snapshot, Status, WorkflowRow
from services.supervisor.model.schema import DbosSchema
from services.supervisor.rules.base import GuardColumn, PrefilterContext, SqlParams

LIVE_STATES = (ExecutorState.ALIVE, ExecutorState.SUSPECT)
DEAD_STATES = (ExecutorState.LOST, ExecutorState.EXPIRED, ExecutorState.STOPPED)


class HolderState(StrEnum):
    LISTED = "listed"
    ALIVE = "alive"
    NOT_LISTED = "not_listed"
    DEAD = "dead"
    DEAD_BEFORE_CLAIM = "dead_before_claim"
    UNREGISTERED = "unregistered"


@dataclass(frozen=True)
class Holder:
    state: HolderState
    why: str
    executor: ExecutorRow | None = None
    evidence_at_ms: int | None = None  # when the evidence of death (or omission) was made


def _name(executor: ExecutorRow) -> str:
    return f"executor {executor.executor_id!r} ({executor.hostname}, pid {executor.pid})"


def holder(wf: WorkflowRow, snap: Snapshot, report_grace_ms: int) -> Holder:
    """The state of the process that claimed `wf` (a PENDING row), read from the snapshot."""
    if wf.workflow_id in snap.listed:
        return Holder(HolderState.LISTED, "a live executor reports running it")
    executor = snap.executors.get(wf.executor_id or "")
    if executor is None:
        return Holder(
            HolderState.UNREGISTERED, f"executor {wf.executor_id!r} never registered with Limbo"
        )
    if executor.live:
        report_at = executor.report_at_ms
        if (
            executor.running is not None
            and report_at is not None
            and report_at > wf.claimed_at + report_grace_ms
        ):
            return Holder(
                HolderState.NOT_LISTED,
                f"{_name(executor)} is alive but its report of {snap.now_ms - report_at} ms "
                f"ago, made {report_at - wf.claimed_at} ms after the claim, omits this workflow",
                executor,
                report_at,
            )
        state = HolderState.ALIVE
    else:
        dead_since = executor.dead_since_ms or 0
        state = HolderState.DEAD if dead_since > wf.claimed_at else HolderState.DEAD_BEFORE_CLAIM
    # The rest does not depend on the row: built once per snapshot per executor and state
    # (a mass release asks 10,000 times).
    key = ("holder", executor.executor_id, state)
    if key not in snap.memo:
        snap.memo[key] = _holder_of(executor, state, snap.now_ms)
    found: Holder = snap.memo[key]
    return found


def _holder_of(executor: ExecutorRow, state: HolderState, now_ms: int) -> Holder:
    name = _name(executor)
    if state is HolderState.ALIVE:
        return Holder(state, f"{name} is {executor.state.value}", executor)
    dead_since = executor.dead_since_ms or 0
    if state is HolderState.DEAD:
        why = f"{name} is {executor.state.value} since {now_ms - dead_since} ms (after the claim)"
    else:
        why = f"{name} is {executor.state.value}, but the row was claimed after that"
    return Holder(state, why, executor, dead_since)


def fresh_evidence(
    wf: WorkflowRow, snap: Snapshot, window_ms: int, *, executor_wide: bool
) -> str | None:
    """Evidence of life newer than `window_ms`, or None: the row's own progress and, with
    `executor_wide`, any claim or checkpoint of the executor's PENDING rows."""
    age = snap.now_ms - wf.last_progress_ms
    if age <= window_ms:
        return f"the workflow progressed {age} ms ago (window {window_ms} ms)"
    if executor_wide:
        progress = snap.executor_progress_ms.get(wf.executor_id or "")
        if progress is not None and snap.now_ms - progress <= window_ms:
            return (
                f"executor {wf.executor_id!r} claimed or checkpointed work "
                f"{snap.now_ms - progress} ms ago (window {window_ms} ms)"
            )
    return None


def progress_guard_values(wf: WorkflowRow, snap: Snapshot) -> dict[str, object]:
    """The progress a verdict observed, for `PROGRESS_GUARD_COLUMNS`: the row's newest step
    checkpoint, and its executor's newest claim and newest checkpoint. Each is compared at
    the write with its own kind only: checkpoints carry the app host's clock, claims the
    database's, and a host's skew must not hide a new checkpoint behind an old claim."""
    executor_id = wf.executor_id or ""
    return {
        "last_checkpoint": wf.last_checkpoint_ms,
        "executor_claimed": snap.executor_claimed_ms.get(executor_id, 0),
        "executor_checkpoint": snap.executor_checkpoint_ms.get(executor_id),
    }


PROGRESS_GUARD_COLUMNS: tuple[GuardColumn, ...] = (
    GuardColumn("last_checkpoint", "bigint"),
    GuardColumn("executor_claimed", "bigint"),
    GuardColumn("executor_checkpoint", "bigint"),
)


def guard_values(
    wf: WorkflowRow, snap: Snapshot, found: Holder, report_grace_ms: int
) -> dict[str, object]:
    """What a liveness-based verdict assumed, for `GUARD_COLUMNS`."""
    executor = found.executor
    return {
        "holder": found.state.value,
        "incarnation": None if executor is None else executor.incarnation,
        "claimed_at": wf.claimed_at,
        **progress_guard_values(wf, snap),
        "report_grace_ms": report_grace_ms,
    }


GUARD_COLUMNS: tuple[GuardColumn, ...] = (
    GuardColumn("holder", "text"),
    GuardColumn("incarnation", "text"),
    GuardColumn("claimed_at", "bigint"),
    *PROGRESS_GUARD_COLUMNS,
    GuardColumn("report_grace_ms", "bigint"),
)

# -- SQL --------------------------------------------------------------------------------------

# The contract's view, read once per statement (pg_locks is not transactional: one reading),
# and `holders`, the same reading without the work reports' arrays, for the lookups of one
# executor per row: over `live`, with 3,300 IDs in each live report, each lookup cost ~14 us
# (1.4 ms of a 100-row UPDATE at 1M rows); the reports themselves are hashed once.
LIVE_CTE = (
    "live AS MATERIALIZED (SELECT * FROM limbo.executor_liveness), "
    "holders AS MATERIALIZED (SELECT executor_id, incarnation, application_name, "
    "application_version, state, dead_since, report_at, running IS NOT NULL AS reports "
    "FROM live)"
)


def ms(expression: str) -> str:
    """A timestamptz as epoch milliseconds, exactly as the snapshot reads it."""
    return f"(extract(epoch FROM {expression}) * 1000)::bigint"


def reported_sql(source: str, where: str, columns: str = "r.id") -> str:
    """What the work reports of `source`'s rows (alias `rep`) matching `where` list, NULL
    elements left out as the judge leaves them out: one uncorrelated set, which PostgreSQL
    hashes once per statement. Searched in each report's array for every row it cost rows x
    reported IDs: a sweep at 1M rows whose executors reported their 10k PENDING rows took
    1.3 s."""
    return (
        f"SELECT {columns} FROM {source} rep, unnest(rep.running) AS r(id) "
        f"WHERE {where} AND r.id IS NOT NULL"
    )


# In the guarded UPDATE, of the statement's own rows `o` (ws is one of them): the reports
# are matched against `o` alone, so the hashed set is the batch's, not every reported ID
# (at 1M rows 9,900 reported IDs were hashed for a 100-row UPDATE: 1.6 ms).
_OF_THE_BATCH = "r.id IN (SELECT o.workflow_uuid FROM o)"
# Reported as running by a live incarnation.
_LIVE_REPORTS = reported_sql("live", f"rep.state IN ('alive', 'suspect') AND {_OF_THE_BATCH}")
LISTED_SQL = f"(ws.workflow_uuid = ANY ({_LIVE_REPORTS}))"
# Every (executor, workflow) a report lists: the holder's own report omits the row exactly
# when its pair is not among them.
REPORTED_PAIRS_SQL = reported_sql("live", _OF_THE_BATCH, "rep.executor_id, r.id")


def last_checkpoint_sql(schema: DbosSchema, workflow: str = "ws") -> str:
    """The row's latest step start or completion (epoch ms), over its steps by primary key.
    The maximum over all of them, as the guard's "nothing newer" compares with all of them."""
    if not schema.step_times:
        return "NULL::bigint"
    return (
        f"(SELECT max(greatest(coalesce(s.completed_at_epoch_ms, 0), "
        f"coalesce(s.started_at_epoch_ms, 0))) FROM {schema.operation_outputs} s "
        f"WHERE s.workflow_uuid = {workflow}.workflow_uuid)"
    )


def newer_checkpoint_sql(schema: DbosSchema, workflow: str, observed: str) -> str:
    """A step of `workflow` newer than `observed`, the newest step checkpoint the verdict
    saw (NULL if it saw none: then any step is new). Checkpoints against checkpoints only,
    both stamped by the app host's clock: against a claim (database time) a step stamped by
    a lagging clock looked old and let a handover through."""
    if not schema.step_times:
        return "FALSE"
    return (
        f"EXISTS (SELECT 1 FROM {schema.operation_outputs} s "
        f"WHERE s.workflow_uuid = {workflow}.workflow_uuid AND greatest("
        f"coalesce(s.completed_at_epoch_ms, 0), coalesce(s.started_at_epoch_ms, 0)) "
        f"> coalesce({observed}, -1))"
    )


def claimed_sql(workflow: str = "ws") -> str:
    return f"greatest(coalesce({workflow}.started_at_epoch_ms, 0), {workflow}.updated_at)"


def executor_progress_cte(schema: DbosSchema) -> str:
    """Executors (of liveness-based verdicts in `o`) that made progress on any PENDING row
    after what the verdicts observed: their verdicts are vetoed.

    One pass over the executor's PENDING rows: a claim or update newer than its newest
    observed claim, or a step start or completion newer than its newest observed checkpoint
    (by primary key; each kind against its own, as in `newer_checkpoint_sql`). DBOS indexes
    neither executor_id nor (usefully, for a correlated bound) step times, so this is the
    one way that does not scan twice. (A step recorded without a completion time is a
    child's start, and the child's own row, claimed by the same executor, counts as a
    claim.)"""
    claims = f"{claimed_sql('w')} > seen.claimed"
    # The executors' IDs as one array filter the scan itself: joined on the ID alone, the
    # planner hashed every PENDING row (10k at 1M rows) to find the few of one executor.
    newer = (
        f"SELECT DISTINCT w.executor_id FROM {schema.workflow_status} w "
        f"JOIN seen ON seen.executor_id = w.executor_id "
        f"WHERE w.status = {Status.PENDING.sql} "
        f"AND w.executor_id = ANY (ARRAY(SELECT executor_id FROM seen)) "
        f"AND ({claims} OR {newer_checkpoint_sql(schema, 'w', 'seen.checkpoint')})"
    )
    # A verdict that saw no checkpoint of the executor counts as -1: any step is new.
    return (
        "seen AS MATERIALIZED (SELECT o.executor_id, min(o.executor_claimed) AS claimed, "
        "min(coalesce(o.executor_checkpoint, -1)) AS checkpoint "
        "FROM o WHERE o.executor_claimed IS NOT NULL AND o.holder <> 'not_listed' "
        f"GROUP BY 1), progressed AS MATERIALIZED ({newer})"
    )


def guard_sql(schema: DbosSchema) -> str:
    """The holder is still as observed (dead since after the claim, same incarnation; or
    alive and still omitting the row), and nothing progressed since the observation."""
    dead = (
        f"o.holder = 'dead' AND l.state IN ('lost', 'expired', 'stopped') "
        f"AND {ms('l.dead_since')} > o.claimed_at"
    )
    not_listed = (
        f"o.holder = 'not_listed' AND l.state IN ('alive', 'suspect') AND l.reports "
        f"AND {ms('l.report_at')} > o.claimed_at + o.report_grace_ms "
        f"AND NOT (ws.executor_id, ws.workflow_uuid) IN ({REPORTED_PAIRS_SQL})"
    )
    stalled = "o.holder = 'dead_before_claim' AND l.state IN ('lost', 'expired', 'stopped')"
    return (
        f"EXISTS (SELECT 1 FROM holders l WHERE l.executor_id = ws.executor_id "
        f"AND l.incarnation::text = o.incarnation AND (({dead}) OR ({not_listed}) OR ({stalled}))) "
        f"AND NOT {newer_checkpoint_sql(schema, 'ws', 'o.last_checkpoint')} "
        f"AND NOT EXISTS (SELECT 1 FROM progressed x WHERE x.executor_id = ws.executor_id)"
    )


def unregistered_guard_sql(schema: DbosSchema) -> str:
    """For rows of executors that never registered: still unregistered, no newer progress."""
    return (
        "NOT EXISTS (SELECT 1 FROM holders l WHERE l.executor_id = ws.executor_id) "
        f"AND NOT {newer_checkpoint_sql(schema, 'ws', 'o.last_checkpoint')} "
        "AND NOT EXISTS (SELECT 1 FROM progressed x WHERE x.executor_id = ws.executor_id)"
    )


def dead_executor_ids(snap: Snapshot) -> list[str]:
    return sorted(e.executor_id for e in snap.executors.values() if not e.live)


def prefilter_sql(p: SqlParams, ctx: PrefilterContext, report_grace_ms: int) -> str:
    """Every PENDING row whose holder could be DEAD, DEAD_BEFORE_CLAIM or NOT_LISTED: all
    rows of dead executors (`fully_read_executors`); rows of live reporting executors their
    report omits."""
    snap = ctx.snap
    reporting = sorted(
        e.executor_id for e in snap.executors.values() if e.live and e.running is not None
    )
    dead = p("dead_executors", dead_executor_ids(snap), "text[]")
    clauses = [f"ws.executor_id = ANY({dead})"]
    if reporting:
        ids = p("reporting_executors", reporting, "text[]")
        grace = p("report_grace_ms", report_grace_ms, "bigint")
        # A row another live executor reports is LISTED for the judge too.
        reported = reported_sql("limbo.executors", f"rep.executor_id = ANY({ids})")
        # The set first: most rows of a reporting executor are in its report, and the
        # hashed lookup settles them without probing the executor's row.
        clauses.append(
            f"(NOT ws.workflow_uuid = ANY ({reported}) "
            f"AND EXISTS (SELECT 1 FROM limbo.executors e WHERE e.executor_id = ws.executor_id "
            f"AND e.executor_id = ANY({ids}) AND e.running IS NOT NULL "
            f"AND {ms('e.report_at')} > {claimed_sql()} + {grace}))"
        )
    return " OR ".join(clauses)


def skipping_listed(
    p: SqlParams, ctx: PrefilterContext, rules_sql: str, whole: frozenset[str]
) -> str:
    """The read's form of the listing rule: `rules_sql` (the rules' prefilters) only for rows
    no live incarnation reports running (`Snapshot.listed`: the judge never touches them).
    One hashed probe settles each reported row before any rule's predicate: the shipped
    worker reports all its work, so at 1M rows 9,900 of 10k PENDING rows stop there. The
    rows of the `whole` executors are kept whatever their listing, as the rules that read
    every PENDING row of them (`fully_read_executors`) derive their progress from all."""
    listing = sorted(e.executor_id for e in ctx.snap.listing_executors())
    if not listing:
        return rules_sql
    ids = p("listing_executors", listing, "text[]")
    reported = reported_sql("limbo.executors", f"rep.executor_id = ANY({ids})")
    sql = f"NOT ws.workflow_uuid = ANY ({reported}) AND ({rules_sql})"
    if whole:
        sql = f"ws.executor_id = ANY({p('whole_executors', sorted(whole), 'text[]')}) OR ({sql})"
    return sql


def fully_read_executors(ctx: PrefilterContext) -> frozenset[str]:
    """The executors `prefilter_sql` reads every PENDING row of (its first clause)."""
    return frozenset(dead_executor_ids(ctx.snap))


def registered_ids(snap: Snapshot) -> list[str]:
    return sorted(snap.executors)
