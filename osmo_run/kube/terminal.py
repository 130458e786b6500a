"""This process's terminal during an interactive ``exec`` on Kubernetes (``interactive.exec_in_pod``).

``Terminal`` is a context manager: with ``raw`` it puts the terminal on stdin in raw mode (Ctrl-C, Ctrl-D
and Ctrl-Z become bytes for the remote shell) and restores it on every way out: a return, an exception,
or a SIGTERM (turned into ``Terminated`` so that the ``with`` block unwinds). While it is open, a SIGWINCH
writes to ``wakeup_fd``, which the stdin pump selects on to send the new size (``size()``); a ``stop()``
writes to the same pipe to end that pump. Signal handlers are installed only in the main thread (Python
allows no other); the previous ones come back on exit.
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import termios
import threading
import tty

WINCH = b"w"
STOP = b"q"


class Terminated(BaseException):
    """A SIGTERM arrived while the remote command ran (unwinds like KeyboardInterrupt)."""


def window_size(fds: tuple[int, ...] = (0, 1)) -> tuple[int, int] | None:
    """(columns, rows) of the first terminal among ``fds``; None when none is one."""
    for fd in fds:
        try:
            rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        except OSError:
            continue
        if rows and cols:
            return cols, rows
    return None


class Terminal:
    def __init__(self, raw: bool) -> None:
        self.raw = raw
        self.wakeup_fd, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self.wakeup_fd, False)
        self._saved_mode: list | None = None
        self._saved_handlers: dict[int, object] = {}

    def _wake(self, what: bytes) -> None:
        try:
            os.write(self._wake_w, what)
        except OSError:  # the pipe is full: a wakeup is pending anyway
            pass

    def stop(self) -> None:
        self._wake(STOP)

    def __enter__(self) -> "Terminal":
        if threading.current_thread() is threading.main_thread():
            self._saved_handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_term)
            if self.raw:
                self._saved_handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH,
                                                                      lambda *_: self._wake(WINCH))
        if self.raw:
            self._saved_mode = termios.tcgetattr(0)
            tty.setraw(0, termios.TCSANOW)
        return self

    @staticmethod
    def _on_term(signum, frame) -> None:
        raise Terminated()

    def __exit__(self, *exc) -> None:
        try:
            if self._saved_mode is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, self._saved_mode)
        finally:
            for signum, handler in self._saved_handlers.items():
                signal.signal(signum, handler)
            self.stop()  # ends the stdin pump; it closes the pipe's read end

    def drain_wakeups(self) -> bytes:
        try:
            return os.read(self.wakeup_fd, 1024)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        for fd in (self.wakeup_fd, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
