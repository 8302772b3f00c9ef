"""The results model shared by every benchmark: metrics, ratios, targets, and their rendering.

A benchmark returns one `BenchResult`. Ratios between contestants measured in the same run are
the headline; absolute values are reported beside them. Targets are checked and reported, never
enforced: the full run is not a CI gate.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Kind = Literal["absolute", "ratio"]
Op = Literal["<=", ">="]


@dataclass(frozen=True)
class Summary:
    """Order statistics of repeated samples (p95 by the nearest-rank method)."""

    n: int
    median: float
    p95: float
    max: float
    min: float
    mean: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(samples)
        rank = max(1, math.ceil(0.95 * len(ordered)))
        return cls(
            n=len(ordered),
            median=statistics.median(ordered),
            p95=ordered[rank - 1],
            max=ordered[-1],
            min=ordered[0],
            mean=statistics.fmean(ordered),
        )


@dataclass
class Metric:
    key: str
    label: str
    value: float
    unit: str
    kind: Kind = "absolute"
    summary: Summary | None = None  # when `value` is a statistic of repeated samples
    headline: bool = False


@dataclass
class Target:
    """A target from the issue, checked against one metric of the same result."""

    metric: str
    op: Op
    threshold: float
    text: str
    actual: float | None = None
    met: bool | None = None

    def check(self, value: float) -> Target:
        self.actual = value
        self.met = value <= self.threshold if self.op == "<=" else value >= self.threshold
        return self


@dataclass
class BenchResult:
    name: str
    title: str
    size: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Raw data behind some metrics (per-trial timings, sizes), for the plot and the JSON.
    series: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def add(
        self,
        key: str,
        label: str,
        value: float,
        unit: str,
        *,
        kind: Kind = "absolute",
        summary: Summary | None = None,
        headline: bool = False,
    ) -> Metric:
        metric = Metric(key, label, float(value), unit, kind, summary, headline)
        self.metrics.append(metric)
        return metric

    def add_samples(
        self,
        key: str,
        label: str,
        samples: Sequence[float],
        unit: str,
        *,
        stat: Literal["median", "max", "p95", "mean"] = "median",
        headline: bool = False,
    ) -> Metric:
        summary = Summary.of(samples)
        return self.add(
            key, label, getattr(summary, stat), unit, summary=summary, headline=headline
        )

    def ratio(self, key: str, label: str, numerator: float, denominator: float) -> Metric:
        value = numerator / denominator if denominator else math.inf
        return self.add(key, label, value, "x", kind="ratio", headline=True)

    def target(self, metric: str, op: Op, threshold: float, text: str) -> Target:
        target = Target(metric, op, threshold, text)
        found = self.metric(metric)
        if found is not None:
            target.check(found.value)
        self.targets.append(target)
        return target

    def metric(self, key: str) -> Metric | None:
        return next((m for m in self.metrics if m.key == key), None)

    def value(self, key: str) -> float:
        found = self.metric(key)
        if found is None:
            raise KeyError(key)
        return found.value


@dataclass
class Run:
    size: str
    started_at: str
    machine: dict[str, Any]
    results: list[BenchResult]
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 3),
            "machine": self.machine,
            "results": [asdict(result) for result in self.results],
        }

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """latest.json, the plot (when a result it draws is there) and REPORT.md."""
        from bench.plot import PLOT_NAME, write_plot

        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / "latest.json"
        md_path = out_dir / "REPORT.md"
        _atomic_write(json_path, json.dumps(self.to_json(), indent=2, default=str) + "\n")
        plot = write_plot(self.results, out_dir / PLOT_NAME)
        _atomic_write(md_path, render_markdown(self, plot.name if plot else None))
        return json_path, md_path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# -- rendering ---------------------------------------------------------------------------


def fmt(value: float, unit: str = "") -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if unit == "x":
        return f"{value:.3f}x" if abs(value) < 0.1 else f"{value:.2f}x"
    magnitude = abs(value)
    if magnitude >= 1000:
        text = f"{value:,.0f}"
    elif magnitude >= 100:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}" if unit else text


def _target_cell(result: BenchResult, metric: Metric) -> tuple[str, str]:
    target = next((t for t in result.targets if t.metric == metric.key), None)
    if target is None:
        return "", ""
    verdict = "n/a" if target.met is None else ("met" if target.met else "MISSED")
    return f"{target.op} {fmt(target.threshold, metric.unit)}", verdict


def _spread(metric: Metric) -> str:
    s = metric.summary
    if s is None:
        return ""
    unit = metric.unit
    return f"n={s.n} med {fmt(s.median, unit)} p95 {fmt(s.p95, unit)} max {fmt(s.max, unit)}"


def table_rows(results: Iterable[BenchResult]) -> list[list[str]]:
    rows = []
    for result in results:
        if result.error is not None:
            rows.append([result.name, "ERROR", result.error.splitlines()[0][:70], "", "", ""])
            continue
        for metric in result.metrics:
            target, verdict = _target_cell(result, metric)
            rows.append(
                [
                    result.name,
                    metric.label,
                    fmt(metric.value, metric.unit),
                    _spread(metric),
                    target,
                    verdict,
                ]
            )
    return rows


HEADER = ["benchmark", "metric", "value", "spread", "target", "verdict"]


def render_table(results: Iterable[BenchResult]) -> str:
    rows = [HEADER, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(run: Run, plot: str | None = None) -> str:
    """The report; `plot` is the file name of the plot beside it, linked when given."""
    out = [
        "# Limbo benchmarks",
        "",
        f"Run of {run.started_at}, size `{run.size}`, {run.seconds:.0f} s in all. "
        "Written by `python -m bench`; the same figures are in `latest.json`.",
        "",
        "Ratios compare contestants measured in this one run, on this one PostgreSQL, "
        "with the same settings: they are the headline. Absolute figures depend on the "
        "machine and on what else ran on it (see the load averages below).",
        "",
    ]
    if plot is not None:
        out += [
            f"Plot: [{plot}]({plot}) (kill to release per trial; sweep cost against table size).",
            "",
            f"![kill to release per trial, and sweep cost against table size]({plot})",
            "",
        ]
    out += [
        "## Machine",
        "",
    ]
    for key, value in run.machine.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k}={v}" for k, v in value.items())
            out.append(f"- **{key}**: {_md_escape(inner)}")
        else:
            out.append(f"- **{key}**: {_md_escape(str(value))}")
    out += ["", "## Summary", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in table_rows(run.results):
        out.append("| " + " | ".join(_md_escape(cell) for cell in row) + " |")
    for result in run.results:
        out += ["", f"## {result.name}: {result.title}", ""]
        if result.error is not None:
            out += ["**Failed:**", "", "```", result.error.strip(), "```"]
            continue
        out.append(f"Took {result.seconds:.1f} s.")
        if result.params:
            params = ", ".join(f"{k}={v}" for k, v in result.params.items())
            out += ["", f"Parameters: {_md_escape(params)}."]
        if result.targets:
            out += ["", "Targets:", ""]
            for target in result.targets:
                verdict = "n/a" if target.met is None else ("met" if target.met else "**missed**")
                actual = "-" if target.actual is None else f"{target.actual:.4g}"
                out.append(f"- {target.text}: {actual} ({verdict})")
        if result.notes:
            out += ["", "Notes:", ""]
            out += [f"- {note}" for note in result.notes]
    return "\n".join(out) + "\n"
