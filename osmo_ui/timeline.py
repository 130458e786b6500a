"""Every attempt of every task on one time axis, as SVG.

``timeline_svg(groups, start, now)``: one row per task (in group order), one bar per attempt from its
start to its end (to ``now`` while it runs), coloured by the attempt's status; a retried attempt
(RESCHEDULED) is a bar of its own, so retries are visible. Bars are ``<rect class="bar STATUS-CLASS"
data-task=NAME data-attempt=N>`` with a ``<title>`` giving the attempt's status, times, exit code and
reason. Times are the ISO 8601 strings of ``osmo_run.api.workflow``.
"""

from __future__ import annotations

import math
from datetime import datetime
from html import escape

from osmo_ui.formatting import duration, status_class

LABEL_W, ROW_H, BAR_H, PLOT_W, TOP = 180, 22, 14, 760, 24


def epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def tick_step(span: float, count: int = 6) -> float:
    """A round number of seconds so that ``span`` has about ``count`` ticks."""
    raw = max(span / count, 1e-3)
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):
        if step >= raw:
            return float(step)
    return 86400.0 * math.ceil(raw / 86400)


def timeline_svg(groups: list[dict], start: float | None, now: float) -> str:
    rows = [(t, t.get("attempts", [])) for g in groups for t in g.get("tasks", [])]
    starts = [s for _, attempts in rows for a in attempts if (s := epoch(a.get("started"))) is not None]
    candidates = ([start] if start is not None else []) + starts
    origin = min(candidates) if candidates else now
    ends = [epoch(a.get("ended")) or now for _, attempts in rows for a in attempts if a.get("started")]
    span = max([e - origin for e in ends] + [1.0])
    scale = PLOT_W / span
    height = TOP + len(rows) * ROW_H + 8
    parts = []
    step = tick_step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        x = LABEL_W + tick * scale
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="{TOP - 4}" x2="{x:.1f}" y2="{height - 6}"/>'
                     f'<text x="{x:.1f}" y="{TOP - 8}" text-anchor="middle">{escape(duration(tick))}</text>')
        tick += step
    for i, (task, attempts) in enumerate(rows):
        y = TOP + i * ROW_H
        parts.append(f'<text x="4" y="{y + BAR_H - 2}" data-row="{escape(task["name"])}">'
                     f'{escape(task["name"][:26])}</text>')
        for a in attempts:
            begin = epoch(a.get("started"))
            if begin is None:
                continue
            end = epoch(a.get("ended")) or now
            x = LABEL_W + (begin - origin) * scale
            w = max((end - begin) * scale, 2.0)
            status = str(a.get("status", ""))
            note = f"attempt {a.get('attempt')}: {status}, {duration(end - begin)}"
            if a.get("exit_code") is not None:
                note += f", exit {a['exit_code']}"
            if a.get("reason"):
                note += f": {a['reason']}"
            parts.append(f'<rect class="bar {status_class(status)}" data-task="{escape(task["name"])}" '
                         f'data-attempt="{escape(str(a.get("attempt")))}" data-status="{escape(status)}" '
                         f'x="{x:.1f}" y="{y}" width="{w:.1f}" height="{BAR_H}" rx="2">'
                         f'<title>{escape(task["name"])} {escape(note)}</title></rect>')
    return (f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + PLOT_W + 20}" '
            f'height="{height}" role="img" aria-label="attempts over time">' + "".join(parts) + "</svg>")
