"""``osmo-sidecar check-store``, which ``osmo workflow submit`` runs before anything else: a real
subprocess on real local stores. A missing store and a folder store this process cannot write into
exit 1 with one line naming the store; the default store is created; nothing is left in the store.
(A read-only store, through a read-only bind mount, is in tests/run/test_task_environment.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from osmo_store.blob import LocalBlobStore
from osmo_store.repository import init_store

PREFIX = "[osmo-sidecar] "


def check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "OSMO_CACHE_DIR": str(tmp_path / "cache"), **env}
    if "OSMO_STORE" not in env:
        environ.pop("OSMO_STORE", None)
    return subprocess.run([sys.executable, "-m", "sidecar.main", "check-store", *args], env=environ,
                          capture_output=True, text=True, timeout=60)


def test_an_existing_store_passes_and_keeps_no_probe(tmp_path):
    store = tmp_path / "store"
    init_store(LocalBlobStore(str(store)))
    (store / "log").mkdir(exist_ok=True)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    done = check(tmp_path, "--store", str(store))
    assert done.returncode == 0, done
    assert done.stdout + done.stderr == f"{PREFIX}store {store}: found and writable\n"
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_a_missing_store_fails_in_one_line_and_is_not_created(tmp_path):
    missing = tmp_path / "nowhere"
    done = check(tmp_path, "--store", str(missing))
    assert done.returncode == 1
    assert (done.stdout + done.stderr) == (f"{PREFIX}store {missing}: no osmo store at {missing} (create one "
                                           "with 'osmo store init')\n")
    assert not missing.exists()


def test_the_default_store_is_created(tmp_path):
    default = tmp_path / "default-store"
    done = check(tmp_path, OSMO_STORE=str(default))
    assert done.returncode == 0, done
    assert (default / "config").is_file()
