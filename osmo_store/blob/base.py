"""The blob store interface and its written guarantees.

A blob store maps keys (``/``-separated relative paths of printable characters) to immutable-looking
byte strings. Every backend must honour these guarantees, which ``conformance.BlobStoreConformance``
checks:

* ``get`` / ``get_range`` return exactly the bytes of one complete ``put`` or ``create``: never a
  partial object. A missing key raises ``NotFoundError``; ``get_range`` past the end returns the bytes
  that exist (possibly empty).
* ``put`` is atomic: readers see the old object or the new one, never a mix. After ``put`` returns the
  object is durable (survives a crash of this process and, for local disks, of the machine).
* ``create`` is an atomic exclusive create: of any number of concurrent ``create`` calls on one key
  exactly one succeeds; the others raise ``AlreadyExistsError`` and change nothing. Backends that
  cannot promise this set ``supports_exclusive_create = False``.
* ``list_info(prefix)`` is ``list`` with each object's size and last-modified time (seconds since
  the epoch, by the medium's clock; garbage collection uses it to spare new objects).
* ``list(prefix)`` yields every key that starts with ``prefix`` and was completely written before the
  call began, in lexicographic order; never a temporary or partial object.
* ``put_parts`` is ``put`` of the concatenation of its parts (backends may stream them).
* ``spool(folder)`` (optional: ``None`` where unsupported) is an object written piece by piece before
  its key is known: ``write`` appends, ``commit(key)`` makes it the object ``key`` exactly as ``put``
  would (atomic, durable), ``abort`` drops it. Nothing of it is listed or readable before ``commit``.
* ``delete`` removes a key; deleting a missing key is not an error.
* ``size`` returns an object's length or raises ``NotFoundError``.
* Read-after-write: a successful ``put``/``create`` is visible to every later call.
* Failures of the medium raise ``BackendError`` naming the backend and key; failures that may
  succeed when repeated raise its subclass ``TransientBackendError`` (only ``retry.py`` retries).

``concurrency`` is how many requests in flight suit the backend (pack uploads, range reads): 1 for a
local disk, more for object stores. ``local`` is true when objects are files on a disk of this
machine (writes cost CPU and fsync waits rather than round trips).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from osmo_store.errors import UsageError


def check_key(key: str) -> str:
    """Reject keys that are empty, absolute, contain empty/``.``/``..`` parts or control characters."""
    if not key or key.startswith("/") or key.endswith("/"):
        raise UsageError(f"invalid blob key {key!r}")
    for part in key.split("/"):
        if part in ("", ".", "..") or any(ord(c) < 32 for c in part):
            raise UsageError(f"invalid blob key {key!r}")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key, length and last-modified time (epoch seconds)."""

    key: str
    size: int
    modified: float


class Spool(Protocol):
    """An object being written piece by piece (``BlobStore.spool``)."""

    size: int  # bytes written so far

    def write(self, data: bytes | memoryview) -> None: ...

    def commit(self, key: str) -> None: ...

    def abort(self) -> None: ...


class BlobStore(abc.ABC):
    """A flat namespace of byte objects; see the module docstring for the guarantees."""

    supports_exclusive_create: bool = True
    concurrency: int = 1
    local: bool = False
    spools: bool = False  # ``spool`` gives objects written piece by piece

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where the store lives, without credentials (used in messages)."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def get_range(self, key: str, offset: int, length: int) -> bytes: ...

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def create(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]: ...

    @abc.abstractmethod
    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def size(self, key: str) -> int: ...

    def put_parts(self, key: str, parts: list[bytes]) -> None:
        """``put`` of the concatenation of ``parts``; backends that can stream them override it."""
        self.put(key, b"".join(parts))

    def spool(self, folder: str) -> Spool | None:
        """A new object to write piece by piece under ``folder`` (a key prefix ending in ``/``), or
        ``None``: the caller then keeps the pieces and ``put_parts`` them (object stores)."""
        return None

    def exists(self, key: str) -> bool:
        from osmo_store.errors import NotFoundError

        try:
            self.size(key)
        except NotFoundError:
            return False
        return True

    def remove_temporaries(self, older_than: float) -> int:
        """Delete leftovers of writes interrupted before ``older_than`` (epoch seconds); returns how
        many. Only backends that leave such leftovers (temporary files) have anything to do."""
        return 0

    def close(self) -> None:
        """Release connections; the default has nothing to release."""

    def reopener(self) -> Callable[[], BlobStore] | None:
        """A picklable function that opens this same store in another process (upload workers), or
        ``None`` when the store cannot be shared that way (memory, wrapped test stores): the caller
        then keeps the work in its own process."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
