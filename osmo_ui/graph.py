"""The workflow's graph as SVG: groups in columns by their depth in the DAG, each group a box holding
its tasks, an arrow from every group to each group that reads it.

``graph_svg(groups)`` takes the groups of ``osmo_run.api.workflow`` (``name``, ``status``, ``upstream``,
``tasks`` with ``name``, ``status``, ``lead``). Each task is ``<g class="task STATUS-CLASS"
data-task=NAME data-status=STATUS>`` with its name and a ``<title>``, so the page can recolour it
without redrawing. Every string is escaped.
"""

from __future__ import annotations

from html import escape

from osmo_ui.formatting import status_class

TASK_W, TASK_H, TASK_GAP = 170, 26, 8
PAD, HEAD, COL_GAP, ROW_GAP = 10, 22, 60, 18


def depths(groups: list[dict]) -> dict[str, int]:
    """group -> its column: 0 for groups reading no group, else one more than the deepest upstream."""
    upstream = {g["name"]: [u for u in g.get("upstream", []) if u != g["name"]] for g in groups}
    found: dict[str, int] = {}

    def depth(name: str, seen: frozenset) -> int:
        if name in found:
            return found[name]
        if name in seen or name not in upstream:  # a cycle cannot pass validation; be safe anyway
            return 0
        value = 1 + max((depth(u, seen | {name}) for u in upstream[name] if u in upstream), default=-1)
        found[name] = value
        return value

    for g in groups:
        depth(g["name"], frozenset())
    return found


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"


def graph_svg(groups: list[dict]) -> str:
    columns: dict[int, list[dict]] = {}
    levels = depths(groups)
    for g in groups:
        columns.setdefault(levels[g["name"]], []).append(g)
    boxes: dict[str, tuple[float, float, float, float]] = {}
    parts: list[str] = []
    width = height = 0.0
    for col in sorted(columns):
        x = PAD + col * (TASK_W + 2 * PAD + COL_GAP)
        y = PAD
        for g in columns[col]:
            tasks = g.get("tasks", [])
            h = HEAD + max(1, len(tasks)) * (TASK_H + TASK_GAP) + PAD - TASK_GAP + 4
            w = TASK_W + 2 * PAD
            boxes[g["name"]] = (x, y, w, h)
            parts.append(f'<g class="group {status_class(g.get("status"))}" data-group="{escape(g["name"])}" '
                         f'data-status="{escape(str(g.get("status", "")))}">'
                         f'<rect class="group-box" x="{x}" y="{y}" width="{w}" height="{h}" rx="6"/>'
                         f'<text x="{x + PAD}" y="{y + 15}">{escape(_short(g["name"], 26))}</text>'
                         f'<title>group {escape(g["name"])}: {escape(str(g.get("status", "")))}</title></g>')
            ty = y + HEAD
            for t in tasks:
                status = str(t.get("status", ""))
                label = _short(t["name"]) + (" ★" if t.get("lead") else "")
                parts.append(f'<g class="task {status_class(status)}" data-task="{escape(t["name"])}" '
                             f'data-status="{escape(status)}"><a href="#task-{escape(t["name"])}">'
                             f'<rect x="{x + PAD}" y="{ty}" width="{TASK_W}" height="{TASK_H}" rx="4"/>'
                             f'<text x="{x + PAD + 8}" y="{ty + 17}">{escape(label)}</text></a>'
                             f'<title>{escape(t["name"])}: {escape(status)}</title></g>')
                ty += TASK_H + TASK_GAP
            y += h + ROW_GAP
            width, height = max(width, x + w + PAD), max(height, y)
    edges = []
    for g in groups:
        for up in g.get("upstream", []):
            if up in boxes and g["name"] in boxes:
                ux, uy, uw, uh = boxes[up]
                dx, dy, _, dh = boxes[g["name"]]
                x1, y1, x2, y2 = ux + uw, uy + min(uh, 40) / 2, dx, dy + min(dh, 40) / 2
                mid = (x1 + x2) / 2
                edges.append(f'<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2 - 6},{y2}" '
                             f'marker-end="url(#arrow)" data-from="{escape(up)}" data-to="{escape(g["name"])}"/>')
    defs = ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#829ab1"/></marker></defs>')
    return (f'<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="{max(width, 200):.0f}" '
            f'height="{max(height, 60):.0f}" role="img" aria-label="groups and tasks">'
            + defs + "".join(edges) + "".join(parts) + "</svg>")
