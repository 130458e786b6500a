"""The store's configuration object (the ``config`` key): format version and the fixed parameters.

Chunking parameters, hash, pack size, compression and manifest fan-out are fixed when the store is
initialised: changing them would break deduplication against what is already stored. Every size is a
field, so tests can shrink chunks and packs to reach edge cases cheaply.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field

from osmo_store import hashing
from osmo_store.errors import FormatVersionError, IntegrityError, UsageError

FORMAT_NAME = "osmo-store"
FORMAT_VERSION = 1
CONFIG_KEY = "config"
CONFIG_COPY_KEY = "config-copy"  # the same bytes: a damaged config is read from (and repaired by) its copy
CHECK = "check"

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC 2020 (normalisation level 1, gear seed 0) size bounds in bytes."""

    algorithm: str = "fastcdc-2020"
    min_size: int = 16 * KiB
    avg_size: int = 64 * KiB
    max_size: int = 256 * KiB

    def validate(self) -> None:
        if self.algorithm != "fastcdc-2020":
            raise FormatVersionError(f"unknown chunker {self.algorithm!r} in store config")
        if not (64 <= self.min_size <= self.avg_size <= self.max_size <= 16 * MiB):
            raise UsageError(
                "chunk sizes must satisfy 64 <= min <= avg <= max <= 16 MiB, "
                f"got {self.min_size}/{self.avg_size}/{self.max_size}"
            )
        if self.avg_size < 256 or self.avg_size & (self.avg_size - 1):
            raise UsageError(f"average chunk size must be a power of two >= 256, got {self.avg_size}")
        if self.max_size < 1024:
            raise UsageError(f"maximum chunk size must be >= 1024, got {self.max_size}")


@dataclass(frozen=True)
class StoreConfig:
    """Everything a reader needs to interpret the store. Serialised as canonical JSON."""

    store_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    hash: str = "blake3-256"
    pack_target_size: int = 32 * MiB
    compression: str = "zstd"  # or "none"
    compression_level: int = 3
    manifest_node_entries: int = 512  # target entries per manifest tree node (fan-out)
    version: int = FORMAT_VERSION

    def validate(self) -> "StoreConfig":
        if self.version != FORMAT_VERSION:
            raise FormatVersionError(
                f"store format version {self.version} is not supported by this osmo "
                f"(it reads version {FORMAT_VERSION}); upgrade osmo"
            )
        self.chunker.validate()
        if self.hash != "blake3-256":
            raise FormatVersionError(f"unknown hash {self.hash!r} in store config")
        if self.compression not in ("zstd", "none"):
            raise FormatVersionError(f"unknown compression {self.compression!r} in store config")
        if not (1 <= self.compression_level <= 22):
            raise UsageError(f"compression level must be 1-22, got {self.compression_level}")
        if self.pack_target_size < self.chunker.max_size:
            raise UsageError("pack target size must be at least the maximum chunk size")
        if self.manifest_node_entries < 2:
            raise UsageError("manifest node entries must be at least 2")
        return self

    def encode(self) -> bytes:
        doc = {"format": FORMAT_NAME, **asdict(self)}
        return json.dumps({**doc, CHECK: _check(doc)}, sort_keys=True, indent=2).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes, key: str = CONFIG_KEY) -> "StoreConfig":
        """Parse and validate a config; ``IntegrityError`` if it is damaged (its ``check``, the BLAKE3
        of the rest, does not match: configs written before checks existed carry none)."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise IntegrityError(f"store {key} is not valid JSON: {exc}") from None
        if isinstance(doc, dict) and CHECK in doc:
            check = doc.pop(CHECK)
            if check != _check(doc):
                raise IntegrityError(f"store {key} is damaged: its check does not match its content")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise FormatVersionError("this location does not hold an osmo store (config format field missing)")
        version = doc.get("version")
        if version != FORMAT_VERSION:
            raise FormatVersionError(
                f"store format version {version!r} is not supported by this osmo "
                f"(it reads version {FORMAT_VERSION}); upgrade osmo"
            )
        try:
            chunker = ChunkerParams(**doc["chunker"])
            fields = {k: doc[k] for k in (
                "store_id", "created", "hash", "pack_target_size", "compression",
                "compression_level", "manifest_node_entries", "version")}
            return cls(chunker=chunker, **fields).validate()
        except (KeyError, TypeError) as exc:
            raise IntegrityError(f"store {key} is malformed: {exc}") from None
        except UsageError as exc:  # sizes no init would accept: the object was damaged
            raise IntegrityError(f"store {key} is malformed: {exc}") from None


def _check(doc: dict) -> str:
    return hashing.digest(json.dumps(doc, sort_keys=True).encode())[:16].hex()
