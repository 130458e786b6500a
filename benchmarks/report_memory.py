"""Time and peak RSS of the storage report on the garbage-collection benchmark's store.

    python -m benchmarks.report_memory [--chunks 1000000] [--versions 1000] [--dir DIR] [--json]
    python -m benchmarks.report_memory --quick          # 20,000 chunks, 50 versions

Builds (or reuses, with ``--dir``) the store of ``benchmarks.gc_memory`` (one dataset, 1,000
versions, 1,000,000 chunks, part of them deleted: garbage awaiting collection), then runs
``Repository.report()`` in a fresh child process with a warm cache (a copy of the build's index):
the ownership walk over every live version, the collector's plan, and the pricing of every
version's deletion. Reports wall time, CPU time and peak RSS, and checks the figures add up
(stored = live + dead, dead = reclaimable + unreclaimed; every version has its figures).

MB = 10**6 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.gc_memory import MB, ROOT, Params, build_store, load_build, open_repo, prepare_run


def run_report(store_dir: str, cache_dir: str) -> dict:
    """Open the store and compute the report (meant for a fresh child process)."""
    t0 = time.monotonic()
    repo = open_repo(store_dir, cache_dir)
    try:
        report = repo.report()
    finally:
        repo.close()
    store = report["store"]
    versions = sum(len(d["versions"]) for d in report["datasets"])
    return {"report_seconds": round(time.monotonic() - t0, 3), "store": store, "versions_reported": versions,
            "unique_total": sum(v["unique_bytes"] for d in report["datasets"] for v in d["versions"]),
            "adds_up": store["stored_bytes"] == store["live_bytes"] + store["dead_bytes"]
            and store["dead_bytes"] == store["reclaimable_bytes"] + store["unreclaimed_bytes"]}


def measure(root: Path) -> dict:
    from benchmarks._measure import run_measured

    store_dir, cache_dir = prepare_run(root, "warm")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "benchmarks.report_memory", "--child", str(store_dir), str(cache_dir)]
    m = run_measured(cmd, env=env, cwd=str(ROOT), log_dir=root / "runs" / "report-logs", label="report").check()
    out = m.json_out()
    out.update(peak_rss_mb=round(m.maxrss_bytes / MB, 1), process_seconds=round(m.seconds, 3),
               cpu_seconds=round(m.cpu_seconds, 3))
    shutil.rmtree(root / "runs" / "warm", ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.report_memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=Params.chunks)
    ap.add_argument("--versions", type=int, default=Params.versions)
    ap.add_argument("--quick", action="store_true", help="smoke size: 20,000 chunks, 50 versions")
    ap.add_argument("--dir", help="keep the built store here (shared with benchmarks.gc_memory --dir)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--child", nargs=2, metavar=("STORE", "CACHE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_report(*args.child)), flush=True)
        return 0
    params = Params(chunks=20_000, versions=50) if args.quick else Params(chunks=args.chunks, versions=args.versions)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="osmo-reportbench-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        build = load_build(root, params) if args.dir else None
        if build is None:
            say(f"building {params.chunks:,} chunks in {params.versions} versions under {root} ...")
            build = build_store(root, params, log=say)
        say("computing the report (warm cache) ...")
        r = measure(root)
        ok = r["adds_up"] and r["versions_reported"] == build["versions_live"]
        result = {"chunks": params.chunks, "versions": params.versions, **r, "pass": ok}
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            s = r["store"]
            print(f"report of {r['versions_reported']} live versions, {s['chunks']:,} live chunks, "
                  f"{s['packs']} packs: {r['report_seconds']:.1f} s in the library "
                  f"({r['process_seconds']:.1f} s process, {r['cpu_seconds']:.1f} s CPU), "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB; reclaimable {s['reclaimable_bytes'] / MB:.1f} MB of "
                  f"{s['stored_bytes'] / MB:.1f} MB stored")
            print("PASS" if ok else "MISS")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
