"""Typed errors of osmo_store, each carrying the process exit code the CLI uses for it.

Every layer raises these (or translates a foreign error into one of these exactly once, at the
boundary where it enters the library). The CLI prints ``str(error)`` as one line and exits with
``error.exit_code``; the codes are documented in README.md.
"""

from __future__ import annotations


class OsmoError(Exception):
    """Base class: a one-line, user-facing message, an exit code and a short stable ``code`` (the
    ``code`` of a ``--json`` error). Keyword arguments name the thing the error is about
    (``dataset=``, ``tag=``, ``version=``, ``path=``, ``key=``): ``subject``, for scripts."""

    exit_code = 1
    code = "error"

    def __init__(self, *args: object, **subject: object) -> None:
        super().__init__(*args)
        self.subject = {k: v for k, v in subject.items() if v is not None}


class UsageError(OsmoError):
    """Bad input from the user: a malformed name, reference, option or path."""

    exit_code = 2
    code = "usage"


class NotFoundError(OsmoError):
    """A dataset, version, tag, object or file that does not exist."""

    exit_code = 3
    code = "not_found"


class AlreadyExistsError(OsmoError):
    """An exclusive create lost: the object, name or store already exists."""

    exit_code = 4
    code = "already_exists"


class IntegrityError(OsmoError):
    """Stored data does not match its hash, or a structure is malformed (corruption, tampering)."""

    exit_code = 5
    code = "integrity"


class UnsafePathError(OsmoError):
    """A manifest path that would land outside the destination folder."""

    exit_code = 6
    code = "unsafe_path"


class FormatVersionError(OsmoError):
    """The store uses a format version (or a feature) this program does not understand."""

    exit_code = 7
    code = "format_version"


class BackendError(OsmoError):
    """The blob store failed (I/O error, full disk, permission denied, unreachable server)."""

    exit_code = 8
    code = "storage"


class TransientBackendError(BackendError):
    """A failure that may succeed if the same request is repeated (timeout, reset, 5xx, throttling).

    Backends raise it; only the retrying wrapper (``blob/retry.py``) acts on the difference.
    """


class UnavailableError(BackendError):
    """The store stayed unreachable through every retry (``blob/retry.py``): nothing is known of the
    object, so it is not damage."""


class IndexDamagedError(BackendError):
    """The local index (a cache) cannot be read or holds a value that fails its check. Callers
    rebuild it from the store; it reaches the user only if it happens in the middle of a command."""

    code = "index_damaged"


class SourceChangedError(OsmoError):
    """A file being uploaded kept changing (or vanished) while it was read; nothing was committed."""

    exit_code = 9
    code = "source_changed"


class Interrupted(OsmoError):
    """The user interrupted the operation (Ctrl-C); nothing partial became visible."""

    exit_code = 130
    code = "interrupted"
