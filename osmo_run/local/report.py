"""Text rendering of ``osmo workflow list`` and ``query`` (their ``--json`` prints the dicts)."""

from __future__ import annotations

from typing import Any


def _duration(item: dict[str, Any]) -> str:
    seconds = item.get("seconds")
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes}m{sec:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _code(value: Any) -> str:
    return "-" if value is None else str(value)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def listing(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no workflows"
    rows = [["ID", "STATUS", "EXIT", "SUBMITTED", "DURATION"]]
    rows += [[w["id"], w["status"], _code(w["exit_code"]), w["submitted"] or "-", _duration(w)] for w in items]
    return "\n".join(_table(rows))


def _datasets(items: list[dict[str, Any]]) -> str:
    return ", ".join(f"{d.get('dataset')}:{d.get('version')}" if d.get("version") is not None
                     else str(d.get("dataset") or d.get("url") or d) for d in items)


def query(info: dict[str, Any]) -> str:
    lines = [f"Workflow {info['id']}: {info['status']}"
             + (f" (exit code {info['exit_code']})" if info["exit_code"] is not None else "")]
    if info["reason"]:
        lines.append(f"Reason: {info['reason']}")
    lines.append(f"Submitted {info['submitted']}, started {info['started'] or '-'}, ended {info['ended'] or '-'}"
                 f" ({_duration(info)})")
    if info["isolation"]:
        lines.append(f"Isolation: {info['isolation']}")
    if info["store"]:
        lines.append(f"Store: {info['store']}")
    rows = [["GROUP / TASK", "STATUS", "EXIT", "ATTEMPTS", "STARTED", "DURATION"]]
    details: dict[int, list[str]] = {}
    for group in info["groups"]:
        rows.append([group["name"], group["status"], _code(group["exit_code"]), "", group["started"] or "-",
                     _duration(group)])
        if group["reason"] and group["status"] == "SCHEDULING":  # what it waits for (supervisor._note_waiting)
            details[len(rows) - 1] = [f"reason: {group['reason']}"]
        for task in group["tasks"]:
            rows.append([f"  {task['name']}{' *' if task['lead'] else ''}", task["status"], _code(task["exit_code"]),
                         str(len(task["attempts"])), task["started"] or "-", _duration(task)])
            notes = []
            if task["reason"]:
                notes.append(f"reason: {task['reason']}")
            if task["datasets_read"]:
                notes.append(f"read: {_datasets(task['datasets_read'])}")
            if task["datasets_written"]:
                notes.append(f"written: {_datasets(task['datasets_written'])}")
            if notes:
                details[len(rows) - 1] = notes
    lines.append("")
    for i, line in enumerate(_table(rows)):
        lines.append(line)
        lines.extend(f"      {note}" for note in details.get(i, []))
    lines.append("(* lead task)  Logs: osmo workflow logs " + info["id"] + " [--task TASK]")
    return "\n".join(lines)
