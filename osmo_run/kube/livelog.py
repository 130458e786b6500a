"""A running task container's output, copied into the task log as it comes (``osmo workflow logs --follow``).

While an attempt's command runs, a thread reads the task container's log every ``EVERY`` seconds
(``pods/log`` with timestamps, only the last seconds since the previous read) and appends the lines it has
not written yet to the task log, masked, under the usual ``--- pod P, container task ---`` notice (the init
container's log first, as it has ended by then). Lines are told apart by their timestamp (nanoseconds);
a read that fails is tried again at the next tick. When the attempt ends, ``finish`` stops the thread and
writes what came after the last read, so the task log holds each line once, whether or not it was seen
live. The supervisor's loop never waits for the API server here (a slow or refusing ``pods/log``, as on a
node without a kubelet, only delays the live lines).
"""

from __future__ import annotations

import math
import os
import threading
import time
from datetime import datetime

from kubernetes import client

from osmo_run.kube.objects import INIT_CONTAINER, TASK_CONTAINER
from osmo_run.local import logs

EVERY = 2.0  # seconds between two reads of a running task container's log
MARGIN = 2  # seconds read again before the last line seen (clocks and whole seconds)
TIMEOUT = 10


def _nanos(stamp: str) -> int | None:
    """``2026-12-06T13:00:00.123456789Z`` -> nanoseconds since the epoch (fractions of any length)."""
    base, _, fraction = stamp.rstrip("Z").partition(".")
    try:
        seconds = int(datetime.fromisoformat(base + "+00:00").timestamp())
    except ValueError:
        return None
    digits = (fraction + "000000000")[:9]
    return seconds * 1_000_000_000 + int(digits) if digits.isdigit() else None


class LiveLog:
    def __init__(self, api, namespace: str, pod: str, log_path: str, mask, read_whole) -> None:
        self.api, self.namespace, self.pod, self.log_path, self.mask = api, namespace, pod, log_path, mask
        self.read_whole = read_whole  # (container) -> its log text, for the init container's block
        self.last: int | None = None  # timestamp of the last line written
        self.started = False  # the header (and the init container's block) is written
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "LiveLog":
        self._thread = threading.Thread(target=self._run, name=f"osmo-live-{self.pod}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(EVERY):
            try:
                self.pull()
            except Exception:  # noqa: BLE001 - refused, timed out, pod gone: the next tick (or finish) tries again
                continue

    def _read(self) -> str:
        since = None if self.last is None else max(1, math.ceil(time.time() - self.last / 1e9) + MARGIN)
        answer = client.CoreV1Api(self.api).read_namespaced_pod_log(
            self.pod, self.namespace, container=TASK_CONTAINER, timestamps=True, since_seconds=since,
            _request_timeout=TIMEOUT, _preload_content=False)
        return answer.data.decode("utf-8", errors="replace")

    def pull(self) -> None:
        """Append the task container's lines not written yet (raises what the API server raises)."""
        with self._lock:
            fresh = []
            for raw in self._read().splitlines():
                stamp, _, line = raw.partition(" ")
                key = _nanos(stamp)
                if key is None or (self.last is not None and key <= self.last):
                    continue
                fresh.append(line)
                self.last = key
            if not fresh:
                return
            if not self.started:
                self.started = True
                self._write_init_block()
                logs.note(self.log_path, f"--- pod {self.pod}, container {TASK_CONTAINER} ---")
            fd = logs.open_for_append(self.log_path)
            try:
                os.write(fd, self.mask("\n".join(fresh) + "\n").encode("utf-8", errors="replace"))
            finally:
                os.close(fd)

    def _write_init_block(self) -> None:
        try:
            text = self.read_whole(INIT_CONTAINER)
        except Exception:  # noqa: BLE001 - the end-of-attempt copy says why it has no log
            return
        if text:
            logs.note(self.log_path, f"--- pod {self.pod}, container {INIT_CONTAINER} ---")
            fd = logs.open_for_append(self.log_path)
            try:
                os.write(fd, self.mask(text if text.endswith("\n") else text + "\n").encode("utf-8", errors="replace"))
            finally:
                os.close(fd)

    def finish(self) -> bool:
        """Stop the thread and write the rest; True when the task container's lines (and the init
        container's) are in the task log, False when nothing was seen live (copy the whole logs instead)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(TIMEOUT + 5)
        if self.started:
            try:
                self.pull()
            except Exception as exc:  # noqa: BLE001
                logs.note(self.log_path, f"--- pod {self.pod}, container {TASK_CONTAINER}: the last lines could not "
                                         f"be read ({type(exc).__name__}) ---")
        return self.started
