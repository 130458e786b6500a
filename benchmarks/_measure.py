"""Shared measuring helpers for the benchmark scripts.

* ``run_measured``: run a command as a child process (through the small
  ``_launch.py`` launcher), wall-clock it, and read its peak RSS from
  ``os.wait4`` (``ru_maxrss``, KiB on Linux; it is the largest RSS of the
  child or of any descendant it waited for: a maximum, not a sum). A sampler
  thread also polls ``/proc`` every 50 ms and records the peak of the *sum* of
  RSS over the tool's whole process tree (matters if a tool forks workers).
* ``dir_size``: apparent size (sum of ``st_size`` of regular files) and disk
  usage (sum of ``st_blocks * 512`` of all entries, like ``du``).
* ``cpu_seconds`` / ``foreign_cpu_seconds`` of every measured command: the
  tool's own CPU (from ``wait4``) and the CPU everything else on the machine
  used meanwhile (``/proc/stat`` busy time minus the tool's): a noise gauge.
* ``wait_for_idle``: optionally wait for a quiet machine before each command.
* ``osmo_command``: how to start the osmo CLI.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MB = 1_000_000  # all "MB" figures in the benchmarks are 10**6 bytes

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Measured:
    cmd: list[str]
    returncode: int
    seconds: float
    maxrss_bytes: int  # ru_maxrss from wait4
    tree_peak_rss_bytes: int  # sampled sum over the process tree
    stdout: str
    stderr: str
    tree_peak_anon_bytes: int = 0  # sampled sum, anonymous memory only
    cpu_seconds: float = 0.0  # user + system CPU of the tool (and its waited-for children)
    foreign_cpu_seconds: float = 0.0  # CPU used by everything else on the machine meanwhile
    extra: dict = field(default_factory=dict)

    def check(self) -> "Measured":
        if self.returncode != 0:
            raise CommandFailed(self)
        return self

    def json_out(self) -> dict:
        """The last line of stdout that parses as a JSON object (or the whole stdout)."""
        text = self.stdout.strip()
        try:
            obj = json.loads(text)
            if isinstance(obj, dict):
                return obj
        except ValueError:
            pass
        for line in reversed(text.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    return obj
        raise ValueError(f"no JSON object in output of {shlex.join(self.cmd)}:\n{self.stdout[-2000:]}")


class CommandFailed(RuntimeError):
    def __init__(self, m: Measured):
        self.measured = m
        super().__init__(
            f"command failed (exit {m.returncode}): {shlex.join(m.cmd)}\n"
            f"--- stdout (tail) ---\n{m.stdout[-3000:]}\n--- stderr (tail) ---\n{m.stderr[-3000:]}"
        )


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def tree_rss(pid: int, include_root: bool = True) -> int:
    """Current RSS (bytes) summed over ``pid`` (optionally) and all its descendants."""
    return tree_rss_parts(pid, include_root)[0]


def tree_rss_parts(pid: int, include_root: bool = True) -> tuple[int, int]:
    """``(rss, anonymous rss)`` in bytes, summed over the process tree.

    Anonymous = resident minus file-backed/shared pages (``statm`` fields);
    the rest is mostly mmapped or cached file pages the kernel may drop.
    """
    total = 0
    anon = 0
    stack = [pid]
    seen: set[int] = set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        if p != pid or include_root:
            try:
                with open(f"/proc/{p}/statm") as f:
                    fields = f.read().split()
                total += int(fields[1]) * _PAGE
                anon += (int(fields[1]) - int(fields[2])) * _PAGE
            except (OSError, IndexError, ValueError):
                continue
        stack.extend(_children(p))
    return total, anon


class _Sampler(threading.Thread):
    """Polls the RSS of the descendants of ``pid`` (the launcher itself excluded)."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.peak_anon = 0
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            rss, anon = tree_rss_parts(self.pid, include_root=False)
            self.peak = max(self.peak, rss)
            self.peak_anon = max(self.peak_anon, anon)
            self._stop_evt.wait(self.interval)

    def stop(self) -> int:
        self._stop_evt.set()
        self.join()
        return self.peak


_LAUNCHER = str(Path(__file__).with_name("_launch.py"))
_HZ = os.sysconf("SC_CLK_TCK")

# > 0: before every measured command, wait (at most this many seconds) until
# the machine is idle. Set with set_wait_idle().
WAIT_IDLE_TIMEOUT = 0.0


def set_wait_idle(timeout: float) -> None:
    global WAIT_IDLE_TIMEOUT
    WAIT_IDLE_TIMEOUT = float(timeout)


def cpu_busy_seconds() -> float:
    """Machine-wide busy CPU seconds since boot (all CPUs), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return 0.0
    # cpu user nice system idle iowait irq softirq steal [guest guest_nice]
    vals = [int(x) for x in fields[1:9]]
    busy = vals[0] + vals[1] + vals[2] + vals[5] + vals[6] + vals[7]
    return busy / _HZ


def wait_for_idle(max_busy_cores: float = 0.15, window: float = 2.0, timeout: float = 300.0) -> float:
    """Wait until the machine is quiet: less than ``max_busy_cores`` of CPU busy
    over ``window`` seconds. Gives up after ``timeout``; returns seconds waited."""
    t0 = time.monotonic()
    while True:
        a = cpu_busy_seconds()
        time.sleep(window)
        busy = (cpu_busy_seconds() - a) / window
        waited = time.monotonic() - t0
        if busy <= max_busy_cores or waited >= timeout:
            return waited


def run_measured(
    cmd: list[str],
    *,
    env: dict | None = None,
    cwd: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
    label: str = "cmd",
    sync_first: bool = True,
) -> Measured:
    """Run ``cmd``; return wall seconds, peak RSS and its output.

    The command is started through ``_launch.py`` (a small fresh interpreter)
    so that its ``ru_maxrss`` is not inflated by this process's RSS; see
    there. stdout/stderr go to files (in ``log_dir`` if given) so that a chatty
    child never blocks on a pipe and no reader thread competes for CPU.
    """
    import tempfile

    if sync_first:
        os.sync()  # do not let writeback of the previous step overlap this one
    if WAIT_IDLE_TIMEOUT > 0:
        waited = wait_for_idle(timeout=WAIT_IDLE_TIMEOUT)
        if waited > 2.5:
            print(f"    (waited {waited:.0f} s for the machine to be idle)", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="osmo-bench-run-"))
    if log_dir:
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        out_path, err_path = log_dir / f"{label}.stdout", log_dir / f"{label}.stderr"
    else:
        out_path, err_path = tmp / "stdout", tmp / "stderr"
    result_path = tmp / "result.json"
    try:
        with open(out_path, "wb") as fo, open(err_path, "wb") as fe:
            p = subprocess.Popen(
                [sys.executable, "-S", _LAUNCHER, str(result_path), *cmd],
                stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
            )
            sampler = _Sampler(p.pid)
            sampler.start()
            t0 = time.perf_counter()
            busy0 = cpu_busy_seconds()
            _, status, ru = os.wait4(p.pid, 0)
            busy = cpu_busy_seconds() - busy0
            outer_seconds = time.perf_counter() - t0
            peak_tree = sampler.stop()
        p.returncode = os.waitstatus_to_exitcode(status)
        try:
            res = json.loads(result_path.read_text())
        except (OSError, ValueError):
            res = {"seconds": outer_seconds, "maxrss_kib": ru.ru_maxrss, "exitcode": p.returncode}
        stdout = out_path.read_text(errors="replace")
        stderr = err_path.read_text(errors="replace")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Measured(
        cmd=list(cmd),
        returncode=int(res["exitcode"]),
        seconds=float(res["seconds"]),
        maxrss_bytes=int(res["maxrss_kib"]) * 1024,
        tree_peak_rss_bytes=peak_tree,
        tree_peak_anon_bytes=sampler.peak_anon,
        cpu_seconds=float(res.get("cpu_seconds", 0.0)),
        # everything busy meanwhile minus the launcher and the tool (ru covers both)
        foreign_cpu_seconds=max(0.0, busy - (ru.ru_utime + ru.ru_stime)),
        stdout=stdout,
        stderr=stderr,
    )


def dir_size(path: str | os.PathLike) -> dict:
    """``{"apparent": sum st_size of regular files, "disk": sum st_blocks*512}``."""
    apparent = 0
    disk = 0
    files = 0
    path = str(path)
    if not os.path.exists(path):
        return {"apparent": 0, "disk": 0, "files": 0}
    for dirpath, dirnames, filenames in os.walk(path):
        try:
            disk += os.lstat(dirpath).st_blocks * 512
        except OSError:
            pass
        for f in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            disk += st.st_blocks * 512
            if os.path.isfile(os.path.join(dirpath, f)) and not os.path.islink(os.path.join(dirpath, f)):
                apparent += st.st_size
                files += 1
    return {"apparent": apparent, "disk": disk, "files": files}


def warm(path: str | os.PathLike) -> int:
    """Read every file under ``path`` (like ``cat`` to /dev/null); return bytes read."""
    buf = bytearray(8 << 20)
    view = memoryview(buf)
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for f in filenames:
            p = os.path.join(dirpath, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb", buffering=0) as fh:
                while True:
                    n = fh.readinto(view)
                    if not n:
                        break
                    total += n
    return total


def osmo_command(override: str | None = None) -> list[str]:
    """The argv prefix that starts the osmo CLI.

    ``override`` (or env ``OSMO_BENCH_CMD``) wins. Otherwise the ``osmo`` console
    script next to this interpreter, else this interpreter importing
    ``osmo_store.cli.main:main``.
    """
    override = override or os.environ.get("OSMO_BENCH_CMD")
    if override:
        return shlex.split(override)
    script = Path(sys.executable).with_name("osmo")
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from osmo_store.cli.main import main; sys.exit(main())",
    ]


def osmo_available(cmd: list[str] | None = None) -> tuple[bool, str]:
    cmd = cmd or osmo_command()
    try:
        r = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    if r.returncode != 0:
        return False, (r.stderr or r.stdout)[-1000:]
    return True, ""
