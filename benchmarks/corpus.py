"""Deterministic benchmark corpus for the storage engine.

Version 1 (``make_v1``), at ``scale=1.0`` (about 1.04 GB):

* ``big/big-NNN.bin``: 20 files of random bytes, 1-64 MiB each
  (about 650 MiB in total);
* ``small/dNNN/fNNNNN.{txt,bin}``: 10,000 files of 4-64 KiB, spread over
  directories of 200 files; half are text-like (lines of words, numbers,
  ``key=value`` pairs: compressible), half are random bytes.

Version 2 (``make_v2``) is a copy of version 1 with dense small edits:

* ~30% of the big files are edited. In each edited file, inserts, deletes and
  overwrites are placed at uniformly random offsets until the edited bytes add
  up to ~1% of that file's size. Edit sizes are log-uniform between 4 bytes and
  8 KiB (mean ~1 KiB), i.e. roughly 10 edit sites per MiB of an edited file;
* 1% of the small files are rewritten with new content (new size);
* 0.5% of the small files are removed and as many new ones are added.

``scale`` shrinks (or grows) the corpus for quick runs. Below 1.0 the number
of big files stays 20 and their sizes shrink by ``scale``; the number of small
files shrinks by ``scale`` (sizes stay 4-64 KiB). Above 1.0 the file counts
grow and the sizes stay as above. Either way the total is ~``scale`` GB.

Everything is derived from the seeds with ``random.Random``: the same
arguments give byte-identical trees.

CLI::

    python -m benchmarks.corpus v1 DEST [--scale S] [--seed N]
    python -m benchmarks.corpus v2 SRC DEST [--seed N]
    python -m benchmarks.corpus hash DIR
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

KiB = 1 << 10
MiB = 1 << 20

# --- version 1 -------------------------------------------------------------
BIG_COUNT = 20
BIG_MIN = 1 * MiB
BIG_MAX = 64 * MiB
SMALL_COUNT = 10_000
SMALL_MIN = 4 * KiB
SMALL_MAX = 64 * KiB
SMALL_PER_DIR = 200
TEXT_SHARE = 0.5

# --- version 2 -------------------------------------------------------------
EDITED_BIG_SHARE = 0.30  # share of big files that get edits
EDIT_FRACTION = 0.01  # edited bytes / size, per edited big file
EDIT_SIZE_MIN = 4  # bytes, log-uniform ...
EDIT_SIZE_MAX = 8 * KiB  # ... up to here
REWRITTEN_SMALL_SHARE = 0.01
REMOVED_SMALL_SHARE = 0.005
ADDED_SMALL_SHARE = 0.005

WRITE_BLOCK = 8 * MiB


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _write(path: Path, data: bytes | bytearray | memoryview) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def _write_random(path: Path, size: int, rng: random.Random) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = size
        while left:
            block = rng.randbytes(min(WRITE_BLOCK, left))
            view = memoryview(block)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            left -= len(block)
    finally:
        os.close(fd)


def _prepare_dest(dest: Path) -> None:
    if dest.exists():
        if not dest.is_dir() or any(dest.iterdir()):
            raise FileExistsError(f"{dest} exists and is not an empty directory")
    dest.mkdir(parents=True, exist_ok=True)


_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"


def _text_pool(rng: random.Random, n_lines: int = 20_000) -> list[str]:
    """A pool of text-like lines (made-up words, numbers, key=value pairs).

    Text files are random selections of these lines: compressible like logs
    or CSV, but no 16 KiB stretch repeats between files.
    """
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    syllables += [c + v + c2 for c in "bdklmnst" for v in _VOWELS for c2 in "nrst"]
    words = []
    seen = set()
    while len(words) < 4000:
        w = "".join(rng.choices(syllables, k=rng.choice((1, 2, 2, 3, 3, 4))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    # Zipf-like word frequencies
    cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(words))))
    keys = words[:60]
    levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]

    def number() -> str:
        k = rng.random()
        if k < 0.4:
            return str(rng.randrange(1000))
        if k < 0.7:
            return f"{rng.uniform(-500, 500):.{rng.randrange(1, 5)}f}"
        if k < 0.85:
            return f"{rng.getrandbits(32):08x}"
        return str(rng.randrange(10**6, 10**9))

    lines = []
    t0 = 1_700_000_000.0
    for i in range(n_lines):
        style = rng.random()
        if style < 0.4:  # prose
            toks = rng.choices(words, cum_weights=cum, k=rng.randrange(4, 16))
            if rng.random() < 0.3:
                toks.insert(rng.randrange(len(toks)), number())
            line = " ".join(toks)
            line = line[0].upper() + line[1:] + "."
        elif style < 0.75:  # log record
            ts = t0 + i * 0.37 + rng.random()
            kv = " ".join(
                f"{rng.choice(keys)}={number()}" for _ in range(rng.randrange(1, 5))
            )
            msg = " ".join(rng.choices(words, cum_weights=cum, k=rng.randrange(2, 7)))
            line = f"{ts:.3f} {rng.choice(levels)} {rng.choice(keys)}: {msg} {kv}"
        else:  # csv row
            line = ",".join(number() for _ in range(rng.randrange(3, 9)))
        lines.append(line + "\n")
    return lines


def _text_bytes(pool: list[str], size: int, rng: random.Random) -> bytes:
    parts: list[str] = []
    have = 0
    while have < size:
        batch = rng.choices(pool, k=max(8, (size - have) // 50 + 4))
        parts.extend(batch)
        have += sum(map(len, batch))
    data = "".join(parts).encode("ascii")[:size]
    return data[:-1] + b"\n" if data else data


# ---------------------------------------------------------------------------
# version 1
# ---------------------------------------------------------------------------


def plan_v1(scale: float = 1.0, seed: int = 0) -> dict:
    """File names and sizes of version 1 (no content)."""
    if scale <= 0:
        raise ValueError("scale must be > 0")
    rng = random.Random(f"osmo-bench-v1/{seed}")
    if scale >= 1.0:
        big_count = max(1, round(BIG_COUNT * scale))
        size_factor = 1.0
    else:
        big_count = BIG_COUNT
        size_factor = scale
    small_count = max(20, round(SMALL_COUNT * scale))

    big = []
    for i in range(big_count):
        size = int(rng.randint(BIG_MIN, BIG_MAX) * size_factor)
        big.append((f"big/big-{i:03d}.bin", max(size, 4 * KiB)))
    small = []
    for i in range(small_count):
        text = rng.random() < TEXT_SHARE
        size = rng.randint(SMALL_MIN, SMALL_MAX)
        name = f"small/d{i // SMALL_PER_DIR:03d}/f{i:05d}.{'txt' if text else 'bin'}"
        small.append((name, size, text))
    return {"big": big, "small": small}


def make_v1(dest: str | os.PathLike, scale: float = 1.0, seed: int = 0) -> dict:
    """Write version 1 of the corpus into ``dest`` (new or empty dir)."""
    dest = Path(dest)
    _prepare_dest(dest)
    t0 = time.perf_counter()
    plan = plan_v1(scale, seed)
    total = 0
    (dest / "big").mkdir()
    for name, size in plan["big"]:
        _write_random(dest / name, size, random.Random(f"osmo-bench-v1/{seed}/{name}"))
        total += size
    pool = _text_pool(random.Random(f"osmo-bench-v1/{seed}/text-pool"))
    rng = random.Random(f"osmo-bench-v1/{seed}/small")
    made_dirs: set[str] = set()
    n_text = 0
    for name, size, text in plan["small"]:
        parent = name.rsplit("/", 1)[0]
        if parent not in made_dirs:
            (dest / parent).mkdir(parents=True)
            made_dirs.add(parent)
        if text:
            _write(dest / name, _text_bytes(pool, size, rng))
            n_text += 1
        else:
            _write(dest / name, rng.randbytes(size))
        total += size
    return {
        "version": 1,
        "path": str(dest),
        "scale": scale,
        "seed": seed,
        "files": len(plan["big"]) + len(plan["small"]),
        "big_files": len(plan["big"]),
        "small_files": len(plan["small"]),
        "text_files": n_text,
        "bytes": total,
        "seconds": round(time.perf_counter() - t0, 3),
    }


# ---------------------------------------------------------------------------
# version 2
# ---------------------------------------------------------------------------


def list_files(root: str | os.PathLike) -> list[str]:
    """Relative POSIX paths of all regular files under ``root``, sorted."""
    root = str(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for f in filenames:
            p = f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
            if os.path.isfile(os.path.join(dirpath, f)) and not os.path.islink(
                os.path.join(dirpath, f)
            ):
                out.append(p)
    out.sort()
    return out


def _edit_big(
    data: bytes,
    rng: random.Random,
    fraction: float = EDIT_FRACTION,
    size_min: int = EDIT_SIZE_MIN,
    size_max: int = EDIT_SIZE_MAX,
) -> tuple[bytes, dict]:
    """Apply dense small inserts/deletes/overwrites to ``data``."""
    size = len(data)
    budget = max(1, round(fraction * size))
    lo, hi = math.log2(size_min), math.log2(max(size_min, size_max))
    edits = []
    planned = 0
    while planned < budget:
        n = max(1, int(round(2 ** rng.uniform(lo, hi))))
        op = rng.choice(("insert", "delete", "overwrite"))
        edits.append((rng.randrange(size), op, n))
        planned += n
    edits.sort()
    out: list[bytes] = []
    cursor = 0
    counts = {"insert": 0, "delete": 0, "overwrite": 0}
    changed = 0
    mv = memoryview(data)
    for pos, op, n in edits:
        pos = max(pos, cursor)
        if op != "insert" and pos >= size:
            continue
        out.append(mv[cursor:pos])
        if op == "insert":
            out.append(rng.randbytes(n))
            cursor = pos
        elif op == "delete":
            n = min(n, size - pos)
            cursor = pos + n
        else:
            n = min(n, size - pos)
            out.append(rng.randbytes(n))
            cursor = pos + n
        counts[op] += 1
        changed += n
    out.append(mv[cursor:])
    return b"".join(out), {"edits": sum(counts.values()), "changed_bytes": changed, **counts}


def make_v2(
    src_v1: str | os.PathLike,
    dest: str | os.PathLike,
    seed: int = 1,
    *,
    edit_fraction: float = EDIT_FRACTION,
    edit_size_min: int = EDIT_SIZE_MIN,
    edit_size_max: int = EDIT_SIZE_MAX,
) -> dict:
    """Write version 2 into ``dest``: a copy of ``src_v1`` with the edits.

    ``edit_fraction`` and ``edit_size_min/max`` set the edits of the big
    files (see the module docstring); the defaults are the benchmark's.
    """
    src = Path(src_v1)
    dest = Path(dest)
    _prepare_dest(dest)
    t0 = time.perf_counter()
    rng = random.Random(f"osmo-bench-v2/{seed}")
    files = list_files(src)
    big = [f for f in files if f.startswith("big/")]
    small = [f for f in files if not f.startswith("big/")]

    edited = set(rng.sample(big, min(len(big), max(1, round(EDITED_BIG_SHARE * len(big)))))) if big else set()
    n_rw = max(1, round(REWRITTEN_SMALL_SHARE * len(small)))
    n_rm = max(1, round(REMOVED_SMALL_SHARE * len(small)))
    n_add = max(1, round(ADDED_SMALL_SHARE * len(small)))
    picked = rng.sample(small, min(len(small), n_rw + n_rm))
    rewritten = set(picked[:n_rw])
    removed = set(picked[n_rw:])
    dirs = sorted({f.rsplit("/", 1)[0] for f in small if "/" in f}) or ["small"]
    added = []
    for i in range(n_add):
        text = rng.random() < TEXT_SHARE
        added.append(
            (f"{rng.choice(dirs)}/new-{i:05d}.{'txt' if text else 'bin'}",
             rng.randint(SMALL_MIN, SMALL_MAX), text)
        )

    pool = _text_pool(random.Random(f"osmo-bench-v2/{seed}/text-pool"))
    edit_stats = {"edits": 0, "changed_bytes": 0, "insert": 0, "delete": 0, "overwrite": 0}
    edited_bytes = 0
    total = 0
    made_dirs: set[str] = set()

    def mkparent(rel: str) -> None:
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        if parent and parent not in made_dirs:
            (dest / parent).mkdir(parents=True, exist_ok=True)
            made_dirs.add(parent)

    for rel in files:
        if rel in removed:
            continue
        mkparent(rel)
        if rel in edited:
            data = (src / rel).read_bytes()
            edited_bytes += len(data)
            new, st = _edit_big(
                data, random.Random(f"osmo-bench-v2/{seed}/{rel}"),
                edit_fraction, edit_size_min, edit_size_max,
            )
            for k, v in st.items():
                edit_stats[k] += v
            _write(dest / rel, new)
            total += len(new)
        elif rel in rewritten:
            frng = random.Random(f"osmo-bench-v2/{seed}/{rel}")
            size = frng.randint(SMALL_MIN, SMALL_MAX)
            if rel.endswith(".txt"):
                _write(dest / rel, _text_bytes(pool, size, frng))
            else:
                _write(dest / rel, frng.randbytes(size))
            total += size
        else:
            shutil.copyfile(src / rel, dest / rel)
            total += os.path.getsize(dest / rel)
    for rel, size, text in added:
        mkparent(rel)
        frng = random.Random(f"osmo-bench-v2/{seed}/{rel}")
        _write(dest / rel, _text_bytes(pool, size, frng) if text else frng.randbytes(size))
        total += size

    return {
        "version": 2,
        "path": str(dest),
        "seed": seed,
        "files": len(files) - len(removed) + len(added),
        "bytes": total,
        "big_files_edited": len(edited),
        "big_bytes_edited_files": edited_bytes,
        "edit_fraction": edit_fraction,
        "edit_size_range": [edit_size_min, edit_size_max],
        "edits": edit_stats["edits"],
        "edits_per_mib_of_edited_files": round(edit_stats["edits"] / max(1, edited_bytes / MiB), 2),
        "edit_ops": {k: edit_stats[k] for k in ("insert", "delete", "overwrite")},
        "edit_changed_bytes": edit_stats["changed_bytes"],
        "small_rewritten": len(rewritten),
        "small_removed": len(removed),
        "small_added": len(added),
        "seconds": round(time.perf_counter() - t0, 3),
    }


# ---------------------------------------------------------------------------
# verification helpers
# ---------------------------------------------------------------------------


def tree_hashes(root: str | os.PathLike) -> dict[str, tuple[int, str]]:
    """``{relative path: (size, BLAKE3 hex)}`` for every regular file."""
    import blake3

    root = Path(root)
    out = {}
    for rel in list_files(root):
        p = root / rel
        size = p.stat().st_size
        if size >= 4 * MiB:
            h = blake3.blake3(max_threads=blake3.blake3.AUTO)
            h.update_mmap(p)
        else:
            h = blake3.blake3(p.read_bytes())
        out[rel] = (size, h.hexdigest())
    return out


def tree_digest(root: str | os.PathLike) -> str:
    """One BLAKE3 hex digest over all relative paths, sizes and contents."""
    import blake3

    h = blake3.blake3()
    for rel, (size, digest) in tree_hashes(root).items():
        h.update(f"{rel}\0{size}\0{digest}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.corpus", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a1 = sub.add_parser("v1", help="write version 1 into DEST")
    a1.add_argument("dest")
    a1.add_argument("--scale", type=float, default=1.0)
    a1.add_argument("--seed", type=int, default=0)
    a2 = sub.add_parser("v2", help="write version 2 (edited copy of SRC) into DEST")
    a2.add_argument("src")
    a2.add_argument("dest")
    a2.add_argument("--seed", type=int, default=1)
    a2.add_argument("--edit-fraction", type=float, default=EDIT_FRACTION,
                    help="edited bytes per edited big file, as a fraction of its size")
    a2.add_argument("--edit-size-min", type=int, default=EDIT_SIZE_MIN)
    a2.add_argument("--edit-size-max", type=int, default=EDIT_SIZE_MAX)
    a3 = sub.add_parser("hash", help="print the tree digest of DIR")
    a3.add_argument("dir")
    args = ap.parse_args(argv)
    if args.cmd == "v1":
        print(json.dumps(make_v1(args.dest, scale=args.scale, seed=args.seed), indent=2))
    elif args.cmd == "v2":
        print(json.dumps(make_v2(args.src, args.dest, seed=args.seed,
                                 edit_fraction=args.edit_fraction,
                                 edit_size_min=args.edit_size_min,
                                 edit_size_max=args.edit_size_max), indent=2))
    else:
        print(tree_digest(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
