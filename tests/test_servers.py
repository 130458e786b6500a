"""The loopback test servers are real and behave as /work/shared/design/SERVICES.md says.

moto (S3, through s3fs) and Azurite (Azure Blob, through adlfs): round trips and listings, exclusive
creates that refuse an existing key (single-shot and multi-part), racing exclusive creates with exactly
one winner, fresh empty buckets/containers per test, ``env`` that works in a subprocess, and Azurite's
process hygiene (stop and parent death leave no process and no data folder behind).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from servers import azurite as azurite_mod
from servers.fixtures import start_or_fail

RACERS = 8
SEEN_BUCKETS: set[str] = set()
SEEN_CONTAINERS: set[str] = set()


def _race_exclusive_creates(filesystems, path: str, create) -> tuple[list[int], list[BaseException]]:
    """RACERS threads, one filesystem each, released together, each exclusively creating ``path``."""
    barrier = threading.Barrier(RACERS)
    wins: list[int] = []
    losses: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        try:
            create(filesystems[i], path, b"racer-%d" % i)
        except BaseException as exc:  # noqa: BLE001 - every outcome is recorded and checked
            with lock:
                losses.append(exc)
        else:
            with lock:
                wins.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return wins, losses


def _open_xb(fs, path: str, data: bytes, **kwargs) -> None:
    with fs.open(path, "xb", **kwargs) as f:
        f.write(data)


def _pipe_create(fs, path: str, data: bytes) -> None:
    fs.pipe_file(path, data, mode="create")


def _round_trip(fs, root: str, tmp_path) -> None:
    fs.pipe_file(f"{root}/a/b/c", b"hello")
    local = tmp_path / "up.bin"
    local.write_bytes(b"\x00\x01" * 5000)
    fs.put_file(str(local), f"{root}/a/up.bin")
    fs.pipe_file(f"{root}/z", b"")
    assert fs.cat_file(f"{root}/a/b/c") == b"hello"
    assert fs.cat_file(f"{root}/a/b/c", start=1, end=3) == b"el"
    assert fs.cat_file(f"{root}/z") == b""
    fs.get_file(f"{root}/a/up.bin", str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == local.read_bytes()
    assert fs.size(f"{root}/a/up.bin") == 10000
    assert fs.find(root) == [f"{root}/a/b/c", f"{root}/a/up.bin", f"{root}/z"]
    assert fs.find(f"{root}/a/b") == [f"{root}/a/b/c"]
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{root}/missing")
    fs.rm_file(f"{root}/a/b/c")
    assert fs.find(root, refresh=True) == [f"{root}/a/up.bin", f"{root}/z"]


def _refuses_existing(fs, root: str, multipart_kwargs: dict) -> None:
    path = f"{root}/ref"
    _pipe_create(fs, path, b"original")  # creating a new key exclusively works
    with pytest.raises(FileExistsError):
        _pipe_create(fs, path, b"second")
    with pytest.raises(FileExistsError):
        _open_xb(fs, path, b"third")
    big = os.urandom(11 << 20)  # several parts/blocks: the condition must hold on the final commit too
    with pytest.raises(FileExistsError):
        _open_xb(fs, path, big, **multipart_kwargs)
    assert fs.cat_file(path) == b"original"
    _open_xb(fs, f"{root}/big", big, **multipart_kwargs)
    assert fs.cat_file(f"{root}/big") == big


def _check_race(make_fs, root: str, create) -> None:
    filesystems = [make_fs() for _ in range(RACERS)]
    for fs in filesystems:  # create each client now (fsspec's one IO thread builds them one by one)
        assert not fs.exists(f"{root}/warm-up")
    reader = make_fs(use_listings_cache=False)  # a racer's listing cache may predate the winner's write
    for rnd in range(3):
        path = f"{root}/race-{rnd}"
        wins, losses = _race_exclusive_creates(filesystems, path, create)
        assert len(wins) == 1, (wins, losses)
        assert len(losses) == RACERS - 1 and all(isinstance(e, FileExistsError) for e in losses), losses
        assert reader.cat_file(path) == b"racer-%d" % wins[0]


def _subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any AWS_*/AZURE_* variable, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_"))}
    return {**base, **extra}


# --- S3 (moto) ---------------------------------------------------------------------------------------


def test_s3_put_get_list(s3_bucket, tmp_path):
    _round_trip(s3_bucket.filesystem(), s3_bucket.name, tmp_path)


def test_s3_exclusive_create_refuses_existing_key(s3_bucket):
    _refuses_existing(s3_bucket.filesystem(), s3_bucket.name, {"block_size": 5 << 20})


@pytest.mark.parametrize("create", [_pipe_create, _open_xb], ids=["pipe_file-create", "open-xb"])
def test_s3_racing_exclusive_creates_have_one_winner(s3_bucket, create):
    _check_race(s3_bucket.filesystem, s3_bucket.name, create)


def test_s3_racing_creates_have_one_winner_however_slow_the_server(s3_bucket, monkeypatch):
    """moto looks for the key, then stores the object: with time between the two (a busy machine, here a
    pause), racers all won before tests/servers/moto_s3.py made a conditional put one step."""
    from moto.s3.models import S3Backend

    looked_up = S3Backend.get_object

    def slow_get_object(self, *args, **kwargs):
        found = looked_up(self, *args, **kwargs)
        time.sleep(0.02)
        return found

    monkeypatch.setattr(S3Backend, "get_object", slow_get_object)
    _check_race(s3_bucket.filesystem, s3_bucket.name, _pipe_create)


@pytest.mark.parametrize("round_", [1, 2])
def test_s3_bucket_is_fresh_and_empty(s3_bucket, s3_server, round_):
    assert s3_bucket.url == f"s3://{s3_bucket.name}"
    assert s3_bucket.endpoint_url == s3_server.endpoint_url.rstrip("/")
    assert s3_bucket.name not in SEEN_BUCKETS
    SEEN_BUCKETS.add(s3_bucket.name)
    fs = s3_bucket.filesystem()
    assert fs.find(s3_bucket.name) == []
    fs.pipe_file(f"{s3_bucket.name}/leftover", b"x")  # the next round must not see it


def test_s3_env_reaches_server_from_subprocess(s3_bucket):
    assert s3_bucket.env["AWS_DEFAULT_REGION"] == "us-east-1"
    code = ("import sys, s3fs; fs = s3fs.S3FileSystem(); fs.pipe_file(sys.argv[1] + '/from-child', b'child');"
            "print(fs.cat_file(sys.argv[1] + '/from-child').decode())")
    proc = subprocess.run([sys.executable, "-c", code, s3_bucket.url], env=_subprocess_env(s3_bucket.env),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "child"
    assert s3_bucket.filesystem().cat_file(f"{s3_bucket.name}/from-child") == b"child"


# --- Azure Blob (Azurite) ----------------------------------------------------------------------------


def test_azure_put_get_list(azure_container, tmp_path):
    _round_trip(azure_container.filesystem(), azure_container.name, tmp_path)


def test_azure_exclusive_create_refuses_existing_blob(azure_container):
    _refuses_existing(azure_container.filesystem(), azure_container.name, {"block_size": 4 << 20})


@pytest.mark.parametrize("create", [_pipe_create, _open_xb], ids=["pipe_file-create", "open-xb"])
def test_azure_racing_exclusive_creates_have_one_winner(azure_container, create):
    _check_race(azure_container.filesystem, azure_container.name, create)


@pytest.mark.parametrize("round_", [1, 2])
def test_azure_container_is_fresh_and_empty(azure_container, azurite_server, round_):
    assert azure_container.url == f"az://{azure_container.name}"
    assert f"BlobEndpoint=http://127.0.0.1:{azurite_server.port}/devstoreaccount1;" in \
        azure_container.connection_string
    assert azure_container.name not in SEEN_CONTAINERS
    SEEN_CONTAINERS.add(azure_container.name)
    fs = azure_container.filesystem()
    assert fs.find(azure_container.name) == []
    fs.pipe_file(f"{azure_container.name}/leftover", b"x")


def test_azure_env_reaches_server_from_subprocess(azure_container):
    code = ("import sys, adlfs; fs = adlfs.AzureBlobFileSystem(); fs.pipe_file(sys.argv[1] + '/from-child', b'child');"
            "print(fs.cat_file(sys.argv[1] + '/from-child').decode())")
    proc = subprocess.run([sys.executable, "-c", code, azure_container.url],
                          env=_subprocess_env(azure_container.env), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "child"
    assert azure_container.filesystem().cat_file(f"{azure_container.name}/from-child") == b"child"


def _gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie waiting for a reaper that is not us)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_azurite_stop_leaves_no_process_or_files():
    server = start_or_fail(azurite_mod.AzuriteServer(), "Azurite")
    pid, location = server.pid, server._location
    assert pid is not None and not _gone(pid) and os.path.isdir(location)
    server.make_container("stop-check")
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 4.0  # SIGTERM works; no wait for the SIGKILL fallback
    assert _gone(pid) and not os.path.exists(location)
    server.stop()  # idempotent


def test_azurite_exits_when_its_parent_is_killed(tmp_path):
    code = ("import time; from servers.azurite import AzuriteServer; s = AzuriteServer().start();"
            "print(s.pid, s._location, flush=True); time.sleep(120)")
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": tests_dir})
    try:
        pid_text, location = parent.stdout.readline().split()
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert _wait_gone(int(pid_text)), "Azurite outlived its killed parent"
    deadline = time.monotonic() + 5
    while os.path.exists(location) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(location)


def test_missing_azurite_fails_with_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("OSMO_TEST_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert azurite_mod.locate() is None
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/install-services\.sh"):
        start_or_fail(azurite_mod.AzuriteServer(), "Azurite")
