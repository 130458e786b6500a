"""Escape attempts against a task's view (docs/WORKFLOWS.md, "Isolation"): ``files:`` paths and the
task's own symbolic links try to reach the host, in every mode this machine supports: namespaces as
root, rootless namespaces as uid 65534 (how: test_rootless_isolation.py) and plain processes
(``isolation: none``).

Each attempt checks that the host is untouched (a sentinel folder keeps its bytes, modes, mtimes and
links; no file named with the test's tag appears where the attempts aim: /, /etc, /var/tmp, /tmp,
/osmo, /usr/bin) and that the outcome is the documented one: refused at validate (exit 2, the file,
line and field), the task failed before its command started (FAILED_START_ERROR, 3003, with the
reason), or the file written inside the task's own view or folders. The runtime attempts of one
mode share one workflow (a task per attempt, all running at once) to keep the suite fast.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path

import pytest
import yaml

from osmo_run.local.taskfiles import FilesError, overlay_roots, write_file, write_files

from .conftest import Osmo, require_namespace_tools, tasks_of, write_spec
from .test_rootless_isolation import NOBODY, _osmo, _submit_as_nobody, workspace  # noqa: F401 (fixture)

PAST_NS = 1_000_000_000 * 1_600_000_000  # 2020-09-13: any write would move a sentinel's mtime
SCANNED = ("/", "/etc", "/var/tmp", "/tmp", "/osmo", "/usr/bin")


class HostSentinel:
    """A folder on the host (in /var/tmp: visible, and overlaid, in a task's view) with a file, a
    folder, a symbolic link to a folder and one to a file, and a file at the top of the host's /;
    ``changes()`` lists what differs since."""

    def __init__(self, tag: str, owner: int | None = None) -> None:
        self.tag = tag
        self.root = Path(f"/var/tmp/osmo-escape-{tag}")
        self.top = Path(f"/osmo-escape-{tag}-top.txt")
        self.top.write_text("host top\n")
        self.own = {str(self.root), str(self.top)}
        for folder in (self.root, self.root / "dir", self.root / "target"):
            folder.mkdir(mode=0o755)
        (self.root / "victim.txt").write_text("host victim\n")
        (self.root / "victim.txt").chmod(0o640)
        (self.root / "dir" / "inner.txt").write_text("host inner\n")
        (self.root / "lnk").symlink_to(self.root / "target")
        (self.root / "victim-link").symlink_to("victim.txt")
        for path in [*self.root.rglob("*"), self.root, self.top]:
            if owner is not None:
                os.lchown(path, owner, owner)
            os.utime(path, ns=(PAST_NS, PAST_NS), follow_symlinks=False)
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple]:
        found = {}
        for path in [self.root, *self.root.rglob("*"), self.top]:
            st = os.lstat(path)
            body = os.readlink(path) if stat.S_ISLNK(st.st_mode) else \
                path.read_bytes() if stat.S_ISREG(st.st_mode) else None
            found[str(path)] = (stat.filemode(st.st_mode), st.st_uid, st.st_mtime_ns, body)
        return found

    def changes(self) -> list[str]:
        after = self.snapshot()
        changed = [f"{p}: {self.before.get(p)} -> {after.get(p)}" for p in sorted(set(self.before) | set(after))
                   if self.before.get(p) != after.get(p)]
        for folder in SCANNED:
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            changed += [f"new on the host: {os.path.join(folder, n)}" for n in names
                        if self.tag in n and os.path.join(folder, n) not in self.own]
        return changed

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.top.unlink(missing_ok=True)


# -- taskfiles on real folders (what plain mode and the view's writes go through) ----------------------

def _item(root: Path, path: str, data: bytes = b"new\n") -> dict:
    import base64
    return {"root": str(root), "path": path, "view": "/" + path, "data": base64.b64encode(data).decode(),
            "mode": 0o755}


def test_write_file_never_follows_a_link_nor_replaces_what_is_not_new(tmp_path):
    root, outside = tmp_path / "files", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "host.txt").write_text("host\n")
    (root / "up").symlink_to(outside)
    (root / "final").symlink_to(outside / "host.txt")
    (root / "plain.txt").write_text("earlier\n")
    os.mkfifo(root / "fifo")
    refused = {"up/x.txt": "/up is a symbolic link (to ", "final": "/final is a symbolic link",
               "plain.txt": "already exists", "fifo": "not a regular file",
               "plain.txt/x": "/plain.txt is not a folder", "a/../../x": "is not a normalised path",
               "up": "is a symbolic link"}
    for path, words in refused.items():
        with pytest.raises(FilesError) as caught:
            write_file(_item(root, path), exclusive=True)
        assert words in str(caught.value), (path, str(caught.value))
    assert sorted(os.listdir(outside)) == ["host.txt"] and (outside / "host.txt").read_text() == "host\n"
    assert (root / "plain.txt").read_text() == "earlier\n"
    write_file(_item(root, "deep/er/new.sh", b"#!/bin/sh\n"), exclusive=True)
    assert (root / "deep/er/new.sh").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE((root / "deep/er/new.sh").stat().st_mode) == 0o755
    write_file(_item(root, "plain.txt", b"replaced\n"), exclusive=False)  # as in an overlay
    assert (root / "plain.txt").read_text() == "replaced\n"


def test_overlay_roots_refuse_a_link_or_a_file_on_the_way(tmp_path):
    base = Path("/var/tmp") / f"osmo-escape-unit-{uuid.uuid4().hex[:8]}"
    (base / "real" / "sub").mkdir(parents=True)
    (base / "link").symlink_to(tmp_path)
    (base / "file").write_text("x")
    try:
        assert overlay_roots([f"{base}/real/sub/a", f"{base}/real/b", "/tmp/x", "/osmo/work/y",
                              f"/nonexistent-{uuid.uuid4().hex}/z"]) == [f"{base}/real"]
        with pytest.raises(FilesError, match=f"{base}/link is a symbolic link"):
            overlay_roots([f"{base}/link/x"])
        with pytest.raises(FilesError, match=f"{base}/file is not a folder"):
            overlay_roots([f"{base}/file/x"])
        with pytest.raises(FilesError, match="under /proc"):
            overlay_roots(["/proc/1/x"])
        write_files([_item(tmp_path, "ok.txt")])
        assert (tmp_path / "ok.txt").read_text() == "new\n"
    finally:
        shutil.rmtree(base)


# -- refused at validate, before anything runs --------------------------------------------------------

REFUSED_AT_VALIDATE = [
    ("/tmp/../proc/sys/kernel/x", "'/proc/sys/kernel/x') is under /proc"),
    ("/osmo/data/output/../../../dev/x", "is under /dev"),
    ("./a/../../b", "(that is '/osmo/b') is under /osmo"),
    ('"/tmp/invoice\\u202Egnp.sh"', "an invisible formatting character (U+202E)"),
    ('"/tmp/a\\0b"', "a NUL byte"),
    ("/tmp/" + "n" * 300, "a name of 300 bytes: the limit is 255 (NAME_MAX)"),
    ("/tmp" + "/d" * 2100, "bytes long: the limit is 4095 (PATH_MAX)"),
    ("/tmp/./x/../run.sh", "two files at path '/tmp/run.sh' (the first on line 8)"),
    ("/tmp/run.sh/inner", "'/tmp/run.sh' would be both a file and a folder"),
    ("/tmp/", "names a folder, not a file"),
]


def _spec_with_file(folder: Path, path: str, command: str = "[sh, /tmp/run.sh]") -> Path:
    """A one-task spec whose second ``files:`` entry (line 9) is at ``path``."""
    return write_spec(folder, f"""
        workflow:
          name: refused
          tasks:
          - name: a
            image: u
            command: {command}
            files:
            - {{path: /tmp/run.sh, contents: "echo hi"}}
            - {{path: {path}, contents: "escape"}}
        """)


@pytest.mark.parametrize("path, words", REFUSED_AT_VALIDATE, ids=[p[:24] for p, _ in REFUSED_AT_VALIDATE])
def test_validate_refuses_the_path_with_file_line_and_field(tmp_path, path, words):
    spec = _spec_with_file(tmp_path, path)
    done = Osmo(tmp_path / "osmo")("validate", spec, check=False)
    assert done.code == 2, done
    assert done.err.startswith(f"osmo: error: {spec}:9: workflow.tasks[0].files[1].path: "), done.err
    assert words in done.err and done.err.count("\n") == 1 and "Traceback" not in done.err


def test_submit_refuses_an_escaping_path_before_anything_runs(tmp_path):
    tag = uuid.uuid4().hex[:8]
    osmo = Osmo(tmp_path / "osmo")
    spec = _spec_with_file(tmp_path, f"/osmo/data/output/../input/x-{tag}", f"[touch, /var/tmp/ran-{tag}]")
    done = osmo("submit", spec, "--wait", check=False)
    assert done.code == 2 and "workflow.tasks[0].files[1].path: file path " in done.err, done
    assert "is under /osmo, the runner's folder" in done.err
    assert not (osmo.root / "state" / "workflows").exists() or not os.listdir(osmo.root / "state" / "workflows")
    assert not Path(f"/var/tmp/ran-{tag}").exists()


# -- run: every mode this machine supports -------------------------------------------------------------

def _wall(sentinel: HostSentinel, isolated: bool) -> tuple[dict, dict[str, str]]:
    """The workflow of escape attempts, and what the 'accept' task must find in its view."""
    tag, root = sentinel.tag, sentinel.root
    long_path = "/tmp/" + "/".join([f"{tag}-" + "d" * 240] * 10) + "/" + "f" * 255  # ~2.8 kB, names <= 255
    cases = {  # files: path as written -> (the path the task reads it at, contents)
        f"/tmp/../{root}/victim.txt": (f"{root}/victim.txt", "A: the review's /tmp/.. path\n"),
        f"/osmo/data/output/../../../{root}/new-{tag}.txt": (f"{root}/new-{tag}.txt", "B: out of the output\n"),
        f"../../etc/osmo-escape-{tag}.conf": (f"/etc/osmo-escape-{tag}.conf", "C: relative into /etc\n"),
        f"../../x-{tag}": (f"/x-{tag}", "D: relative into /\n"),
        f"/newtop-{tag}/sub/x": (f"/newtop-{tag}/sub/x", "E: a top-level folder the host lacks\n"),
        f"//{root}/dir/../dir/inner.txt": (f"{root}/dir/inner.txt", "F: over a host file\n"),
        f"/tmp/données-{tag}/模型.yaml": (f"/tmp/données-{tag}/模型.yaml", "G: ordinary unicode\n"),
        long_path: (long_path, "H: a long path\n"),
        "{{output}}/a/../from-files.txt": ("/osmo/data/output/from-files.txt", "I: into the output\n"),
        "/tmp/{{workflow_id}}/id.txt": ("/tmp/wall-1/id.txt", "J: a token in the path\n"),
    }
    script = "set -e\n" + "".join(f"cat '{seen}' > {{{{output}}}}/case-{n}.txt\n"
                                  for n, (seen, _) in enumerate(cases.values()))
    script += "pwd > {{output}}/pwd.txt\n"
    accept_files = [{"path": "run.sh", "contents": script}] + [
        {"path": written, "contents": body} for written, (_, body) in cases.items()]
    expected = {f"case-{n}.txt": body for n, (_, body) in enumerate(cases.values())}
    planter = ('if [ "$OSMO_ATTEMPT" -lt 2 ]; then\n'
               f"  rm -rf {{{{output}}}}/link wlink && ln -s {root}/target {{{{output}}}}/link && "
               f"ln -s {root}/target wlink && exit 3\n  exit 9\nfi\n"
               "cat {{output}}/link/planted.txt wlink/planted.txt > {{output}}/seen.txt\n")
    marker = {"image": "u", "command": ["sh", "-c", "touch {{output}}/ran"]}
    # the command itself writes host paths: the host's files are read-only in the task's view
    writer = "".join(f"if echo escape > {path} 2>/dev/null; then echo {path} >> {{{{output}}}}/written.txt; fi\n"
                     for path in (f"{root}/by-the-command.txt", f"{root}/victim.txt", f"/usr/local/osmo-escape-{sentinel.tag}",
                                  f"{root}/dir/inner.txt"))
    writer += "touch {{output}}/written.txt\n"
    doc = {"workflow": {"name": "wall", "tasks": [
        {"name": "accept", "image": "u", "command": ["sh", "/osmo/work/run.sh"], "files": accept_files},
        {"name": "sym-parent", **marker, "files": [{"path": f"{root}/side.txt", "contents": "side"},
                                                   {"path": f"{root}/lnk/planted.txt", "contents": "escape"}]},
        {"name": "sym-final", **marker, "files": [{"path": f"{root}/victim-link", "contents": "escape"}]},
        {"name": "not-folder", **marker, "files": [{"path": f"{root}/victim.txt/x", "contents": "escape"}]},
        {"name": "top-file", **marker, "files": [{"path": str(sentinel.top), "contents": "escape"}]},
        *([{"name": "writer", "image": "u", "command": ["sh", "-c", writer]}] if isolated else []),
        {"name": "planter", "image": "u", "command": ["sh", "-c", planter], "exitActions": {"RESCHEDULE": "3"},
         "files": [{"path": "{{output}}/link/planted.txt", "contents": "planted by files\n"},
                   {"path": "wlink/planted.txt", "contents": "planted in work\n"}]},
    ]}}
    return doc, expected


REFUSED_AT_START = {"sym-parent": "/lnk is a symbolic link (to ", "sym-final": "/victim-link is a symbolic link",
                    "not-folder": "/victim.txt is not a folder",
                    "top-file": "-top.txt already exists in the task's view and is not the task's to replace"}


def _submit(mode: str, space: Path, doc: dict) -> tuple[Osmo, dict, str]:
    spec = space / "wall.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    spec.chmod(0o644)
    if mode == "rootless":
        osmo = _osmo(space, "namespaces", lead_head_start=0)
        done = _submit_as_nobody(osmo, spec, space / "stash")
        assert done.returncode in (0, 1) and done.stdout.strip(), f"{done.returncode}: {done.stdout}{done.stderr}"
    else:
        if mode == "namespaces":
            require_namespace_tools()
        osmo = Osmo(space / "osmo", OSMO_ISOLATION=mode)
        osmo.pool(grace_period="1s", lead_head_start=0)
        osmo.submit(spec)
    return osmo, osmo.query("wall-1"), osmo.logs("wall-1")


@pytest.mark.parametrize("mode", ["namespaces", "rootless", "none"])
def test_escape_attempts_leave_the_host_untouched(mode, workspace):  # noqa: F811 (the fixture)
    sentinel = HostSentinel(uuid.uuid4().hex[:8], owner=NOBODY if mode == "rootless" else None)
    try:
        doc, expected = _wall(sentinel, isolated=mode != "none")
        osmo, info, logs = _submit(mode, workspace, doc)
        tasks = tasks_of(info)
        isolated = mode != "none"
        mode_line = "namespaces" if isolated else "plain host processes"
        assert info["isolation"].startswith(mode_line), info["isolation"]
        # the host: nothing changed, nothing new
        assert sentinel.changes() == []
        # paths the view can honour are written there (or, plain, under the attempt's own folders)
        accept = tasks["accept"]
        assert accept["status"] == "COMPLETED", logs
        run = Path(accept["attempts"][0]["run_dir"])
        out = run / "data" / "output"
        assert {name: (out / name).read_text() for name in expected} == expected
        assert (out / "pwd.txt").read_text().strip() == ("/osmo/work" if isolated else str(run / "work"))
        assert (run / "work" / "run.sh").is_file()  # a relative path is in the working folder
        if not isolated:
            moved = run / "files" / str(sentinel.root).lstrip("/") / "victim.txt"
            assert moved.read_text() == "A: the review's /tmp/.. path\n"
            assert f"files: {sentinel.root}/victim.txt is written as {moved}" in logs
        # a symbolic link or a file on the way: the view cannot honour it, the command never runs
        for name, words in REFUSED_AT_START.items():
            task = tasks[name]
            attempt_out = Path(task["attempts"][0]["run_dir"]) / "data" / "output"
            if isolated:
                assert task["status"] == "FAILED_START_ERROR" and task["exit_code"] == 3003, (name, task)
                reason = task["reason"]
                assert reason.startswith("start error: files: ") and words in reason, reason
                assert not (attempt_out / "ran").exists()
            else:  # plain: written under the attempt's files/ folder, where no link exists
                assert task["status"] == "COMPLETED" and (attempt_out / "ran").exists(), (name, task)
        if isolated:  # the command's own writes to the host's files failed: read-only
            writer = tasks["writer"]
            assert writer["status"] == "COMPLETED", logs
            written = Path(writer["attempts"][0]["run_dir"]) / "data" / "output" / "written.txt"
            assert written.read_text() == ""
        # links the task plants in its output and working folder reach neither a retry nor the host
        planter = tasks["planter"]
        assert [a["status"] for a in planter["attempts"]] == ["RESCHEDULED", "COMPLETED"], logs
        first, second = (Path(a["run_dir"]) for a in planter["attempts"])
        assert os.readlink(first / "data" / "output" / "link") == f"{sentinel.root}/target"
        assert (second / "data" / "output" / "seen.txt").read_text() == "planted by files\nplanted in work\n"
        assert not (second / "data" / "output" / "link").is_symlink()
        assert not (second / "work" / "wlink").is_symlink()
        assert os.listdir(sentinel.root / "target") == []
        assert osmo.processes_left() == []
    finally:
        sentinel.remove()
