"""Time and peak RSS of garbage collection on a store of 1,000,000 chunks and 1,000 versions.

    python -m benchmarks.gc_memory [--chunks 1000000] [--versions 1000] [--dir DIR] [--json]
    python -m benchmarks.gc_memory --quick          # 20,000 chunks, 50 versions

Builds a local store through the library (no files are uploaded: chunks are small
synthetic byte strings, 64-256 bytes, unique per counter), then runs
``Repository.gc(GcOptions(min_age=0))`` in a fresh child process, once with a cold
cache (an empty cache directory: the collector first indexes every pack) and once
with a warm cache (a copy of the index the build left). Each run works on its own
hard-linked copy of the store, so both collect the same garbage. Afterwards each
collected store is checked: ``Repository.verify()`` must report no problem and a few
live versions must still list their entries and read back their files.

The store: one dataset; version ``v`` adds ``chunks / versions`` new chunks, half in
"persistent" files (10 chunks each) that stay for ``--window`` versions, half in
"volatile" files rewritten in every version. Each version is written like an
upload does it: one ``PackWriter`` session (chunks, then the manifest tree through
``TreeBuilder(writer.put_tree)``), ``flush``, then ``DatasetLog.commit_version`` with
the fields ``Uploader.run`` passes. Then the oldest 10% of the versions are deleted
and every other version up to the middle: packs of the pruned versions are wholly
dead (condemned), those of the odd versions mostly dead (repacked).

MB = 10**6 bytes; the goal is a peak RSS under 1 GB (1000 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import blake3

from osmo_store import hashing
from osmo_store.blob import LocalBlobStore
from osmo_store.config import CONFIG_KEY, StoreConfig
from osmo_store.datasets import current_user
from osmo_store.gc import GcOptions
from osmo_store.ids import parse_ref
from osmo_store.manifest import Checksum, FileEntry, TreeBuilder
from osmo_store.repository import Repository, init_store

MB = 1_000_000
RSS_TARGET_MB = 1000.0
DATASET = "gcbench"
SEED = b"osmo-gc-benchmark/"
SNAPSHOT_CHUNKS = 256  # chunks looked up in one index read snapshot (as the uploader does)
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Params:
    chunks: int = 1_000_000  # data chunks written over all versions (manifest nodes come on top)
    versions: int = 1000
    window: int = 10  # versions a persistent file stays in the dataset
    volatile: float = 0.5  # share of each version's new chunks in files rewritten every version
    chunks_per_file: int = 10

    @property
    def per_version(self) -> int:
        return max(1, self.chunks // self.versions)

    def deleted_versions(self) -> list[int]:
        """The oldest 10% (retention pruning), then every other version up to the middle."""
        pruned = self.versions // 10
        odd = [v for v in range(pruned + 1, self.versions // 2 + 1) if v % 2 == 1]
        return list(range(1, pruned + 1)) + odd


# building -------------------------------------------------------------------------------------


def chunk_bytes(k: int) -> bytes:
    """Chunk number ``k``: 64-256 pseudo-random (incompressible) bytes, unique per ``k``."""
    size = 64 + (k * 2654435761) % 193
    return blake3.blake3(SEED + k.to_bytes(8, "little")).digest(length=size)


class _Writer:
    """One version's PackWriter session, feeding chunks with a renewed read snapshot (like upload)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.writer = repo.chunks.writer()
        self._txn = repo.index.env.begin()
        self._n = 0

    def file(self, path: str, first_chunk: int, count: int, mtime_ns: int) -> FileEntry:
        h = hashing.hasher()
        chunks = []
        for k in range(first_chunk, first_chunk + count):
            data = chunk_bytes(k)
            cid = hashing.digest(data)
            h.update(data)
            self.writer.add(cid, data, self._txn)
            chunks.append((cid, len(data)))
            self._n += 1
            if self._n % SNAPSHOT_CHUNKS == 0:
                self._txn.abort()
                self._txn = self.repo.index.env.begin()
        return FileEntry(path, sum(n for _, n in chunks), 0o644, mtime_ns, h.digest(), tuple(chunks))

    def done(self) -> None:
        self._txn.abort()


def build_store(root: str | os.PathLike, params: Params = Params(),
                log: Callable[[str], None] = print) -> dict:
    """Create ``root/store`` (and its index in ``root/cache``) as described in the module docstring.

    Returns what was built (also written to ``root/build.json``): seconds, counts and, per version,
    its root, file count and checksum (for checking after garbage collection)."""
    root = Path(root)
    store_dir, cache_dir = root / "store", root / "cache"
    shutil.rmtree(store_dir, ignore_errors=True)
    shutil.rmtree(cache_dir, ignore_errors=True)
    (root / "build.json").unlink(missing_ok=True)
    start = time.monotonic()
    blob = LocalBlobStore(str(store_dir))
    config = init_store(blob, StoreConfig())
    repo = Repository(blob, config, cache_dir=str(cache_dir))
    per_version = params.per_version
    n_volatile = round(per_version * params.volatile)
    n_persistent = per_version - n_volatile
    cpf = params.chunks_per_file
    window: deque[list[FileEntry]] = deque()  # persistent files added by each of the last versions
    next_chunk = 0
    next_file = 0
    expected: dict[int, dict] = {}
    user = current_user()
    last_report = start
    try:
        for v in range(1, params.versions + 1):
            mtime_ns = (1_700_000_000 + v * 3600) * 1_000_000_000
            w = _Writer(repo)
            try:
                added = []
                left = n_persistent
                while left > 0:
                    n = min(cpf, left)
                    added.append(w.file(f"persistent/{next_file:08d}.bin", next_chunk, n, mtime_ns))
                    next_file += 1
                    next_chunk += n
                    left -= n
                window.append(added)
                if len(window) > params.window:
                    window.popleft()
                volatile = []
                left, j = n_volatile, 0
                while left > 0:
                    n = min(cpf, left)
                    volatile.append(w.file(f"volatile/{j:05d}.bin", next_chunk, n, mtime_ns))
                    next_chunk += n
                    left -= n
                    j += 1
            finally:
                w.done()
            writer = w.writer
            completed = False
            try:
                tree = TreeBuilder(writer.put_tree, config.manifest_node_entries)
                checksum = Checksum()
                for entry in [e for files in window for e in files] + volatile:
                    tree.add(entry)
                    checksum.add(entry.path, entry.size, entry.executable, entry.digest)
                node = tree.finish()
                writer.flush()  # manifest nodes go into the packs too: flush after the root
                completed = True
            finally:
                writer.close(abandon=not completed)
            fields = {
                "root": node.hex(), "user": user, "description": f"gc benchmark version {v}",
                "metadata": {}, "labels": {}, "logical_bytes": tree.bytes, "files": tree.files,
                "stored_bytes": writer.stats.bytes_written, "checksum": checksum.hexdigest(),
            }
            rec = repo.log.commit_version(DATASET, fields, [])
            if rec["version"] != v:
                raise RuntimeError(f"committed version {rec['version']}, expected {v}")
            expected[v] = {"root": fields["root"], "files": tree.files, "checksum": fields["checksum"]}
            now = time.monotonic()
            if now - last_report >= 10 or v == params.versions:
                log(f"    version {v}/{params.versions}: {next_chunk:,} chunks, {now - start:.0f} s")
                last_report = now
        deleted = params.deleted_versions()
        for v in deleted:
            repo.log.delete_version(parse_ref(f"{DATASET}:{v}"))
        counts = repo.index.counts()
        packs = repo.pack_count()
    finally:
        repo.close()
    seconds = time.monotonic() - start
    info = {
        "params": asdict(params),
        "seconds": round(seconds, 3),
        "data_chunks": next_chunk,
        "chunks_in_store": counts["chunks"],  # data chunks and manifest nodes
        "manifest_nodes": counts["chunks"] - next_chunk,
        "versions": params.versions,
        "versions_deleted": len(deleted),
        "versions_live": params.versions - len(deleted),
        "packs": packs,
        "store_bytes": dir_bytes(store_dir),
        "index_bytes": dir_bytes(cache_dir),
        "expected": {str(k): val for k, val in expected.items()},
        "deleted": deleted,
    }
    (root / "build.json").write_text(json.dumps(info))
    return info


def dir_bytes(path: str | os.PathLike) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return total


def load_build(root: str | os.PathLike, params: Params) -> dict | None:
    """The build recorded in ``root/build.json`` if it was made with ``params`` and is still there."""
    root = Path(root)
    try:
        info = json.loads((root / "build.json").read_text())
    except (OSError, ValueError):
        return None
    if info.get("params") != asdict(params) or not (root / "store" / CONFIG_KEY).exists():
        return None
    return info


# collecting -----------------------------------------------------------------------------------


def open_repo(store_dir: str | os.PathLike, cache_dir: str | os.PathLike) -> Repository:
    """Open a local store like ``Repository.open`` does, with an explicit cache directory."""
    blob = LocalBlobStore(str(store_dir))
    repo = Repository(blob, StoreConfig.decode(blob.get(CONFIG_KEY)), cache_dir=str(cache_dir))
    repo.log.sync()
    return repo


def _proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process in bytes (Linux)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def run_gc(store_dir: str | os.PathLike, cache_dir: str | os.PathLike, trace: bool = False) -> dict:
    """Open the store and collect garbage (``min_age=0``); returns timings, memory and GcStats.

    Meant to run in a fresh process (``--child``) so that the memory figures are the collector's.
    With ``trace``, tracemalloc records the Python heap at every phase change (slower)."""
    if trace:
        import tracemalloc
        tracemalloc.start(12)
    t0 = time.monotonic()
    repo = open_repo(store_dir, cache_dir)
    open_seconds = time.monotonic() - t0
    packs_before = repo.pack_count()
    before = _proc_status()
    refresh = {"seconds": 0.0, "calls": 0, "packs_indexed": 0}
    original_refresh = repo.chunks.refresh_packs

    def timed_refresh() -> int:  # instrumentation only: how long indexing new packs takes
        t = time.monotonic()
        try:
            n = original_refresh()
        finally:
            refresh["seconds"] += time.monotonic() - t
            refresh["calls"] += 1
        refresh["packs_indexed"] += n
        return n

    repo.chunks.refresh_packs = timed_refresh  # type: ignore[method-assign]
    phases: list[dict] = []
    traces: list[dict] = []

    def progress(label: str, total: int) -> Callable[[], None]:
        status = _proc_status()
        phases.append({"phase": label, "at": round(time.monotonic() - g0, 3), "total": total,
                       "rss_mb": round(status.get("VmRSS", 0) / MB, 1)})
        if trace:
            traces.append(_trace_snapshot(label))
        return lambda: None

    g0 = time.monotonic()
    try:
        stats = repo.gc(GcOptions(min_age=0), progress=progress)
        gc_seconds = time.monotonic() - g0
        after = _proc_status()
        if trace:
            traces.append(_trace_snapshot("end"))
        packs_after = repo.pack_count()
    finally:
        repo.close()
    return {
        "open_seconds": round(open_seconds, 3),
        "gc_seconds": round(gc_seconds, 3),
        "index_packs_seconds": round(refresh["seconds"], 3),
        "packs_indexed": refresh["packs_indexed"],
        "phases": phases,
        "packs_before": packs_before,
        "packs_after": packs_after,
        "rss_before_gc_mb": round(before.get("VmRSS", 0) / MB, 1),
        "vmhwm_mb": round(after.get("VmHWM", 0) / MB, 1),
        "rss_anon_end_mb": round(after.get("RssAnon", 0) / MB, 1),
        "rss_file_end_mb": round(after.get("RssFile", 0) / MB, 1),
        "index_bytes": dir_bytes(cache_dir),
        "stats": stats.to_json(),
        "tracemalloc": traces,
    }


def _trace_snapshot(label: str) -> dict:
    import tracemalloc
    current, peak = tracemalloc.get_traced_memory()
    top = tracemalloc.take_snapshot().statistics("lineno")[:8]
    return {"phase": label, "current_mb": round(current / MB, 1), "peak_mb": round(peak / MB, 1),
            "top": [f"{s.size / MB:.1f} MB {s.count} blocks {s.traceback[0].filename.rsplit('/', 2)[-1]}:"
                    f"{s.traceback[0].lineno}" for s in top]}


def prepare_run(root: Path, mode: str) -> tuple[Path, Path]:
    """A hard-linked copy of ``root/store`` (collection only adds, renames and unlinks files,
    never rewrites one) and, for ``warm``, a real copy of the build's index (LMDB writes in place)."""
    run = root / "runs" / mode
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    try:
        shutil.copytree(root / "store", run / "store", copy_function=os.link)
    except OSError:
        shutil.rmtree(run / "store", ignore_errors=True)
        shutil.copytree(root / "store", run / "store")
    if mode == "warm":
        shutil.copytree(root / "cache", run / "cache")
    else:
        (run / "cache").mkdir()
    return run / "store", run / "cache"


def measure_gc(root: Path, mode: str, trace: bool = False) -> dict:
    """Run the collector on a fresh copy of the store in a child process; peak RSS from wait4."""
    from benchmarks._measure import run_measured

    store_dir, cache_dir = prepare_run(root, mode)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "benchmarks.gc_memory", "--child", str(store_dir), str(cache_dir)]
    if trace:
        cmd.append("--tracemalloc")
    m = run_measured(cmd, env=env, cwd=str(ROOT), log_dir=root / "runs" / mode / "logs", label="gc").check()
    out = m.json_out()
    out.update(mode=mode, peak_rss_mb=round(m.maxrss_bytes / MB, 1),
               tree_peak_rss_mb=round(m.tree_peak_rss_bytes / MB, 1),
               tree_peak_anon_mb=round(m.tree_peak_anon_bytes / MB, 1),
               process_seconds=round(m.seconds, 3), cpu_seconds=round(m.cpu_seconds, 3),
               store_dir=str(store_dir), cache_dir=str(cache_dir))
    return out


# checking -------------------------------------------------------------------------------------


def check_store(store_dir: str | os.PathLike, cache_dir: str | os.PathLike, build: dict) -> dict:
    """Verify the collected store and read back a few live versions; returns what was found."""
    problems: list[str] = []
    t0 = time.monotonic()
    with open_repo(store_dir, cache_dir) as repo:
        report = repo.verify()
        problems += report.problems
        deleted = set(build["deleted"])
        live = [v for v in range(1, build["versions"] + 1) if v not in deleted]
        picks = sorted({live[0], live[len(live) // 4], live[len(live) // 2], live[-1]}) if live else []
        files_read = 0
        for v in picks:
            want = build["expected"][str(v)]
            rec, entries = repo.entries(f"{DATASET}:{v}")
            if rec["root"] != want["root"] or len(entries) != want["files"]:
                problems.append(f"{DATASET}:{v}: {len(entries)} entries, root {rec['root'][:16]}; "
                                f"expected {want['files']}, {want['root'][:16]}")
                continue
            checksum = Checksum()
            for e in entries:
                checksum.add(e.path, e.size, e.executable, e.digest)
            if checksum.hexdigest() != want["checksum"]:
                problems.append(f"{DATASET}:{v}: checksum differs")
            for e in entries[:2] + entries[-2:]:  # oldest persistent files and the volatile ones
                h = hashing.hasher()
                for cid, _ in e.chunks:
                    h.update(repo.chunks.read_chunk(cid))
                files_read += 1
                if h.digest() != e.digest:
                    problems.append(f"{DATASET}:{v} {e.path}: content differs")
        for v in sorted(deleted)[:1] + sorted(deleted)[-1:]:
            try:
                repo.entries(f"{DATASET}:{v}")
                problems.append(f"{DATASET}:{v} was deleted but resolves")
            except Exception:
                pass
    return {"ok": not problems, "problems": problems[:20], "verified_versions": report.versions,
            "verified_chunks": report.chunks, "manifest_nodes": report.manifest_nodes,
            "versions_read": picks, "files_read": files_read, "seconds": round(time.monotonic() - t0, 3)}


# command line ---------------------------------------------------------------------------------


def _print_run(r: dict) -> None:
    s = r["stats"]
    print(f"  [{r['mode']} cache] gc {r['gc_seconds']:.1f} s (of it indexing {r['packs_indexed']} packs "
          f"{r['index_packs_seconds']:.1f} s; open {r['open_seconds']:.1f} s; process {r['process_seconds']:.1f} s)")
    print(f"    peak RSS {r['peak_rss_mb']:.0f} MB (wait4 ru_maxrss; VmHWM {r['vmhwm_mb']:.0f} MB); "
          f"sampled {r['tree_peak_rss_mb']:.0f} MB, of it anonymous {r['tree_peak_anon_mb']:.0f} MB; "
          f"before gc {r['rss_before_gc_mb']:.0f} MB; index {r['index_bytes'] / MB:.0f} MB; "
          f"target <= {RSS_TARGET_MB:.0f} MB: {'PASS' if r['peak_rss_mb'] <= RSS_TARGET_MB else 'MISS'}")
    phases = ", ".join(f"{p['phase']} at {p['at']:.1f} s ({p['rss_mb']:.0f} MB)" for p in r["phases"])
    print(f"    phases: {phases or '-'}")
    print(f"    live versions {s['versions']}, live chunks {s['chunks']:,}; packs {s['packs']} -> "
          f"{r['packs_after']}: condemned {s['packs_condemned']} (repacked {s['packs_repacked']}), "
          f"deleted {s['packs_deleted']} ({s['bytes_deleted'] / MB:.1f} MB), written {s['packs_written']} "
          f"({s['bytes_written'] / MB:.1f} MB), kept {s['packs_kept']} "
          f"(dead bytes kept {s['dead_bytes_kept'] / MB:.1f} MB)")
    c = r.get("check", {})
    print(f"    check: verify {'ok' if c.get('ok') else 'FAILED'} ({c.get('verified_versions')} versions, "
          f"{c.get('verified_chunks', 0):,} chunks), read back versions {c.get('versions_read')} "
          f"in {c.get('seconds', 0):.1f} s")
    for p in c.get("problems", []):
        print(f"    !!! {p}")
    for t in r.get("tracemalloc", []):
        print(f"    tracemalloc at {t['phase']}: current {t['current_mb']} MB, peak {t['peak_mb']} MB")
        for line in t["top"]:
            print(f"      {line}")
    print(f"    GcStats {json.dumps(s)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gc_memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=Params.chunks, help="data chunks in the store (default 1,000,000)")
    ap.add_argument("--versions", type=int, default=Params.versions, help="versions written (default 1,000)")
    ap.add_argument("--window", type=int, default=Params.window, help="versions a persistent file lives (default 10)")
    ap.add_argument("--quick", action="store_true", help="smoke size: 20,000 chunks, 50 versions")
    ap.add_argument("--dir", help="keep the built store here (reused by the next run with the same sizes)")
    ap.add_argument("--modes", default="cold,warm", help="cache states to measure (default cold,warm)")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="also record the Python heap per phase (slower; inflates the figures)")
    ap.add_argument("--keep-runs", action="store_true", help="keep the collected copies under DIR/runs")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    ap.add_argument("--child", nargs=2, metavar=("STORE", "CACHE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(json.dumps(run_gc(args.child[0], args.child[1], trace=args.tracemalloc)), flush=True)
        return 0

    params = Params(chunks=20_000, versions=50, window=args.window) if args.quick else \
        Params(chunks=args.chunks, versions=args.versions, window=args.window)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.json else \
        (lambda msg: print(msg, flush=True))
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="osmo-gcbench-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    ok = True
    try:
        build = load_build(root, params) if args.dir else None
        if build is not None:
            say(f"reusing the store in {root} (built in {build['seconds']:.1f} s)")
            build["reused"] = True
        else:
            say(f"building {params.chunks:,} chunks in {params.versions} versions under {root} ...")
            build = build_store(root, params, log=say)
            build["reused"] = False
        runs = {}
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            say(f"collecting garbage ({mode} cache) ...")
            r = measure_gc(root, mode, trace=args.tracemalloc)
            r["check"] = check_store(r["store_dir"], r["cache_dir"], build)
            ok = ok and r["check"]["ok"] and r["peak_rss_mb"] <= RSS_TARGET_MB and r["stats"]["packs_deleted"] > 0
            runs[mode] = r
            if not args.keep_runs:
                shutil.rmtree(root / "runs" / mode, ignore_errors=True)
        summary = {k: v for k, v in build.items() if k not in ("expected", "deleted")}
        result = {"build": summary, "runs": runs, "target_mb": RSS_TARGET_MB, "pass": ok}
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            b = summary
            print(f"store: {b['chunks_in_store']:,} chunks ({b['data_chunks']:,} data, {b['manifest_nodes']:,} "
                  f"manifest nodes), {b['versions']} versions ({b['versions_live']} live, "
                  f"{b['versions_deleted']} deleted), {b['packs']} packs, {b['store_bytes'] / MB:.1f} MB "
                  f"(index {b['index_bytes'] / MB:.1f} MB)")
            print(f"build: {b['seconds']:.1f} s{' (earlier run, reused)' if b['reused'] else ''}")
            for r in runs.values():
                _print_run(r)
            print("PASS" if ok else "MISS")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
