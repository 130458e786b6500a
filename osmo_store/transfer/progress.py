"""The progress interface the transfer functions report to (the CLI draws bars; tests count)."""

from __future__ import annotations


class Progress:
    """Receives progress; the default ignores it. Methods are called from one thread only."""

    def start(self, label: str, files: int, total_bytes: int) -> None:
        pass

    def advance(self, files: int, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


class Cancelled(Exception):
    """Internal: a worker stopped because the operation is being abandoned."""
