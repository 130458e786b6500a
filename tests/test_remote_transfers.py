"""Transfers on a real S3 server (moto):

* packs are uploaded in parallel, and the store option ``concurrency`` tunes how many at once
  (default 8: up to 4 packs at once; ``concurrency=2``: at most 2);
* a download fetches only the byte ranges it needs (a filtered download reads a small part of the
  packs), coalescing neighbours (far fewer range requests than files);
* an upload's memory is bounded: uploading 6x more data does not raise the CLI's peak RSS by more
  than a few packs.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import uuid

import pytest

from helpers.trees import snapshot, write_file
from osmo_store.blob import open_blob_store
from osmo_store.blob.wrappers import DelegatingBlobStore, MeteredBlobStore
from osmo_store.repository import Repository, config_with, init_store
from osmo_store.transfer.upload import UploadRequest


class InFlight(DelegatingBlobStore):
    """Measures how many pack writes are in flight at once (each held a little longer than needed)."""

    def __init__(self, inner, hold: float = 0.05) -> None:
        super().__init__(inner)
        self.hold = hold
        self.now = self.peak = self.writes = 0
        self._lock = threading.Lock()

    def put_parts(self, key, parts):
        with self._lock:
            self.now += 1
            self.writes += 1
            self.peak = max(self.peak, self.now)
        try:
            time.sleep(self.hold)
            self.inner.put_parts(key, parts)
        finally:
            with self._lock:
                self.now -= 1

    def put(self, key, data):
        self.put_parts(key, [data])

    def get(self, key):
        return self.inner.get(key)

    def get_range(self, key, offset, length):
        return self.inner.get_range(key, offset, length)

    def create(self, key, data):
        self.inner.create(key, data)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def list_info(self, prefix=""):
        return self.inner.list_info(prefix)

    def delete(self, key):
        self.inner.delete(key)

    def size(self, key):
        return self.inner.size(key)


def _random_files(root, seed: int, files: int, size: int) -> None:
    rng = random.Random(seed)
    for i in range(files):
        write_file(os.path.join(root, f"d{i % 4}", f"f{i:04d}.bin"), rng.randbytes(rng.randint(size // 2, size)),
                   mtime_ns=1_600_000_000_000_000_000 + i)


@pytest.mark.parametrize("concurrency,lowest,highest", [(None, 3, 4), (2, 1, 2), (1, 1, 1)])
def test_packs_upload_in_parallel_and_concurrency_tunes_it(s3_bucket, tmp_path, concurrency, lowest, highest):
    config = config_with(min_size=1024, avg_size=4096, max_size=16384, pack_target_size=64 * 1024)
    url = f"{s3_bucket.url}/par-{uuid.uuid4().hex[:6]}"
    options = {} if concurrency is None else {"concurrency": concurrency}
    blob = InFlight(open_blob_store(url, options))
    assert blob.concurrency == (8 if concurrency is None else concurrency)
    init_store(blob, config)
    src = tmp_path / "src"
    _random_files(src, seed=4, files=40, size=40_000)  # ~1.2 MB incompressible: ~18 packs
    with Repository(blob, config, cache_dir=str(tmp_path / "cache")) as repo:
        repo.upload(UploadRequest("par", [str(src)]), workers=4)
    assert blob.writes >= 10
    assert lowest <= blob.peak <= highest, blob.peak  # packs written at the same time
    with Repository(open_blob_store(url), config, cache_dir=str(tmp_path / "fresh")) as repo:
        repo.log.sync()
        repo.download("par", str(tmp_path / "out"))
    assert snapshot(tmp_path / "out") == snapshot(src)


def test_download_fetches_only_needed_ranges_and_coalesces_them(s3_bucket, tmp_path):
    config = config_with(min_size=1024, avg_size=4096, max_size=16384, pack_target_size=512 * 1024)
    url = f"{s3_bucket.url}/ranges-{uuid.uuid4().hex[:6]}"
    init_store(open_blob_store(url), config)
    src = tmp_path / "src"
    _random_files(src, seed=9, files=400, size=3000)  # 400 small files
    rng = random.Random(1)
    write_file(os.path.join(src, "big.bin"), rng.randbytes(3 * 1024 * 1024), mtime_ns=1_600_000_000_000_000_000)
    with Repository(open_blob_store(url), config, cache_dir=str(tmp_path / "up")) as repo:
        repo.upload(UploadRequest("mixed", [str(src)]))
    store = open_blob_store(url)
    packs = list(store.list("packs/"))
    pack_bytes = sum(store.size(k) for k in packs)

    metered = MeteredBlobStore(open_blob_store(url))
    with Repository(metered, config, cache_dir=str(tmp_path / "down")) as repo:
        repo.log.sync()
        repo.chunks.refresh_packs()  # a fresh client indexes the footers first
        nodes = len(repo.tree_shape("mixed"))
        metered.requests.clear()
        metered.bytes_in = 0
        repo.download("mixed", str(tmp_path / "one"), include=["d1/f0001.bin"])
        assert metered.bytes_in < 64 * 1024  # one small file (and manifest nodes), not whole packs
        metered.requests.clear()
        metered.bytes_in = 0
        repo.download("mixed", str(tmp_path / "all"))
        ranges = metered.requests["get_range"] - nodes
        assert metered.requests["get"] == 0  # never a whole object
        assert 0 < ranges <= len(packs) + 3 * 1024 * 1024 // (8 * 1024 * 1024) + 2  # spans, not 401 files
        assert metered.bytes_in <= pack_bytes  # nothing read twice
    assert snapshot(tmp_path / "all") == snapshot(src)
    assert snapshot(tmp_path / "one") == {"d1/f0001.bin": snapshot(src)["d1/f0001.bin"]}


def _peak_rss(argv: list[str], env: dict) -> int:
    """Run a command and return its peak RSS (VmHWM of its own address space, polled), in bytes."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    status = f"/proc/{proc.pid}/status"
    while proc.poll() is None:
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        time.sleep(0.02)
    out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    return peak


def test_upload_memory_is_bounded(s3_bucket, tmp_path):
    """Packs of 1 MiB: bounded memory holds a handful of them whatever the upload's size."""
    url = f"{s3_bucket.url}/rss-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, **s3_bucket.env, "OSMO_CACHE_DIR": str(tmp_path / "cache"),
           "OSMO_CONFIG": str(tmp_path / "config.yaml")}
    osmo = [sys.executable, "-m", "osmo_store.cli.main", "--store", url]
    subprocess.run([*osmo, "store", "init", "--pack-size", str(1024 * 1024)], env=env, check=True,
                   capture_output=True)
    peaks = {}
    for name, mib in (("small", 24), ("large", 160)):
        src = tmp_path / name
        rng = random.Random(mib)
        for i in range(mib // 8):
            write_file(os.path.join(src, f"f{i:03d}.bin"), rng.randbytes(8 * 1024 * 1024),
                       mtime_ns=1_600_000_000_000_000_000 + i)
        peaks[name] = _peak_rss([*osmo, "dataset", "upload", name, str(src), "--workers", "2", "--json"], env)
    grown = peaks["large"] - peaks["small"]
    # unbounded buffering would hold most of the extra 136 MiB; bounded: a few 1 MiB packs and noise
    assert grown < 48 * 1024 * 1024, {k: v / 2**20 for k, v in peaks.items()}
