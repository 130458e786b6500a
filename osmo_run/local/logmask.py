"""Masking credential values in task logs, as they are written and as they are read.

``Masker`` replaces every occurrence of the given values in a byte stream by ``MASK``. A value split
across two reads is still found: the end of a read that could be the start of a value is held back
until the next read (or the end) decides. ``mask_text`` does the same for a whole text.

A task with credentials writes its stdout and stderr into a pipe instead of its log; the relay,
``python -m osmo_run.local.logmask --secrets-fd N`` (stdin: the pipe, stdout: the task log; the
values as a JSON list on fd N, an anonymous in-memory file), masks and appends until every writer
has closed the pipe. It imports only the standard library (one starts per attempt).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Callable, Iterable

MASK = "***"
READ_SIZE = 65536


class Masker:
    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted({s.encode("utf-8") for s in secrets if s}, key=len, reverse=True)
        self.values = values
        self.pattern = re.compile(b"|".join(re.escape(v) for v in values)) if values else None
        self.longest = len(values[0]) if values else 0
        self.first = {v[0] for v in values}
        self.pending = b""

    def feed(self, data: bytes) -> bytes:
        """Masked bytes that can be written now; an end that may still turn out to be (part of)
        a value is held back, so the result is the same however the stream is cut."""
        if self.pattern is None:
            return data
        data = self.pending + data
        limit = len(data) - (self.longest - 1)  # a match from here on may lack data for a longer value
        out, pos = [], 0
        for match in self.pattern.finditer(data):
            if match.start() >= limit:
                break
            out += [data[pos:match.start()], MASK.encode()]
            pos = match.end()
        cut = max(pos, limit)
        keep = next((j for j in range(cut, len(data)) if self._undecided(data, j)), len(data))
        out.append(data[pos:keep])
        self.pending = data[keep:]
        return b"".join(out)

    def _undecided(self, data: bytes, start: int) -> bool:
        """Whether a value starts at ``start``: complete, or cut off by the end of ``data``."""
        if data[start] not in self.first:
            return False
        tail = data[start:]
        return any(v.startswith(tail) or tail.startswith(v) for v in self.values)

    def flush(self) -> bytes:
        """What is still held back, masked, at the end of the stream."""
        rest, self.pending = self.pending, b""
        return self.pattern.sub(MASK.encode(), rest) if self.pattern is not None else rest


def text_masker(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function masking every one of ``secrets`` in a whole text."""
    masker = Masker(secrets)
    if masker.pattern is None:
        return lambda text: text

    def mask(text: str) -> str:
        data = text.encode("utf-8", errors="surrogateescape")
        return (masker.feed(data) + masker.flush()).decode("utf-8", errors="surrogateescape")

    return mask


def mask_text(text: str, secrets: Iterable[str]) -> str:
    return text_masker(secrets)(text)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def relay(source: int, target: int, masker: Masker) -> None:
    """Copy ``source`` to ``target`` until EOF, masked."""
    while True:
        try:
            data = os.read(source, READ_SIZE)
        except InterruptedError:
            continue
        if not data:
            break
        _write_all(target, masker.feed(data))
    _write_all(target, masker.flush())


def read_secrets(fd: int) -> list[str]:
    os.lseek(fd, 0, os.SEEK_SET)
    with os.fdopen(fd, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--secrets-fd":
        print("usage: python -m osmo_run.local.logmask --secrets-fd N  (stdin -> stdout, masked)", file=sys.stderr)
        return 2
    relay(0, 1, Masker(read_secrets(int(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
