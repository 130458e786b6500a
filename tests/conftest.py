"""Shared fixtures: tiny chunk/pack sizes, repositories on memory and local backends, a CLI runner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.parallel import check_groups_taken, mark_groups
from osmo_store.blob import LocalBlobStore, MemoryBlobStore
from osmo_store.repository import Repository, config_with, init_store
from servers.fixtures import *  # noqa: F401,F403  (s3_server, s3_bucket, azurite_server, azure_container)
from servers.radosgw_fixtures import radosgw_bucket, radosgw_server  # noqa: F401
from servers.kube_fixtures import kube_cluster, kube_namespace, kube_server  # noqa: F401

TINY = dict(min_size=256, avg_size=1024, max_size=4096, pack_target_size=16 * 1024, manifest_node_entries=4)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks
def pytest_collection_modifyitems(config, items):
    mark_groups(items)  # which tests share a worker under xdist (tests/helpers/parallel.py)


def pytest_collection_finish(session):
    check_groups_taken(session)  # xdist's loadgroup must have seen the groups, or fail loudly


@pytest.fixture(autouse=True)
def _private_user_config(tmp_path, monkeypatch):
    """Each test gets its own (absent) osmo config file, never the user's."""
    monkeypatch.setenv("OSMO_CONFIG", str(tmp_path / "osmo-config.yaml"))


@pytest.fixture
def tiny_config():
    """Chunks of ~1 KiB, packs of 16 KiB and manifest nodes of ~4 entries: edge cases are cheap."""
    return config_with(**TINY)


@pytest.fixture
def memory_repo(tmp_path, tiny_config):
    blob = MemoryBlobStore(uuid.uuid4().hex)
    init_store(blob, tiny_config)
    repo = Repository(blob, tiny_config, cache_dir=str(tmp_path / "cache"))
    yield repo
    repo.close()


@pytest.fixture
def local_repo(tmp_path, tiny_config):
    blob = LocalBlobStore(str(tmp_path / "store"))
    init_store(blob, tiny_config)
    repo = Repository(blob, tiny_config, cache_dir=str(tmp_path / "cache"))
    yield repo
    repo.close()


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


class Cli:
    """Runs ``osmo`` as a user would: a separate process, a store folder and a private cache."""

    def __init__(self, tmp_path) -> None:
        self.root = Path(tmp_path)
        self.store = str(tmp_path / "store")
        self.env = {**os.environ, "OSMO_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
        self.env.pop("OSMO_STORE", None)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "osmo_store.cli.main", "--store", self.store, *args]

    def __call__(self, *args: str, check: bool = True) -> Result:
        proc = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, timeout=600)
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"osmo {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return result

    def init_tiny(self) -> None:
        self("store", "init", "--chunk-min", "256", "--chunk-avg", "1024", "--chunk-max", "4096",
             "--pack-size", "16384")

    @classmethod
    def tiny(cls, tmp_path_factory, name: str) -> "Cli":
        """A client of a new store with tiny chunks and packs, in a folder of its own (module fixtures)."""
        cli = cls(tmp_path_factory.mktemp(name))
        cli.init_tiny()
        return cli

    def copy_of(self, template: dict) -> dict:
        """Make this client's store and cache copies of a template's (``store``, ``cache`` keys), so a
        test may damage them; returns the template."""
        shutil.copytree(template["store"], self.store)
        shutil.copytree(template["cache"], self.env["OSMO_CACHE_DIR"])
        return template


@pytest.fixture
def cli(tmp_path):
    return Cli(tmp_path)
