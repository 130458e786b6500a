"""Scaling: osmo's upload and download MB/s with 1 and 2 workers, beside restic, on three data sets.

    python -m benchmarks.scaling [--sets corpus,small,single] [--scale 1.0] [--small-files 100000]
                                 [--single-gib 8] [--workdir DIR] [--keep] [--json OUT] [--wait-idle S]

(also ``python -m benchmarks.compare --scaling``, which prints this table after its own.)

Data sets, generated once under the work directory (kept and reused with ``--workdir``):

* ``corpus``: the compare corpus's v1 (``corpus.py``, ``--scale``);
* ``small``: ``--small-files`` files of 1-16 KiB (half text-like, half random) in folders of 1,000;
* ``single``: one file of ``--single-gib`` GiB of random bytes.

For each set: the data is read once (warm page cache); restic backs it up into a new repository
(``--compression off``) and restores it; then osmo, for 1 and for 2 workers, uploads it into a new
store (``--workers N``: worker processes for a local store) and downloads it into an empty folder.
Every restore is checked (file count and total size; osmo also checks every file's BLAKE3 itself).
Figures are MB/s (10^6 bytes / wall second of the command, interpreter start included), the ratio
2 workers / 1 worker (goal >= 1.8x) and osmo (2 workers) / restic (goal >= 2x).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks import corpus
from benchmarks._measure import MB, osmo_command, set_wait_idle, warm
from benchmarks.peers import Osmo, Restic
from benchmarks.table import render
from benchmarks.rss_upload import write_random_file

KiB = 1024
GiB = 1 << 30
SETS = ("corpus", "small", "single")


class OsmoWorkers(Osmo):
    """osmo with ``--workers N`` on upload and download, in a folder of its own per worker count."""

    def __init__(self, work: Path, cmd: list[str], workers: int) -> None:
        self.name = f"osmo-w{workers}"
        super().__init__(work, cmd)
        self.workers = workers

    def backup_cmd(self, label, src):
        cmd, cwd = super().backup_cmd(label, src)
        return cmd + ["--workers", str(self.workers)], cwd

    def restore_cmd(self, label, target):
        cmd, cwd = super().restore_cmd(label, target)
        return cmd + ["--workers", str(self.workers)], cwd


def make_small(dest: Path, count: int, seed: int = 5) -> None:
    """``count`` files of 1-16 KiB, half text-like (compressible), half random, 1,000 per folder."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(4000)]
    for i in range(count):
        path = dest / f"d{i // 1000:04d}" / f"f{i:06d}.{'txt' if i % 2 else 'bin'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = rng.randint(KiB, 16 * KiB)
        if i % 2:
            body = b" ".join(rng.choice(words) for _ in range(size // 5))[:size]
        else:
            body = rng.randbytes(size)
        path.write_bytes(body)


def ensure_set(work: Path, name: str, args) -> Path:
    """The data set's folder, generated unless a complete one is there (a ``.done`` marker)."""
    root = work / "data" / f"{name}-{_set_key(name, args)}"
    done = work / "data" / f"{root.name}.done"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"generating {name} in {root} ...", flush=True)
    if name == "corpus":
        corpus.make_v1(root, scale=args.scale, seed=0)
    elif name == "small":
        make_small(root, args.small_files)
    else:
        write_random_file(root / "single.bin", int(args.single_gib * GiB))
    done.touch()
    return root


def _set_key(name: str, args) -> str:
    return {"corpus": f"s{args.scale}", "small": f"n{args.small_files}", "single": f"g{args.single_gib}"}[name]


def tree_size(root: Path) -> tuple[int, int]:
    files = size = 0
    for folder, _, names in os.walk(root):
        for n in names:
            files += 1
            size += os.lstat(os.path.join(folder, n)).st_size
    return files, size


def measure(tool, src: Path, work: Path, expected: tuple[int, int]) -> dict:
    """Back up and restore ``src`` with ``tool`` in a fresh repository: wall seconds of each."""
    tool.prepare()
    tool.init()
    warm(src)
    cmd, cwd = tool.backup_cmd("v1", src)
    up = tool.run(cmd, "backup", cwd)
    tool.after_backup("v1", up)
    target = tool.work / "restore"
    target.mkdir()
    cmd, cwd = tool.restore_cmd("v1", target)
    down = tool.run(cmd, "restore", cwd)
    got = tree_size(tool.restored_root(target, src))
    if got != expected:
        raise SystemExit(f"!!! {tool.name}: restored {got[0]} files / {got[1]} bytes, expected {expected}")
    shutil.rmtree(tool.work, ignore_errors=True)  # free the disk for the next tool ...
    os.sync()  # ... and let the file system settle first (deleting 100,000 files is work too)
    return {"up_s": up.seconds, "down_s": down.seconds, "up_cpu_s": up.cpu_seconds, "down_cpu_s": down.cpu_seconds,
            "up_tree_rss_mb": up.tree_peak_rss_bytes / MB, "other_cpu_s": up.foreign_cpu_seconds + down.foreign_cpu_seconds}


def run(work: Path, args) -> dict:
    cmd = osmo_command(args.osmo_cmd)
    results: dict[str, dict] = {}
    for name in args.sets:
        src = ensure_set(work, name, args)
        files, size = tree_size(src)
        row: dict = {"files": files, "bytes": size}
        print(f"[{name}] {files} files, {size / MB:.1f} MB", flush=True)
        tools = [Restic(work / name)] if shutil.which("restic") else []
        tools += [OsmoWorkers(work / name, cmd, w) for w in (1, 2)]
        for tool in tools:
            print(f"  {tool.name} ...", flush=True)
            m = measure(tool, src, work / name, (files, size))
            row[tool.name] = {**m, "up_mbps": size / MB / m["up_s"], "down_mbps": size / MB / m["down_s"]}
        results[name] = row
    return results


def table(results: dict) -> str:
    header = ["data set", "files", "MB", "", "restic", "osmo 1 worker", "osmo 2 workers", "2 / 1 (>= 1.8)",
              "osmo 2 / restic (>= 2)"]
    rows = []
    for name, row in results.items():
        for what in ("up", "down"):
            r = row.get("restic", {}).get(f"{what}_mbps")
            w1, w2 = row["osmo-w1"][f"{what}_mbps"], row["osmo-w2"][f"{what}_mbps"]
            rows.append([name, str(row["files"]), f"{row['bytes'] / MB:.0f}", f"{what}load MB/s",
                         f"{r:.1f}" if r else "n/a", f"{w1:.1f}", f"{w2:.1f}", f"{w2 / w1:.2f}x",
                         f"{w2 / r:.2f}x" if r else "n/a"])
    return render(header, rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    ap.add_argument("--sets", default=",".join(SETS), help="data sets to measure (corpus,small,single)")
    ap.add_argument("--scale", type=float, default=1.0, help="corpus scale (1.0 = ~1 GB)")
    ap.add_argument("--workdir", help="work directory (default: a new temp dir, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--json", dest="json_out", help="write the figures to this JSON file")
    ap.add_argument("--osmo-cmd", help="command that starts the osmo CLI")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS")
    args = ap.parse_args(argv)
    args.sets = [s for s in args.sets.split(",") if s]
    if unknown := set(args.sets) - set(SETS):
        ap.error(f"unknown data set(s): {', '.join(sorted(unknown))}")
    set_wait_idle(args.wait_idle)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="osmo-scaling-"))
    try:
        results = run(work, args)
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nscaling on {os.cpu_count()} CPUs\n")
    print(table(results))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The data-set sizes (shared with ``compare --scaling``)."""
    ap.add_argument("--small-files", type=int, default=100_000, help="files in the small-files set")
    ap.add_argument("--single-gib", type=float, default=8.0, help="size of the single-file set, GiB")


if __name__ == "__main__":
    sys.exit(main())
