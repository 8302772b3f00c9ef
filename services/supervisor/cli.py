"""`python -m services.supervisor.cli` (script `limbo-supervisor`): the operator's tool.

    scan                      list workflows in limbo now (exit 1 if any)
    overview                  executors, candidates by rule, recent actions, supervisors
    explain WORKFLOW_ID       which rule matches it, or why none does, with the evidence
    show WORKFLOW_ID          explain, plus its error, children, steps and audit history
    sweep [--dry-run]         act on the candidates now (guarded and audited)
    audit [--workflow ID]     the audit trail, newest first
    release WORKFLOW_ID --reason TEXT [--action dead_letter|cancel|reenqueue] [--dry-run]

Human output by default, `--json` for scripts. Settings come from the same environment
variables as the service (DATABASE_URL or --database-url, DBOS_SYSTEM_SCHEMA, SUPERVISOR_*).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TextIO

from services.shared.config import ConfigError
from services.shared.db import create_pool
from services.shared.dsn import redact
from services.supervisor.model import Action, OutcomeKind
from services.supervisor.operating import MANUAL_ACTIONS, NotReleasable, Operator, WorkflowNotFound
from services.supervisor.service import DATABASE_ERRORS, prepare
from services.supervisor.settings import Settings, load_settings
from services.supervisor.store.audit import AuditFilter
from services.supervisor.store.dbos_schema import IncompatibleSchema, SchemaNotReady

EXIT_OK = 0
EXIT_CANDIDATES = 1  # scan found workflows in limbo
EXIT_USAGE = 2  # bad arguments, bad configuration, unsupported DBOS schema
EXIT_DATABASE = 3  # database unreachable
EXIT_NOT_FOUND = 4  # no such workflow
EXIT_CONFLICT = 5  # release refused or skipped (terminal, live executor, row moved on)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 already; keep its message short
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--database-url", help="default: $DATABASE_URL")
    parser = _Parser(prog="limbo-supervisor", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("serve", help="run the supervisor service (as python -m services.supervisor)")
    sub.add_parser("scan", parents=[common], help="list workflows in limbo (exit 1 if any)")
    explain = sub.add_parser(
        "explain", parents=[common], help="why a workflow is or is not in limbo"
    )
    explain.add_argument("workflow_id")
    sub.add_parser("overview", parents=[common], help="executors, candidates, actions, supervisors")
    show = sub.add_parser(
        "show", parents=[common], help="one workflow in full: explain, children, steps, audit"
    )
    show.add_argument("workflow_id")
    sweep = sub.add_parser("sweep", parents=[common], help="act on the candidates now")
    sweep.add_argument("--dry-run", action="store_true", help="decide and audit, change nothing")
    audit = sub.add_parser("audit", parents=[common], help="the audit trail, newest first")
    audit.add_argument("--workflow", dest="workflow_id")
    audit.add_argument("--rule")
    audit.add_argument("--action", dest="audit_action")
    audit.add_argument(
        "--outcome", choices=[k.value for k in OutcomeKind if k is not OutcomeKind.ALERTED]
    )
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--before-id", type=int)
    release = sub.add_parser("release", parents=[common], help="release one workflow by hand")
    release.add_argument("workflow_id")
    release.add_argument("--reason", required=True)
    release.add_argument(
        "--action",
        default=Action.DEAD_LETTER.value,
        choices=[a.value for a in MANUAL_ACTIONS],
    )
    release.add_argument("--dry-run", action="store_true")
    release.add_argument(
        "--force", action="store_true", help="release even if its executor looks alive"
    )
    return parser


def _print(data: Any, as_json: bool, human: str, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(data, default=str, sort_keys=True) + "\n")
    else:
        out.write(human.rstrip("\n") + "\n")


def _verdict_line(v: dict[str, Any]) -> str:
    action = v.get("action") or "-"
    return f"{v['workflow_id']}  {v['rule']:<16} {action:<12} {v['reason']}"


async def _run(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    schema = await prepare(settings, "limbo-supervisor-cli")
    pool = await create_pool(settings.database_url, application_name="limbo-supervisor-cli")
    try:
        return await _command(args, Operator(pool, schema, settings), out)
    finally:
        await pool.close()


async def _command(args: argparse.Namespace, operator: Operator, out: TextIO) -> int:
    as_json = args.json
    if args.command == "scan":
        found = await operator.candidates()
        data = found.describe()
        lines = [_verdict_line(v) for v in data["candidates"]]
        observed = len(found.snapshot.workflows)
        human = "\n".join(lines) if lines else f"no workflow in limbo ({observed} in flight)"
        _print(data, as_json, human, out)
        return EXIT_CANDIDATES if found.verdicts else EXIT_OK
    if args.command == "explain":
        explanation = await operator.explain(args.workflow_id)
        wf, verdicts, matched = explanation.workflow, explanation.verdicts, explanation.decision
        explained = explanation.describe()
        head = (
            f"{wf.workflow_id}: {wf.status}, attempts {wf.recovery_attempts}, executor "
            f"{wf.executor_id}, version {wf.application_version}, dedup {wf.deduplication_id}"
        )
        decision = (
            f"decision: {matched.rule} -> {matched.action}"
            if matched
            else "decision: none (not in limbo)"
        )
        rules = [f"  {'MATCH' if v.matched else 'no   '} {v.rule:<16} {v.reason}" for v in verdicts]
        _print(explained, as_json, "\n".join([head, decision, *rules]), out)
        return EXIT_OK
    if args.command == "overview":
        data = (await operator.overview()).describe()
        lines = [
            f"executor {e['executor_id']:<24} {e['group']:<7} ({e['executor_state']}) "
            f"version {e['executor_version']} host {e['host']} holds {len(e['pending'])}"
            for e in data["executors"]
        ]
        for rule, found in data["candidates"]["by_rule"].items():
            lines += [f"candidate {c['workflow_id']}  {rule:<16} {c['reason']}" for c in found]
        lines += [
            f"supervisor {s['actor']} {s['state']} {s['role'] or '-'}" for s in data["supervisors"]
        ]
        lines.append(f"{data['candidates']['count']} in limbo, {data['in_flight']} in flight")
        _print(data, as_json, "\n".join(lines), out)
        return EXIT_OK
    if args.command == "show":
        detail = (await operator.detail(args.workflow_id)).describe()
        wf = detail["workflow"]
        lines = [
            f"{wf['workflow_id']}: {wf['status']} {wf['name']}, "
            f"attempts {wf['recovery_attempts']}, executor {wf['executor_id']}, "
            f"dedup {wf['deduplication_id']}",
            *(
                f"  rule {v['rule']:<16} {'MATCH' if v['matched'] else 'no'} {v['reason']}"
                for v in detail["rules"]
            ),
            *(f"  child {c['workflow_id']} {c['status']}" for c in detail["children"]),
            *(f"  step {st['function_id']} {st['function_name']}" for st in detail["steps"]),
            *(f"  audit {e['id']} {e['at']} {e['action']} {e['outcome']}" for e in detail["audit"]),
        ]
        _print(detail, as_json, "\n".join(lines), out)
        return EXIT_OK
    if args.command == "sweep":
        report = await operator.sweep(dry_run=args.dry_run)
        swept = report.describe()
        outcomes = [o.describe() for o in report.outcomes]
        alerts = [v for v in report.candidates if v.action is Action.ALERT]
        lines = [
            f"{o['workflow_id']}  {o['rule']:<16} {o['action']:<12} {o['outcome']:<8} "
            f"dedup released: {o['dedup_id_released']}"
            for o in outcomes
        ]
        summary = (
            f"{'dry run: ' if report.dry_run else ''}{len(report.outcomes)} acted, "
            f"{report.deferred} deferred, {len(alerts)} alerts, "
            f"{report.observed} in flight"
        )
        _print(swept, as_json, "\n".join([*lines, summary]), out)
        return EXIT_OK
    if args.command == "audit":
        where = AuditFilter(
            workflow_id=args.workflow_id,
            rule=args.rule,
            action=args.audit_action,
            outcome=args.outcome,
            before_id=args.before_id,
        )
        entries = await operator.audit(where, limit=args.limit)
        lines = [
            f"{e['id']:>6} {e['at']} {e['rule']:<16} {e['action']:<12} {e['outcome']:<8} "
            f"{e['workflow_id']} {e['reason'] or ''}"
            for e in entries
        ]
        _print({"entries": entries}, as_json, "\n".join(lines) or "no audit entries", out)
        return EXIT_OK
    if args.command == "release":
        outcome = await operator.release(
            args.workflow_id,
            reason=args.reason,
            action=Action(args.action),
            dry_run=args.dry_run,
            force=args.force,
        )
        released = outcome.describe()
        human = (
            f"{args.workflow_id}: {outcome.outcome.value} ({outcome.reason}); "
            f"dedup released: {outcome.dedup_id_released}"
        )
        _print(released, as_json, human, out)
        return EXIT_OK if outcome.outcome is not OutcomeKind.SKIPPED else EXIT_CONFLICT
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.command == "serve":
        from services.supervisor.__main__ import main as serve

        return serve()
    environ = dict(os.environ)
    if args.database_url:
        environ["DATABASE_URL"] = args.database_url
    try:
        settings = load_settings(environ)
        if args.command == "audit" and not 1 <= args.limit <= 1000:
            raise ConfigError("--limit", "must be between 1 and 1000")
    except ConfigError as exc:
        print(f"limbo-supervisor: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = replace(settings, actor=f"cli:{os.environ.get('USER', 'operator')}@{os.getpid()}")
    try:
        return asyncio.run(_run(args, settings, out))
    except WorkflowNotFound as exc:
        print(f"limbo-supervisor: workflow {exc.args[0]} not found", file=sys.stderr)
        return EXIT_NOT_FOUND
    except NotReleasable as exc:
        print(f"limbo-supervisor: {exc}", file=sys.stderr)
        return EXIT_CONFLICT
    except (IncompatibleSchema, SchemaNotReady) as exc:
        print(f"limbo-supervisor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DATABASE_ERRORS as exc:
        print(
            f"limbo-supervisor: database unreachable: {redact(f'{type(exc).__name__}: {exc}')}",
            file=sys.stderr,
        )
        return EXIT_DATABASE


if __name__ == "__main__":
    sys.exit(main())
