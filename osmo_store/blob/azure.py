"""Azure Blob Storage (and Azurite) through adlfs: ``az://container[/prefix]`` or ``abfs://...``.

Credentials, first match wins: the store options (``connection_string``; ``account_name`` with
``account_key`` or ``sas_token``; ``anon``), then ``AZURE_STORAGE_CONNECTION_STRING``, then
``AZURE_STORAGE_ACCOUNT_NAME`` with ``AZURE_STORAGE_ACCOUNT_KEY`` / ``AZURE_STORAGE_SAS_TOKEN``
(adlfs reads those), then Azure's default credential chain.

Exclusive creates are ``Put Blob`` with ``If-None-Match: *`` (adlfs ``pipe_file(mode="create")``);
a lost race is 409 BlobAlreadyExists, raised by adlfs as ``FileExistsError``. The Azure SDK's own
retry policy is switched off so that retries happen in one layer only (``blob/retry.py``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from osmo_store.blob.fsspec_store import FsspecBlobStore, truthy
from osmo_store.errors import UsageError

OPTIONS = ("connection_string", "account_name", "account_key", "sas_token", "anon", "concurrency")


class AzureBlobStore(FsspecBlobStore):
    pass


def _disable_sdk_retries(fs: Any) -> None:
    client = getattr(fs, "service_client", None)
    policy = getattr(getattr(client, "_config", None), "retry_policy", None)
    if policy is not None and hasattr(policy, "total_retries"):
        policy.total_retries = 0


def open_azure(url: str, options: dict[str, Any]) -> AzureBlobStore:
    scheme, _, rest = url.partition("://")
    unknown = sorted(set(options) - set(OPTIONS) - {"allow_unsafe_create"})
    if unknown:
        raise UsageError(f"store {url}: unknown Azure {'option' if len(unknown) == 1 else 'options'} "
                         f"{', '.join(unknown)} "
                         f"(known: {', '.join(OPTIONS)})")
    root = rest.strip("/")
    if "@" in root.split("/", 1)[0]:  # abfs://container@account.dfs.core.windows.net/prefix
        container, _, host = root.split("/", 1)[0].partition("@")
        options = {"account_name": host.split(".", 1)[0], **options}
        root = "/".join([container] + root.split("/")[1:])
    if not root:
        raise UsageError(f"store URL {url!r}: name a container, e.g. az://my-container/datasets")
    try:
        import adlfs
    except ImportError:  # pragma: no cover - adlfs is a dependency
        raise UsageError("Azure stores need the adlfs package (pip install adlfs)") from None
    kwargs: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    conn = options.get("connection_string") or (
        None if options.get("account_name") else os.environ.get("AZURE_STORAGE_CONNECTION_STRING"))
    if conn:
        kwargs["connection_string"] = conn
    else:
        for name in ("account_name", "account_key", "sas_token"):
            if options.get(name):
                kwargs[name] = options[name]
        if truthy(options.get("anon", False)):
            kwargs["anon"] = True
    if "account_name" not in kwargs and not conn and not os.environ.get("AZURE_STORAGE_ACCOUNT_NAME"):
        raise UsageError(f"store {url}: no Azure account: set AZURE_STORAGE_CONNECTION_STRING, or "
                         "AZURE_STORAGE_ACCOUNT_NAME (with a key or SAS token), or the store's options")
    try:
        with _hidden_env(None if conn else "AZURE_STORAGE_CONNECTION_STRING"):
            fs = adlfs.AzureBlobFileSystem(**kwargs)
    except ValueError as exc:  # malformed connection string and the like
        raise UsageError(f"store {url}: {' '.join(str(exc).split())}") from None
    _disable_sdk_retries(fs)
    return AzureBlobStore(fs, root, f"{scheme}://{root}", exclusive=True,
                          concurrency=int(options.get("concurrency", 8)))


@contextlib.contextmanager
def _hidden_env(name: str | None):
    """adlfs prefers ``AZURE_STORAGE_CONNECTION_STRING`` from the environment to the account it is
    given: hide it while a store whose options name an account is opened."""
    saved = os.environ.pop(name, None) if name else None
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved
