"""Faults on the wire: an HTTP proxy in front of moto (S3) and Azurite fails 5% of
the requests the way a flaky network or a busy server does: a 503 answer (SlowDown / ServerBusy), a
connection dropped before the request reaches the server, or dropped after the server handled it
(the answer is lost). Uploads and downloads still succeed byte-exact through the real s3fs / adlfs
error paths and osmo's one retry layer, and nothing is committed twice.

(``test_remote_stores.py`` injects ``TransientBackendError`` above the backend; this one checks that
real network failures are classified as transient in the first place.)
"""

from __future__ import annotations

import http.client
import random
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from helpers.trees import random_tree, snapshot
from osmo_store.blob import open_blob_store
from osmo_store.repository import Repository, config_with, init_store
from osmo_store.transfer.upload import UploadRequest

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FlakyProxy:
    """Forwards HTTP/1.1 requests to ``upstream``; fails ``rate`` of them (after the first ``spare``)."""

    def __init__(self, upstream: str, rate: float, seed: int, spare: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.rate = rate
        self.rng = random.Random(seed)
        self.spare = spare
        self.seen = 0
        self.faults: Counter[str] = Counter()
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self, body: bytes):
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                return resp.status, resp.reason, resp.getheaders(), data

            def _drop(self) -> None:
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)

            def _handle(self) -> None:
                body = self._body()
                fault = proxy.roll()
                if fault == "drop-before":
                    return self._drop()
                if fault == "503":
                    xml = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                           b"<Message>Please reduce your request rate.</Message></Error>")
                    self.send_response(503, "Service Unavailable")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("x-ms-error-code", "ServerBusy")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    if self.command != "HEAD":  # a HEAD answer has no body
                        self.wfile.write(xml)
                    return
                status, reason, headers, data = self._forward(body)
                if fault == "drop-after":
                    return self._drop()
                self.send_response(status, reason)
                head = self.command == "HEAD"  # its Content-Length is the object's, with no body sent
                for k, v in headers:
                    if k.lower() not in HOP_BY_HOP and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def roll(self) -> str | None:
        with self.lock:
            self.seen += 1
            if self.seen <= self.spare or self.rng.random() >= self.rate:
                return None
            fault = self.rng.choice(["503", "drop-before", "drop-after"])
            self.faults[fault] += 1
            return fault

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["s3", "azure"])
def flaky_store(request):
    """``(url, options, proxy)``: a fresh store location reached through a 5% flaky proxy."""
    prefix = f"flaky-{uuid.uuid4().hex[:6]}"
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        proxy = FlakyProxy(bucket.endpoint_url, rate=0.05, seed=17)
        options = {"endpoint_url": proxy.url, "key": bucket.key, "secret": bucket.secret}
        url = f"{bucket.url}/{prefix}"
    else:
        container = request.getfixturevalue("azure_container")
        endpoint = container.connection_string.split("BlobEndpoint=")[1].split(";")[0]
        proxy = FlakyProxy(endpoint, rate=0.05, seed=17)
        path = urlsplit(endpoint).path
        options = {"connection_string": container.connection_string.replace(endpoint, proxy.url + path)}
        url = f"{container.url}/{prefix}"
    yield url, options, proxy
    proxy.stop()


def test_five_percent_network_faults_upload_and_download_byte_exact(flaky_store, tmp_path):
    url, options, proxy = flaky_store
    config = config_with(min_size=1024, avg_size=4096, max_size=16384, pack_target_size=64 * 1024,
                         manifest_node_entries=8)
    init_store(open_blob_store(url, options), config)
    srcs = []
    for i in range(2):
        src = tmp_path / f"src{i}"
        random_tree(src, seed=30 + i, files=60, max_size=30_000)
        srcs.append(src)
        with Repository(open_blob_store(url, options), config, cache_dir=str(tmp_path / f"up{i}")) as repo:
            assert repo.upload(UploadRequest("flaky", [str(src)])).version == i + 1
    for i, src in enumerate(srcs):
        with Repository(open_blob_store(url, options), config, cache_dir=str(tmp_path / f"down{i}")) as repo:
            repo.log.sync()
            repo.download(f"flaky:{i + 1}", str(tmp_path / f"out{i}"))
        assert snapshot(tmp_path / f"out{i}", mtimes=False) == snapshot(src, mtimes=False)
    assert proxy.seen > 150 and sum(proxy.faults.values()) >= 5, (proxy.seen, proxy.faults)
    assert all(proxy.faults[f] > 0 for f in ("503", "drop-before", "drop-after")), proxy.faults
    # exactly two events: no commit was made twice by a retried create whose answer was lost
    proxy.rate = 0
    assert sorted(open_blob_store(url, options).list("log/")) == ["log/000000000001", "log/000000000002"]
