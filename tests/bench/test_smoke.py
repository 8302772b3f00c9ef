"""Every benchmark runs at its tiny size and produces sane numbers and both report files.

No timing target is asserted here: targets belong to the full run (`make bench`), which is
not a gate. This only keeps the benchmarks working.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.benchmarks import all_benchmarks

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_every_benchmark_runs_at_smoke_size(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    report = json.loads((tmp_path / "latest.json").read_text())
    errors = {r["name"]: r["error"] for r in report["results"] if r["error"]}
    assert not errors, "\n\n".join(f"{name}:\n{error}" for name, error in errors.items())
    assert done.returncode == 0, done.stderr[-3000:]

    assert [r["name"] for r in report["results"]] == [b.name for b in all_benchmarks()]
    for result in report["results"]:
        assert result["size"] == "smoke"
        headline = [m for m in result["metrics"] if m["headline"]]
        assert headline, f"{result['name']} has no headline figure"
        for metric in result["metrics"]:
            where = f"{result['name']}.{metric['key']} = {metric['value']}"
            assert math.isfinite(metric["value"]), where
            assert metric["value"] >= 0, where
        for metric in headline:
            assert metric["value"] > 0, f"{result['name']}.{metric['key']} is not positive"
        for target in result["targets"]:
            assert target["actual"] is not None, f"{result['name']}: {target['text']} unchecked"

    machine = report["machine"]
    for key in ("cpu", "cores", "memory_gib", "python", "postgresql", "packages"):
        assert machine[key], key
    assert machine["postgresql"]["version"]
    assert machine["packages"]["dbos"] != "not installed"

    markdown = (tmp_path / "REPORT.md").read_text()
    assert "## Machine" in markdown
    plot = tmp_path / "benchmarks.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](benchmarks.png)" in markdown
    assert machine["cpu"] in markdown
    for result in report["results"]:
        assert f"## {result['name']}:" in markdown
    assert "benchmark" in done.stdout
    assert "verdict" in done.stdout
