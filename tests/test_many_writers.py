"""Many writers, one store: 8 processes each commit 10 versions of one dataset at the same time, on
a local folder, S3 (moto server) and Azure (Azurite). Every commit gets its own version number and
every version downloads byte-exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from helpers.upload_versions import version_content
from osmo_store.blob import open_blob_store
from osmo_store.repository import Repository, init_store
from osmo_store.userconfig import UserConfig

WRITERS = 8
VERSIONS = 10
HELPER = os.path.join(os.path.dirname(__file__), "helpers", "upload_versions.py")


FIXTURES = {"s3": "s3_bucket", "azure": "azure_container", "radosgw": "radosgw_bucket"}


@pytest.fixture(params=["local", "s3", "azure", pytest.param("radosgw", marks=pytest.mark.radosgw)])
def store_url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    return f"{request.getfixturevalue(FIXTURES[request.param]).url}/shared"


def test_concurrent_writers_get_distinct_versions(store_url, tmp_path, tiny_config):
    init_store(open_blob_store(store_url), tiny_config)
    procs = []
    for w in range(WRITERS):
        env = {**os.environ, "OSMO_CACHE_DIR": str(tmp_path / f"cache-{w}"),
               "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(HELPER)), os.getcwd()])}
        procs.append(subprocess.Popen(
            [sys.executable, HELPER, store_url, "fleet", str(w), str(VERSIONS), str(tmp_path / f"work-{w}")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    commits = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        commits += [json.loads(line) for line in out.splitlines()]
    assert len(commits) == WRITERS * VERSIONS
    assert sorted(c["version"] for c in commits) == list(range(1, WRITERS * VERSIONS + 1))

    with Repository.open(store_url, cache_dir=str(tmp_path / "reader")) as repo:
        info = repo.describe("fleet")
        assert [v["version"] for v in info["versions"]] == list(range(1, WRITERS * VERSIONS + 1))
        for c in commits:
            _, entries = repo.entries(f"fleet:{c['version']}")
            dest = tmp_path / "check" / str(c["version"])
            repo.download(f"fleet:{c['version']}", str(dest))
            want = version_content(c["writer"], c["i"])
            got = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
            assert got == want, f"version {c['version']} does not hold writer {c['writer']}'s upload {c['i']}"
