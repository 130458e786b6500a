"""What a real Ceph radosgw (16.2, Debian 12) does with conditional writes, pinned down for the S3 backend.

Observed forms (botocore 1.43, s3fs 2026.x), which a backend must map to "already exists":

- botocore ``put_object(..., IfNoneMatch="*")`` on an existing key: ``botocore.exceptions.ClientError``,
  ``response["Error"] == {"Code": "PreconditionFailed", "Message": None, "BucketName": ...}``, HTTP 412,
  str: "An error occurred (PreconditionFailed) when calling the PutObject operation: None".
  The XML body has no ``<Condition>`` element (AWS and moto send ``<Condition>If-None-Match</Condition>``).
- s3fs ``pipe_file(path, data, mode="create")`` / ``open(path, "xb")``: ``OSError(errno.EINVAL, None)``
  (NOT ``FileExistsError``: s3fs maps 412 to FileExistsError only when ``Condition == "If-None-Match"``),
  whose ``__cause__`` is that ClientError.

Other differences from AWS: ``If-Match`` succeeds only with the ETag unquoted (the quoted form, as
returned in ``ETag`` headers, always gets 412); ``If-Match`` on a missing key gets 412; ``If-None-Match``
on CompleteMultipartUpload is ignored, so an exclusive multipart create (s3fs ``open("xb")`` past one
block) silently overwrites. Single-part conditional PUTs (both If-None-Match and If-Match) are atomic.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading

import botocore.exceptions
import pytest

from servers import radosgw as radosgw_module
from servers.radosgw import RadosgwError, RadosgwServer
from servers.radosgw_fixtures import RadosgwBucket  # noqa: F401  (fixtures come from conftest.py)

pytestmark = pytest.mark.radosgw

RACERS = 8


def error_of(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


def body(client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def race(n: int, attempt) -> list:
    """Run ``attempt(i)`` in n threads released together; returns "win" or the (code, status) of each."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            attempt(i)
            results[i] = "win"
        except botocore.exceptions.ClientError as exc:
            results[i] = error_of(exc)
        except Exception as exc:  # noqa: BLE001 - recorded, the assertion shows it
            results[i] = repr(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# ------------------------------------------------------------------------------------------ the cluster
def test_buckets_share_one_cluster(radosgw_server, radosgw_bucket):
    other = radosgw_server.make_bucket("bucket-shared-second")
    try:
        c = radosgw_bucket.client()
        c.put_object(Bucket=radosgw_bucket.name, Key="k", Body=b"first")
        c.put_object(Bucket=other, Key="k", Body=b"second")
        assert body(c, radosgw_bucket.name, "k") == b"first"
        assert body(c, other, "k") == b"second"
        names = {b["Name"] for b in c.list_buckets()["Buckets"]}
        assert {radosgw_bucket.name, other} <= names
        assert radosgw_bucket.url == f"s3://{radosgw_bucket.name}"
    finally:
        radosgw_server.delete_bucket(other)


def test_fixture_env_reaches_cluster_from_a_subprocess(radosgw_bucket):
    assert set(radosgw_bucket.env) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                       "AWS_ENDPOINT_URL"}
    assert radosgw_bucket.env["AWS_DEFAULT_REGION"] == "us-east-1"
    radosgw_bucket.client().put_object(Bucket=radosgw_bucket.name, Key="dir/f", Body=b"hello")
    code = ("import sys, boto3, s3fs\n"
            "b = sys.argv[1]\n"
            "print(boto3.client('s3').get_object(Bucket=b, Key='dir/f')['Body'].read().decode())\n"
            "print(s3fs.S3FileSystem().cat_file(b + '/dir/f').decode())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | radosgw_bucket.env
    proc = subprocess.run([sys.executable, "-c", code, radosgw_bucket.name], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["hello", "hello"]


def test_stop_kills_every_daemon_and_removes_its_directory():
    server = RadosgwServer().start()
    try:
        pids, tmp = server.pids(), server.dir
        assert set(pids) == {"mon", "osd", "rgw"}
        assert all(os.path.exists(f"/proc/{p}") for p in pids.values())
        assert server.rss_bytes() > 0
        server.make_bucket("bucket-second-cluster")
    finally:
        server.stop()
    assert not os.path.exists(tmp)
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    leftovers = [line for line in ps.splitlines() if tmp in line or line.split()[0] in map(str, pids.values())]
    assert leftovers == []


def test_missing_binaries_error_names_the_install_script(monkeypatch):
    monkeypatch.setattr(radosgw_module, "BINARIES", ("ceph-mon", "no-such-ceph-binary"))
    with pytest.raises(RadosgwError, match=r"no-such-ceph-binary.*\.ci/install-radosgw\.sh"):
        RadosgwServer().start()


# ------------------------------------------------------------------------- If-None-Match: * (create only)
def test_put_if_none_match_refused_on_existing_key_botocore(radosgw_bucket):
    c, b = radosgw_bucket.client(), radosgw_bucket.name
    raw = []
    c.meta.events.register("before-parse.s3.PutObject", lambda response_dict, **_: raw.append(response_dict))
    c.put_object(Bucket=b, Key="ref", Body=b"one", IfNoneMatch="*")  # new key: allowed
    with pytest.raises(botocore.exceptions.ClientError) as info:
        c.put_object(Bucket=b, Key="ref", Body=b"two", IfNoneMatch="*")
    exc = info.value
    assert error_of(exc) == ("PreconditionFailed", 412)
    assert exc.response["Error"].get("Message") is None
    assert "Condition" not in exc.response["Error"]  # AWS/moto: "If-None-Match"; its absence fools s3fs
    assert str(exc) == "An error occurred (PreconditionFailed) when calling the PutObject operation: None"
    assert raw[-1]["status_code"] == 412 and b"<Condition>" not in raw[-1]["body"]
    assert body(c, b, "ref") == b"one"


def test_s3fs_exclusive_create_raises_einval_not_file_exists(radosgw_bucket):
    fs = radosgw_bucket.filesystem()
    path = f"{radosgw_bucket.name}/ref"
    fs.pipe_file(path, b"one", mode="create")
    with pytest.raises(OSError) as info:
        fs.pipe_file(path, b"two", mode="create")
    exc = info.value
    assert type(exc) is OSError and not isinstance(exc, FileExistsError)
    assert exc.errno == errno.EINVAL and exc.args == (errno.EINVAL, None)
    assert isinstance(exc.__cause__, botocore.exceptions.ClientError)
    assert error_of(exc.__cause__) == ("PreconditionFailed", 412)

    with pytest.raises(OSError) as info:  # open("xb") with a small write: one single-part PUT, same form
        with fs.open(path, "xb") as f:
            f.write(b"three")
    assert type(info.value) is OSError and info.value.errno == errno.EINVAL
    assert error_of(info.value.__cause__) == ("PreconditionFailed", 412)
    assert fs.cat_file(path) == b"one"


def test_racing_exclusive_creates_have_exactly_one_winner(radosgw_bucket):
    b = radosgw_bucket.name
    clients = [radosgw_bucket.client() for _ in range(RACERS)]
    for round_ in range(10):
        key = f"race/{round_}"
        results = race(RACERS, lambda i: clients[i].put_object(Bucket=b, Key=key, Body=f"writer-{i}".encode(),
                                                               IfNoneMatch="*"))
        winners = [i for i, r in enumerate(results) if r == "win"]
        assert len(winners) == 1, results
        assert all(r == ("PreconditionFailed", 412) for r in results if r != "win"), results
        assert body(clients[0], b, key) == f"writer-{winners[0]}".encode()


# ----------------------------------------------------------------------------- If-Match (compare-and-swap)
def test_if_match_needs_the_unquoted_etag(radosgw_bucket):
    c, b = radosgw_bucket.client(), radosgw_bucket.name
    quoted = c.put_object(Bucket=b, Key="ref", Body=b"v1")["ETag"]
    assert quoted.startswith('"') and quoted.endswith('"')
    assert c.head_object(Bucket=b, Key="ref")["ETag"] == quoted

    with pytest.raises(botocore.exceptions.ClientError) as info:  # the current ETag, as S3 returns it
        c.put_object(Bucket=b, Key="ref", Body=b"v2-quoted", IfMatch=quoted)
    assert error_of(info.value) == ("PreconditionFailed", 412)
    assert body(c, b, "ref") == b"v1"

    new = c.put_object(Bucket=b, Key="ref", Body=b"v2", IfMatch=quoted.strip('"'))["ETag"]
    assert body(c, b, "ref") == b"v2"

    with pytest.raises(botocore.exceptions.ClientError) as info:  # stale ETag: refused
        c.put_object(Bucket=b, Key="ref", Body=b"v3-stale", IfMatch=quoted.strip('"'))
    assert error_of(info.value) == ("PreconditionFailed", 412)
    c.put_object(Bucket=b, Key="ref", Body=b"v3", IfMatch=new.strip('"'))
    assert body(c, b, "ref") == b"v3"


def test_if_match_on_a_missing_key_is_412(radosgw_bucket):
    c, b = radosgw_bucket.client(), radosgw_bucket.name
    for etag in ("0123456789abcdef0123456789abcdef", "*"):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            c.put_object(Bucket=b, Key="missing", Body=b"x", IfMatch=etag)
        assert error_of(info.value) == ("PreconditionFailed", 412)
    assert c.list_objects_v2(Bucket=b).get("KeyCount") == 0


def test_racing_if_match_swaps_have_exactly_one_winner(radosgw_bucket):
    b = radosgw_bucket.name
    clients = [radosgw_bucket.client() for _ in range(RACERS)]
    for round_ in range(5):
        key = f"cas/{round_}"
        etag = clients[0].put_object(Bucket=b, Key=key, Body=b"base")["ETag"].strip('"')
        results = race(RACERS, lambda i: clients[i].put_object(Bucket=b, Key=key, Body=f"writer-{i}".encode(),
                                                               IfMatch=etag))
        winners = [i for i, r in enumerate(results) if r == "win"]
        assert len(winners) == 1, results
        assert all(r == ("PreconditionFailed", 412) for r in results if r != "win"), results
        assert body(clients[0], b, key) == f"writer-{winners[0]}".encode()


# --------------------------------------------------------------------------------- multipart: not guarded
def test_complete_multipart_ignores_if_none_match(radosgw_bucket):
    c, b = radosgw_bucket.client(), radosgw_bucket.name
    c.put_object(Bucket=b, Key="ref", Body=b"original")
    up = c.create_multipart_upload(Bucket=b, Key="ref")["UploadId"]
    part = c.upload_part(Bucket=b, Key="ref", UploadId=up, PartNumber=1, Body=b"multipart")
    c.complete_multipart_upload(Bucket=b, Key="ref", UploadId=up, IfNoneMatch="*",  # AWS: 412
                                MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})
    assert body(c, b, "ref") == b"multipart"  # silently overwritten


def test_s3fs_exclusive_multipart_create_silently_overwrites(radosgw_bucket):
    fs = radosgw_bucket.filesystem()
    path = f"{radosgw_bucket.name}/big"
    fs.pipe_file(path, b"original", mode="create")
    with fs.open(path, "xb", block_size=5 * 2**20) as f:  # > one block: s3fs uses a multipart upload
        f.write(b"n" * (11 * 2**20))
    assert fs.size(path) == 11 * 2**20  # no FileExistsError, no OSError: the original is gone
