"""The storage report as one self-contained HTML page: inline CSS, charts as inline SVG, no script.

Nothing on the page is fetched (no CDN, font, script or image URL), so it can be mailed, archived
or opened offline. Charts, each with a stable ``id`` and one ``class="bar ..."`` element per bar:

- ``chart-versions-<dataset>``: per version of a dataset, what its upload added ("new") beside what
  deleting it frees now ("unique"), grouped bars (axis labels are thinned out when a dataset has
  many versions, and a wide chart scrolls); the table below says why where the two differ;
- ``chart-unique``: the ten datasets owning the most unique bytes (horizontal bars);
- ``chart-costs``: the monthly cost per storage class with and without dedup (horizontal bars).

Every bar has a ``<title>`` with its exact figure, and the tables below each chart hold the numbers.
Every string from the report (dataset names, tags, URLs, price labels) is HTML-escaped.
"""

from __future__ import annotations

import hashlib
import html
import math
import re

from osmo_store.report.render import human_bytes, money, ratio, utc_time

COLORS = {"new": "#2166ac", "unique": "#e08214", "dedup": "#1b9e77", "nodedup": "#b8b8b8"}
DEFINITIONS = ("stored: every pack in the store; live: the chunks and manifest nodes live versions reference; "
               "dead: the rest (unreferenced chunks, pack framing); reclaimable: what 'osmo store gc --min-age 0' "
               "frees now. Per version, new: what its upload added; unique: what deleting it frees now "
               "(docs/COSTS.md).")
VERSION_BARS = (("new", "new: added by its upload"), ("unique", "unique: deleting it frees now"))
BINARY = ((1024**4, "TiB"), (1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB"), (1, "B"))

CSS = """
body{margin:0;background:#f4f6f8;color:#1f2933;font:14px/1.45 "DejaVu Sans",Arial,Helvetica,sans-serif}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:0 0 12px}h3{font-size:16px;margin:0 0 8px}
.sub{color:#52606d;margin:0 0 16px}
section,.dataset{background:#fff;border:1px solid #d9e2ec;border-radius:6px;padding:16px;margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #d9e2ec;border-radius:6px;padding:8px 12px;min-width:120px;background:#fbfcfd}
.card .v{display:block;font-size:18px;font-weight:bold}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:10px 0 0;font-size:13px}
th,td{padding:3px 10px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#f0f4f8}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
svg text{font-family:"DejaVu Sans",Arial,sans-serif;font-size:11px;fill:#323f4b}
svg .axis{stroke:#7b8794;stroke-width:1}svg .grid{stroke:#e4e7eb;stroke-width:1}
svg .empty{font-size:14px;fill:#7b8794}
details summary{cursor:pointer;color:#334e68}
.note{color:#52606d;font-size:12px}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def chart_id(name: str, used: set[str]) -> str:
    """``chart-versions-<name>``, the name made id-safe (a hash suffix keeps altered names unique)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    if safe != name or not safe:
        safe = f"{safe}-{hashlib.sha1(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    cid, n = f"chart-versions-{safe}", 2
    while cid in used:
        cid, n = f"chart-versions-{safe}-{n}", n + 1
    used.add(cid)
    return cid


def _nice_step(raw: float) -> float:
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def byte_ticks(vmax: float, count: int = 5) -> tuple[list[float], str, int]:
    """Tick values (bytes) from 0 past ``vmax``, in one binary unit: (ticks, unit name, unit size)."""
    size, unit = next(((s, u) for s, u in BINARY if vmax >= s), (1, "B"))
    step = _nice_step(max(vmax / size, 1e-9) / count) * size if vmax > 0 else size
    top = max(step, math.ceil(vmax / step) * step)
    return [i * step for i in range(int(round(top / step)) + 1)], unit, size


def money_ticks(vmax: float, count: int = 5) -> list[float]:
    step = _nice_step(vmax / count) if vmax > 0 else 1.0
    top = max(step, math.ceil(vmax / step) * step)
    return [i * step for i in range(int(round(top / step)) + 1)]


def _svg(cid: str, width: float, height: float, title: str, body: list[str]) -> str:
    return (f'<svg id="{esc(cid)}" class="chart" role="img" aria-labelledby="title-{esc(cid)}" '
            f'width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}"><title id="title-{esc(cid)}">{esc(title)}</title>'
            + "".join(body) + "</svg>")


def _legend(x: float, y: float, items: list[tuple[str, str]]) -> list[str]:
    out = []
    for label, color in items:
        out.append(f'<rect class="legend-swatch" x="{x:.1f}" y="{y - 10:.1f}" width="12" height="12" fill="{color}"/>'
                   f'<text x="{x + 17:.1f}" y="{y:.1f}">{esc(label)}</text>')
        x += 30 + 7 * len(label)
    return out


def _bar(cls: str, x: float, y: float, w: float, h: float, color: str, title: str) -> str:
    return (f'<rect class="bar {cls}" x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" '
            f'fill="{color}"><title>{esc(title)}</title></rect>')


def _fmt_tick(value: float, unit: str, size: int) -> str:
    return f"{value / size:g} {unit}"


def versions_chart(ds: dict, cid: str) -> str:
    """Grouped bars, new and unique bytes, one group per version of the dataset."""
    versions = sorted(ds.get("versions", []), key=lambda v: v.get("version", 0))
    n = max(len(versions), 1)
    left, right, top, bottom, plot_h = 78, 16, 46, 50, 200
    plot_w = 640.0 if n <= 40 else max(min(1040.0, 8.0 * n), 3.0 * n)  # fits a page up to ~350 versions
    group = plot_w / n
    width, height = left + plot_w + right, top + plot_h + bottom
    vmax = max([max(v.get(f"{kind}_bytes") or 0 for kind, _ in VERSION_BARS) for v in versions] or [0])
    ticks, unit, size = byte_ticks(vmax)
    scale = plot_h / ticks[-1]
    body = _legend(left, 18, [(label, COLORS[kind]) for kind, label in VERSION_BARS])
    for t in ticks:
        y = top + plot_h - t * scale
        body.append(f'<line class="grid" x1="{left}" x2="{left + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
                    f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(_fmt_tick(t, unit, size))}</text>')
    every = max(1, math.ceil(44 / group))  # keep x labels at least ~44 px apart
    bw = min(40.0, group * 0.38)
    name = ds.get("name", "")
    for i, v in enumerate(versions):
        cx = left + group * (i + 0.5)
        label = f"{name} v{v.get('version')} ({utc_time(v.get('created'))[:10]})"
        label_y = None
        for (kind, _), x in zip(VERSION_BARS, (cx - bw - 0.5, cx + 0.5)):
            value = v.get(f"{kind}_bytes", 0) or 0
            h = value * scale
            h = max(h, 1.0) if value > 0 else 0.0
            body.append(_bar(f"bar-{kind}", x, top + plot_h - h, bw, h, COLORS[kind],
                             f"{label}: {kind} {human_bytes(value)} ({value:,} bytes)"))
            if n <= 6:  # few versions: the values above the bars, the second raised if they would touch
                y = top + plot_h - h - 4
                y = min(y, label_y - 12) if label_y is not None and abs(y - label_y) < 12 else y
                label_y = y
                body.append(f'<text x="{x + bw / 2:.1f}" y="{y:.1f}" text-anchor="middle">'
                            f'{esc(human_bytes(value))}</text>')
        if i % every == 0 or i == len(versions) - 1 and (i % every) * group >= 44:
            body.append(f'<text x="{cx:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                        f'v{esc(v.get("version"))}</text>')
    if not versions:
        body.append(f'<text class="empty" x="{left + 12}" y="{top + plot_h / 2:.0f}">No versions.</text>')
    body.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}"/>'
                f'<line class="axis" x1="{left}" x2="{left + plot_w:.1f}" y1="{top + plot_h}" y2="{top + plot_h}"/>'
                f'<text x="{left + plot_w / 2:.1f}" y="{height - 8:.0f}" text-anchor="middle">version</text>'
                f'<text transform="translate(14 {top + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle">'
                f'size ({unit}, binary units)</text>')
    return _svg(cid, width, height, f"New and unique bytes per version of {name}: what each added, what deleting "
                "it frees now", body)


def hbar_chart(cid: str, title: str, rows: list[tuple[str, list[tuple[float, str, str, str]]]],
               ticks: list[float], tick_label, legend: list[tuple[str, str]], empty: str) -> str:
    """Horizontal bars: each row is (label, [(value, bar class, colour, value text)]) on one axis."""
    label_w, plot_w, value_w, bar_h, gap, top = 210, 520, 120, 16, 12, 34 if legend else 12
    width = label_w + plot_w + value_w
    rows_h = sum(len(bars) * bar_h + gap for _, bars in rows)
    height = top + max(rows_h, 40) + 28
    scale = plot_w / ticks[-1]
    body = _legend(label_w, 18, legend) if legend else []
    axis_y = top + max(rows_h, 40)
    for t in ticks if rows else []:
        x = label_w + t * scale
        body.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{axis_y}"/>'
                    f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle">{esc(tick_label(t))}</text>')
    y = top + gap / 2
    for label, bars in rows:
        short = label if len(label) <= 30 else label[:29] + "\u2026"
        body.append(f'<text x="{label_w - 8}" y="{y + len(bars) * bar_h / 2 + 4:.1f}" text-anchor="end">'
                    f'<title>{esc(label)}</title>{esc(short)}</text>')
        for value, cls, color, text in bars:
            w = value * scale
            w = max(w, 1.0) if value > 0 else 0.0
            body.append(_bar(cls, label_w, y, w, bar_h - 2, color, f"{label}: {text}"))
            body.append(f'<text x="{label_w + w + 5:.1f}" y="{y + bar_h - 5:.1f}">{esc(text)}</text>')
            y += bar_h
        y += gap
    if not rows:
        body.append(f'<text class="empty" x="{label_w + 12}" y="{top + 24}">{esc(empty)}</text>')
    body.append(f'<line class="axis" x1="{label_w}" x2="{label_w}" y1="{top}" y2="{axis_y}"/>')
    return _svg(cid, width, height, title, body)


def unique_chart(datasets: list[dict]) -> str:
    top10 = sorted(datasets, key=lambda d: (-(d.get("unique_bytes") or 0), d.get("name", "")))[:10]
    vmax = max([d.get("unique_bytes") or 0 for d in top10] or [0])
    ticks, unit, size = byte_ticks(vmax, 4)
    rows = [(d["name"], [(d.get("unique_bytes") or 0, "bar-unique", COLORS["unique"],
                          human_bytes(d.get("unique_bytes") or 0))]) for d in top10]
    return hbar_chart("chart-unique", "Datasets owning the most unique bytes (top 10)", rows, ticks,
                      lambda t: _fmt_tick(t, unit, size), [], "No datasets.")


def costs_chart(costs: dict) -> str:
    classes = costs.get("classes", [])
    cur = costs.get("currency", "USD")
    vmax = max([max(c.get("monthly", 0), c.get("monthly_without_dedup", 0)) for c in classes] or [0])
    rows = [(c.get("label", c["class"]), [
        (c.get("monthly", 0), "bar-cost-dedup", COLORS["dedup"], money(c.get("monthly"), cur) + "/month"),
        (c.get("monthly_without_dedup", 0), "bar-cost-nodedup", COLORS["nodedup"],
         money(c.get("monthly_without_dedup"), cur) + "/month")]) for c in classes]
    return hbar_chart("chart-costs", "Monthly cost per storage class, with and without dedup", rows,
                      money_ticks(vmax, 4), lambda t: money(t, cur),
                      [("with dedup (stored bytes)", COLORS["dedup"]),
                       ("without dedup (logical bytes)", COLORS["nodedup"])], "No price classes.")


def _table(head: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    """Cells are already escaped; numeric columns are right-aligned."""
    th = "".join(f'<th class="n">{h}</th>' if i in numeric else f"<th>{h}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def _sizes(d: dict) -> list[str]:
    return [esc(human_bytes(d.get(k))) for k in ("logical_bytes", "stored_bytes", "new_bytes", "unique_bytes",
                                                  "shared_bytes")] + \
        [esc(ratio(d.get("dedup_ratio"))), esc(ratio(d.get("compression_ratio")))]


SIZE_HEAD = ["logical", "stored", "new", "unique", "shared", "dedup", "compression"]


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _source(c: dict) -> str:
    """The price's source as text (never a link: the page fetches nothing), and config overrides."""
    out = f"<code>{esc(c.get('source', ''))}</code>"
    if c.get("overridden"):
        out += f"<br><span class=\"note\">from the config file: {esc(', '.join(c['overridden']))}</span>"
    return out


def _costs_section(costs: dict | None) -> str:
    if not costs:
        return "<section><h2>Monthly cost</h2><p>No cost estimate in this report.</p></section>"
    cur = costs.get("currency", "USD")
    rows = [[esc(c.get("label", c["class"])), esc(c.get("region", "")), esc(money(c.get("storage_gb_month"), cur)),
             esc(money(c.get("monthly"), cur)), esc(money(c.get("monthly_without_dedup"), cur)),
             esc(money(c.get("savings"), cur)), _source(c),
             esc(c.get("checked") or "-")]
            for c in costs.get("classes", [])]
    table = _table(["class", "region / tier", "per GB-month", "monthly", "without dedup", "savings", "source",
                    "checked"], rows, {2, 3, 4, 5, 7})
    return (f"<section><h2>Monthly cost estimate</h2><p class=\"note\">List prices in {esc(cur)} as of "
            f"{esc(costs.get('as_of', '?'))}; GB = 10<sup>9</sup> bytes; storage plus the request costs given, "
            "egress and taxes not included (docs/COSTS.md).</p>"
            f'<div class="scroll">{costs_chart(costs)}</div>{table}</section>')


def to_html(report: dict) -> str:
    """The whole report as one HTML document (a string), with no external resource."""
    title = f"osmo storage report: {report.get('store', {}).get('url', '')}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
            + to_html_sections(report) + "</main></body></html>\n")


def to_html_sections(report: dict) -> str:
    """The report's sections (header, store, costs, datasets with charts) as HTML to place in a page that
    has ``CSS`` (the web UI's storage page uses this)."""
    store = report.get("store", {})
    datasets = report.get("datasets", [])
    req = store.get("requests", {})
    cards = [("stored", human_bytes(store.get("stored_bytes"))), ("logical", human_bytes(store.get("logical_bytes"))),
             ("live", human_bytes(store.get("live_bytes"))), ("dead", human_bytes(store.get("dead_bytes"))),
             ("reclaimable now", human_bytes(store.get("reclaimable_bytes"))),
             ("datasets", _count(store.get("datasets", len(datasets)))),
             ("live versions", _count(store.get("versions"))), ("packs", _count(store.get("packs"))),
             ("chunks", _count(store.get("chunks"))), ("manifest nodes", _count(store.get("manifest_nodes"))),
             ("objects", _count(store.get("objects"))),
             ("requests / GB up", f"{req.get('upload_per_gb', 0):,.1f}"),
             ("requests / GB down", f"{req.get('download_per_gb', 0):,.1f}")]
    parts = [f"<header><h1>osmo storage report</h1><p class=\"sub\">{esc(store.get('url', ''))} &middot; "
             f"generated {esc(utc_time(report.get('generated')))}</p></header>",
             '<section><h2>Store</h2><div class="cards">'
             + "".join(f'<div class="card">{esc(k)}<span class="v">{esc(v)}</span></div>' for k, v in cards)
             + f'</div><p class="note">{esc(DEFINITIONS)}</p></section>',
             _costs_section(report.get("costs"))]
    ds_rows = [[esc(d["name"]), f"{len(d.get('versions', [])):,}"] + _sizes(d) + [esc(d.get("note") or "")]
               for d in datasets]
    ds_table = _table(["dataset", "versions"] + SIZE_HEAD + ["note"], ds_rows, set(range(1, 9))) if datasets else ""
    parts.append(f'<section><h2>Datasets</h2><div class="scroll">{unique_chart(datasets)}</div>{ds_table}</section>')
    used: set[str] = set()
    for d in datasets:
        versions = sorted(d.get("versions", []), key=lambda v: v.get("version", 0))
        rows = [[f"v{esc(v.get('version'))}", esc(utc_time(v.get("created"))),
                 esc(", ".join(v.get("tags", [])))] + _sizes(v) + [esc(v.get("note") or "")] for v in versions]
        parts.append(f'<div class="dataset"><h3>{esc(d["name"])}</h3>'
                     f'<div class="scroll">{versions_chart(d, chart_id(d["name"], used))}</div>'
                     f"<details><summary>{len(versions):,} version{'' if len(versions) == 1 else 's'}: table</summary>"
                     + _table(["version", "created", "tags"] + SIZE_HEAD + ["note"], rows, set(range(3, 10)))
                     + "</details></div>")
    return "\n".join(parts)
