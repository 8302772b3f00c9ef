"""The run's plot (PNG, written beside REPORT.md, which links it): kill to release per trial,
and sweep cost against `workflow_status` size.

Drawn from the `series` of the `kill_release` and `sweep_cost` results (each panel only when
its benchmark ran and succeeded), with matplotlib's Agg canvas: no display, no pyplot state.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.results import BenchResult

PLOT_NAME = "benchmarks.png"

# What each kill's timeline records, in the order it happens, and how it is drawn.
_KILL_SERIES = (
    ("released", "released by the supervisor", "o", "tab:orange"),
    ("taken_over", "taken over by the live worker", "s", "tab:blue"),
    ("reusable", "dedup ID accepted again", "^", "tab:green"),
)
_SWEEP_SERIES = (
    ("issue", "sweep, 1% PENDING (issue mix)", "o", "tab:blue", "-"),
    ("fixed", "sweep, only the 100 in limbo PENDING", "s", "tab:green", "-"),
    ("scan", "scan alone, issue mix", "o", "tab:blue", ":"),
    ("scan_fixed", "scan alone, fixed in-flight", "s", "tab:green", ":"),
)


def _usable(results: Sequence[BenchResult], name: str) -> BenchResult | None:
    found = next((r for r in results if r.name == name), None)
    if found is None or found.error is not None or not found.series:
        return None
    return found


def _kill_panel(ax: Axes, result: BenchResult) -> None:
    trials: list[dict[str, float]] = result.series["trials"]
    runs = list(range(1, len(trials) + 1))
    for key, label, marker, color in _KILL_SERIES:
        ax.plot(runs, [t[key] for t in trials], marker=marker, color=color, label=label, ls="")
    targets: dict[str, float] = result.series.get("targets", {})
    if "median" in targets:
        median = targets["median"]
        ax.axhline(
            median, color="tab:blue", ls="--", lw=1, label=f"takeover target: median {median:g} s"
        )
    if "max" in targets:
        most = targets["max"]
        ax.axhline(most, color="tab:red", ls="--", lw=1, label=f"takeover target: max {most:g} s")
    takeovers = [t["taken_over"] for t in trials]
    ax.set_title(
        f"Kill to release ({len(trials)} SIGKILLs, defaults): "
        f"takeover median {statistics.median(takeovers):.2f} s, max {max(takeovers):.2f} s",
        fontsize=10,
    )
    held = result.series.get("control_held_s")
    if held is not None:
        ax.text(
            0.01,
            0.98,
            f"without the supervisor: dedup ID still held {held:.0f} s after the kill",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
        )
    ax.set_xlabel("trial")
    ax.set_ylabel("seconds after SIGKILL")
    ax.set_xticks(runs)
    highest = max([t[key] for t in trials for key, *_ in _KILL_SERIES] + list(targets.values()))
    ax.set_ylim(0, highest * 1.2)  # room for the note above the points
    ax.grid(alpha=0.3)
    ax.margins(x=0.08)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)


def _sweep_panel(ax: Axes, result: BenchResult) -> None:
    sizes: list[int] = result.series["sizes"]
    samples: dict[str, list[list[float]]] = result.series["ms"]
    for key, label, marker, color, style in _SWEEP_SERIES:
        per_size = samples.get(key)
        if not per_size:
            continue
        medians = [statistics.median(s) for s in per_size]
        low = [m - min(s) for m, s in zip(medians, per_size, strict=True)]
        high = [max(s) - m for m, s in zip(medians, per_size, strict=True)]
        ax.errorbar(
            sizes,
            medians,
            yerr=[low, high],
            marker=marker,
            color=color,
            ls=style,
            capsize=3,
            label=label,
        )
    target: float | None = result.series.get("target_ms")
    if target is not None:
        top = result.series["labels"][-1]
        ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"target at {top}: {target:g} ms")
    ax.set_xscale("log")
    ax.set_xticks(sizes, result.series["labels"])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_title("Sweep cost against workflow_status size (median, min-max)", fontsize=10)
    ax.set_xlabel("rows in workflow_status")
    ax.set_ylabel("ms")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)


def write_plot(results: Sequence[BenchResult], path: Path) -> Path | None:
    """Draw the panels whose results are there; None (and nothing written) if none is."""
    panels: list[tuple[Any, BenchResult]] = []
    kill = _usable(results, "kill_release")
    if kill is not None:
        panels.append((_kill_panel, kill))
    sweep = _usable(results, "sweep_cost")
    if sweep is not None:
        panels.append((_sweep_panel, sweep))
    if not panels:
        return None
    figure = Figure(figsize=(6.5 * len(panels), 5.0), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (draw, result) in enumerate(panels, 1):
        draw(figure.add_subplot(1, len(panels), index), result)
    tmp = path.with_name(path.name + ".tmp")
    figure.savefig(tmp, format="png", dpi=110)
    tmp.replace(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.plot [latest.json]`: draw the plot again from a run's JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    source = Path(args[0]) if args else Path(__file__).resolve().parent / "results" / "latest.json"
    run = json.loads(source.read_text())
    results = [
        BenchResult(r["name"], r["title"], r["size"], series=r.get("series", {}), error=r["error"])
        for r in run["results"]
    ]
    written = write_plot(results, source.with_name(PLOT_NAME))
    print(written or "nothing to plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
