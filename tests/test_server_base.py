"""The test servers' shared life cycle (tests/servers/base.py) with real processes: a failed start cleans
up and names the daemon with its log, stop() reaches a daemon's children and is idempotent, a directory
left by a killed test process is removed by the next start, and a server still running at exit is stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

from helpers.waiting import wait_for
from servers.base import DaemonServer


class SleeperError(RuntimeError):
    pass


class Sleepers(DaemonServer):
    """Two daemons: ``a`` (a shell with a ``sleep`` child) and ``b`` (``exit 3`` instead of getting ready when
    ``b_fails``)."""

    dir_prefix = "osmo-basetest-"
    error = SleeperError
    start_timeout = 10.0

    def __init__(self, b_fails: bool = False) -> None:
        super().__init__()
        self.b_fails = b_fails

    def _start(self) -> None:
        self.make_dir()
        self.made = self.dir
        self.spawn("a", ["sh", "-c", "sleep 300 & echo started; wait"])
        self.spawn("b", ["sh", "-c", "echo b is failing; exit 3" if self.b_fails else "touch b.ready; exec sleep 300"])
        self.wait_until(lambda: os.path.exists(os.path.join(self.dir, "b.ready")) and
                        "started" in open(os.path.join(self.dir, "log", "a.log")).read(), "a and b ready")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_stop_ends_every_daemon_and_its_children_and_removes_the_directory():
    with Sleepers() as server:
        d, pids = server.dir, server.pids()
        assert set(pids) == {"a", "b"} and server.start_seconds > 0
        sleeper = wait_for(lambda: _children(pids["a"]), 10, "a's sleep child")[0]
        assert os.path.isfile(os.path.join(d, "owner.pid"))
    assert not os.path.exists(d) and server.dir is None
    assert not any(_alive(p) for p in [*pids.values(), sleeper])
    server.stop()  # idempotent


def test_a_daemon_that_exits_fails_the_start_naming_it_with_its_log_and_cleans_up():
    server = Sleepers(b_fails=True)
    with pytest.raises(SleeperError, match=r"(?s)b exited \(3\) while waiting for a and b ready.*b is failing"):
        server.start()
    assert server.dir is None and server.procs == {}
    assert server.made.startswith(os.path.join(tempfile.gettempdir(), Sleepers.dir_prefix))
    assert not os.path.exists(server.made)  # (other test processes may have folders of this prefix)


def test_a_directory_left_by_a_killed_process_is_removed_by_the_next_start(tmp_path):
    stale = tempfile.mkdtemp(prefix=Sleepers.dir_prefix)
    ours = tempfile.mkdtemp(prefix=Sleepers.dir_prefix)
    try:
        with open(os.path.join(stale, "owner.pid"), "w") as f:
            f.write(str(_dead_pid()))
        with open(os.path.join(ours, "owner.pid"), "w") as f:
            f.write(str(os.getpid()))  # a live owner: not stale
        with Sleepers():
            assert not os.path.exists(stale) and os.path.isdir(ours)
    finally:
        subprocess.run(["rm", "-rf", stale, ours])


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_server_still_running_at_exit_is_stopped():
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {tests_dir!r})
        from test_server_base import Sleepers
        s = Sleepers().start()
        print(s.dir, *s.pids().values(), flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    d, *pids = out.split()
    assert not os.path.exists(d)
    assert not any(_alive(int(p)) for p in pids)
