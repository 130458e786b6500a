"""Guarding the local index file against damage done behind osmo's back.

LMDB keeps no checksums of its pages, and a process that reads a damaged page may be aborted by an
assertion inside the library: no Python error to catch. So every write transaction of osmo ends by
recording the data file's identity (size, modification time, inode) in a stamp file, under a lock
that orders writers. When a process opens the index and the file is not what the last writer
stamped (a writer killed between its commit and its stamp, a disk error, someone editing the file),
the whole index is read and checked in a *separate* process (``python -m osmo_store.indexcheck
PATH``: every row's check, see ``index.py``); if that process fails or dies, the index is damaged
and the caller rebuilds it from the store.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from osmo_store.errors import IndexDamagedError

DATA_FILE = "data.mdb"
STAMP_FILE = "osmo-stamp"
LOCK_FILE = "osmo-lock"
CHECK_TIMEOUT = 600.0


class IndexGuard:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock_fd: int | None = None
        self._depth = 0
        self._mutex = threading.RLock()  # the flock belongs to the process: threads take turns first

    def _identity(self) -> str | None:
        try:
            st = os.stat(os.path.join(self.path, DATA_FILE))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise IndexDamagedError(f"the local index at {self.path} cannot be read ({exc.strerror})") from None
        return f"{st.st_size} {st.st_mtime_ns} {st.st_ino}"

    def _stamped(self) -> str | None:
        try:
            with open(os.path.join(self.path, STAMP_FILE), encoding="ascii") as f:
                return f.read().strip()
        except (OSError, UnicodeDecodeError):
            return None

    def _stamp(self) -> None:
        identity = self._identity()
        if identity is None:
            return
        tmp = os.path.join(self.path, f".{STAMP_FILE}.{os.getpid()}")
        try:
            with open(tmp, "w", encoding="ascii") as f:
                f.write(identity + "\n")
            os.replace(tmp, os.path.join(self.path, STAMP_FILE))
        except OSError:  # a full disk: the next opener checks the file, nothing is lost
            try:
                os.unlink(tmp)
            except OSError:
                pass

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex:
            with self._flocked():
                yield

    @contextmanager
    def _flocked(self) -> Iterator[None]:
        if self._depth == 0:
            try:
                self._lock_fd = os.open(os.path.join(self.path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            except OSError:
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                self._lock_fd = None  # an unwritable cache folder: LMDB reports it next
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = None

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around one write transaction: writers in order, the file stamped after the commit."""
        with self._locked():
            yield
            self._stamp()

    def check(self) -> None:
        """Raise ``IndexDamagedError`` if the data file changed since its last stamp and does not read
        back intact (checked in a separate process); stamp it if it does."""
        identity = self._identity()
        if identity is None or identity == self._stamped():
            return
        with self._locked():
            identity = self._identity()
            if identity is None or identity == self._stamped():
                return
            try:
                proc = subprocess.run([sys.executable, "-m", "osmo_store.indexcheck", self.path],
                                      capture_output=True, text=True, timeout=CHECK_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise IndexDamagedError(f"the local index at {self.path} could not be checked in time") from None
            if proc.returncode != 0:
                reason = (proc.stdout.strip().splitlines() or [f"the check died with code {proc.returncode}"])[-1]
                raise IndexDamagedError(f"the local index at {self.path} is damaged ({reason})")
            self._stamp()
