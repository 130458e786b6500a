"""The comparison table of ``benchmarks.compare``: the rows, osmo's ratio to each peer, and the targets
each ratio is checked against (``TARGETS``; the upload's memory: ``benchmarks.rss_upload``)."""

from __future__ import annotations

from benchmarks.rss_upload import RSS_TARGET_MB

TARGETS = {
    # metric key: (comparison, threshold, description)
    "up1_mbps": (">=", 2.0, "first upload >= 2x restic"),
    "v2_stored_mb": ("<=", 0.4, "v2 stored bytes <= 0.4x restic"),
    "down_mbps": (">=", 2.0, "download >= 2x restic restore"),
}


ROWS = [
    # key, label, format
    ("up1_mbps", "first upload (v1) MB/s", "{:.1f}"),
    ("up1_s", "first upload (v1) s", "{:.2f}"),
    ("up1_cpu_s", "first upload (v1) CPU s (user+sys)", "{:.2f}"),
    ("up1_rss_mb", "peak RSS upload v1, MB (wait4)", "{:.1f}"),
    ("up1_tree_rss_mb", "peak RSS upload v1, MB (tree, sampled)", "{:.1f}"),
    ("up1_tree_anon_rss_mb", "  of it anonymous (sampled)", "{:.1f}"),
    ("repo_v1_mb", "repo size after v1, MB", "{:.1f}"),
    ("up2_s", "upload v2 s", "{:.2f}"),
    ("up2_mbps", "upload v2 MB/s", "{:.1f}"),
    ("v2_stored_mb", "v2 stored (repo growth), MB", "{:.2f}"),
    ("v2_reported_mb", "v2 stored_bytes reported by osmo, MB", "{:.2f}"),
    ("down_mbps", "download v2 MB/s", "{:.1f}"),
    ("down_s", "download v2 s", "{:.2f}"),
    ("down_rss_mb", "peak RSS download, MB (wait4)", "{:.1f}"),
    ("cache_mb", "local cache/index size, MB", "{:.1f}"),
    ("verified", "restore byte-exact", "{}"),
    ("foreign_cpu_s", "other processes' CPU during the 3 timed steps, s", "{:.2f}"),
]


NO_RATIO = {"foreign_cpu_s", "verified"}


def _fmt(v, f) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    try:
        return f.format(v)
    except (ValueError, TypeError):
        return str(v)


def build_table(results: dict, rss: dict | None) -> tuple[list[str], list[list[str]], list[dict]]:
    tools = list(results)
    ratio_peers = [p for p in ("restic", "borg") if "osmo" in results and p in results]
    header = ["metric", *tools, *[f"osmo/{p}" for p in ratio_peers], "target", "status"]
    rows = []
    verdicts = []
    for key, label, f in ROWS:
        vals = {t: results[t].get(key) for t in tools}
        if all(v is None for v in vals.values()):
            continue
        row = [label, *(_fmt(vals[t], f) for t in tools)]
        for p in ratio_peers:
            a, b = vals.get("osmo"), vals.get(p)
            if key in NO_RATIO:
                row.append("")
            elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and b:
                row.append(f"{a / b:.2f}x")
            else:
                row.append("-")
        tgt, status = "", ""
        if key in TARGETS:
            op, thr, desc = TARGETS[key]
            tgt = f"osmo/restic {op} {thr}"
            a, b = vals.get("osmo"), vals.get("restic")
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
                ratio = a / b
                ok = ratio >= thr if op == ">=" else ratio <= thr
                status = "PASS" if ok else "MISS"
                verdicts.append({"target": desc, "ratio": ratio, "status": status})
            else:
                status = "n/a"
                verdicts.append({"target": desc, "ratio": None, "status": "n/a"})
        row += [tgt, status]
        rows.append(row)
    if rss is not None:
        n = len(tools) + len(ratio_peers)
        cells = ["-"] * n
        if "osmo" in tools:
            cells[tools.index("osmo")] = f"{max(rss['peak_rss_mb'], rss['tree_peak_rss_mb']):.1f}"
        ok = bool(rss["pass"])
        rows.append(
            [f"peak RSS uploading {rss['gib']:g} GiB, MB", *cells, f"<= {RSS_TARGET_MB:.0f} MB",
             "PASS" if ok else "MISS"]
        )
        rows.append(
            [f"upload {rss['gib']:g} GiB MB/s", *(
                [f"{rss['mbps']:.1f}" if t == "osmo" else "-" for t in tools]
                + ["-"] * len(ratio_peers)), "", ""]
        )
        verdicts.append({"target": f"peak RSS <= {RSS_TARGET_MB:.0f} MB uploading {rss['gib']:g} GiB",
                         "value": max(rss["peak_rss_mb"], rss["tree_peak_rss_mb"]), "status": "PASS" if ok else "MISS"})
    return header, rows, verdicts


def render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    def line(cells):
        return "| " + " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])
