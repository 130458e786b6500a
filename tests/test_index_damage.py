"""The local index is a cache that cannot hurt: damaged, unreadable, replaced or from another version, it
is rebuilt from the store with one line saying so; verify never reports its damage as the store's; a
full disk under it is exit 8.

Each case damages the real LMDB file of a real store's index, then runs the CLI in subprocesses.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import lmdb
import pytest

from conftest import Cli
from helpers.disks import tmpfs
from helpers.trees import snapshot, write_file

NOBODY = 65534


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    cli = Cli.tiny(tmp_path_factory, "index-template")
    root = cli.root
    src = root / "src"
    for i in range(12):
        write_file(src / f"f{i:02d}.bin", random.Random(i).randbytes(6000 + 500 * i))
    cli("dataset", "upload", "ds", str(src))
    write_file(src / "f00.bin", b"changed" * 900)
    cli("dataset", "upload", "ds", str(src))
    cli("dataset", "upload", "other", str(src / "f01.bin"))
    cli("dataset", "tag", "ds:1", "--set", "first")
    return {"store": cli.store, "cache": cli.env["OSMO_CACHE_DIR"], "src": src,
            "listed": cli("dataset", "list", "--json").json(), "info": cli("dataset", "info", "ds", "--json").json(),
            "files": snapshot(src)}


@pytest.fixture
def store(cli, template):
    return cli.copy_of(template)


def index_dir(cli) -> str:
    root = os.path.join(cli.env["OSMO_CACHE_DIR"], "index")
    (name,) = os.listdir(root)
    return os.path.join(root, name)


def garble(path: str, seed: int, writes: int = 40) -> None:
    rnd = random.Random(seed)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for _ in range(writes):
            f.seek(rnd.randrange(size))
            f.write(rnd.randbytes(rnd.randint(1, 24)))


def assert_rebuilt_and_right(cli, store, result) -> None:
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    notes = [line for line in result.err.splitlines() if line]
    assert len(notes) <= 1 and all("local index" in n for n in notes), result.err
    assert result.json() == store["listed"]


@pytest.mark.parametrize("seed", range(8))
def test_a_garbled_index_file_is_rebuilt_with_one_line(cli, tmp_path, store, seed):
    garble(os.path.join(index_dir(cli), "data.mdb"), seed)
    assert_rebuilt_and_right(cli, store, cli("dataset", "list", "--json"))
    info = cli("dataset", "info", "ds", "--json")
    assert info.code == 0 and info.json()["versions"] == store["info"]["versions"]
    cli("dataset", "download", "ds:1", str(tmp_path / "out"))
    verify = cli("store", "verify", "--read-data")
    assert verify.code == 0 and verify.err == "", verify.err  # cache damage is never store damage


@pytest.mark.parametrize("damage", ["garbage-file", "empty-file", "folder-is-a-file", "lock-garbage",
                                    "older-format", "data-is-a-folder"])
def test_an_index_that_cannot_be_used_is_replaced(cli, tmp_path, store, damage):
    folder = index_dir(cli)
    data = os.path.join(folder, "data.mdb")
    if damage == "garbage-file":
        with open(data, "wb") as f:
            f.write(os.urandom(os.path.getsize(data)))
    elif damage == "empty-file":
        open(data, "wb").close()
    elif damage == "folder-is-a-file":
        shutil.rmtree(folder)
        with open(folder, "wb") as f:
            f.write(b"not an index")
    elif damage == "lock-garbage":
        with open(os.path.join(folder, "lock.mdb"), "wb") as f:
            f.write(os.urandom(8192))
    elif damage == "older-format":
        env = lmdb.open(folder, max_dbs=32)
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            txn.put(b"index_format", b"osmo-index-1", db=meta)
        env.close()
    elif damage == "data-is-a-folder":
        os.remove(data)
        os.mkdir(data)
    assert_rebuilt_and_right(cli, store, cli("dataset", "list", "--json"))
    assert cli("store", "verify").code == 0
    assert cli("dataset", "list", "--json").err == ""  # rebuilt once, not at every command


def test_an_index_damaged_in_the_middle_of_a_command_is_removed_and_the_next_one_works(cli, tmp_path, store):
    """Damage that happens after the index was opened (its stamp matched) is found by a row's check."""
    folder = index_dir(cli)
    env = lmdb.open(folder, max_dbs=32)
    names = env.open_db(b"names")
    with env.begin(write=True) as txn:
        key, value = next(iter(txn.cursor(db=names)))
        txn.put(key, value[:-1] + bytes([value[-1] ^ 1]), db=names)
    env.close()
    stamp = os.path.join(folder, "osmo-stamp")
    st = os.stat(os.path.join(folder, "data.mdb"))
    with open(stamp, "w") as f:  # as if osmo itself had written it: the guard does not look
        f.write(f"{st.st_size} {st.st_mtime_ns} {st.st_ino}\n")
    failed = cli("dataset", "list", "--json", check=False)
    assert failed.code == 8, failed.err
    assert failed.err.count("\n") == 1 and "run the command again" in failed.err and "Traceback" not in failed.err
    assert_rebuilt_and_right(cli, store, cli("dataset", "list", "--json"))


def test_an_unreadable_index_folder_of_another_user_gives_a_temporary_index(template):
    """A non-root user whose index folder cannot be read or replaced still gets right answers."""
    root = tempfile.mkdtemp(prefix="osmo-nobody-")  # pytest's own folders are root's alone
    try:
        os.chmod(root, 0o755)
        cli = Cli(Path(root))
        shutil.copytree(template["store"], cli.store)
        shutil.copytree(template["cache"], cli.env["OSMO_CACHE_DIR"])
        for folder, dirs, files in os.walk(root):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        os.chmod(index_dir(cli), 0o700)  # root's, and nobody may not write the folder it is in
        env = {**cli.env, "HOME": root, "OSMO_CONFIG": os.path.join(root, "config.yaml")}
        proc = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                               *cli.argv("dataset", "list", "--json")], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "temporary" in proc.stderr and "Traceback" not in proc.stderr
        assert json.loads(proc.stdout) == template["listed"]
        assert not [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("osmo-index-")
                    and os.stat(os.path.join(tempfile.gettempdir(), n)).st_uid == NOBODY]  # removed after use
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_full_disk_under_the_cache_is_exit_8(tmp_path, template):
    cli = Cli(tmp_path)
    shutil.copytree(template["store"], cli.store)
    with tmpfs(tmp_path / "cache-disk", "2m") as disk:
        cli.env["OSMO_CACHE_DIR"] = str(disk / "cache")
        with open(disk / "ballast", "wb") as f:
            try:
                f.write(b"\0" * (4 * 1024 * 1024))
            except OSError:
                pass
        for args in (("dataset", "list"), ("dataset", "upload", "ds", str(template["src"])),
                     ("dataset", "download", "ds", str(tmp_path / "out"))):
            result = cli(*args, check=False)
            assert result.code == 8, (args, result.code, result.err)
            assert "disk full" in result.err and "Traceback" not in result.err
        os.remove(disk / "ballast")
        assert cli("dataset", "list", "--json").json() == template["listed"]
