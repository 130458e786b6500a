"""Where a store and its local index live, and how a store comes to be: the per-user defaults, configured
store names, a new store's config (and its copy), reading it back (from the copy when the config is
damaged), and the local index, rebuilt when it is damaged. ``Repository.open`` uses these; so do
``osmo store init`` and the sidecar's check of a store.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import replace

from osmo_store.blob import BlobStore, open_blob_store
from osmo_store.config import CONFIG_COPY_KEY, CONFIG_KEY, StoreConfig
from osmo_store.errors import (AlreadyExistsError, FormatVersionError, IndexDamagedError, IntegrityError,
                               NotFoundError)
from osmo_store.index import LocalIndex
from osmo_store.userconfig import StoreLocation, UserConfig

log = logging.getLogger("osmo.store")


def default_store_url() -> str:
    if os.environ.get("OSMO_STORE"):
        return os.environ["OSMO_STORE"]
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "osmo", "store")


def default_cache_dir() -> str:
    if os.environ.get("OSMO_CACHE_DIR"):
        return os.environ["OSMO_CACHE_DIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "osmo")


def resolve_store(spec: str | None) -> tuple[StoreLocation, bool]:
    """Where ``--store SPEC`` points (a configured name, a URL or a path; ``None``: the default),
    and whether a missing store there may be created on first use (only the per-user default)."""
    location = UserConfig.load().resolve(spec)
    if location is None:
        return StoreLocation(default_store_url()), True
    return location, False


def open_store_blob(spec: str | None) -> BlobStore:
    location, _ = resolve_store(spec)
    return open_blob_store(location.url, location.options)


def init_store(blob: BlobStore, config: StoreConfig | None = None) -> StoreConfig:
    """Write a new store's config exclusively (and its copy); refuses if one exists."""
    config = (config or StoreConfig()).validate()
    try:
        blob.create(CONFIG_KEY, config.encode())
    except AlreadyExistsError:
        raise AlreadyExistsError(f"{blob.url} already holds an osmo store") from None
    blob.put(CONFIG_COPY_KEY, config.encode())
    return config


def read_config(blob: BlobStore) -> StoreConfig:
    """The store's config; when it is damaged or missing, its copy, with a warning (``osmo store
    repair`` writes it back). ``NotFoundError`` when neither is there."""
    try:
        return StoreConfig.decode(blob.get(CONFIG_KEY))
    except (IntegrityError, NotFoundError, FormatVersionError) as exc:
        try:
            config = StoreConfig.decode(blob.get(CONFIG_COPY_KEY), CONFIG_COPY_KEY)
        except (IntegrityError, NotFoundError, FormatVersionError):
            raise exc from None
        what = "missing" if isinstance(exc, NotFoundError) else f"damaged ({exc})"
        log.warning(f"osmo: warning: the store's config is {what}; using {CONFIG_COPY_KEY} "
                    "(run 'osmo store repair')")
        return config


def open_index(path: str) -> LocalIndex:
    """The local index at ``path``; one that is damaged (or written by another osmo version) is
    deleted and started again, with one line saying so: it is a cache, rebuilt from the store as
    commands need it. Where it cannot be deleted, a temporary index serves this process."""
    try:
        return LocalIndex(path)
    except IndexDamagedError as exc:
        log.warning(f"osmo: note: {exc}; rebuilding it from the store")
    try:
        remove_index(path)
        return LocalIndex(path)
    except (OSError, IndexDamagedError) as exc:
        temporary = tempfile.mkdtemp(prefix="osmo-index-")
        log.warning(f"osmo: note: cannot replace the local index at {path} ({exc}); "
                    f"using a temporary one in {temporary}")
        index = LocalIndex(temporary)
        index.temporary = True  # removed when the repository closes
        return index


def remove_index(path: str) -> None:
    """Delete an index folder (the files an index holds, then the folder), or what took its place."""
    if not os.path.isdir(path) or os.path.islink(path):
        os.unlink(path)
        return
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)
    os.rmdir(path)


def config_with(**overrides) -> StoreConfig:
    """A default config with some fields replaced (used by ``osmo store init`` options and tests)."""
    chunker_fields = {k: overrides.pop(k) for k in list(overrides) if k in ("min_size", "avg_size", "max_size")}
    base = StoreConfig()
    if chunker_fields:
        base = replace(base, chunker=replace(base.chunker, **chunker_fields))
    return replace(base, **overrides).validate()
