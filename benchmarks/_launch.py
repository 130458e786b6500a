"""Tiny launcher used by ``_measure.run_measured`` (run as ``python -S _launch.py OUT CMD...``).

Why a separate small process: on Linux ``ru_maxrss`` of a child includes the
RSS its address space had when it called ``exec``, i.e. the RSS of the
process that forked it. Forking the tool directly from the (large) benchmark
process would inflate every figure to the benchmark's own size. This launcher
is a fresh ~10 MB interpreter; it starts the tool, waits for it with
``os.wait4`` and writes ``{"seconds", "maxrss_kib", "exitcode", "cpu_seconds"}`` as JSON to
OUT. The wall time is taken here, so interpreter start-up is not counted.
"""

import json
import os
import sys
import time


def main() -> int:
    out = sys.argv[1]
    cmd = sys.argv[2:]
    t0 = time.perf_counter()
    try:
        pid = os.posix_spawnp(cmd[0], cmd, os.environ)
    except OSError as e:
        os.write(2, f"launch: cannot start {cmd[0]}: {e}\n".encode())
        with open(out, "w") as f:
            json.dump({"seconds": 0.0, "maxrss_kib": 0, "exitcode": 127}, f)
        return 127
    _, status, ru = os.wait4(pid, 0)
    seconds = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "maxrss_kib": ru.ru_maxrss, "exitcode": code, "pid": pid,
                   "cpu_seconds": ru.ru_utime + ru.ru_stime}, f)
    return code if 0 <= code < 256 else 128 + (-code if code < 0 else 0)


if __name__ == "__main__":
    sys.exit(main())
