"""The post-incident report as one self-contained HTML file: the same content as the
Markdown report (``runbook.report.report_context``) plus an inline SVG timeline
chart. No external resources (fonts, scripts, images), so it opens offline, can be
attached to a ticket, and prints (``@media print`` in the template)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from core.durations import format_duration
from core.trail import Trail
from runbook.incident_view import ts
from runbook.report import TEMPLATES, report_context

# Chart geometry (SVG user units).
WIDTH = 1000
LEFT = 170
RIGHT = 20
LANE_H = 28
TOP = 30

_CATEGORY = {
    "step succeeded": "ok",
    "effect already in place": "ok",
    "gate passed": "ok",
    "gate passed automatically": "ok",
    "step FAILED": "bad",
    "REJECTED": "bad",
    "gate timed out (rejects)": "bad",
    "approval refused": "bad",
    "approval requested": "gate",
    "gate escalated": "gate",
    "approved": "human",
}


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    category: str
    title: str
    seq: int


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    category: str
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    lanes: list[tuple[str, float]]
    marks: list[Mark]
    bars: list[Bar]
    ticks: list[Tick]
    plot_left: int
    plot_right: int


def build_chart(ctx: dict[str, Any]) -> Chart:
    """Lays out one mark per timeline event on per-step lanes (the incident's own
    events on the first), bars for each step's run and each gate's wait, and a
    relative time axis."""
    timeline = ctx["timeline"]
    lanes_order = ["incident"] + [s.key for s in ctx["steps"]]
    for t in timeline:
        if t["step"] and t["step"] not in lanes_order:
            lanes_order.append(t["step"])
    lane_y = {name: TOP + i * LANE_H + LANE_H / 2 for i, name in enumerate(lanes_order)}
    times = [ts(t["ts"]) for t in timeline]
    start = min(times) if times else None
    span = max(((max(times) - start).total_seconds() if start else 0.0), 1.0)
    plot_w = WIDTH - LEFT - RIGHT

    def x_of(value: str) -> float:
        assert start is not None
        return round(LEFT + (ts(value) - start).total_seconds() / span * plot_w, 2)

    marks = [
        Mark(
            x_of(t["ts"]),
            lane_y[t["step"] or "incident"],
            _CATEGORY.get(t["what"], "run"),
            f"#{t['seq']} {t['ts']} {t['what']}"
            + (f" {t['step']}" if t["step"] else "")
            + (f" by {t['who']}" if t["who"] else ""),
            t["seq"],
        )
        for t in timeline
    ]
    bars: list[Bar] = []
    if start is not None:
        for s in ctx["steps"]:
            if s.started and s.finished:
                x0, x1 = x_of(s.started), x_of(s.finished)
                bars.append(
                    Bar(
                        x0,
                        lane_y[s.key],
                        max(x1 - x0, 2.0),
                        "bad" if s.state == "failed" else "ok",
                        f"{s.key}: {s.state}"
                        + (f" in {format_duration(s.duration_s)}" if s.duration_s else ""),
                    )
                )
        for g in ctx["gates"]:
            if g["opened"] and g["waited"] is not None and g["step"] in lane_y:
                x0, x1 = x_of(g["opened"]), x_of(g["ts"])
                bars.append(
                    Bar(
                        x0,
                        lane_y[g["step"]],
                        max(x1 - x0, 2.0),
                        "gate",
                        f"{g['step']}: waited {format_duration(g['waited'])} for {g['who'] or 'a decision'}",
                    )
                )
    ticks = [
        Tick(round(LEFT + plot_w * i / 4, 2), "+" + format_duration(span * i / 4)) for i in range(5)
    ]
    height = TOP + LANE_H * len(lanes_order) + 30
    return Chart(
        WIDTH,
        height,
        [(name, lane_y[name]) for name in lanes_order],
        marks,
        bars,
        ticks,
        LEFT,
        WIDTH - RIGHT,
    )


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = format_duration
    return env


def render_html(trail: Trail) -> str:
    """The report as a single HTML document (every string redacted)."""
    ctx = report_context(trail)
    html = _env().get_template("report.html.j2").render(**ctx, chart=build_chart(ctx))
    return trail.redactor.text(html)
