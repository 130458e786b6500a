"""The sidecar's own errors and the one-line wording of any failure.

``ContractError``: ``task.json`` is missing or malformed (the sidecar exits 2). ``DataError``: one
input or output failed for a reason the user can act on (the phase writes code 2010 or 2012 and the
sidecar exits 1). ``Terminated``: SIGTERM arrived during a data phase. ``one_line`` turns any exception
(from the store, from fsspec and its backends, from the OS) into a single readable line; tracebacks are
never printed for these.
"""

from __future__ import annotations

import errno
import os

from osmo_store.errors import OsmoError

MAX_MESSAGE = 600


class ContractError(Exception):
    """``task.json`` cannot be read or does not describe a task the sidecar can serve."""


class DataError(Exception):
    """One input or output failed; the message is one line naming the reason."""


class Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler during ``download`` and ``upload``."""


def one_line(exc: BaseException) -> str:
    """A single line describing ``exc``, without a traceback."""
    if isinstance(exc, (OsmoError, DataError, ContractError)):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = _os_error(exc)
    else:
        detail = str(exc)
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    return text


def _os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"{exc.filename}: disk full" if exc.filename else "disk full"
    if exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    detail = str(exc.args[0]) if len(exc.args) == 1 else str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"{detail}: no such file or folder" if detail else "no such file or folder"
    if isinstance(exc, PermissionError):
        return f"permission denied: {detail}" if detail else "permission denied"
    if exc.errno is not None:
        return f"{detail}: {os.strerror(exc.errno)}" if detail else os.strerror(exc.errno)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
