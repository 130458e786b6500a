"""A task's environment is a pod's: end to end through the local runner (namespaces and plain mode).

- the command sees PATH, HOME (its working folder), LANG, HOSTNAME, OSMO's variables, the spec's
  ``environment:`` and its declared credentials, and nothing else of the submitting shell (not its
  ``AWS_SECRET_ACCESS_KEY``, not its ``FOO``);
- credentials come from the pool config's sources (a 0600 file, variables of the submitting
  environment), as variables or as 0600 files in a folder of the task's view; mistakes fail the
  submit with one line naming the credential, and nothing runs;
- credential values never appear in the task log (also when written in pieces), in ``osmo workflow
  logs``, or in any file under the state directory;
- the state directory is owner-only (folders 0700, the runner's files 0600), also one that existed
  with looser modes;
- a workflow whose store is missing or read-only fails at submit (exit code 5), before any task runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.tools import require_tool
from osmo_run.local.logmask import MASK, Masker, mask_text

from .conftest import Osmo, tasks_of, write_spec

KEY_ID = "AKIA-task-key-id-0042"
SECRET = "s3cr3t/Value+with=odd chars"
TOKEN = "tok-0123456789abcdef"
USER = "robot-user"
HOST_SECRET = "host-shell-secret-value"
SECRETS = (KEY_ID, SECRET, TOKEN, USER)
# the interpreter itself, not a `python3` found on PATH: a wrapper there (pyenv's shims) adds variables
PYTHON = os.path.realpath(sys.executable)  # outside /tmp, which an isolated task sees as its own

# The task prints a digest of every variable (values themselves would be masked), the digest and
# mode of each credential file, then the raw values, one of them in two pieces written apart.
DUMP = """
import hashlib, json, os, sys, time
digest = lambda text: hashlib.sha256(text.encode()).hexdigest()
print("ENV " + json.dumps({k: digest(v) for k, v in os.environ.items()}, sort_keys=True))
print("VALUES " + json.dumps({k: os.environ[k] for k in ("HOME", "PATH", "LANG", "HOSTNAME", "GREETING",
      "OSMO_WORKFLOW_ID", "OSMO_TASK_NAME", "OSMO_GROUP_NAME", "OSMO_ATTEMPT") if k in os.environ}))
files = {}
for name, path in (("token", "/root/.robot-creds/token"), ("user", "/root/.robot-creds/user")):
    if os.path.exists(path):  # (plain mode: the runner replaced each path by where it wrote the file)
        files[name] = [digest(open(path).read()), oct(os.stat(path).st_mode & 0o777)]
print("FILES " + json.dumps(files, sort_keys=True))
secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
print("raw:", secret, os.environ.get("AWS_ACCESS_KEY_ID", ""), flush=True)
sys.stdout.write("split:" + secret[:5]); sys.stdout.flush(); time.sleep(0.3)
sys.stdout.write(secret[5:] + ":end\\n"); sys.stdout.flush()
print("stderr:", secret, file=sys.stderr)
"""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _line(log: str, prefix: str) -> dict:
    found = [line.split(prefix, 1)[1] for line in log.splitlines() if prefix in line]
    assert found, f"no {prefix!r} line in the log:\n{log}"
    return json.loads(found[-1])


def _credentials(osmo: Osmo, tmp_path: Path) -> Path:
    """The pool config's credential sources: a 0600 file and two variables of the submitting env."""
    path = tmp_path / "creds" / "s3.yaml"
    path.parent.mkdir()
    path.write_text(f"access_key_id: {KEY_ID}\naccess_key: {json.dumps(SECRET)}\n")
    path.chmod(0o600)
    osmo.pool(grace_period="1s", lead_head_start="0.2s", credentials={
        "my_s3": {"file": str(path)},
        "robot": {"env": {"token": "ROBOT_TOKEN", "user": "ROBOT_USER"}}})
    osmo.env.update(ROBOT_TOKEN=TOKEN, ROBOT_USER=USER, AWS_SECRET_ACCESS_KEY=HOST_SECRET, FOO="bar")
    return path


def _spec(tmp_path: Path) -> Path:
    return write_spec(tmp_path, f"""
        workflow:
          name: envs
          groups:
          - name: both
            tasks:
            - name: creds
              lead: true
              image: ubuntu
              command: [{json.dumps(PYTHON)}, -c, {json.dumps(DUMP)}]
              environment: {{GREETING: hello}}
              credentials:
                my_s3:
                  AWS_ACCESS_KEY_ID: access_key_id
                  AWS_SECRET_ACCESS_KEY: access_key
                robot: /root/.robot-creds
            - name: plain
              image: ubuntu
              command: [{json.dumps(PYTHON)}, -c, {json.dumps(DUMP)}]
        """)


def _files_under(root: Path):
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            yield Path(folder) / name


def test_a_task_sees_a_pods_environment_and_only_its_declared_credentials(any_osmo, tmp_path):
    osmo = any_osmo
    _credentials(osmo, tmp_path)
    workflow_id = osmo.submit(_spec(tmp_path))
    info = osmo.query(workflow_id)
    assert info["status"] == "COMPLETED", osmo.logs(workflow_id)
    run_dir = Path(tasks_of(info)["creds"]["attempts"][0]["run_dir"])
    logs = {name: osmo.logs(workflow_id, name) for name in ("creds", "plain")}

    for name, log in logs.items():
        env, values = _line(log, "ENV "), _line(log, "VALUES ")
        expected = {"PATH", "HOME", "LANG", "HOSTNAME", "OSMO_WORKFLOW_ID", "OSMO_GROUP_NAME", "OSMO_TASK_NAME",
                    "OSMO_ATTEMPT"}
        if name == "creds":
            expected |= {"GREETING", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert set(env) == expected, log  # nothing else of the submitting shell: no FOO, no OSMO_STORE
        assert values["PATH"] == osmo.env["PATH"]
        assert values["LANG"] == "C.UTF-8"
        assert values["OSMO_WORKFLOW_ID"] == workflow_id and values["OSMO_TASK_NAME"] == name
        assert values["OSMO_GROUP_NAME"] == "both" and values["OSMO_ATTEMPT"] == "1"
        work = "/osmo/work" if osmo.mode == "namespaces" else str(run_dir.parent.parent / name / "1" / "work")
        assert values["HOME"] == work
    creds = _line(logs["creds"], "ENV ")
    assert creds["AWS_SECRET_ACCESS_KEY"] == _digest(SECRET) != _digest(HOST_SECRET)
    assert creds["AWS_ACCESS_KEY_ID"] == _digest(KEY_ID)
    assert _line(logs["creds"], "VALUES ")["GREETING"] == "hello"
    assert _line(logs["creds"], "FILES ") == {"token": [_digest(TOKEN), "0o600"], "user": [_digest(USER), "0o600"]}
    assert _line(logs["plain"], "FILES ") == {}  # another task of the group gets no credentials

    # masked as written, also a value written in two pieces and on stderr
    for text in (*logs.values(), osmo("logs", workflow_id).out, osmo("logs", workflow_id, "--follow").out):
        for value in (*SECRETS, HOST_SECRET):
            assert value not in text
    assert f"raw: {MASK} {MASK}" in logs["creds"]
    assert f"split:{MASK}:end" in logs["creds"] and f"stderr: {MASK}" in logs["creds"]
    assert "[osmo] credentials: my_s3 as variables AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in logs["creds"]
    assert "[osmo] credentials: robot as files in /root/.robot-creds (token, user)" in logs["creds"]

    # no value in any file of the state directory (the database, the spec, logs, run directories)
    state = Path(osmo.env["OSMO_STATE_DIR"])
    for path in _files_under(state):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for value in SECRETS:
                assert value.encode() not in data, f"{value!r} is in {path}"

    # owner-only: every folder of the runner 0700, every file it writes 0600; what the task and
    # the sidecar put into data/ and work/ keeps its own modes below those folders
    for path in [state, *_files_under(state)]:
        relative = path.relative_to(state).parts  # workflows/<id>/runs/<task>/<attempt>/...
        if len(relative) > 5 and relative[5] in ("data", "work", "files") and \
                (len(relative) > 6 or relative[5] == "files"):
            continue  # below data/ and work/, and files/ (taskinit writes it, umask 022)
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {mode:o}"
    assert not (run_dir / "runner" / "init.json").exists()  # taskinit's config is never on disk
    if osmo.mode == "none":  # plain mode: the credential files were on disk, and are gone
        assert list((run_dir / "files").rglob("*")) == [run_dir / "files" / "root",
                                                        run_dir / "files" / "root" / ".robot-creds"]


@pytest.mark.parametrize("case, pool, env, message", [
    ("unknown", {}, {}, "task 'job': credentials.my_s3: no credential 'my_s3' in the pool config"),
    ("missing key", {"my_s3": {"env": {"access_key_id": "KEY_VAR"}}}, {"KEY_VAR": "k-123456"},
     "task 'job': credentials.my_s3.AWS_SECRET_ACCESS_KEY: credential 'my_s3' has no key 'access_key' "
     "(keys in the pool config's env: mapping: access_key_id)"),
    ("missing variable", {"my_s3": {"env": {"access_key_id": "KEY_VAR", "access_key": "SECRET_VAR"}}},
     {"KEY_VAR": "k-123456"},
     "task 'job': credential 'my_s3': key access_key: the variable $SECRET_VAR is not set in the submitting "
     "environment"),
    ("group readable", "FILE:0640", {}, "group or others may access it (mode 0640); run: chmod 600 "),
    ("unreadable", "MISSING", {}, "cannot read it: No such file or directory"),
    ("bad source", {"my_s3": {"vault": "x"}}, {}, "credentials.my_s3: expected {file: PATH} or {env: {KEY: VARIABLE}}"),
])
def test_credential_mistakes_fail_the_submit_in_one_line(osmo, tmp_path, case, pool, env, message):
    spec = write_spec(tmp_path, """
        workflow:
          name: creds
          tasks:
          - name: job
            image: ubuntu
            command: [true]
            credentials:
              my_s3: {AWS_ACCESS_KEY_ID: access_key_id, AWS_SECRET_ACCESS_KEY: access_key}
        """)
    if isinstance(pool, str):
        path = tmp_path / "s3.yaml"
        if pool != "MISSING":
            path.write_text("access_key_id: a-123456\naccess_key: b-123456\n")
            path.chmod(int(pool.split(":")[1], 8))
        pool = {"my_s3": {"file": str(path)}}
        message = message + (str(path) if case == "group readable" else "")
    osmo.pool(credentials=pool)
    osmo.env.update(env)
    result = osmo("submit", spec, check=False)
    assert result.code == 2, result
    assert result.err.count("\n") == 1 and message in result.err, result.err
    assert "Traceback" not in result.err
    assert osmo("list", "--json").json() == []  # no workflow was recorded: nothing ran


def test_a_credential_variable_also_in_environment_is_refused(osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: clash
          tasks:
          - name: job
            image: ubuntu
            command: [true]
            environment: {TOKEN: plain}
            credentials: {robot: {TOKEN: token}}
        """)
    osmo.pool(credentials={"robot": {"env": {"token": "ROBOT_TOKEN"}}})
    osmo.env["ROBOT_TOKEN"] = TOKEN
    result = osmo("submit", spec, check=False)
    assert result.code == 2
    assert result.err.strip() == ("osmo: error: task 'job': credentials.robot.TOKEN: also set in the task's "
                                  "environment:")


def test_a_state_directory_open_to_others_is_tightened(osmo, tmp_path):
    state = Path(osmo.env["OSMO_STATE_DIR"])
    (state / "workflows").mkdir(parents=True)
    (state / "state.db").touch()
    for path, mode in ((state, 0o755), (state / "workflows", 0o775), (state / "state.db", 0o644)):
        path.chmod(mode)
    assert osmo("list", "--json").json() == []
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in (state, state / "workflows", state / "state.db")} == \
        {state.name: 0o700, "workflows": 0o700, "state.db": 0o600}


def test_a_missing_explicit_store_fails_the_submit_and_the_default_store_is_created(osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: stored
          tasks:
          - {name: job, image: ubuntu, command: [true]}
        """)
    missing = tmp_path / "no-store"
    result = osmo("submit", spec, "--store", missing, check=False)
    assert result.code == 5, result
    assert result.err == (f"osmo: error: store {missing}: no osmo store at {missing} (create one with "
                          "'osmo store init')\n")
    assert osmo("list", "--json").json() == [] and not missing.exists()  # nothing recorded, nothing ran
    default = Path(osmo.env["OSMO_STORE"])  # the per-user default store, not there yet: created
    assert not default.exists()
    workflow_id = osmo.submit(spec)
    assert osmo.query(workflow_id)["status"] == "COMPLETED"
    assert (default / "config").is_file()


def test_a_read_only_store_fails_the_submit(osmo, tmp_path):
    store = tmp_path / "ro-store"
    osmo("store", "init", store, group="")
    spec = write_spec(tmp_path, """
        workflow:
          name: readonly
          tasks:
          - {name: job, image: ubuntu, command: [true]}
        """)
    if os.geteuid() == 0:  # root writes through modes: make the folder read-only by a mount
        unshare, mount = require_tool("unshare"), require_tool("mount")
        argv = [unshare, "-m", "sh", "-c", f'{mount} --bind -o ro "$0" "$0" && exec "$@"', str(store)]
    else:
        store.chmod(0o555)
        argv = []
    command = [*argv, sys.executable, "-m", "osmo_store.cli.main", "workflow", "submit", str(spec), "--store",
               str(store)]
    result = subprocess.run(command, env=osmo.env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 5, result
    assert result.stderr.startswith(f"osmo: error: store {store}: cannot write into {store}: ")
    assert result.stderr.count("\n") == 1
    assert osmo("list", "--json").json() == []


def test_masking_holds_whatever_way_the_output_is_cut():
    rng = random.Random(12)
    secrets = ["abcd-secret", "abcdef", "xyzw", "multi\nline value"]
    masked_list = ["abcd-secret", "abcdef", "xyzw", "multi", "line value", "multi\nline value"]
    for _ in range(300):
        pieces = [rng.choice(["ab", "abc", "abcd-", "abcd-secret", "abcdef", "xy", "xyzw", "-", "\n", "multi",
                              "line value", "é", "secret"]) for _ in range(rng.randint(0, 30))]
        text = "".join(pieces)
        data = text.encode()
        masker = Masker(masked_list)
        out, pos = b"", 0
        while pos < len(data):
            step = rng.randint(1, 7)
            out += masker.feed(data[pos:pos + step])
            pos += step
        out += masker.flush()
        assert out.decode() == mask_text(text, masked_list)
        for value in masked_list:
            assert value not in out.decode()
    assert mask_text("key=abcd-secret;", secrets) == f"key={MASK};"
    assert Masker([]).feed(b"abc") == b"abc"
