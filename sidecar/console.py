"""Everything the sidecar prints goes through here: each line starts with ``[osmo-sidecar] ``.

The sidecar's output is interleaved with the task's own output in one task log; the prefix lets
readers (and ``osmo workflow logs``) tell sidecar lines from task lines. ``install()`` replaces
``sys.stdout`` and ``sys.stderr`` of the sidecar process with prefixing writers, so click's usage
errors, library warnings and even an unexpected traceback are marked too. The task command started by
``osmo-sidecar exec`` writes to the inherited file descriptors directly and is never prefixed.
"""

from __future__ import annotations

import io
import sys
import threading
from typing import TextIO

PREFIX = "[osmo-sidecar] "


class PrefixWriter(io.TextIOBase):
    """A text stream that writes ``PREFIX`` at the start of every line to the stream it wraps."""

    def __init__(self, stream: TextIO, prefix: str = PREFIX) -> None:
        super().__init__()
        self._stream = stream
        self._prefix = prefix
        self._at_line_start = True
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._stream, "errors", None)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not text:
            return 0
        out = []
        with self._lock:
            for line in text.splitlines(keepends=True):
                if self._at_line_start:
                    out.append(self._prefix)
                out.append(line)
                self._at_line_start = line.endswith("\n")
            self._stream.write("".join(out))
            self._stream.flush()
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def install() -> None:
    """Prefix every line this process writes to stdout and stderr (idempotent)."""
    if not isinstance(sys.stdout, PrefixWriter):
        sys.stdout = PrefixWriter(sys.stdout)
    if not isinstance(sys.stderr, PrefixWriter):
        sys.stderr = PrefixWriter(sys.stderr)


def say(message: str) -> None:
    """One line of sidecar output (on stderr, like every sidecar line), newlines folded."""
    line = " ".join(message.split("\n"))
    if isinstance(sys.stderr, PrefixWriter):
        print(line, file=sys.stderr, flush=True)
    else:
        print(PREFIX + line, file=sys.stderr, flush=True)
