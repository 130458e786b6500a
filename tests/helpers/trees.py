"""Building folders on disk and comparing them exactly (content, exec bit, mtime), without osmo code.

Content is compared by SHA-256 computed here, so a bug in osmo's own hashing cannot hide a mismatch.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def snapshot(root, mtimes: bool = True) -> dict[str, tuple]:
    """Every non-folder entry under ``root`` (symbolic links not followed), by relative POSIX path.

    Files map to ``("file", size, permission bits, mtime_ns, sha256)``; symbolic links to
    ``("link", target)``; anything else to ``("other", mode)``. Folders are walked, not listed.
    """
    root = os.fspath(root)
    out: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                continue
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", st.st_size, st.st_mode & 0o777,
                            st.st_mtime_ns if mtimes else None, sha256_file(full))
            else:
                out[rel] = ("other", st.st_mode)
    return out


def files_only(snap: dict[str, tuple]) -> dict[str, tuple]:
    return {k: v for k, v in snap.items() if v[0] == "file"}


def write_file(path, data: bytes, mtime_ns: int | None = None, mode: int | None = None) -> None:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def random_tree(root, seed: int, files: int, max_size: int) -> dict[str, bytes]:
    """``files`` random files of 0..max_size bytes in a few nested folders; returns path -> bytes."""
    rng = random.Random(seed)
    out = {}
    for i in range(files):
        rel = f"d{i % 3}/s{i % 2}/f{i:03d}.bin" if i % 4 else f"top{i:03d}.bin"
        data = rng.randbytes(rng.randint(0, max_size))
        # an mtime with odd nanoseconds, well in the past (so the stat cache may use it)
        write_file(os.path.join(root, rel), data, mtime_ns=1_600_000_000_000_000_000 + i * 1_000_000_007 + 123)
        out[rel] = data
    return out


def tree_bytes(root) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
