"""S3 (moto server) and Azure (Azurite) backends: conformance, the repository on them, retries and faults.

Every test here talks to a real server on 127.0.0.1 started by the fixtures in ``servers/``.
"""

from __future__ import annotations

import random
import uuid

import pytest

from helpers.trees import random_tree, snapshot
from osmo_store.blob import open_blob_store
from osmo_store.blob.conformance import BlobStoreConformance
from osmo_store.blob.retry import RetryingBlobStore, RetryPolicy
from osmo_store.blob.wrappers import FaultyBlobStore, MeteredBlobStore
from osmo_store.errors import AlreadyExistsError, BackendError, NotFoundError, TransientBackendError
from osmo_store.repository import Repository, config_with, init_store
from osmo_store.transfer.upload import UploadRequest


class TestS3BlobStore(BlobStoreConformance):
    @pytest.fixture
    def store(self, s3_bucket):
        return open_blob_store(f"{s3_bucket.url}/some/prefix")

    def test_keys_live_under_the_prefix(self, store, s3_bucket):
        store.put("packs/ab/cd", b"x")
        fs = s3_bucket.filesystem()
        assert fs.find(s3_bucket.name) == [f"{s3_bucket.name}/some/prefix/packs/ab/cd"]

    def test_missing_bucket_is_a_clear_error(self, s3_server, s3_bucket):
        store = open_blob_store("s3://no-such-bucket-4711/x")
        with pytest.raises(NotFoundError):
            store.get("config")
        with pytest.raises(BackendError, match="bucket or container does not exist"):
            store.create("config", b"{}")


@pytest.mark.radosgw
class TestRadosgwBlobStore(BlobStoreConformance):
    """Ceph radosgw answers a lost conditional PUT with a 412 that s3fs maps to OSError(EINVAL)."""

    @pytest.fixture
    def store(self, radosgw_bucket):
        return open_blob_store(f"{radosgw_bucket.url}/some/prefix")


class TestAzureBlobStore(BlobStoreConformance):
    @pytest.fixture
    def store(self, azure_container):
        return open_blob_store(f"{azure_container.url}/some/prefix")

    def test_keys_live_under_the_prefix(self, store, azure_container):
        store.put("log/000000000001", b"x")
        fs = azure_container.filesystem()
        assert fs.find(azure_container.name) == [f"{azure_container.name}/some/prefix/log/000000000001"]


class TestRetryingMemoryStore(BlobStoreConformance):
    """The wrapper keeps every guarantee of the store it wraps, even while faults are injected."""

    @pytest.fixture
    def store(self):
        from osmo_store.blob import MemoryBlobStore

        return RetryingBlobStore(FaultyBlobStore(MemoryBlobStore(uuid.uuid4().hex), rate=0.2, seed=7),
                                 RetryPolicy(attempts=30), sleep=lambda s: None)


class _Flaky:
    """Fails the first ``n`` calls transiently, then answers."""

    def __init__(self, n: int, error=TransientBackendError) -> None:
        self.n, self.calls, self.error = n, 0, error

    def __call__(self):
        self.calls += 1
        if self.calls <= self.n:
            raise self.error(f"s3://b: cannot read k: try {self.calls}")
        return b"ok"


def test_retry_backs_off_with_jitter_and_gives_up():
    from osmo_store.blob import MemoryBlobStore

    sleeps: list[float] = []
    store = RetryingBlobStore(MemoryBlobStore("r"), RetryPolicy(attempts=5, base_delay=1.0, max_delay=3.0),
                              sleep=sleeps.append, rng=random.Random(1))
    flaky = _Flaky(3)
    assert store._call(flaky) == b"ok" and flaky.calls == 4
    assert len(sleeps) == 3 and all(0 <= s <= c for s, c in zip(sleeps, [1.0, 2.0, 3.0]))
    sleeps.clear()
    with pytest.raises(BackendError, match=r"s3://b: cannot read k: try 5 \(gave up after 5 attempts\)") as info:
        store._call(_Flaky(99))
    assert not isinstance(info.value, TransientBackendError) and len(sleeps) == 4
    permanent = _Flaky(1, error=BackendError)
    with pytest.raises(BackendError):
        store._call(permanent)
    assert permanent.calls == 1  # permanent errors are not repeated


def test_lost_answer_to_a_create_is_not_a_lost_race():
    from osmo_store.blob import MemoryBlobStore

    class LoseFirstAnswer(FaultyBlobStore):
        def create(self, key, data):
            self.inner.create(key, data)
            if not self.injected:
                self.injected = 1
                raise TransientBackendError("connection reset after the server stored it")

    inner = MemoryBlobStore(uuid.uuid4().hex)
    store = RetryingBlobStore(LoseFirstAnswer(inner, rate=0), sleep=lambda s: None)
    store.create("log/1", b"mine")  # the retry finds exactly our bytes: success
    inner.create("log/2", b"theirs")
    with pytest.raises(AlreadyExistsError):
        store.create("log/2", b"mine")


def _repo(blob, cache, tiny_config, create=True):
    if create:
        init_store(blob, tiny_config)
    return Repository(blob, tiny_config, cache_dir=str(cache))


@pytest.fixture(params=["s3", "azure"])
def remote_url(request):
    fixture = request.getfixturevalue("s3_bucket" if request.param == "s3" else "azure_container")
    return f"{fixture.url}/store-{uuid.uuid4().hex[:6]}"


def test_second_client_sees_everything_and_dedups_without_reading_packs(remote_url, tmp_path):
    tiny_config = config_with(min_size=1024, avg_size=4096, max_size=16384, pack_target_size=512 * 1024)
    src = tmp_path / "src"
    random_tree(src, seed=3, files=100, max_size=80_000)
    first = _repo(open_blob_store(remote_url), tmp_path / "cache1", tiny_config)
    up1 = first.upload(UploadRequest("robot", [str(src)]))
    first.close()
    packs = list(open_blob_store(remote_url).list("packs/"))
    assert len(packs) > 3

    metered = MeteredBlobStore(open_blob_store(remote_url))
    second = _repo(metered, tmp_path / "cache2", tiny_config, create=False)
    second.log.sync()
    assert [d["name"] for d in second.list_datasets()] == ["robot"]
    copy = tmp_path / "copy"
    (copy / "again").mkdir(parents=True)
    for path in src.rglob("*"):
        if path.is_file():
            target = copy / "again" / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    up2 = second.upload(UploadRequest("other", [str(copy / "again")]))
    assert up2.stored_bytes < up1.stored_bytes / 4  # the chunks were found in the first client's packs
    pack_bytes = sum(metered.inner.size(k) for k in packs)
    assert metered.bytes_in < pack_bytes / 2  # only pack footers were read, not whole packs
    assert metered.requests["get"] + metered.requests["get_range"] <= len(packs) * 2 + 20
    dest = tmp_path / "dest"
    second.download("robot", str(dest))
    assert snapshot(dest, mtimes=False) == snapshot(src, mtimes=False)
    second.close()


def test_uploads_and_downloads_survive_five_percent_transient_faults(remote_url, tmp_path, tiny_config):
    src = tmp_path / "src"
    random_tree(src, seed=11, files=60, max_size=30_000)
    faulty = FaultyBlobStore(open_blob_store(remote_url), rate=0.05, seed=5)
    blob = RetryingBlobStore(faulty, RetryPolicy(attempts=12, base_delay=0.001, max_delay=0.01))
    repo = _repo(blob, tmp_path / "cache", tiny_config)
    repo.upload(UploadRequest("faulty", [str(src)]))
    repo.close()
    repo = _repo(blob, tmp_path / "cache-fresh", tiny_config, create=False)
    repo.log.sync()
    dest = tmp_path / "dest"
    repo.download("faulty:1", str(dest))
    assert snapshot(dest, mtimes=False) == snapshot(src, mtimes=False)
    assert faulty.injected > 5 and blob.retries >= faulty.injected
    repo.close()


def test_permanent_error_names_backend_and_key_and_commits_nothing(remote_url, tmp_path, tiny_config):
    class DenyPacks(MeteredBlobStore):
        def put_parts(self, key, parts):
            if self.requests["put"] >= 2:
                raise BackendError(f"{self.url}: cannot write {key}: access denied")
            super().put_parts(key, parts)

    src = tmp_path / "src"
    random_tree(src, seed=2, files=30, max_size=30_000)
    blob = open_blob_store(remote_url)
    repo = _repo(DenyPacks(blob), tmp_path / "cache", tiny_config)
    with pytest.raises(BackendError, match=r"cannot write packs/.*access denied") as info:
        repo.upload(UploadRequest("denied", [str(src)]))
    assert remote_url.split("/store-")[0] in str(info.value)
    repo.close()
    assert list(blob.list("log/")) == []  # no version, no partial record
