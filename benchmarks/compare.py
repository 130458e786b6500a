"""Side-by-side benchmark: osmo vs restic vs borg on the generated corpus.

    python -m benchmarks.compare [--scale S] [--workdir DIR] [--json OUT]
                                 [--tools osmo,restic,borg] [--rss-gib N]

For each tool, in one run and in this order:

1. create an empty repository / store;
2. read the whole v1 corpus once (warm page cache), then back up v1 and
   measure wall time (first upload MB/s = v1 bytes / seconds) and peak RSS;
3. read v2 once, back up v2: wall time, and how much the repository
   directory grew ("v2 stored bytes");
4. restore v2 into an empty directory: wall time (download MB/s = v2 bytes /
   seconds); then hash the restored tree and compare with v2 (path, size,
   BLAKE3 of every file). Any difference is an error.

Both versions are backed up from the same path (``WORKDIR/stage/data``; the
corpus directories are renamed in and out) so restic and borg see the same
paths in both snapshots. Every copy in v2 is a new file (new inode), so no tool
can skip unchanged files by their metadata: all tools read and chunk all of v2.

Sizes are *apparent* sizes: the sum of ``st_size`` of the regular files in the
repository directory (same rule for all tools). Disk usage
(``st_blocks * 512``, like ``du``) is in the JSON output too. Caches
(restic's cache dir, borg's BORG_BASE_DIR, osmo's OSMO_CACHE_DIR) are not in
the repository size; they are shown in their own row.

MB = 10**6 bytes everywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import corpus
from benchmarks._measure import (
    MB,
    CommandFailed,
    dir_size,
    osmo_available,
    osmo_command,
    set_wait_idle,
    warm,
)
from benchmarks.peers import Borg, Osmo, Restic, Tool
from benchmarks.table import build_table, render


# ---------------------------------------------------------------------------
# corpus
# ---------------------------------------------------------------------------


def ensure_corpus(work: Path, scale: float, seed1: int, seed2: int, edits: dict | None = None) -> tuple[dict, dict]:
    """Generate v1 and v2 under WORK/corpus (reused if made with the same parameters)."""
    cdir = work / "corpus"
    stamp = cdir / "stamp.json"
    edits = edits or {}
    want = {"scale": scale, "seed1": seed1, "seed2": seed2, "edits": edits, "generator": 2}
    if stamp.exists():
        try:
            st = json.loads(stamp.read_text())
            if st.get("params") == want and (cdir / "v1").is_dir() and (cdir / "v2").is_dir():
                print(f"reusing corpus in {cdir}")
                return st["v1"], st["v2"]
        except ValueError:
            pass
    shutil.rmtree(cdir, ignore_errors=True)
    cdir.mkdir(parents=True)
    print(f"generating corpus (scale {scale}) in {cdir} ...", flush=True)
    s1 = corpus.make_v1(cdir / "v1", scale=scale, seed=seed1)
    print(f"  v1: {s1['files']} files, {s1['bytes'] / MB:.1f} MB in {s1['seconds']:.1f} s", flush=True)
    s2 = corpus.make_v2(cdir / "v1", cdir / "v2", seed=seed2, **edits)
    print(
        f"  v2: {s2['files']} files, {s2['bytes'] / MB:.1f} MB, {s2['edits']} edits in "
        f"{s2['big_files_edited']} big files ({s2['edits_per_mib_of_edited_files']}/MiB), "
        f"{s2['small_rewritten']} small rewritten, +{s2['small_added']}/-{s2['small_removed']} "
        f"in {s2['seconds']:.1f} s",
        flush=True,
    )
    stamp.write_text(json.dumps({"params": want, "v1": s1, "v2": s2}, indent=2))
    return s1, s2


@contextlib.contextmanager
def staged(src: Path, stage: Path):
    """Temporarily rename ``src`` to ``stage`` (same path for every backup)."""
    stage.parent.mkdir(parents=True, exist_ok=True)
    if stage.exists():
        raise RuntimeError(f"{stage} already exists (left over from an aborted run?)")
    os.rename(src, stage)
    try:
        yield stage
    finally:
        os.rename(stage, src)


def compare_trees(expected: dict, root: Path) -> list[str]:
    if not root.is_dir():
        return [f"restored root {root} does not exist"]
    got = corpus.tree_hashes(root)
    problems = []
    for rel in sorted(expected.keys() - got.keys()):
        problems.append(f"missing: {rel}")
    for rel in sorted(got.keys() - expected.keys()):
        problems.append(f"unexpected: {rel}")
    for rel in sorted(expected.keys() & got.keys()):
        if expected[rel] != got[rel]:
            problems.append(f"differs: {rel} expected {expected[rel]} got {got[rel]}")
    return problems


# ---------------------------------------------------------------------------
# benchmark of one tool
# ---------------------------------------------------------------------------


def bench_tool(tool: Tool, work: Path, s1: dict, s2: dict, v2_hashes: dict) -> dict:
    cdir = work / "corpus"
    stage = work / "stage" / "data"
    res: dict = {"tool": tool.name}
    tool.prepare()
    res["version"] = tool.version()
    tool.init()
    res["notes"] = tool.notes() if hasattr(tool, "notes") else ""
    size0 = dir_size(tool.repo)

    # first upload (v1)
    with staged(cdir / "v1", stage) as src:
        warm(src)
        cmd, cwd = tool.backup_cmd("v1", src)
        print(f"  {tool.name}: backup v1 ...", flush=True)
        m = tool.run(cmd, "backup-v1", cwd)
    res["up1_s"] = m.seconds
    res["up1_mbps"] = s1["bytes"] / MB / m.seconds
    res["up1_rss_mb"] = m.maxrss_bytes / MB
    res["up1_tree_rss_mb"] = m.tree_peak_rss_bytes / MB
    res["up1_tree_anon_rss_mb"] = m.tree_peak_anon_bytes / MB
    res["up1_cpu_s"] = m.cpu_seconds
    foreign = m.foreign_cpu_seconds
    res["up1_extra"] = tool.after_backup("v1", m)
    size1 = dir_size(tool.repo)
    res["repo_v1_mb"] = (size1["apparent"] - size0["apparent"]) / MB
    res["repo_v1_disk_mb"] = (size1["disk"] - size0["disk"]) / MB

    # second upload (v2)
    with staged(cdir / "v2", stage) as src:
        warm(src)
        cmd, cwd = tool.backup_cmd("v2", src)
        print(f"  {tool.name}: backup v2 ...", flush=True)
        m = tool.run(cmd, "backup-v2", cwd)
    res["up2_s"] = m.seconds
    res["up2_mbps"] = s2["bytes"] / MB / m.seconds
    res["up2_rss_mb"] = m.maxrss_bytes / MB
    res["up2_cpu_s"] = m.cpu_seconds
    foreign += m.foreign_cpu_seconds
    res["up2_extra"] = tool.after_backup("v2", m)
    size2 = dir_size(tool.repo)
    res["v2_stored_mb"] = (size2["apparent"] - size1["apparent"]) / MB
    res["v2_stored_disk_mb"] = (size2["disk"] - size1["disk"]) / MB
    res["repo_total_mb"] = size2["apparent"] / MB
    res["repo_total_disk_mb"] = size2["disk"] / MB
    res["repo_files"] = size2["files"]

    # download / restore of v2
    target = tool.work / "restore"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    cmd, cwd = tool.restore_cmd("v2", target)
    print(f"  {tool.name}: restore v2 ...", flush=True)
    m = tool.run(cmd, "restore-v2", cwd)
    res["down_s"] = m.seconds
    res["down_mbps"] = s2["bytes"] / MB / m.seconds
    res["down_rss_mb"] = m.maxrss_bytes / MB
    res["down_cpu_s"] = m.cpu_seconds
    foreign += m.foreign_cpu_seconds
    res["foreign_cpu_s"] = foreign
    res["down_extra"] = tool.after_restore(m)
    root = tool.restored_root(target, stage)
    problems = compare_trees(v2_hashes, root)
    res["verified"] = not problems
    res["verify_problems"] = problems[:50]
    res["verify_problem_count"] = len(problems)
    if problems:
        print(f"\n!!! {tool.name}: RESTORE DOES NOT MATCH v2 ({len(problems)} problems):", file=sys.stderr)
        for p in problems[:20]:
            print(f"!!!   {p}", file=sys.stderr)
    shutil.rmtree(target, ignore_errors=True)
    res["cache_mb"] = sum(dir_size(d)["apparent"] for d in tool.cache_dirs()) / MB
    return res


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def aggregate(runs: list[dict]) -> dict:
    """Median of every numeric figure over the runs; booleans must hold in all runs."""
    import statistics

    out = dict(runs[-1])
    if len(runs) > 1:
        for k, v in runs[-1].items():
            if isinstance(v, bool):
                out[k] = all(r.get(k) for r in runs)
            elif isinstance(v, (int, float)):
                out[k] = statistics.median(r[k] for r in runs if isinstance(r.get(k), (int, float)))
        out["runs"] = runs
    out["rounds"] = len(runs)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="corpus scale (1.0 = ~1 GB)")
    ap.add_argument("--workdir", help="work directory (default: a new temp dir, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep repositories and corpus")
    ap.add_argument("--json", dest="json_out", help="write all figures to this JSON file")
    ap.add_argument("--tools", default="osmo,restic,borg")
    ap.add_argument("--osmo-cmd", help="command that starts the osmo CLI (default: the osmo script)")
    ap.add_argument("--seed", type=int, default=0, help="seed of v1 (v2 uses seed+1)")
    ap.add_argument("--rss-gib", type=float, default=0.0,
                    help="also measure osmo's peak RSS uploading this many GiB (e.g. 4)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before every timed step wait up to SECONDS for the machine to be idle")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every tool N times (interleaved) and report medians")
    ap.add_argument("--edit-fraction", type=float, default=corpus.EDIT_FRACTION,
                    help="v2: edited bytes per edited big file, fraction of its size (default 0.01)")
    ap.add_argument("--edit-size-min", type=int, default=corpus.EDIT_SIZE_MIN,
                    help="v2: smallest edit, bytes (default 4)")
    ap.add_argument("--edit-size-max", type=int, default=corpus.EDIT_SIZE_MAX,
                    help="v2: largest edit, bytes (default 8192); sizes are log-uniform")
    ap.add_argument("--scaling", metavar="SETS", nargs="?", const="corpus,small,single", default=None,
                    help="also measure osmo with 1 and 2 workers beside restic (benchmarks/scaling.py) on these "
                         "data sets (default: corpus,small,single)")
    from benchmarks import scaling  # it builds on this module's tools: imported once this one is loaded

    scaling.add_arguments(ap)
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    set_wait_idle(args.wait_idle)

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools:
        if t not in ("osmo", "restic", "borg"):
            ap.error(f"unknown tool {t!r}")
    osmo_cmd = osmo_command(args.osmo_cmd)
    for t in tools:
        if t == "osmo":
            ok, why = osmo_available(osmo_cmd)
            if not ok:
                print(f"osmo CLI not usable ({' '.join(osmo_cmd)} --help): {why}", file=sys.stderr)
                return 2
        elif shutil.which(t) is None:
            print(f"{t} not found on PATH (run benchmarks/install-peers.sh)", file=sys.stderr)
            return 2

    own_work = args.workdir is None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="osmo-bench-", dir="/tmp")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"workdir: {work}")
    t_start = time.time()
    edits = {}
    if args.edit_fraction != corpus.EDIT_FRACTION:
        edits["edit_fraction"] = args.edit_fraction
    if args.edit_size_min != corpus.EDIT_SIZE_MIN:
        edits["edit_size_min"] = args.edit_size_min
    if args.edit_size_max != corpus.EDIT_SIZE_MAX:
        edits["edit_size_max"] = args.edit_size_max
    s1, s2 = ensure_corpus(work, args.scale, args.seed, args.seed + 1, edits)
    print("hashing v2 for verification ...", flush=True)
    v2_hashes = corpus.tree_hashes(work / "corpus" / "v2")

    runs: dict[str, list[dict]] = {name: [] for name in tools}
    errors: dict[str, str] = {}
    failures: list[str] = []
    for rnd in range(args.repeat):
        for name in tools:
            if name in errors:
                continue
            tool: Tool = {"osmo": lambda: Osmo(work, osmo_cmd), "restic": lambda: Restic(work),
                          "borg": lambda: Borg(work)}[name]()
            print(f"[{name}]" + (f" round {rnd + 1}/{args.repeat}" if args.repeat > 1 else ""), flush=True)
            try:
                res = bench_tool(tool, work, s1, s2, v2_hashes)
            except CommandFailed as e:
                print(f"\n!!! {name} FAILED: {e}", file=sys.stderr)
                failures.append(f"{name}: {str(e).splitlines()[0]}")
                errors[name] = str(e)
                continue
            finally:
                if not args.keep or rnd < args.repeat - 1:
                    shutil.rmtree(tool.repo, ignore_errors=True)
            if name == "osmo":
                rep = res.get("up2_extra", {}).get("osmo_report", {})
                if "stored_bytes" in rep:
                    res["v2_reported_mb"] = rep["stored_bytes"] / MB
            if not res["verified"]:
                failures.append(f"{name}: restore does not match v2 ({res['verify_problem_count']} problems)")
            runs[name].append(res)
    results: dict[str, dict] = {}
    for name in tools:
        if name in errors:
            results[name] = {"tool": name, "error": errors[name], "runs": runs[name]}
        else:
            results[name] = aggregate(runs[name])

    rss = None
    if args.rss_gib > 0 and "osmo" in tools:
        from benchmarks.rss_upload import measure_rss_upload

        print(f"[osmo] peak RSS while uploading {args.rss_gib:g} GiB ...", flush=True)
        try:
            rss = measure_rss_upload(args.rss_gib, work / "rss", osmo_cmd)
        except CommandFailed as e:
            print(f"\n!!! rss_upload FAILED: {e}", file=sys.stderr)
            failures.append(f"rss_upload: {str(e).splitlines()[0]}")

    ok_results = {k: v for k, v in results.items() if "error" not in v}
    header, rows, verdicts = build_table(ok_results, rss)
    print()
    print(f"osmo storage benchmark, {time.strftime('%Y-%m-%d %H:%M:%S')}, "
          f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}")
    print(f"corpus v1: {s1['files']} files, {s1['bytes'] / MB:.1f} MB (scale {args.scale}); "
          f"v2: {s2['files']} files, {s2['bytes'] / MB:.1f} MB, {s2['edits']} edits "
          f"({s2['edit_changed_bytes'] / MB:.2f} MB changed) in {s2['big_files_edited']} of "
          f"{s1['big_files']} big files ({s2['edits_per_mib_of_edited_files']} edits/MiB), "
          f"{s2['small_rewritten']} small files rewritten, +{s2['small_added']}/-{s2['small_removed']}")
    lo, hi = s2.get("edit_size_range", [corpus.EDIT_SIZE_MIN, corpus.EDIT_SIZE_MAX])
    print(f"edits: {s2.get('edit_fraction', corpus.EDIT_FRACTION):.2%} of each edited big file, "
          f"sizes {lo}-{hi} B log-uniform (inserts/deletes/overwrites)")
    if args.repeat > 1:
        print(f"figures: medians of {args.repeat} rounds (tools interleaved)")
    for name, r in results.items():
        if "error" in r:
            print(f"  {name}: FAILED")
        else:
            print(f"  {name}: {r['version']} ({r['notes']})")
    print("sizes: apparent (sum of st_size of regular files in the repository dir); MB = 10^6 bytes")
    noisy = {n: r["foreign_cpu_s"] for n, r in results.items()
             if "error" not in r and r.get("foreign_cpu_s", 0) > 0.05 * (r["up1_s"] + r["up2_s"] + r["down_s"])}
    if rss and rss.get("foreign_cpu_seconds", 0) > 0.05 * rss["seconds"]:
        noisy["rss upload"] = rss["foreign_cpu_seconds"]
    if noisy:
        print("WARNING: other processes used CPU during timed steps (CPU s): "
              + ", ".join(f"{k} {v:.1f}" for k, v in noisy.items())
              + "; the figures are disturbed (try --wait-idle 300 or --repeat 3)")
    print()
    if rows:
        print(render(header, rows))
    print()
    if failures:
        print("FAILURES:")
        for f in failures:
            print(f"  - {f}")
    scaled = None
    if args.scaling:
        args.sets = [s for s in args.scaling.split(",") if s]
        scaled = scaling.run(work / "scaling", args)
        print(f"\nscaling on {os.cpu_count()} CPUs (benchmarks/scaling.py)\n")
        print(scaling.table(scaled))

    if args.json_out:
        out = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "scale": args.scale,
            "corpus": {"v1": s1, "v2": s2},
            "results": results,
            "rss_upload": rss,
            "scaling": scaled,
            "targets": verdicts,
            "failures": failures,
            "wall_seconds": round(time.time() - t_start, 1),
        }
        Path(args.json_out).write_text(json.dumps(out, indent=2, default=str))
        print(f"wrote {args.json_out}")

    if own_work and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    elif not args.keep:
        for name in results:
            shutil.rmtree(work / name, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
