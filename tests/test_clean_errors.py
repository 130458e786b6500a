"""Mistakes osmo refuses cleanly, and nothing half-done (README "Mistakes osmo refuses").

Each class of mistake is run through the real CLI in subprocesses against real local store folders:
a source or destination overlapping the store or its index; malformed references, names, numbers,
keys, durations and an empty ``--store``; an upload that selects no file; a file that changes while
it is read; temporary files of a killed download; a reference racing a rename by another client.
Every refusal is one line ``osmo: error: ...`` with a documented exit code (never 70), and leaves
the store exactly as it was.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from hypothesis import given, settings, strategies as st

from conftest import Cli
from helpers.trees import snapshot, write_file
from osmo_store.errors import SourceChangedError, UsageError
from osmo_store.hashing import file_digest
from osmo_store.ids import MAX_VERSION, parse_ref
from osmo_store.repository import Repository
from osmo_store.transfer import fileread as fileread_mod
from osmo_store.transfer import upload as upload_mod
from osmo_store.transfer.download import remove_stale_parts
from osmo_store.transfer.fileread import READ_ATTEMPTS
from osmo_store.transfer.upload import UploadRequest
from test_hostile_input import assert_error

HELPERS = os.path.join(os.path.dirname(__file__), "helpers")


class Result:
    """A finished subprocess in the shape ``assert_error`` takes (for runs outside the ``Cli`` helper)."""

    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.code, self.out, self.err = proc.returncode, proc.stdout, proc.stderr


def store_state(cli: Cli) -> dict:
    """Every object of the store folder with its content: what "left exactly as it was" compares."""
    return snapshot(cli.store)


def part_files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
                  if f.startswith(".osmo-part-"))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A tiny store with ``ds:1`` and ``ds:2`` (tag ``first`` on 1) and dataset ``taken``."""
    cli = Cli.tiny(tmp_path_factory, "template")
    root = cli.root
    src = root / "src"
    write_file(src / "a.txt", b"alpha\n" * 100)
    write_file(src / "sub" / "b.bin", os.urandom(5000))
    cli("dataset", "upload", "ds:first", str(src))
    write_file(src / "c.txt", b"gamma\n")
    cli("dataset", "upload", "ds", str(src))
    cli("dataset", "upload", "taken", str(src))
    return {"src": src, "store": cli.store, "cache": cli.env["OSMO_CACHE_DIR"]}


@pytest.fixture
def store(cli, template):
    """A private copy of the template store and its cache."""
    return cli.copy_of(template)


# --- 1. references, names, numbers, keys, durations: table-driven -----------------------------------

HUGE = "99999999999999999999999"
BAD_INPUT = [
    # (arguments after "osmo --store STORE", exit code, text the one-line error must contain)
    (("dataset", "download", "ds:0", "{out}"), 2, "versions start at 1"),
    (("dataset", "download", "ds:-1", "{out}"), 2, "versions start at 1"),
    (("dataset", "download", "ds:-0", "{out}"), 2, "versions start at 1"),
    (("dataset", "download", "ds:000", "{out}"), 2, "versions start at 1"),
    (("dataset", "download", f"ds:{HUGE}", "{out}"), 2, f"version numbers go up to {MAX_VERSION}"),
    (("dataset", "download", f"ds:{2**64}", "{out}"), 2, "version numbers go up to"),
    (("dataset", "download", f"ds:{2**63}", "{out}"), 2, "version numbers go up to"),
    (("dataset", "download", "ds:" + "9" * 5000, "{out}"), 2, "5003 characters"),
    (("dataset", "download", f"ds:{2**63 - 1}", "{out}"), 3, "has no version"),
    (("dataset", "download", "ds:\u0661", "{out}"), 2, "digits 0-9"),  # ARABIC-INDIC DIGIT ONE
    (("dataset", "download", "ds:\u00b2", "{out}"), 2, "digits 0-9"),  # SUPERSCRIPT TWO
    (("dataset", "download", "ds:\uff11", "{out}"), 2, "digits 0-9"),  # FULLWIDTH DIGIT ONE
    (("dataset", "download", "ds:", "{out}"), 2, "nothing after ':'"),
    (("dataset", "download", ":1", "{out}"), 2, "invalid dataset name ''"),
    (("dataset", "download", "ds::1", "{out}"), 2, "invalid tag ':1'"),
    (("dataset", "download", "ds:1:2", "{out}"), 2, "invalid tag '1:2'"),
    (("dataset", "download", " ds", "{out}"), 2, "invalid dataset name ' ds'"),
    (("dataset", "download", "ds ", "{out}"), 2, "invalid dataset name 'ds '"),
    (("dataset", "download", "ds\n", "{out}"), 2, "invalid dataset name 'ds\\n'"),
    (("dataset", "download", "ds:1 ", "{out}"), 2, "invalid tag '1 '"),
    (("dataset", "download", "ds:first\t", "{out}"), 2, "invalid tag"),
    (("dataset", "download", "", "{out}"), 2, "invalid dataset name ''"),
    (("dataset", "download", "d\u00e9", "{out}"), 2, "invalid dataset name"),
    (("dataset", "download", "a" * 129, "{out}"), 2, "1-128 characters"),
    (("dataset", "download", "a" * 100000, "{out}"), 2, "100000 characters"),
    (("dataset", "download", "../ds", "{out}"), 2, "invalid dataset name"),
    (("dataset", "download", "nosuch", "{out}"), 3, "dataset 'nosuch' does not exist"),
    (("dataset", "download", "ds:7", "{out}"), 3, "has no version 7"),
    (("dataset", "download", "ds:nosuchtag", "{out}"), 3, "has no tag 'nosuchtag'"),
    (("dataset", "download", "ds", ""), 2, "download destination '' is empty"),
    (("dataset", "download", "ds", "{out}", "--workers", "0"), 2, "--workers"),
    (("dataset", "download", "ds", "{out}", "--workers", "-3"), 2, "--workers"),
    (("dataset", "download", "ds", "{out}", "--workers", HUGE), 2, "--workers"),
    (("dataset", "download", "ds", "{out}", "--include", ""), 2, "--include ''"),
    (("dataset", "download", "ds", "{out}", "--exclude", "  "), 2, "--exclude '  '"),
    (("dataset", "download", "ds"), 2, "Missing argument 'DEST'"),
    (("dataset", "info", ""), 2, "invalid dataset name ''"),
    (("dataset", "info", "nosuch"), 3, "does not exist"),
    (("dataset", "inspect", f"ds:{HUGE}"), 2, "version numbers go up to"),
    (("dataset", "inspect", "ds", "--include", ""), 2, "--include"),
    (("dataset", "diff", "ds:1", "ds:0"), 2, "versions start at 1"),
    (("dataset", "diff", "ds:1", "ds:\u0662"), 2, "digits 0-9"),
    (("dataset", "tag", "ds:1", "--set", ""), 2, "invalid tag ''"),
    (("dataset", "tag", "ds:1", "--set", "12"), 2, "cannot be a number"),
    (("dataset", "tag", "ds:1", "--set", "-12"), 2, "cannot be a number"),
    (("dataset", "tag", "ds:1", "--set", "latest"), 2, "maintained automatically"),
    (("dataset", "tag", "ds:1", "--set", "a b"), 2, "invalid tag 'a b'"),
    (("dataset", "tag", "ds:1", "--delete", ""), 2, "invalid tag ''"),
    (("dataset", "tag", f"ds:{HUGE}", "--set", "x"), 2, "version numbers go up to"),
    (("dataset", "tag", "ds:1"), 2, "give --set TAG or --delete TAG"),
    (("dataset", "metadata", "ds:1", "--set", "=v"), 2, "invalid --set '=v': the KEY of KEY=VALUE"),
    (("dataset", "metadata", "ds:1", "--set", "  =v"), 2, "invalid --set '  =v'"),
    (("dataset", "metadata", "ds:1", "--set", "novalue"), 2, "expected KEY=VALUE"),
    (("dataset", "metadata", "ds:1", "--set", "a\nb=v"), 2, "invalid --set 'a\\nb=v'"),
    (("dataset", "metadata", "ds:1", "--delete", ""), 2, "invalid --delete key ''"),
    (("dataset", "label", "ds", "--set", "=v"), 2, "invalid --set '=v'"),
    (("dataset", "label", "ds", "--delete", " "), 2, "invalid --delete key ' '"),
    (("dataset", "label", "", "--set", "k=v"), 2, "invalid dataset name ''"),
    (("dataset", "rename", "ds", ""), 2, "invalid dataset name ''"),
    (("dataset", "rename", "ds", "a/b"), 2, "invalid dataset name 'a/b'"),
    (("dataset", "rename", "", "x"), 2, "invalid dataset name ''"),
    (("dataset", "rename", "ds", "taken"), 4, "already exists"),
    (("dataset", "delete", "ds:0"), 2, "versions start at 1"),
    (("dataset", "delete", f"ds:{HUGE}"), 2, "version numbers go up to"),
    (("dataset", "delete", "ds"), 2, "say which version"),
    (("dataset", "delete", "ds:1", "--all"), 2, "give just NAME"),
    (("dataset", "upload", "", "{src}"), 2, "invalid dataset name ''"),
    (("dataset", "upload", "ds:", "{src}"), 2, "nothing after ':'"),
    (("dataset", "upload", "ds:3", "{src}"), 2, "version numbers are assigned"),
    (("dataset", "upload", "ds:\u0663", "{src}"), 2, "digits 0-9"),
    (("dataset", "upload", "ds:latest", "{src}"), 2, "maintained automatically"),
    (("dataset", "upload", "ds", ""), 2, "an empty path"),
    (("dataset", "upload", "ds", "{src}/nosuch"), 2, "no such file or directory"),
    (("dataset", "upload", "ds", "{src}", "--include", ""), 2, "--include ''"),
    (("dataset", "upload", "ds", "{src}", "--exclude", " "), 2, "--exclude ' '"),
    (("dataset", "upload", "ds", "{src}", "--workers", "0"), 2, "--workers"),
    (("dataset", "upload", "ds", "{src}", "--workers", "-1"), 2, "--workers"),
    (("dataset", "upload", "ds", "{src}", "--workers", HUGE), 2, "--workers"),
    (("dataset", "upload", "ds", "{src}", "--metadata", "=x"), 2, "invalid --metadata '=x'"),
    (("dataset", "upload", "ds", "{src}", "--label", "=x"), 2, "invalid --label '=x'"),
    (("dataset", "upload", "ds"), 2, "Missing argument"),
    (("dataset", "retain", "ds", "--keep-last", "-1"), 2, "--keep-last"),
    (("dataset", "retain", "ds", "--keep-last", "0"), 2, "--keep-last"),
    (("dataset", "retain", "ds", "--keep-last", "many"), 2, "--keep-last"),
    (("dataset", "retain", "ds", "--keep-within", "-3d"), 2, "--keep-within"),
    (("dataset", "retain", "ds", "--keep-within", "inf"), 2, "is not a duration"),
    (("dataset", "retain", "ds", "--keep-within", "nan"), 2, "is not a duration"),
    (("dataset", "retain", "ds", "--keep-within", "1e400"), 2, "is not a duration"),
    (("dataset", "retain", "ds", "--keep-within", "  "), 2, "is not a duration"),
    (("dataset", "retain", "ds", "--keep-within", "7 days"), 2, "is not a duration"),
    (("dataset", "retain", "ds", "--keep-within", "\u0661d"), 2, "is not a duration"),
    (("dataset", "retain", "ds"), 2, "give at least one rule"),
    (("store", "gc", "--min-age", "-1"), 2, "--min-age"),
    (("store", "gc", "--min-age", "nan"), 2, "--min-age"),
]


@pytest.mark.parametrize("args,code,needle", BAD_INPUT, ids=[f"{i:03d}" for i in range(len(BAD_INPUT))])
def test_bad_input_is_one_line_and_changes_nothing(cli, store, tmp_path, args, code, needle):
    before = store_state(cli)
    out = tmp_path / "out"
    args = [a.replace("{out}", str(out)).replace("{src}", str(store["src"])) for a in args]
    assert_error(cli(*args, check=False), code, needle)
    assert store_state(cli) == before
    assert not out.exists()


@pytest.mark.parametrize("value", ["", "  ", "\t", "file://"])
def test_an_empty_store_option_is_refused(tmp_path, value):
    cli = Cli(tmp_path)
    work = tmp_path / "work"
    write_file(work / "f.txt", b"x")
    before = sorted(os.listdir(work))
    runs = [(["--store", value], cli.env)]
    if value:  # an empty $OSMO_STORE counts as unset (the default store): only a blank one is refused
        runs.append(([], {**cli.env, "OSMO_STORE": value}))
    for args in (("dataset", "list"), ("dataset", "upload", "ds", str(work / "f.txt"))):
        for option, env in runs:
            proc = subprocess.run([sys.executable, "-m", "osmo_store.cli.main", *option, *args],
                                  env=env, cwd=work, capture_output=True, text=True, timeout=120)
            assert_error(Result(proc), 2, f"--store (or $OSMO_STORE) {value!r} names no store")
    assert sorted(os.listdir(work)) == before  # no store was made in the working folder


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"[a-z]{1,3}:-?[0-9\u0660-\u0669]{0,30}", fullmatch=True))
def test_parse_ref_raises_only_usage_errors(text):
    try:
        ref = parse_ref(text)
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert parse_ref(str(ref)) == ref
    assert ref.version is None or 1 <= ref.version <= MAX_VERSION
    assert ref.name.isascii() and (ref.tag is None or ref.tag.isascii())


# --- 2. overlap with the store and its index --------------------------------------------------------

def _index_dir(cli: Cli) -> str:
    (only,) = os.listdir(os.path.join(cli.env["OSMO_CACHE_DIR"], "index"))
    return os.path.join(cli.env["OSMO_CACHE_DIR"], "index", only)


OVERLAPS = [
    # (command, path, how it overlaps, what it overlaps)
    ("upload", "{store}", "is", "the store"),
    ("upload", "{store}/log", "is inside", "the store"),
    ("upload", "{store}/config", "is inside", "the store"),
    ("upload", "{tmp}", "contains", "the store"),
    ("upload", "{tmp}/link-to-store/packs", "is inside", "the store"),
    ("upload", "{tmp}/src/../store", "is", "the store"),
    ("upload", "{index}", "is", "osmo's local index"),
    ("upload", "{cache}", "contains", "osmo's local index"),
    ("download", "{store}", "is", "the store"),
    ("download", "{store}/packs", "is inside", "the store"),
    ("download", "{store}/new/deeper", "is inside", "the store"),
    ("download", "{tmp}", "contains", "the store"),
    ("download", "{tmp}/link-to-store", "is", "the store"),
    ("download", "{tmp}/link-to-store/fresh", "is inside", "the store"),
    ("download", "{tmp}/nosuch/../store", "is", "the store"),
    ("download", "{index}", "is", "osmo's local index"),
    ("download", "{index}/fresh", "is inside", "osmo's local index"),
    ("download", "{cache}", "contains", "osmo's local index"),
]


@pytest.mark.parametrize("command,path,relation,what", OVERLAPS)
def test_transfers_never_touch_the_store_or_its_index(cli, store, tmp_path, command, path, relation, what):
    """No upload reads, and no download writes, the store or this store's local index."""
    os.symlink(cli.store, tmp_path / "link-to-store")
    index = _index_dir(cli)
    path = path.format(store=cli.store, tmp=tmp_path, index=index, cache=cli.env["OSMO_CACHE_DIR"])
    before, cache_before = store_state(cli), snapshot(cli.env["OSMO_CACHE_DIR"], mtimes=False)
    if command == "upload":
        result, role = cli("dataset", "upload", "mirror", path, check=False), "upload source"
    else:
        result, role = cli("dataset", "download", "ds", path, check=False), "download destination"
    protected = os.path.realpath(cli.store if what == "the store" else index)
    assert_error(result, 2, f"{role} {path} {relation} {what} {protected}")
    assert store_state(cli) == before
    assert snapshot(cli.env["OSMO_CACHE_DIR"], mtimes=False).keys() == cache_before.keys()
    assert not os.path.lexists(os.path.join(cli.store, "new")) and not os.path.lexists(os.path.join(index, "fresh"))


def test_relative_paths_into_the_store_are_refused(cli, store, tmp_path):
    before = store_state(cli)
    proc = subprocess.run(cli.argv("dataset", "download", "ds", "."), env=cli.env, cwd=cli.store,
                          capture_output=True, text=True, timeout=120)
    assert_error(Result(proc), 2, f"download destination . is the store {cli.store}")
    proc = subprocess.run(cli.argv("dataset", "upload", "up", "."), env=cli.env, cwd=os.path.join(cli.store, "log"),
                          capture_output=True, text=True, timeout=120)
    assert_error(Result(proc), 2, f"upload source . is inside the store {cli.store}")
    assert store_state(cli) == before


def test_a_bind_mount_of_the_store_is_seen_through(cli, store, tmp_path):
    """The store mounted a second time (inside the source, or as the destination) is still the store.
    The mounts live in a private mount namespace of the test's shell, gone when it exits."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare is missing: apt-get install -y util-linux")
    src = tmp_path / "with-mount"
    write_file(src / "f.txt", b"data")
    (src / "mnt").mkdir()
    (tmp_path / "dest").mkdir()
    before = store_state(cli)
    osmo = " ".join(f"'{a}'" for a in cli.argv())
    script = (f"mount --bind '{cli.store}' '{src}/mnt' && mount --bind '{cli.store}' '{tmp_path}/dest' && "
              f"{osmo} dataset upload mirror '{src}'; echo \"upload=$?\" >&2; "
              f"{osmo} dataset download ds '{tmp_path}/dest/sub'; echo \"download=$?\" >&2")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], env=cli.env,
                          capture_output=True, text=True, timeout=300)
    assert "upload=2" in proc.stderr and "download=2" in proc.stderr, proc.stderr
    assert f"{src}/mnt is the store {cli.store} (reached through a mount)" in proc.stderr
    assert f"download destination {tmp_path}/dest/sub is inside the store {cli.store}" in proc.stderr
    assert store_state(cli) == before


def test_checksum_of_the_store_folder_is_allowed(cli, store):
    """Read-only: computing a checksum of the store folder cannot hurt it."""
    before = store_state(cli)
    assert cli("dataset", "checksum", cli.store, "--json").json()["files"] == len(before)
    assert store_state(cli) == before


# --- 3. an upload that selects no file --------------------------------------------------------------

def _versions(cli: Cli, name: str) -> list[int]:
    rows = {r["name"]: r for r in cli("dataset", "list", "--json").json()}
    if name not in rows:
        return []
    return [v["version"] for v in cli("dataset", "info", name, "--json").json()["versions"]]


@pytest.mark.parametrize("case", ["empty folder", "all excluded", "include matches none", "only links and fifos",
                                  "two empty sources", "nested empty folders"])
def test_an_upload_selecting_nothing_commits_nothing(cli, store, tmp_path, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [str(empty)]
    needle = "no files found"
    if case == "all excluded":
        args = [str(store["src"]), "--exclude", "*"]
        needle = "3 files excluded by --include/--exclude"
    elif case == "include matches none":
        args = [str(store["src"]), "--include", "*.mcap", "--exclude", "sub"]
        needle = "3 files excluded by --include/--exclude"
    elif case == "only links and fifos":
        os.symlink(store["src"] / "a.txt", empty / "link")
        os.symlink(store["src"], empty / "folder-link")
        os.mkfifo(empty / "fifo")
        needle = "3 skipped (symbolic links or special files)"
    elif case == "two empty sources":
        (tmp_path / "empty2").mkdir()
        args = [str(empty), str(tmp_path / "empty2")]
    elif case == "nested empty folders":
        (empty / "a" / "b" / "c").mkdir(parents=True)
    before = store_state(cli)
    for name in ("ds", "fresh"):
        result = cli("dataset", "upload", name, *args, check=False)
        assert_error(result, 2, "nothing to upload from", needle, "nothing was committed", "--allow-empty")
        assert store_state(cli) == before
    assert _versions(cli, "ds") == [1, 2] and _versions(cli, "fresh") == []
    assert cli("dataset", "download", "ds", str(tmp_path / "latest")).code == 0
    assert sorted(snapshot(tmp_path / "latest")) == ["a.txt", "c.txt", "sub/b.bin"]


def test_allow_empty_commits_an_empty_version(cli, store, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("dataset", "upload", "ds", str(tmp_path / "empty"), "--allow-empty", "--json").json()
    assert result["version"] == 3 and result["files"] == 0
    assert _versions(cli, "ds") == [1, 2, 3]
    result = cli("dataset", "upload", "ds", str(store["src"]), "--exclude", "*", "--allow-empty", "--json").json()
    assert result["version"] == 4 and result["files"] == 0
    assert "--allow-empty" in cli("dataset", "upload", "--help").out


# --- 4. a file that changes while it is read --------------------------------------------------------

WRITER = """
import os, sys, time
path, mode, stop = sys.argv[1], sys.argv[2], sys.argv[3]
fd = os.open(path, os.O_WRONLY | (os.O_APPEND if mode == "append" else 0))
print("writing", flush=True)
i = 0
while not os.path.exists(stop):
    if mode == "append":
        os.write(fd, b"more log lines\\n")
    else:
        os.pwrite(fd, bytes([i % 251]), (i * 7919) % 1_000_000)
    i += 1
    time.sleep(0.001)
"""


@pytest.mark.parametrize("mode", ["rewrite", "append"])
def test_a_file_written_during_the_upload_fails_it(cli, tmp_path, mode):
    """A real writer process keeps changing a big file (tiny chunks make reading it take a while):
    every read sees a change, so the upload fails naming the file and commits nothing."""
    cli.init_tiny()
    src = tmp_path / "src"
    write_file(src / "steady.txt", b"steady\n")
    write_file(src / "busy.bin", os.urandom(6_000_000))
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(src / "busy.bin"), mode, str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "writing\n"
        before = store_state(cli)
        result = cli("dataset", "upload", "ds", str(src), check=False)
    finally:
        stop.touch()
        writer.wait(timeout=30)
    assert_error(result, SourceChangedError.exit_code, str(src / "busy.bin"),
                 f"changed while it was read ({READ_ATTEMPTS} attempts)", "nothing was committed")
    assert not [k for k in snapshot(cli.store) if k.startswith("log/")]
    assert [k for k in before if k.startswith("log/")] == []
    assert cli("dataset", "list", "--json").json() == []
    # once the writer is done, the same upload goes through and holds the file as it is now
    cli("dataset", "upload", "ds", str(src))
    cli("dataset", "download", "ds", str(tmp_path / "back"))
    assert snapshot(tmp_path / "back", mtimes=False) == snapshot(src, mtimes=False)


def _change_once_while_read(monkeypatch, path, change):
    """Apply ``change(path)`` once, right after the first block of ``path`` has been read."""
    real = fileread_mod.Chunker.blocks
    state = {"reads": 0, "changed": False}

    def blocks(self, f):
        first = True
        for block in real(self, f):
            yield block
            if first and not state["changed"] and state["current"] == path:
                change(path)
                state["changed"] = True
            first = False

    real_read = fileread_mod.FileReader._read

    def read(self, src, *rest):
        if src.abspath == str(path):
            state["reads"] += 1
        state["current"] = src.abspath
        return real_read(self, src, *rest)

    monkeypatch.setattr(fileread_mod.Chunker, "blocks", blocks)
    monkeypatch.setattr(fileread_mod.FileReader, "_read", read)
    return state


def test_a_file_changed_once_while_read_is_read_again(local_repo, tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_file(src / "f.bin", os.urandom(200_000), mtime_ns=1_600_000_000_000_000_000)

    def rewrite(path):
        with open(path, "r+b") as f:
            f.seek(100_000)
            f.write(b"CHANGED" * 10)

    state = _change_once_while_read(monkeypatch, str(src / "f.bin"), rewrite)
    result = local_repo.upload(UploadRequest("ds", [str(src)]), workers=1)
    assert state["changed"] and state["reads"] >= 2
    (entry,) = local_repo.entries("ds")[1]
    assert entry.digest == file_digest(str(src / "f.bin")) and entry.size == 200_000
    assert result.version == 1


def test_a_file_that_grows_while_read_is_read_again(local_repo, tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_file(src / "log.txt", b"line\n" * 40_000, mtime_ns=1_600_000_000_000_000_000)

    def append(path):
        with open(path, "ab") as f:
            f.write(b"one more line\n" * 1000)

    state = _change_once_while_read(monkeypatch, str(src / "log.txt"), append)
    local_repo.upload(UploadRequest("ds", [str(src)]), workers=1)
    assert state["reads"] >= 2
    (entry,) = local_repo.entries("ds")[1]
    assert entry.size == os.path.getsize(src / "log.txt") == 200_000 + 14_000
    assert entry.digest == file_digest(str(src / "log.txt"))


@pytest.mark.parametrize("change,needle", [
    ("delete", "disappeared while it was being read"),
    ("symlink", "was replaced by a symbolic link"),
    ("fifo", "is no longer a regular file"),
])
def test_a_file_gone_between_scan_and_read_fails_the_upload(local_repo, tmp_path, monkeypatch, change, needle):
    src = tmp_path / "src"
    write_file(src / "a.txt", b"kept")
    write_file(src / "b.txt", b"going")
    secret = tmp_path / "outside-secret"
    write_file(secret, b"must never be uploaded")
    real_scan = upload_mod.scan

    def scan_then_change(*args, **kwargs):
        scanned = real_scan(*args, **kwargs)
        os.unlink(src / "b.txt")
        if change == "symlink":
            os.symlink(secret, src / "b.txt")
        elif change == "fifo":
            os.mkfifo(src / "b.txt")
        return scanned

    monkeypatch.setattr(upload_mod, "scan", scan_then_change)
    with pytest.raises(SourceChangedError, match=needle) as info:
        local_repo.upload(UploadRequest("ds", [str(src)]), workers=1)
    assert str(src / "b.txt") in str(info.value)
    assert local_repo.catalog.dataset_id("ds") is None


def test_a_file_that_shrinks_between_scan_and_read_is_stored_as_it_is(local_repo, tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_file(src / "f.bin", os.urandom(50_000), mtime_ns=1_600_000_000_000_000_000)
    real_scan = upload_mod.scan

    def scan_then_shrink(*args, **kwargs):
        scanned = real_scan(*args, **kwargs)
        os.truncate(src / "f.bin", 1234)
        return scanned

    monkeypatch.setattr(upload_mod, "scan", scan_then_shrink)
    local_repo.upload(UploadRequest("ds", [str(src)]), workers=1)
    (entry,) = local_repo.entries("ds")[1]
    assert entry.size == 1234 and entry.digest == file_digest(str(src / "f.bin"))


# --- 5. temporary files of a killed download --------------------------------------------------------

def test_a_killed_download_leaves_no_temporary_files_once_a_later_one_completes(cli, tmp_path):
    cli.init_tiny()
    src = tmp_path / "src"
    for i in range(6):
        write_file(src / f"d{i % 2}" / f"f{i}.bin", os.urandom(300_000))
    cli("dataset", "upload", "ds", str(src))
    dest = tmp_path / "dest"
    for attempt in range(2):  # killed twice: parts of both runs pile up
        proc = subprocess.Popen([sys.executable, os.path.join(HELPERS, "stalling_download.py"), *cli.argv()[3:],
                                 "dataset", "download", "ds", str(dest), "--workers", "3"],
                                env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout.readline() == b"stalled\n", proc.stderr.read()
            time.sleep(0.2)  # let the other writer threads reach their own stall
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    left = part_files(dest)
    assert len(left) >= 2
    user_files = {".osmo-part-notours": b"a user's file", ".osmo-part-" + "A" * 32: b"upper case",
                  ".osmo-part-" + "a" * 31: b"too short", "d0/.osmo-part-" + "b" * 33: b"too long",
                  "d1/osmo-part-" + "c" * 32: b"no dot"}
    for rel, data in user_files.items():
        write_file(dest / rel, data)
    os.symlink(tmp_path / "outside", dest / (".osmo-part-" + "d" * 32))  # a link: never followed nor removed
    write_file(tmp_path / "outside", b"outside the destination")

    cli("dataset", "download", "ds", str(dest))
    assert part_files(dest) == sorted([".osmo-part-notours", ".osmo-part-" + "A" * 32, ".osmo-part-" + "a" * 31,
                                       "d0/.osmo-part-" + "b" * 33, ".osmo-part-" + "d" * 32])
    for rel, data in user_files.items():
        assert (dest / rel).read_bytes() == data
    assert (tmp_path / "outside").read_bytes() == b"outside the destination"
    got = {k: v for k, v in snapshot(dest, mtimes=False).items() if "osmo-part" not in k}
    assert got == snapshot(src, mtimes=False)


def test_temporary_files_of_a_running_download_are_kept(tmp_path):
    """A part file some live process holds locked (a download still writing into the same folder) is
    not removed; once that process is gone it is."""
    name = ".osmo-part-" + uuid.uuid4().hex
    write_file(tmp_path / "dest" / "sub" / name, b"being written")
    fd = os.open(tmp_path / "dest" / "sub" / name, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.stdin.read()"], stdin=subprocess.PIPE,
                              pass_fds=(fd,))
    os.close(fd)  # the lock now lives on in the holder process only
    try:
        assert remove_stale_parts(str(tmp_path / "dest")) == 0
        assert (tmp_path / "dest" / "sub" / name).exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert remove_stale_parts(str(tmp_path / "dest")) == 1
    assert not (tmp_path / "dest" / "sub" / name).exists()


# --- 6. a command racing a rename by another client -------------------------------------------------

def _other_client(cli: Cli, tmp_path) -> Cli:
    other = Cli(tmp_path)
    other.env = {**cli.env, "OSMO_CACHE_DIR": str(tmp_path / "other-cache")}
    return other


def test_a_reference_to_a_renamed_dataset_names_the_one_that_resolves(cli, store, tmp_path):
    other = _other_client(cli, tmp_path)
    other("dataset", "rename", "ds", "drives")  # this client's index has not seen it yet
    for args, use in [
        (("dataset", "download", "ds:1", str(tmp_path / "out")), "drives:1"),
        (("dataset", "download", "ds", str(tmp_path / "out")), "drives"),
        (("dataset", "download", "ds:first", str(tmp_path / "out")), "drives:first"),
        (("dataset", "info", "ds"), "drives"),
        (("dataset", "inspect", "ds:2"), "drives:2"),
        (("dataset", "diff", "ds:1", "ds:2"), "drives:1"),
        (("dataset", "tag", "ds:1", "--set", "x"), "drives:1"),
        (("dataset", "metadata", "ds:2", "--set", "k=v"), "drives:2"),
        (("dataset", "label", "ds", "--set", "k=v"), "drives"),
        (("dataset", "delete", "ds:2"), "drives:2"),
        (("dataset", "delete", "ds", "--all"), "drives"),
        (("dataset", "rename", "ds", "elsewhere"), "drives"),
        (("dataset", "retain", "ds", "--keep-last", "1"), "drives"),
    ]:
        before = store_state(cli)
        assert_error(cli(*args, check=False), 3, f"dataset 'ds' was renamed to 'drives': use {use}")
        assert store_state(cli) == before
    assert not (tmp_path / "out").exists()

    other("dataset", "rename", "drives", "drives-2026")  # renamed again: the newest name is given
    assert_error(cli("dataset", "download", "ds:2", str(tmp_path / "out"), check=False), 3,
                 "dataset 'ds' was renamed to 'drives-2026': use drives-2026:2")
    assert_error(cli("dataset", "info", "drives", check=False), 3, "use drives-2026")
    other("dataset", "delete", "drives-2026", "--all")
    assert_error(cli("dataset", "download", "ds:2", str(tmp_path / "out"), check=False), 3,
                 "dataset 'ds' does not exist (it was renamed to 'drives-2026', since deleted)")


def test_a_name_taken_again_means_the_new_dataset(cli, store, tmp_path):
    """After ``ds`` was renamed away, an upload under ``ds`` starts a new dataset (and says so); its
    references resolve in the new dataset, and a miss points at the former one."""
    _other_client(cli, tmp_path)("dataset", "rename", "ds", "old-ds")
    write_file(tmp_path / "new" / "n.txt", b"new dataset")
    result = cli("dataset", "upload", "ds", str(tmp_path / "new"), "--json")
    assert result.json()["version"] == 1
    assert "dataset 'ds' was renamed to 'old-ds'; this upload starts a new dataset 'ds'" in result.err
    cli("dataset", "download", "ds:1", str(tmp_path / "out"))
    assert (tmp_path / "out" / "n.txt").read_bytes() == b"new dataset"
    assert_error(cli("dataset", "download", "ds:2", str(tmp_path / "out2"), check=False), 3,
                 "has no version 2 (the former dataset 'ds' was renamed to 'old-ds': use old-ds:2)")
    assert_error(cli("dataset", "download", "ds:first", str(tmp_path / "out2"), check=False), 3,
                 "has no tag 'first' (the former dataset 'ds' was renamed to 'old-ds': use old-ds:first)")
    assert_error(cli("dataset", "download", "ds:3", str(tmp_path / "out2"), check=False), 3,
                 "dataset 'ds' has no version 3")


def test_reindex_rebuilds_the_former_names(cli, store, tmp_path):
    other = _other_client(cli, tmp_path)
    other("dataset", "rename", "ds", "a")
    other("dataset", "rename", "a", "b")
    cli("dataset", "list")
    with Repository.open(cli.store, cache_dir=cli.env["OSMO_CACHE_DIR"]) as repo:
        before = repo.index.dump(["renames"])
    assert len(before["renames"]) == 2
    cli("store", "reindex")
    with Repository.open(cli.store, cache_dir=cli.env["OSMO_CACHE_DIR"]) as repo:
        assert repo.index.dump(["renames"]) == before
    assert_error(cli("dataset", "info", "ds", check=False), 3, "dataset 'ds' was renamed to 'b': use b")

