"""Peak RSS of ``osmo dataset upload`` on a large random data set.

    python -m benchmarks.rss_upload [--gib 4] [--workdir DIR] [--json OUT]

Writes GIB GiB of random data (``os.urandom`` in 8 MiB blocks): one file of
2 GiB (or half the total when GIB < 4) and the rest in 256 MiB files. Then
runs ``osmo --store S dataset upload rss DATA --json`` as a child process and
reports its peak RSS (``ru_maxrss`` from ``os.wait4``, plus the sampled peak
of the whole process tree) and its throughput against the 300 MB target.
Data, store and cache are deleted afterwards (unless ``--keep``).

MB = 10**6 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks._measure import (
    MB,
    CommandFailed,
    osmo_available,
    osmo_command,
    run_measured,
    set_wait_idle,
    warm,
)

GiB = 1 << 30
MiB = 1 << 20
BLOCK = 8 * MiB
RSS_TARGET_MB = 300.0


def write_random_file(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = size
        while left:
            block = os.urandom(min(BLOCK, left))
            view = memoryview(block)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            left -= len(block)
    finally:
        os.close(fd)


def layout(gib: float) -> list[tuple[str, int]]:
    total = int(gib * GiB)
    big = min(2 * GiB, total // 2)
    files = [("big-2g.bin" if big == 2 * GiB else "big.bin", big)]
    rest = total - big
    i = 0
    while rest > 0:
        n = min(256 * MiB, rest)
        files.append((f"part-{i:03d}.bin", n))
        rest -= n
        i += 1
    return files


def measure_rss_upload(gib: float, workdir: Path, osmo_cmd: list[str], keep: bool = False,
                       warm_cache: bool = False) -> dict:
    workdir = Path(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    data = workdir / "data"
    store = workdir / "store"
    data.mkdir(parents=True)
    try:
        files = layout(gib)
        print(f"  writing {gib:g} GiB in {len(files)} files ...", flush=True)
        total = 0
        for name, size in files:
            write_random_file(data / name, size)
            total += size
        if warm_cache:
            warm(data)
        env = dict(os.environ)
        env["OSMO_CACHE_DIR"] = str(workdir / "osmo-cache")
        init = run_measured(osmo_cmd + ["--store", str(store), "store", "init"], env=env,
                            log_dir=workdir / "logs", label="init")
        if init.returncode != 0:
            print(f"  note: store init exited {init.returncode}: {init.stderr.strip()[-300:]}",
                  file=sys.stderr)
        print("  uploading ...", flush=True)
        m = run_measured(
            osmo_cmd + ["--store", str(store), "dataset", "upload", "rss", str(data), "--json"],
            env=env, log_dir=workdir / "logs", label="upload",
        ).check()
        try:
            report = m.json_out()
        except ValueError:
            report = {}
        return {
            "gib": gib,
            "bytes": total,
            "files": len(files),
            "seconds": m.seconds,
            "mbps": total / MB / m.seconds,
            "peak_rss_mb": m.maxrss_bytes / MB,
            "tree_peak_rss_mb": m.tree_peak_rss_bytes / MB,
            "tree_peak_anon_rss_mb": m.tree_peak_anon_bytes / MB,
            "cpu_seconds": m.cpu_seconds,
            "foreign_cpu_seconds": m.foreign_cpu_seconds,
            "target_mb": RSS_TARGET_MB,
            "pass": m.maxrss_bytes / MB <= RSS_TARGET_MB and m.tree_peak_rss_bytes / MB <= RSS_TARGET_MB,
            "osmo_report": report,
        }
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rss_upload", description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=4.0, help="GiB of data to upload (default 4)")
    ap.add_argument("--workdir", help="where to write data and store (default: a temp dir under /tmp)")
    ap.add_argument("--osmo-cmd", help="command that starts the osmo CLI")
    ap.add_argument("--keep", action="store_true", help="keep data and store")
    ap.add_argument("--warm", action="store_true", help="read the data once before uploading")
    ap.add_argument("--json", dest="json_out", help="write the result to this JSON file")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before uploading wait up to SECONDS for the machine to be idle")
    args = ap.parse_args(argv)
    set_wait_idle(args.wait_idle)

    cmd = osmo_command(args.osmo_cmd)
    ok, why = osmo_available(cmd)
    if not ok:
        print(f"osmo CLI not usable ({' '.join(cmd)} --help): {why}", file=sys.stderr)
        return 2
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="osmo-rss-", dir="/tmp"))
    try:
        r = measure_rss_upload(args.gib, work / "rss", cmd, keep=args.keep, warm_cache=args.warm)
    except CommandFailed as e:
        print(f"upload FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"uploaded {r['bytes'] / MB:.1f} MB ({r['gib']:g} GiB, {r['files']} files) "
          f"in {r['seconds']:.2f} s = {r['mbps']:.1f} MB/s")
    print(f"peak RSS (wait4 ru_maxrss): {r['peak_rss_mb']:.1f} MB; "
          f"process tree (sampled): {r['tree_peak_rss_mb']:.1f} MB, of it anonymous "
          f"{r['tree_peak_anon_rss_mb']:.1f} MB; "
          f"target <= {RSS_TARGET_MB:.0f} MB: {'PASS' if r['pass'] else 'MISS'}")
    print(f"CPU: osmo {r['cpu_seconds']:.1f} s; other processes meanwhile {r['foreign_cpu_seconds']:.1f} s")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(r, indent=2))
    return 0 if r["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
