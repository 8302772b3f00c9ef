"""The results model: statistics, target checks, rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.plot import PLOT_NAME, write_plot
from bench.results import BenchResult, Run, Summary, fmt, render_table


def test_summary_uses_nearest_rank_p95() -> None:
    summary = Summary.of([float(v) for v in range(1, 101)])
    assert summary.median == 50.5
    assert summary.p95 == 95.0
    assert summary.max == 100.0
    assert summary.min == 1.0
    assert Summary.of([3.0]).p95 == 3.0


def test_summary_refuses_no_samples() -> None:
    with pytest.raises(ValueError, match="no samples"):
        Summary.of([])


def test_targets_are_checked_in_both_directions() -> None:
    result = BenchResult("b", "B", "smoke")
    result.add_samples("release", "release time", [4.0, 12.0, 6.0], "s")
    result.ratio("speedup", "a / b", 3.0, 2.0)
    below = result.target("release", "<=", 10.0, "median within 10 s")
    above = result.target("speedup", ">=", 2.0, "at least 2x")
    assert (below.actual, below.met) == (6.0, True)
    assert (above.actual, above.met) == (1.5, False)
    missing = result.target("absent", "<=", 1.0, "not measured")
    assert missing.met is None


def test_ratio_of_zero_denominator_is_infinite_not_an_error() -> None:
    result = BenchResult("b", "B", "smoke")
    assert result.ratio("r", "r", 1.0, 0.0).value == float("inf")


def test_run_writes_json_and_markdown(tmp_path: Path) -> None:
    ok = BenchResult("fast", "Fast thing", "smoke", params={"n": 3})
    ok.add("rate", "things/s", 1234.5, "/s", headline=True)
    ok.target("rate", ">=", 1000.0, "at least 1000/s")
    failed = BenchResult("broken", "Broken thing", "smoke", error="Traceback\nBoom")
    run = Run("smoke", "2026-01-01T00:00:00+00:00", {"cpu": "Test CPU"}, [ok, failed], 1.0)
    json_path, md_path = run.write(tmp_path)
    data = json.loads(json_path.read_text())
    assert data["results"][0]["metrics"][0]["value"] == 1234.5
    assert data["results"][0]["targets"][0]["met"] is True
    assert data["results"][1]["error"] == "Traceback\nBoom"
    markdown = md_path.read_text()
    assert "Test CPU" in markdown
    assert "| fast | things/s | 1,234 /s |" in markdown
    assert "**Failed:**" in markdown
    table = render_table(run.results)
    assert "met" in table
    assert "ERROR" in table


def test_fmt() -> None:
    assert fmt(2.345, "x") == "2.35x"
    assert fmt(0.0123, "x") == "0.012x"
    assert fmt(0.01234, "s") == "0.0123 s"
    assert fmt(45650.2, "/s") == "45,650 /s"


def _plotted_results() -> list[BenchResult]:
    kill = BenchResult("kill_release", "Kill", "smoke")
    kill.series = {
        "trials": [
            {"released": 1.1, "taken_over": 1.2, "ended": 3.0, "reusable": 3.1},
            {"released": 1.0, "taken_over": 1.3, "ended": 3.2, "reusable": 3.3},
        ],
        "control_held_s": 10.0,
        "targets": {"median": 1.5, "max": 3.0},
    }
    sweep = BenchResult("sweep_cost", "Sweep", "smoke")
    sweep.series = {
        "sizes": [10_000, 100_000],
        "labels": ["10k", "100k"],
        "ms": {"issue": [[10.0, 12.0], [11.0, 13.0]], "fixed": [[9.0], [9.5]]},
        "target_ms": 50.0,
    }
    return [kill, sweep]


def test_the_plot_is_a_png_linked_from_the_report(tmp_path: Path) -> None:
    run = Run("smoke", "2026-01-01T00:00:00+00:00", {"cpu": "Test CPU"}, _plotted_results(), 1.0)
    _, md_path = run.write(tmp_path)
    assert (tmp_path / PLOT_NAME).read_bytes()[:4] == b"\x89PNG"
    assert f"]({PLOT_NAME})" in md_path.read_text()


def test_no_plot_without_its_benchmarks(tmp_path: Path) -> None:
    failed = BenchResult("kill_release", "Kill", "smoke", error="Boom")
    assert write_plot([failed, BenchResult("enqueue", "E", "smoke")], tmp_path / "p.png") is None
    assert not (tmp_path / "p.png").exists()
    run = Run("smoke", "2026-01-01T00:00:00+00:00", {}, [failed], 1.0)
    _, md_path = run.write(tmp_path)
    assert PLOT_NAME not in md_path.read_text()
