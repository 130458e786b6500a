"""Pytest fixtures for the Ceph radosgw tier (a real S3 server, see ``radosgw.py``).

- ``radosgw_server`` (session): one running :class:`~.radosgw.RadosgwServer`, shared by every test of the
  session (one cluster serves any number of buckets; ~2 s to start).
- ``radosgw_bucket`` (function): a :class:`RadosgwBucket`, a fresh empty bucket, emptied and deleted
  afterwards. Its ``env`` is also put into ``os.environ`` for the test (monkeypatch), so code that only
  gets ``url`` reaches the cluster in-process exactly as a subprocess given ``env`` does.

If the Ceph binaries are missing (``require_tool``, tests/helpers/tools.py) or the cluster does not come
up, the fixture FAILS (never skips) with a message naming ``.ci/install-radosgw.sh``. Use them with
``from servers.radosgw_fixtures import *`` (``tests/`` is on ``sys.path`` in the test session, as for
``helpers``).
"""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass

import pytest

from helpers.tools import require_tool

from .fixtures import S3Bucket
from .radosgw import BINARIES, RadosgwServer

__all__ = ["RadosgwBucket", "radosgw_server", "radosgw_bucket"]

INSTALL_SCRIPT = ".ci/install-radosgw.sh"


@dataclass(frozen=True)
class RadosgwBucket(S3Bucket):
    """An ``S3Bucket`` on the Ceph cluster, plus a raw boto3 client."""

    def client(self):
        """A boto3 S3 client (path-style, no retries) for header-level checks s3fs hides."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.key,
                            aws_secret_access_key=self.secret, region_name=self.env["AWS_DEFAULT_REGION"],
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


@pytest.fixture(scope="session")
def radosgw_server():
    for binary in BINARIES:
        require_tool(binary)
    server = RadosgwServer()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any start failure must become a clear test failure
        pytest.fail(f"Ceph radosgw cluster could not start: {type(exc).__name__}: {exc}\n"
                    f"(packages come from: bash {INSTALL_SCRIPT})", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def radosgw_bucket(radosgw_server, monkeypatch):
    name = radosgw_server.make_bucket(f"bucket-{uuid.uuid4().hex[:12]}")
    env = radosgw_server.env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield RadosgwBucket(name=name, url=f"s3://{name}", endpoint_url=radosgw_server.endpoint_url,
                        key=radosgw_server.key, secret=radosgw_server.secret, env=env)
    try:
        radosgw_server.delete_bucket(name)  # frees the memstore's memory
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"could not delete test bucket {name}: {exc!r}")

