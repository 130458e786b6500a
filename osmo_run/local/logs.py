"""Task logs: one file per task (every attempt appends), holding the runner's notices (``[osmo] ``),
the sidecar's lines (``[osmo-sidecar] ``, written by the sidecar itself) and the command's stdout and
stderr, in the order they were written. Logs are owner-only (0600). Credential values are masked as
the command's output is written (``logmask.py``); ``read`` and ``follow`` mask the values they are
given once more, for ``osmo workflow logs``.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterator, Sequence

from osmo_run.local.logmask import mask_text, text_masker

RUNNER_PREFIX = "[osmo] "
LOG_MODE = 0o600


def note(path: str, message: str) -> None:
    """Append one runner notice (each line prefixed ``[osmo] ``) to a task log."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    text = "".join(f"{RUNNER_PREFIX}{line}\n" for line in message.splitlines() or [""])
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
    try:
        os.write(fd, text.encode("utf-8", errors="replace"))
    finally:
        os.close(fd)


def open_for_append(path: str) -> int:
    """A file descriptor appending to the task log (given to the sidecar and to the command)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)


def read(path: str, secrets: Sequence[str] = ()) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return mask_text(f.read(), secrets)
    except FileNotFoundError:
        return ""


def follow(paths: dict[str, str], finished: Callable[[], bool], interval: float = 0.2,
           secrets: Sequence[str] = ()) -> Iterator[tuple[str, str]]:
    """Yield ``(name, line)`` for the lines of each log as they are written, until ``finished()``
    is true and everything written by then has been yielded. A partial last line is held back
    until it is complete (or until the end). Each line is masked (``secrets``)."""
    mask = text_masker(secrets)
    offsets = {name: 0 for name in paths}
    partial = {name: "" for name in paths}
    while True:
        done = finished()
        for name, path in paths.items():
            try:
                with open(path, "rb") as f:
                    f.seek(offsets[name])
                    chunk = f.read()
            except FileNotFoundError:
                continue
            offsets[name] += len(chunk)
            text = partial[name] + chunk.decode("utf-8", errors="replace")
            lines = text.split("\n")
            partial[name] = lines.pop()
            for line in lines:
                yield name, mask(line)
        if done:
            for name, rest in partial.items():
                if rest:
                    yield name, mask(rest)
            return
        time.sleep(interval)
