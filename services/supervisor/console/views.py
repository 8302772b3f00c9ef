"""How the console shows values: times (ISO 8601 with a relative age), durations, links with
query strings, stable element IDs, and the chart as server-side SVG geometry. No I/O.

Every value reaches the page through Jinja with autoescape on; nothing here returns markup.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def iso(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


def duration(ms: int | float | None) -> str:
    """A duration for a person: `850 ms`, `12.3 s`, `4 min 5 s`, `3 h 2 min`, `2 d 1 h`."""
    if ms is None:
        return "-"
    ms = abs(ms)
    if ms < 1000:
        return f"{int(ms)} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def ago(epoch_ms: int | None, now_ms: int) -> str:
    if epoch_ms is None:
        return ""
    delta = now_ms - epoch_ms
    return f"{duration(delta)} ago" if delta >= 0 else f"in {duration(delta)}"


def iso_to_ms(value: str | None) -> int | None:
    if not value:
        return None
    return int(datetime.fromisoformat(value).timestamp() * 1000)


def dom_id(*parts: Any) -> str:
    """A stable element ID for values that may hold anything (htmx keeps focus by ID)."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()[:12]
    return f"id-{digest}"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


class Links:
    """URLs inside the console, under its base (`<prefix>/console`)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def __call__(self, path: str = "/", **params: Any) -> str:
        query = urlencode({k: v for k, v in params.items() if v is not None and v != ""})
        return f"{self.base}{path}" + (f"?{query}" if query else "")

    def workflow(self, workflow_id: str, **params: Any) -> str:
        return self("/workflow", id=workflow_id, **params)


# -- the chart -------------------------------------------------------------------------------

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 12, 28
OUTCOMES = ("applied", "skipped", "dry_run")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    outcome: str
    title: str


@dataclass
class Chart:
    """The overview's chart: candidates (a line, the largest count sampled in each bucket)
    over audited actions (stacked bars by outcome), one bucket per column."""

    width: int = WIDTH
    height: int = HEIGHT
    bars: list[Bar] = field(default_factory=list)
    points: str = ""
    dots: list[tuple[float, float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, int]] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    max_value: int = 0
    buckets: list[dict[str, Any]] = field(default_factory=list)
    summary: str = ""


def nice_ceiling(value: int) -> int:
    """The smallest of 2, 4, 10, 20, 40, 100, ... at least `value` (halves are whole)."""
    magnitude = 1
    while True:
        for factor in (2, 4, 10):
            if factor * magnitude >= value:
                return factor * magnitude
        magnitude *= 10


def chart(buckets: list[dict[str, Any]], bucket_s: int) -> Chart:
    out = Chart(buckets=buckets)
    if not buckets:
        out.summary = "no data"
        return out
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / len(buckets)
    peak = max(
        max((b["candidates"] or 0) for b in buckets),
        max(sum(b[o] for o in OUTCOMES) for b in buckets),
        1,
    )
    scale = nice_ceiling(peak)
    out.max_value = scale

    def y(value: float) -> float:
        return round(TOP + plot_h - plot_h * value / scale, 1)

    out.y_ticks = [(y(v), v) for v in sorted({0, scale // 2, scale})]
    points = []
    for i, bucket in enumerate(buckets):
        x0 = LEFT + i * step
        base = 0
        for outcome in OUTCOMES:
            n = bucket[outcome]
            if n:
                top = y(base + n)
                out.bars.append(
                    Bar(
                        x=round(x0 + step * 0.15, 1),
                        y=top,
                        width=round(step * 0.7, 1),
                        height=round(y(base) - top, 1),
                        outcome=outcome,
                        title=f"{bucket['at']}: {n} {outcome.replace('_', ' ')}",
                    )
                )
                base += n
        if bucket["candidates"] is not None:
            cx, cy = round(x0 + step / 2, 1), y(bucket["candidates"])
            points.append(f"{cx},{cy}")
            out.dots.append((cx, cy, f"{bucket['at']}: {bucket['candidates']} in limbo"))
    out.points = " ".join(points)
    every = max(1, len(buckets) // 6)
    for i in range(0, len(buckets), every):
        label = buckets[i]["at"][11:16]  # HH:MM of the ISO time (UTC)
        out.x_ticks.append((round(LEFT + i * step + step / 2, 1), label))
    sampled = [b["candidates"] for b in buckets if b["candidates"] is not None]
    actions = {o: sum(b[o] for b in buckets) for o in OUTCOMES}
    out.summary = (
        f"last {len(buckets) * bucket_s // 60} min: "
        + (f"in limbo {min(sampled)} to {max(sampled)}" if sampled else "no candidate samples")
        + ", actions "
        + ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in actions.items())
    )
    return out


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(("html", "svg"), default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(iso=iso, duration=duration, pretty=pretty)
    env.globals.update(ago=ago, dom_id=dom_id, chart=chart, iso_ms=iso_to_ms)
    return env
