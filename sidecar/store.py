"""Opening the dataset store a task reads from and writes to.

``contract.store`` is what ``--store`` takes on the command line: a configured store name, a URL or a
path; ``None`` is the user's default store (``$OSMO_STORE``, the config file's ``default_store``, else
the per-user store, created on first use). The local index lives under ``$OSMO_CACHE_DIR`` as for the
CLI. Opening is retried like any other item (the store may be briefly unreachable).

``check_store`` is what ``osmo-sidecar check-store`` runs for ``osmo workflow submit``, before any task
runs: the store must exist (the per-user default is created) and, when it is a local folder, this
process must be able to create files in it (a probe file ``.tmp-probe-*``, which stores never list,
is created and removed in the folder, ``log/`` and ``packs/``). An object store is opened (its
``config`` read) but not written: its write permission is first used by the upload.
"""

from __future__ import annotations

import os
import uuid

from osmo_store.errors import OsmoError
from osmo_store.repository import Repository, resolve_store

from sidecar.errors import DataError, one_line
from sidecar.retry import RetryPolicy, with_retry

PROBE_PREFIX = ".tmp-probe-"  # a local store's temporary-file prefix: never listed, swept by gc


class StoreHandle:
    """Opens the repository on first use and closes it at the end of a phase."""

    def __init__(self, spec: str | None, policy: RetryPolicy) -> None:
        self.spec = spec
        self.policy = policy
        self._repo: Repository | None = None

    @property
    def label(self) -> str:
        return self.spec if self.spec is not None else "the default store"

    def get(self) -> Repository:
        if self._repo is None:
            self._repo = with_retry(f"opening {self.label}", lambda _: Repository.open(self.spec), self.policy)
        return self._repo

    def close(self) -> None:
        if self._repo is not None:
            try:
                self._repo.close()
            finally:
                self._repo = None

    def __enter__(self) -> "StoreHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _local_folder(url: str) -> str | None:
    if url.startswith("file://"):
        return url[len("file://"):]
    return None if "://" in url else url


def _probe_folder(folder: str) -> None:
    """Create and remove a probe file in ``folder`` and in its ``log/`` and ``packs/`` (those that
    exist); raises ``OSError`` when one cannot be written."""
    for place in (folder, os.path.join(folder, "log"), os.path.join(folder, "packs")):
        if place != folder and not os.path.isdir(place):
            continue
        probe = os.path.join(place, f"{PROBE_PREFIX}{uuid.uuid4().hex}")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        os.unlink(probe)


def check_store(spec: str | None) -> str:
    """Check that tasks will be able to use the store ``spec`` (None: the default store); returns a
    one-line description, raises ``DataError`` naming the store."""
    try:
        location, _ = resolve_store(spec)
    except OsmoError as exc:
        raise DataError(f"store {spec}: {one_line(exc)}") from None
    label = spec if spec is not None else location.url
    try:
        Repository.open(spec).close()
    except OsmoError as exc:
        raise DataError(f"store {label}: {one_line(exc)}") from None
    folder = _local_folder(location.url)
    if folder is None:
        return f"store {label}: found (an object store: write access is first used by the upload)"
    try:
        _probe_folder(folder)
    except OSError as exc:
        where = os.path.dirname(exc.filename) if exc.filename else folder
        raise DataError(f"store {label}: cannot write into {where}: {exc.strerror or one_line(exc)}") from None
    return f"store {label}: found and writable"
