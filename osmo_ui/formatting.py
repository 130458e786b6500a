"""How figures look on the pages: Jinja2 filters for sizes, ratios, times, durations and statuses.

Sizes, ratios and times are the storage report's own formatters (``osmo_store.report``), so a figure
reads the same in ``osmo store report``, its HTML page and the UI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from jinja2 import Undefined

from osmo_store.report import human_bytes, ratio, utc_time

FAILED = "failed"
STATUS_CLASSES = {"COMPLETED": "ok", "RUNNING": "running", "INITIALIZING": "running", "SCHEDULING": "waiting",
                  "WAITING": "waiting", "PENDING": "waiting", "RESCHEDULED": "retried", "ready": "ok",
                  "deleted": "muted", "damaged": FAILED}


def status_class(status: str | None) -> str:
    """A CSS class for a status: ok, running, waiting, retried, failed (every FAILED_*), muted."""
    if not status:
        return "muted"
    if status.startswith("FAILED"):
        return FAILED
    return STATUS_CLASSES.get(status, "muted")


def duration(seconds: float | None) -> str:
    """``3725.2`` -> ``"1h 2m 5s"``; under a minute with one decimal."""
    if not isinstance(seconds, (int, float)):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return (f"{h}h " if h else "") + f"{m}m {s}s"


def iso_time(value: str | None) -> str:
    """An ISO 8601 UTC time (as ``query --json`` gives) -> ``"2026-12-06 22:40:01 UTC"``."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


def _missing_as_none(format_value: Callable[[Any], str]) -> Callable[[Any], str]:
    """A filter that reads a figure the data lacks (Jinja's Undefined, a non-number) as None ("-")."""
    def apply(value: Any) -> str:
        return format_value(None if isinstance(value, Undefined) else value)
    return apply


FILTERS = {name: _missing_as_none(f) for name, f in {
    "bytes": human_bytes, "ratio": ratio, "epoch": utc_time, "duration": duration, "isotime": iso_time,
    "status_class": status_class}.items()}
