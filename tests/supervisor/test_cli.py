"""The operator CLI: exit codes, human and --json output, on a real database."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import asyncpg
import pytest

from services.supervisor import cli
from testkit.dbos_rows import audit_rows, db, insert_executor, insert_workflow, row
from testkit.postgres import ROOT


def run(url: str | None, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    argv = [*args, *(["--database-url", url] if url else [])]
    return cli.main(argv, out=out), out.getvalue()


async def orphan_state(conn: asyncpg.Connection) -> None:
    await insert_executor(conn, "exec-a", seen_ago_s=60)
    await insert_workflow(conn, "orphan", dedup="job-1", updated_ago_ms=90_000)


def test_scan_exit_codes_and_json(database_url: str) -> None:
    code, text = run(database_url, "scan")
    assert (code, text.strip()) == (0, "no workflow in limbo (0 in flight)")
    db(database_url, orphan_state)
    code, text = run(database_url, "scan")
    assert code == 1
    assert "orphan" in text
    assert "orphaned" in text
    code, text = run(database_url, "scan", "--json")
    assert code == 1
    data = json.loads(text)
    assert [(c["workflow_id"], c["rule"], c["action"]) for c in data["candidates"]] == [
        ("orphan", "orphaned", "reenqueue")
    ]
    assert data["candidates"][0]["evidence"]["heartbeat_age_ms"] >= 60_000


def test_explain_matches_and_explains_non_matches(database_url: str) -> None:
    db(database_url, orphan_state)
    code, text = run(database_url, "explain", "orphan", "--json")
    assert code == 0
    data = json.loads(text)
    assert data["decision"]["rule"] == "orphaned"
    assert [r["rule"] for r in data["rules"]] == [
        "exhausted",
        "dead_child",
        "orphaned",
        "stalled",
        "version_orphaned",
    ]
    assert all(r["reason"] for r in data["rules"])
    code, text = run(database_url, "explain", "orphan")
    assert code == 0
    assert "decision: orphaned -> reenqueue" in text
    code, _ = run(database_url, "explain", "no-such-workflow")
    assert code == 4


def test_sweep_dry_then_real_and_audit(database_url: str) -> None:
    db(database_url, orphan_state)
    code, text = run(database_url, "sweep", "--dry-run", "--json")
    assert code == 0
    assert [o["outcome"] for o in json.loads(text)["outcomes"]] == ["dry_run"]
    assert db(database_url, lambda c: row(c, "orphan"))["status"] == "PENDING"
    code, text = run(database_url, "sweep")
    assert code == 0
    assert "applied" in text
    assert db(database_url, lambda c: row(c, "orphan"))["status"] == "ENQUEUED"
    code, text = run(database_url, "audit", "--workflow", "orphan", "--json")
    assert code == 0
    assert [e["outcome"] for e in json.loads(text)["entries"]] == ["applied", "dry_run"]


def test_release_by_hand(database_url: str) -> None:
    async def state(conn: asyncpg.Connection) -> None:
        await insert_executor(conn, "exec-live")
        await insert_workflow(conn, "live", executor_id="exec-live", dedup="L")
        await insert_workflow(conn, "done", status="SUCCESS", queue=None)

    db(database_url, state)
    # A live executor's workflow is refused without --force.
    code, _ = run(database_url, "release", "live", "--reason", "stuck per ticket 42")
    assert code == 5
    code, _ = run(database_url, "release", "done", "--reason", "x")
    assert code == 5
    code, _ = run(database_url, "release", "missing", "--reason", "x")
    assert code == 4
    code, text = run(database_url, "release", "live", "--reason", "ticket 42", "--force", "--json")
    assert code == 0
    data = json.loads(text)
    assert (data["outcome"], data["dedup_id_released"], data["rule"]) == ("applied", "L", "manual")
    after = db(database_url, lambda c: row(c, "live"))
    assert (after["status"], after["deduplication_id"]) == ("MAX_RECOVERY_ATTEMPTS_EXCEEDED", None)
    [audit] = db(database_url, lambda c: audit_rows(c, "live"))
    assert (audit["rule"], audit["reason"]) == ("manual", "ticket 42")


def test_usage_and_config_errors_exit_2(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(database_url, "frobnicate")[0] == 2
    assert run(database_url, "release", "x")[0] == 2  # --reason is required
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert run(None, "scan")[0] == 2
    assert "DATABASE_URL" in capsys.readouterr().err
    monkeypatch.setenv("SUPERVISOR_REPORT_GRACE", "soon")
    assert run(database_url, "scan")[0] == 2
    assert "SUPERVISOR_REPORT_GRACE" in capsys.readouterr().err


def test_unreachable_database_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    from testkit.localpg import free_port

    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/nowhere"
    assert run(url, "scan")[0] == 3
    err = capsys.readouterr().err
    assert "database unreachable" in err
    assert "hunter2" not in err


def test_entry_point_runs_as_a_module(database_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.supervisor.cli", "scan", "--json"],
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["candidates"] == []
