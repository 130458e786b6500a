"""``osmo workflow rsync`` (docs/INTERACTIVE.md) against real running tasks of the local runner, with real
rsync on both sides: namespaces and plain host processes (one sleeping workflow per mode, shared by the
module's tests; the host's rsync on the task side), rootless namespaces (uid 65534), and a task in
Podman (the test image's rsync).

What is checked: a tree (several files, subfolders, a name with a space, a 20 MB file) goes to the
task and back byte for byte, and a re-run transfers nothing; ``--delete`` (and not without it),
``--exclude`` and ``--dry-run`` in both directions; a transfer killed midway keeps its partial data
in the task and the next run sends less than the file; ``task:`` paths name the task's own folders
(``/osmo/work``, ``/osmo/data/output``) in both modes and its private /tmp in namespaces mode, never
the host's; the exit codes (missing source 23, unknown task 3 with the closest name, a task that ended
4, usage 2) and the one-line errors for rsync missing here and in the task (a task whose PATH lacks it,
in plain mode and in a container). Rootless and in a container, the host's /etc is out of the task
side's reach (as root in namespaces mode the task's view *is* the host's outside /tmp and /osmo: see
docs/WORKFLOWS.md, so that is not checked there).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.tools import require_tool
from helpers.waiting import wait_for

from osmo_run.rsync_cli import local_path, task_path

from .conftest import Osmo, require_namespace_tools, tasks_of, write_spec
from .test_rootless_isolation import NOBODY, _nobody_argv, _osmo, workspace  # noqa: F401  (the fixture)

BIG = 20_000_000
SLEEPER = """
    workflow:
      name: sleeper
      tasks:
      - name: box
        image: ubuntu:24.04
        command: [/bin/sh, -c]
        args: ['echo ready; exec sleep 900']
    """
WITHOUT_RSYNC = """
    workflow:
      name: bare
      tasks:
      - name: box
        image: ubuntu:24.04
        command: [/bin/sh, -c]
        args: ['echo ready; exec /bin/sleep 900']
        environment:
          PATH: /nonexistent
    """

PODMAN = """
    workflow:
      name: boxes
      tasks:
      - name: box
        image: ubuntu:24.04
        command: [sh, -c]
        args: ['echo ready; exec sleep 900']
      - name: bare
        image: ubuntu:24.04
        command: [/bin/sh, -c]
        args: ['echo ready; exec /bin/sleep 900']
        environment:
          PATH: /nonexistent
    """


@dataclass
class Sleeper:
    """A running workflow whose task ``box`` sleeps; ``run_dir`` is its attempt's folder on the host."""
    osmo: Osmo
    workflow_id: str
    run_dir: Path

    @property
    def work(self) -> Path:
        return self.run_dir / "work"

    def rsync(self, *args: str, check: bool = True, task: str = "box"):
        return self.osmo("rsync", self.workflow_id, task, *args, check=check)


def _start(osmo: Osmo, folder: Path, spec: str = SLEEPER, task: str = "box") -> Sleeper:
    workflow_id = osmo.submit(write_spec(folder, spec), wait=False)
    osmo.wait_log(workflow_id, "ready", task)
    run_dir = tasks_of(osmo.query(workflow_id))[task]["attempts"][-1]["run_dir"]
    return Sleeper(osmo, workflow_id, Path(run_dir))


def _stop(sleeper: Sleeper) -> None:
    sleeper.osmo("cancel", sleeper.workflow_id, check=False)
    sleeper.osmo.wait(sleeper.workflow_id, 60)
    for line in sleeper.osmo.processes_left():
        os.kill(int(line.split(":")[0]), signal.SIGKILL)


@pytest.fixture(scope="module", params=["namespaces", "none"])
def sleeper(request, tmp_path_factory) -> Sleeper:
    """One sleeping task per isolation mode, shared by the module's tests (each uses its own folders)."""
    require_tool("rsync")
    if request.param == "namespaces":
        require_namespace_tools()
    folder = tmp_path_factory.mktemp(f"rsync-{request.param}")
    osmo = Osmo(folder / "osmo", OSMO_ISOLATION=request.param)
    osmo.pool(grace_period="1s", lead_head_start="0.2s")
    osmo.mode = request.param
    running = _start(osmo, folder)
    yield running
    _stop(running)


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), rsync's partial folder left out."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".rsync-partial" not in p.parts}


def _tree(root: Path, big: bool = False) -> dict[str, bytes]:
    rng = random.Random(str(root))
    contents = {"a.txt": b"alpha\n", "with space.txt": b"a name with a space\n", "sub/b.txt": b"beta\n",
                "sub/deeper/c.bin": rng.randbytes(70_000), "sub/empty-not": b""}
    if big:
        contents["big.bin"] = rng.randbytes(BIG)
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return contents


def _changes(out: str) -> list[str]:
    """The file lines of rsync's --itemize-changes (what was sent, received or deleted)."""
    return [line for line in out.splitlines() if re.match(r"^([<>ch.*][fdLDS]|\*deleting)", line)]


def _one_line_error(result, code: int) -> str:
    assert result.code == code, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("osmo: error: "), result.err
    return lines[0]


@pytest.mark.parametrize("given, local, pod", [
    ("", ".", "/osmo/work"), ("x/", "x/", "/osmo/work/x/"), ("/osmo/work", ".", "/osmo/work"),
    ("/osmo/work/a/../b/", "b/", "/osmo/work/b/"), ("/osmo/data/output/", "../data/output/", "/osmo/data/output/"),
    ("../data", "../data", "/osmo/data"), ("/tmp/x/", "/tmp/x/", "/tmp/x/"), ("../../..", "/", "/"),
    (":odd", "./:odd", "/osmo/work/:odd"),
])
def test_task_paths_are_relative_to_the_working_folder_on_the_local_runner(given, local, pod):
    assert task_path(given, local_runner=True) == local
    assert task_path(given, local_runner=False) == pod


def test_a_local_path_is_never_taken_for_a_host():
    assert [local_path(p) for p in ("a:b", "a:b/c", "dir/a:b", "/x:y", "plain")] == \
        ["./a:b", "./a:b/c", "dir/a:b", "/x:y", "plain"]


def test_a_tree_goes_to_the_task_and_back_byte_for_byte_and_a_rerun_sends_nothing(sleeper, tmp_path):
    source = tmp_path / "source"
    contents = _tree(source, big=True)
    (source / "sub" / "b.txt").chmod(0o751)
    sleeper.rsync(f"{source}/", "task:tree")  # relative: the task's working folder
    assert _files(sleeper.work / "tree") == contents
    assert (sleeper.work / "tree" / "sub" / "b.txt").stat().st_mode & 0o777 == 0o751
    seen = sleeper.osmo("exec", "--no-tty", sleeper.workflow_id, "box", "--", "sha256sum", "tree/big.bin").out
    assert seen.split()[0] == hashlib.sha256(contents["big.bin"]).hexdigest()

    again = sleeper.rsync(f"{source}/", "task:/osmo/work/tree", "--itemize-changes", "--stats")
    assert _changes(again.out) == [] and "Number of regular files transferred: 0" in again.out, again.out

    back = tmp_path / "back"
    pulled = sleeper.rsync("task:/osmo/work/tree/", str(back), "--itemize-changes")
    assert _files(back) == contents
    assert sum(line.startswith(">f") for line in _changes(pulled.out)) == len(contents)
    assert int((back / "sub/deeper/c.bin").stat().st_mtime) == int((source / "sub/deeper/c.bin").stat().st_mtime)
    assert _changes(sleeper.rsync("task:tree/", str(back), "--itemize-changes").out) == []


def test_delete_exclude_and_dry_run_in_both_directions(sleeper, tmp_path):
    source = tmp_path / "source"
    contents = _tree(source)
    (source / "debug.log").write_text("local log\n")
    sleeper.rsync(f"{source}/", "task:sync", "--exclude", "*.log")
    assert _files(sleeper.work / "sync") == contents  # the .log left out
    sleeper.osmo("exec", "--no-tty", sleeper.workflow_id, "box", "--", "sh", "-c",
                 "echo stale > sync/stale.txt && echo theirs > sync/sub/old.log")

    sleeper.rsync(f"{source}/", "task:sync", "--exclude", "*.log")
    assert (sleeper.work / "sync" / "stale.txt").exists()  # no --delete: extra files stay
    dry = sleeper.rsync(f"{source}/", "task:sync", "--exclude", "*.log", "--delete", "--dry-run")
    assert "*deleting   stale.txt" in dry.out, dry.out
    assert (sleeper.work / "sync" / "stale.txt").exists()  # --dry-run changed nothing
    sleeper.rsync(f"{source}/", "task:sync", "--exclude", "*.log", "--delete")
    assert not (sleeper.work / "sync" / "stale.txt").exists()
    assert (sleeper.work / "sync" / "sub" / "old.log").read_text() == "theirs\n"  # excluded: not deleted
    assert _files(sleeper.work / "sync") == {**contents, "sub/old.log": b"theirs\n"}

    local = tmp_path / "local"
    sleeper.rsync("task:sync/", str(local), "--exclude", "c.bin")
    assert "sub/deeper/c.bin" not in _files(local) and (local / "sub" / "old.log").exists()
    (local / "mine.txt").write_text("only here\n")
    sleeper.rsync("task:sync/", str(local))
    assert (local / "mine.txt").exists()
    sleeper.rsync("task:sync/", str(local), "--delete")
    assert _files(local) == {**contents, "sub/old.log": b"theirs\n"}


def test_an_interrupted_transfer_keeps_its_partial_data_and_the_next_run_sends_less(sleeper, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    data = random.Random(7).randbytes(BIG)
    (source / "big.bin").write_bytes(data)
    destination = sleeper.work / "resume"
    argv = [sys.executable, "-m", "osmo_store.cli.main", "workflow", "rsync", sleeper.workflow_id, "box",
            f"{source}/", "task:resume", "--bwlimit", "2000"]  # KiB/s: about 10 s for the file
    proc = subprocess.Popen(argv, env=sleeper.osmo.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def receiving() -> bool:
            temporary = [p for p in destination.glob(".big.bin.*")] if destination.is_dir() else []
            return any(p.stat().st_size >= 3_000_000 for p in temporary)

        wait_for(receiving, 60, "3 MB of big.bin in the task")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 20, (proc.returncode, out, err)  # rsync's "interrupted"
    assert "Traceback" not in err
    partial = destination / ".rsync-partial" / "big.bin"
    kept = wait_for(lambda: partial.exists() and partial.stat().st_size, 10, "the partial file in the task")
    assert 3_000_000 <= kept < BIG and not (destination / "big.bin").exists()
    assert partial.read_bytes() == data[:kept]

    resumed = sleeper.rsync(f"{source}/", "task:resume", "--stats").out
    literal = int(re.search(r"Literal data: ([\d,]+)", resumed).group(1).replace(",", ""))
    matched = int(re.search(r"Matched data: ([\d,]+)", resumed).group(1).replace(",", ""))
    assert literal < BIG - 2_000_000 and matched >= kept - 100_000, resumed
    assert (destination / "big.bin").read_bytes() == data
    assert not (destination / ".rsync-partial").exists()  # used up, then removed


def test_task_paths_name_the_tasks_own_folders(sleeper, tmp_path):
    source = tmp_path / "source"
    contents = _tree(source)
    tag = uuid.uuid4().hex[:10]
    sleeper.rsync(f"{source}/", f"task:/osmo/data/output/{tag}")
    assert _files(sleeper.run_dir / "data" / "output" / tag) == contents
    sleeper.rsync(f"{source}/", f"task:/osmo/work/./x/../{tag}/")
    assert _files(sleeper.work / tag) == contents
    assert not Path(f"/osmo/data/output/{tag}").exists() and not Path(f"/osmo/work/{tag}").exists()
    back = tmp_path / "back"
    sleeper.rsync(f"task:../data/output/{tag}", str(back))  # relative to /osmo/work
    assert _files(back / tag) == contents


@pytest.mark.parametrize("sleeper", ["namespaces"], indirect=True)
def test_the_task_side_is_the_tasks_view_not_the_host(sleeper, tmp_path):
    (tmp_path / "f").write_text("in the task's /tmp\n")
    tag = f"osmo-rsync-{uuid.uuid4().hex[:10]}"
    sleeper.rsync(str(tmp_path / "f"), f"task:/tmp/{tag}/")
    assert not Path(f"/tmp/{tag}").exists()  # the task's /tmp is private
    seen = sleeper.osmo("exec", "--no-tty", sleeper.workflow_id, "box", "--", "cat", f"/tmp/{tag}/f")
    assert seen.out == "in the task's /tmp\n"
    back = tmp_path / "back"
    sleeper.rsync(f"task:/tmp/{tag}/f", f"{back}/")
    assert (back / "f").read_text() == "in the task's /tmp\n"
    refused = sleeper.rsync(str(tmp_path / "f"), f"task:/etc/{tag}", check=False)  # the host's files: read-only
    assert refused.code == 23 and "Read-only file system" in refused.err, refused.err
    assert not Path(f"/etc/{tag}").exists()


def test_exit_codes_tell_the_truth(sleeper, tmp_path):
    missing = sleeper.rsync(str(tmp_path / "no-such-file"), "task:x", check=False)
    assert missing.code == 23 and "no-such-file" in missing.err and "Traceback" not in missing.err, missing
    missing = sleeper.rsync("task:no-such-file", str(tmp_path / "y"), check=False)
    assert missing.code == 23 and "no-such-file" in missing.err and "Traceback" not in missing.err, missing
    assert not (tmp_path / "y").exists()

    line = _one_line_error(sleeper.rsync(str(tmp_path), "task:x", task="bxo", check=False), 3)
    assert "has no task 'bxo'" in line and "did you mean 'box'" in line
    line = _one_line_error(sleeper.osmo("rsync", sleeper.workflow_id + "0", "box", str(tmp_path), "task:x",
                                        check=False), 3)
    assert "did you mean" in line
    line = _one_line_error(sleeper.rsync(str(tmp_path), str(tmp_path / "z"), check=False), 2)
    assert "task:PATH" in line and not (tmp_path / "z").exists()
    _one_line_error(sleeper.rsync("task:a", "task:b", check=False), 2)


def test_a_task_that_ended_gives_execs_error_and_4(any_osmo, tmp_path):
    spec = SLEEPER.replace("echo ready; exec sleep 900", "echo done")
    workflow_id = any_osmo.submit(write_spec(tmp_path, spec))
    line = _one_line_error(any_osmo("rsync", workflow_id, "box", str(tmp_path), "task:x", check=False), 4)
    assert "task box has ended (COMPLETED" in line and f"osmo workflow exec --debug {workflow_id} box" in line


def test_rsync_missing_in_the_task_is_one_line_naming_it(tmp_path):
    """Plain mode looks rsync up on the task's PATH (here one without it)."""
    require_tool("rsync")
    osmo = Osmo(tmp_path / "osmo", OSMO_ISOLATION="none")
    osmo.pool(grace_period="1s", lead_head_start="0.2s")
    running = _start(osmo, tmp_path, WITHOUT_RSYNC)
    try:
        line = _one_line_error(running.rsync(str(tmp_path / "osmo"), "task:x", check=False), 127)
        assert "task box of workflow" in line and "rsync must be installed in its image" in line
    finally:
        _stop(running)


def test_rsync_missing_here_names_the_install_command(tmp_path):
    osmo = Osmo(tmp_path / "osmo", PATH=str(tmp_path / "empty-bin"))
    line = _one_line_error(osmo("rsync", "wf-1", "box", str(tmp_path), "task:x", check=False), 127)
    assert "rsync is not installed on this machine" in line and "apt-get install rsync" in line


def test_a_podman_task_uses_its_images_rsync(podman_store, tmp_path):
    """In a container the task side is the image's rsync (the test image has one, .ci/build-images.sh),
    its files the container's; a task whose PATH has no rsync gets the one-line error naming it."""
    require_tool("rsync")
    osmo = Osmo(tmp_path / "osmo", OSMO_ENGINE="podman", **podman_store.env)
    osmo.pool(grace_period="1s", lead_head_start="0.2s")
    running = _start(osmo, tmp_path, PODMAN)
    try:
        osmo.wait_log(running.workflow_id, "ready", "bare")
        source = tmp_path / "source"
        contents = _tree(source, big=True)
        running.rsync(f"{source}/", "task:tree")
        seen = osmo("exec", "--no-tty", running.workflow_id, "box", "--", "sha256sum", "/osmo/work/tree/big.bin").out
        assert seen.split()[0] == hashlib.sha256(contents["big.bin"]).hexdigest()
        tag = uuid.uuid4().hex[:10]
        running.rsync(f"{source}/", f"task:/etc/osmo-rsync-{tag}/")
        assert not Path(f"/etc/osmo-rsync-{tag}").exists()  # the container's /etc
        back = tmp_path / "back"
        (back / "mine.txt").parent.mkdir()
        (back / "mine.txt").write_text("only here\n")
        running.rsync(f"task:/etc/osmo-rsync-{tag}/", str(back), "--delete")
        assert _files(back) == contents

        line = _one_line_error(running.rsync(str(source), "task:x", task="bare", check=False), 127)
        assert "task bare of workflow" in line and "rsync must be installed in its image" in line
    finally:
        _stop(running)
    podman_store.check_empty(osmo)


def test_rsync_as_an_unprivileged_user_stays_in_the_tasks_view(workspace):  # noqa: F811
    """Rootless namespaces (the runner and rsync as uid 65534, test_rootless_isolation.py): files arrive as
    the task's root, i.e. that user on the host; the host's /etc is not the task's to write."""
    osmo = _osmo(workspace, "namespaces")
    running = _start_as_nobody(osmo, workspace)
    try:
        source = workspace / "source"
        contents = _tree(source)
        for path in [source, *source.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        pushed = running(f"{source}/", "task:tree")
        assert pushed.returncode == 0, pushed.stderr
        run_dir = Path(tasks_of(osmo.query("rl-1"))["box"]["attempts"][-1]["run_dir"])
        assert _files(run_dir / "work" / "tree") == contents
        assert {p.stat().st_uid for p in (run_dir / "work" / "tree").rglob("*")} == {NOBODY}
        pulled = running("task:/osmo/work/tree/", str(workspace / "back"))
        assert pulled.returncode == 0 and _files(workspace / "back") == contents, pulled.stderr

        tag = f"osmo-rsync-{uuid.uuid4().hex[:10]}"
        refused = running(str(source / "a.txt"), f"task:/etc/{tag}")
        assert refused.returncode == 23 and "Read-only file system" in refused.stderr, refused.stderr
        assert not Path(f"/etc/{tag}").exists()
    finally:
        osmo("cancel", "rl-1", check=False)
    assert osmo.processes_left() == []


def _start_as_nobody(osmo: Osmo, workspace: Path):
    """Submit SLEEPER as uid 65534; returns ``rsync(SRC, DEST)`` run as that user too."""
    spec = write_spec(workspace, SLEEPER.replace("name: sleeper", "name: rl"), "rl.yaml")
    spec.chmod(0o644)
    env = dict(osmo.env, HOME=str(osmo.root))
    stash = str(workspace / "stash")

    def as_nobody(*args: str) -> subprocess.CompletedProcess:
        argv = _nobody_argv([sys.executable, "-m", "osmo_store.cli.main", "workflow", *args], stash)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    submitted = as_nobody("submit", str(spec))
    assert submitted.returncode == 0, submitted.stderr
    osmo.wait_log("rl-1", "ready", timeout=60)
    return lambda src, dest: as_nobody("rsync", "rl-1", "box", src, dest)
