"""Plain renderings of the storage report: JSON, CSV and a short text summary for a terminal.

The report is the plain dict computed by the store engine (shape in docs/COSTS.md); these functions
only format it. The small formatting helpers (``human_bytes``, ``plural``, ``money``, ``utc_time``,
``ratio``) are shared with the HTML page (``html.py``) and the CLI.
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime, timezone
from typing import Any

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")

# The CSV columns, in order (see to_csv).
CSV_NUMBERS = ("logical_bytes", "stored_bytes", "new_bytes", "unique_bytes", "shared_bytes", "dedup_ratio",
               "compression_ratio")
CSV_COLUMNS = ("row", "dataset", "version", "created", "tags", *CSV_NUMBERS, "note")


def human_bytes(n: float | int | None) -> str:
    """``1288490188`` -> ``"1.2 GiB"`` (binary units); bytes below 1 KiB as an integer."""
    if n is None:
        return "-"
    value = float(n)
    for unit in UNITS:
        if abs(value) < 1024 or unit == UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def plural(n: int | None, word: str, words: str | None = None) -> str:
    """``plural(1, "file")`` -> ``"1 file"``, ``plural(2, "file")`` -> ``"2 files"``; an unknown count
    (``None``) -> ``"? files"``."""
    if n is None:
        return f"? {words or word + 's'}"
    return f"{n} {word if n == 1 else words or word + 's'}"


def money(value: float | None, currency: str = "USD") -> str:
    """``"$1,234.56"``; amounts under a dollar keep four decimals so small figures stay readable."""
    if value is None or not math.isfinite(value):
        return "-"
    sign = "$" if currency == "USD" else f"{currency} "
    return f"{sign}{value:,.2f}" if abs(value) >= 1 or value == 0 else f"{sign}{value:.4f}"


def ratio(value: float | None) -> str:
    """``2.4`` -> ``"2.40x"``; missing or infinite ratios as ``"-"``."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{value:.2f}x"


def utc_time(t: float | None) -> str:
    """Epoch seconds -> ``"2026-11-21 13:55 UTC"``."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _iso(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def to_json(report: dict) -> str:
    """The report as indented JSON (a non-finite ratio becomes ``null``), ending with a newline."""
    return json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n"


def _csv_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return "" if value is None else value


def to_csv(report: dict) -> str:
    """One row per dataset version, then one ``total`` row per dataset, after a header line.

    Columns: ``row`` (``version`` or ``total``), ``dataset``, ``version`` (empty on a total),
    ``created`` (ISO 8601 UTC; empty on a total), ``tags`` (separated by ``;``),
    ``logical_bytes``, ``stored_bytes``, ``new_bytes``, ``unique_bytes``, ``shared_bytes`` (integers,
    bytes; empty when unknown), ``dedup_ratio``, ``compression_ratio`` (floats; empty when
    undefined), ``note`` (why new and unique differ; usually empty).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for ds in report.get("datasets", []):
        for v in ds.get("versions", []):
            writer.writerow(["version", ds["name"], v.get("version"), _iso(v.get("created")),
                             ";".join(v.get("tags", []))] + [_csv_number(v.get(k)) for k in CSV_NUMBERS]
                            + [v.get("note") or ""])
        writer.writerow(["total", ds["name"], "", "", ""] + [_csv_number(ds.get(k)) for k in CSV_NUMBERS]
                        + [ds.get("note") or ""])
    return out.getvalue()


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    """Rows of cells as aligned lines: columns in ``right`` are right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                      for i, c in enumerate(r)).rstrip() for r in rows]


def store_summary(store: dict) -> list[str]:
    """The store's figures in two lines (docs/COSTS.md names them; ``osmo store stats`` shows the same)."""
    return [f"  {human_bytes(store.get('stored_bytes'))} stored in {plural(store.get('packs', 0), 'pack')} for "
            f"{human_bytes(store.get('logical_bytes'))} logical: live {human_bytes(store.get('live_bytes'))}, "
            f"dead {human_bytes(store.get('dead_bytes'))}, reclaimable now "
            f"{human_bytes(store.get('reclaimable_bytes'))}",
            f"  {plural(store.get('versions', 0), 'live version')} of {plural(store.get('datasets', 0), 'dataset')}: "
            f"{plural(store.get('chunks'), 'chunk')} and {plural(store.get('manifest_nodes'), 'manifest node')}; "
            f"{plural(store.get('objects', 0), 'object')} in the store"]


def to_text(report: dict) -> str:
    """A short human summary: the store, one line per dataset plus its latest version, costs."""
    store = report.get("store", {})
    lines = [f"Store {store.get('url', '?')}  (report of {utc_time(report.get('generated'))})",
             *store_summary(store), ""]
    datasets = report.get("datasets", [])
    if not datasets:
        lines.append("No datasets.")
    else:
        rows = [["DATASET", "VERSIONS", "LOGICAL", "STORED", "NEW", "UNIQUE", "SHARED", "DEDUP", "COMPRESSION"]]
        notes = []
        for ds in datasets:
            rows.append([ds["name"], str(len(ds.get("versions", []))), human_bytes(ds.get("logical_bytes")),
                         human_bytes(ds.get("stored_bytes")), human_bytes(ds.get("new_bytes")),
                         human_bytes(ds.get("unique_bytes")), human_bytes(ds.get("shared_bytes")),
                         ratio(ds.get("dedup_ratio")), ratio(ds.get("compression_ratio"))])
            if ds.get("versions"):
                v = max(ds["versions"], key=lambda x: x.get("version", 0))
                tags = ", ".join(v.get("tags", [])) or "no tags"
                rows.append([f"  latest: v{v.get('version')} {utc_time(v.get('created'))[:10]} ({tags})",
                             "", human_bytes(v.get("logical_bytes")), human_bytes(v.get("stored_bytes")),
                             human_bytes(v.get("new_bytes")), human_bytes(v.get("unique_bytes")),
                             human_bytes(v.get("shared_bytes")), ratio(v.get("dedup_ratio")),
                             ratio(v.get("compression_ratio"))])
                if v.get("note"):
                    notes.append(f"  {ds['name']}:{v.get('version')}: new and unique differ: {v['note']}")
        lines += _table(rows, right=set(range(1, 9)))
        lines += notes
    costs = report.get("costs")
    if costs and costs.get("classes"):
        currency = costs.get("currency", "USD")
        lines += ["", f"Monthly storage cost estimate ({currency}, list prices as of {costs.get('as_of', '?')}, "
                      "GB = 10^9 bytes, egress not included):"]
        rows = [["CLASS", "PER GB-MONTH", "MONTHLY", "WITHOUT DEDUP", "SAVINGS"]]
        for c in costs["classes"]:
            rows.append([c.get("label", c["class"]), money(c.get("storage_gb_month"), currency),
                         money(c.get("monthly"), currency), money(c.get("monthly_without_dedup"), currency),
                         money(c.get("savings"), currency)])
        lines += _table(rows, right={1, 2, 3, 4})
    return "\n".join(lines) + "\n"
