"""The upload stat cache is keyed by the file (device and inode), not by the spelling of its path: the
same folder uploaded through an absolute or relative path, a symbolic link to a parent or a bind
mount is not read again. And it never trusts a different file at the same inode: a file rewritten in
place, or deleted and replaced, with its size and mtime put back, is read again (its ctime changed).

Run as a user runs osmo (a subprocess per upload) on real files; the bind mount is made in a private
mount namespace of the upload (``unshare -m``), so nothing is left mounted.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time

from helpers.tools import require_tool
from helpers.trees import random_tree, snapshot
from osmo_store.transfer.upload import RACY_SECONDS


def upload(cli, path: str, cwd=None, wrap: list[str] = ()) -> dict:
    proc = subprocess.run([*wrap, *cli.argv("dataset", "upload", "ds", path, "--json")], env=cli.env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def age_past_the_racy_window(folder) -> None:
    """Wait until every file's ctime is older than the window in which the cache does not trust it."""
    newest = max(os.stat(os.path.join(d, f)).st_ctime_ns for d, _, fs in os.walk(folder) for f in fs)
    wait = newest / 1e9 + RACY_SECONDS + 0.2 - time.time()
    if wait > 0:
        time.sleep(wait)


def test_the_same_folder_by_any_path_is_not_read_again(cli, tmp_path):
    cli.init_tiny()
    data = tmp_path / "data" / "src"
    files = random_tree(data, seed=9, files=12, max_size=6000)
    age_past_the_racy_window(data)
    first = upload(cli, str(data))
    assert first["files_unchanged"] == 0 and first["files"] == len(files)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    mount, unshare = require_tool("mount"), require_tool("unshare")
    (tmp_path / "mnt").mkdir()
    bind = [unshare, "-m", "sh", "-c", f'{mount} --bind "$0" "$1" && shift && exec "$@"', str(tmp_path / "data"),
            str(tmp_path / "mnt")]
    for path, cwd, wrap in ((str(data), None, []),  # the same spelling
                            ("data/src", tmp_path, []),  # relative
                            ("./data/../data/src/", tmp_path, []),
                            (str(tmp_path / "link" / "src"), None, []),  # through a symbolic link to a parent
                            (str(tmp_path / "mnt" / "src"), None, bind)):  # through a bind mount
        again = upload(cli, path, cwd, wrap)
        assert again["files_unchanged"] == len(files), (path, again)
        assert again["new_bytes"] == 0 and again["checksum"] == first["checksum"], path
    cli("dataset", "download", "ds", str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == snapshot(data)


def test_a_different_file_at_the_same_inode_is_read_again(cli, tmp_path):
    cli.init_tiny()
    src = tmp_path / "src"
    random_tree(src, seed=4, files=6, max_size=5000)
    age_past_the_racy_window(src)
    upload(cli, str(src))
    rng = random.Random(8)
    names = sorted(p for p in src.rglob("*") if p.is_file() and p.stat().st_size > 0)
    rewritten, replaced = names[0], names[1]
    inodes = {}
    for path, how in ((rewritten, "in place"), (replaced, "deleted and created again")):
        before = path.stat()
        data = rng.randbytes(before.st_size)
        if how == "in place":
            with open(path, "r+b") as f:
                f.write(data)
        else:
            path.unlink()
            path.write_bytes(data)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the mtime put back
        after = path.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        inodes[how] = after.st_ino == before.st_ino
    assert inodes["in place"]  # the same inode, size and mtime: only the ctime tells
    again = upload(cli, str(src))
    assert again["files_unchanged"] == again["files"] - 2, again  # the two changed files were read
    cli("dataset", "download", "ds", str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == snapshot(src)  # the new bytes, not the cached old ones
