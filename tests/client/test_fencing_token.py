"""DBOS 3.4's fencing token, verified: after Limbo hands a row over (clearing owner_xid, as
DBOS's recovery does), the previous execution's next checkpoint fails instead of racing the
new owner, and only the new execution's step output is recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from testkit.postgres import ROOT

PROBE = Path(__file__).resolve().parent / "python_app" / "fencing_probe.py"


def test_a_zombie_execution_cannot_checkpoint_after_a_handover(database_url: str) -> None:
    result = subprocess.run(
        [sys.executable, str(PROBE)],
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["handover"] == "applied"
    assert report["calls"] == ["zombie", "new"]
    assert report["conflicts"] == ["zombie"]  # the fencing token refused the zombie
    assert report["result"] == "new"
    assert report["parked_output"] == ["new"]
