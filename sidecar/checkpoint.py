"""``checkpoint:``: copy a folder the task writes to a URL while it runs, and once more when it has ended.

``upload --wait`` drives it (``main.py``): while it waits for the task's exit code, ``Checkpoints.tick``
copies each checkpoint whose ``every`` seconds have passed since its last copy; once the task has ended,
``Checkpoints.final`` copies each one a last time, before the outputs are uploaded. A copy sends only
the files that are new or changed (size or modification time) since the last copy of that checkpoint,
keeping their paths below the checkpoint's folder; ``regex`` (``re.search`` on the relative path)
selects files. A folder that does not exist yet is nothing to copy. A failed periodic copy is one line in
the log and is tried again at the next one; the final copy, having no next one, is retried on a transient
error as an output is (the upload's ``RetryPolicy``). No copy ever fails the task or its upload (the
outputs are what the workflow's data flow depends on; a checkpoint is a safety copy).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from osmo_store.report.render import plural
from osmo_run.contract import CheckpointSpec, RunDir

from sidecar.console import say
from sidecar.errors import one_line
from sidecar.remote import Remote
from sidecar.retry import RetryPolicy, with_retry
from sidecar.taskfile import compile_regex
from sidecar.upload import local_files


class Checkpoint:
    """One ``checkpoint:``; ``remote`` opens its URL, ``retry(what, step)`` runs the final copy's attempts."""

    def __init__(self, index: int, spec: CheckpointSpec, run: RunDir, remote: Callable[[str], Remote],
                 retry: Callable[[str, Callable[[int], int]], int]) -> None:
        self.index, self.spec, self.remote, self.retry = index, spec, remote, retry
        self.source = spec.path if os.path.isabs(spec.path) else os.path.join(run.root, spec.path)
        self.regex = compile_regex(spec.regex)
        self.sent: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) last copied

    def changed(self) -> list[tuple[str, str, tuple[int, int]]]:
        """``(rel, path, (size, mtime_ns))`` of the selected files new or changed since the last copy."""
        if not os.path.isdir(self.source):
            return []
        out = []
        for rel, path in local_files(self.source):
            if self.regex is not None and not self.regex.search(rel):
                continue
            try:
                info = os.stat(path)
            except FileNotFoundError:
                continue  # the task removed it meanwhile
            stamp = (info.st_size, info.st_mtime_ns)
            if self.sent.get(rel) != stamp:
                out.append((rel, path, stamp))
        return out

    def copy(self, final: bool) -> None:
        what = f"checkpoint {self.index} ({self.spec.url})" + (", final" if final else "")
        try:
            files = self.changed()
            if not files:
                if final:
                    say(f"{what}: nothing new to copy")
                return
            items = [(rel, path) for rel, path, _ in files]
            send = lambda _attempt=1: self.remote(self.spec.url).upload(items, resume=False)  # noqa: E731
            # the final copy is the last chance: a transient error is retried (all its files again: one of the
            # same size may still differ from what an earlier copy left there)
            nbytes = self.retry(what, send) if final else send()
        except Exception as exc:  # noqa: BLE001 - a failed safety copy must never fail the task
            say(f"{what}: failed, tried again {'never (the task has ended)' if final else 'at the next one'}: "
                f"{one_line(exc)}")
            return
        self.sent.update({rel: stamp for rel, _, stamp in files})
        say(f"{what}: {plural(len(files), 'file')} copied, {nbytes} bytes")


class Checkpoints:
    """The contract's checkpoints, each copied every ``every`` seconds (``tick``) and at the end (``final``,
    retried on a transient error by ``policy``, pausing with ``sleep``)."""

    def __init__(self, run: RunDir, specs: tuple[CheckpointSpec, ...],
                 clock: Callable[[], float] = time.monotonic, policy: RetryPolicy = RetryPolicy(),
                 remote: Callable[[str], Remote] = Remote, sleep: Callable[[float], None] = time.sleep) -> None:
        self.clock = clock
        retry = lambda what, step: with_retry(what, step, policy, sleep)  # noqa: E731 - the final copies' retries
        self.items = [Checkpoint(i, spec, run, remote, retry) for i, spec in enumerate(specs)]
        start = clock()
        self.due = [start + max(spec.every, 1.0) for spec in specs]

    def tick(self) -> None:
        now = self.clock()
        for i, item in enumerate(self.items):
            if now >= self.due[i]:
                item.copy(final=False)
                self.due[i] = self.clock() + max(item.spec.every, 1.0)

    def final(self) -> None:
        for item in self.items:
            item.copy(final=True)
