"""Pytest fixtures for real loopback object stores: moto (S3) and Azurite (Azure Blob).

Imported into ``tests/conftest.py`` with ``from servers.fixtures import *`` (``tests/`` is on
``sys.path`` there, as for ``helpers``). Fixtures:

- ``s3_server`` (session): a running :class:`~.moto_s3.MotoS3Server`.
- ``azurite_server`` (session): a running :class:`~.azurite.AzuriteServer`.
- ``s3_bucket`` (function): an :class:`S3Bucket`, a fresh empty bucket, deleted afterwards.
- ``azure_container`` (function): an :class:`AzureContainer`, a fresh empty container, deleted afterwards.

The function-scoped fixtures also put their ``env`` into ``os.environ`` for the test's duration
(monkeypatch), so code that only gets a URL (``s3://bucket-...``, ``az://container-...``) reaches the
test server in-process exactly as a subprocess given ``env`` does. A server that cannot start makes
the fixture FAIL (never skip) with a message naming ``.ci/install-services.sh``.
"""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass, field

import pytest

from .azurite import ACCOUNT, AzuriteServer
from .moto_s3 import MotoS3Server

__all__ = ["S3Bucket", "AzureContainer", "s3_server", "azurite_server", "s3_bucket", "azure_container"]

INSTALL_SCRIPT = ".ci/install-services.sh"


@dataclass(frozen=True)
class S3Bucket:
    name: str
    url: str  # s3://NAME
    endpoint_url: str
    key: str
    secret: str
    env: dict[str, str] = field(default_factory=dict)  # AWS_* variables for a subprocess

    @property
    def storage_options(self) -> dict:
        """fsspec/s3fs keyword arguments (no region_name: moto then refuses bucket creation)."""
        return {"key": self.key, "secret": self.secret, "endpoint_url": self.endpoint_url}

    def filesystem(self, **kwargs):
        """A new, uncached ``s3fs.S3FileSystem`` for this server (listing cache on unless disabled)."""
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options, skip_instance_cache=True, **kwargs)


@dataclass(frozen=True)
class AzureContainer:
    name: str
    url: str  # az://NAME
    connection_string: str
    account_name: str
    env: dict[str, str] = field(default_factory=dict)  # AZURE_STORAGE_CONNECTION_STRING for a subprocess

    @property
    def storage_options(self) -> dict:
        return {"connection_string": self.connection_string}

    def filesystem(self, **kwargs):
        """A new, uncached ``adlfs.AzureBlobFileSystem`` for this server."""
        import adlfs

        return adlfs.AzureBlobFileSystem(**self.storage_options, skip_instance_cache=True, **kwargs)


def start_or_fail(server, what: str):
    """Start ``server`` or fail the requesting test (not skip) with the cause and the install script."""
    try:
        return server.start()
    except Exception as exc:  # noqa: BLE001 - any start failure must become a clear test failure
        pytest.fail(f"{what} could not start: {type(exc).__name__}: {exc}\n"
                    f"Install the test services with: bash {INSTALL_SCRIPT}", pytrace=False)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"  # valid S3 bucket and Azure container name


@pytest.fixture(scope="session")
def s3_server():
    server = start_or_fail(MotoS3Server(), "moto S3 server")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite_server():
    server = start_or_fail(AzuriteServer(), "Azurite (Azure Blob emulator)")
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    name = s3_server.make_bucket(_unique("bucket"))
    env = s3_server.env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield S3Bucket(name=name, url=f"s3://{name}", endpoint_url=s3_server.endpoint_url,
                   key=s3_server.key, secret=s3_server.secret, env=env)
    try:
        s3_server.delete_bucket(name)  # frees moto's memory
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"could not delete test bucket {name}: {exc!r}")


@pytest.fixture
def azure_container(azurite_server, monkeypatch):
    name = azurite_server.make_container(_unique("container"))
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite_server.connection_string}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield AzureContainer(name=name, url=f"az://{name}", connection_string=azurite_server.connection_string,
                         account_name=ACCOUNT, env=env)
    try:
        azurite_server.delete_container(name)
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"could not delete test container {name}: {exc!r}")
