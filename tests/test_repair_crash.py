"""``kill -9`` of ``osmo store repair`` at random points: the store is never worse than before, and a
second repair finishes the work.

The damage here is all of the kind repair can fully undo (damaged and missing events, a stray object,
packs whose trailers are cut off while the writer's index still knows their chunks), so a finished
repair must leave a store that verifies and restores every version byte-exact, however many kills
came before it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from conftest import Cli
from helpers.storefiles import flip, object_path
from helpers.trees import snapshot, write_file
from osmo_store.blob import LocalBlobStore
from osmo_store.datasets import log_key


@pytest.fixture
def damaged(tmp_path):
    cli = Cli(tmp_path)
    cli.init_tiny()
    rnd = random.Random(99)
    src = tmp_path / "src"
    files = {}
    for v in range(1, 4):
        for i in range(60):
            write_file(src / f"f{i:03d}.bin", rnd.randbytes(rnd.randint(2000, 6000)), mtime_ns=10**18 + v * 1000 + i)
        cli("dataset", "upload", "ds", str(src))
        files[f"ds:{v}"] = snapshot(src)
    packs = sorted(os.path.join(d, n) for d, _, ns in os.walk(os.path.join(cli.store, "packs")) for n in ns)
    for path in rnd.sample(packs, len(packs) // 2):
        os.truncate(path, os.path.getsize(path) - rnd.randint(1, 40))  # trailer gone, bodies intact
    blob = LocalBlobStore(cli.store)
    for i in range(3):
        cli("dataset", "label", "ds", "--set", f"k{i}=v{i}")  # log/4..6
    flip(object_path(cli.store, log_key(5)), 12)
    os.remove(object_path(cli.store, log_key(4)))
    blob.put("log/stray", b"not an event")
    return cli, files, len(packs) // 2


def problems(cli) -> set[str]:
    result = cli("store", "verify", "--json", check=False)
    assert result.code in (0, 5) and "Traceback" not in result.err, result.err
    return set(result.json()["problems"])


def test_kill_9_during_repair_never_makes_things_worse_and_a_second_repair_finishes(damaged, tmp_path):
    cli, files, cut = damaged
    before = problems(cli)
    assert len(before) >= cut + 3
    rnd = random.Random(7)
    start = time.monotonic()
    reference = subprocess.run(cli.argv("store", "repair", "--dry-run"), env=cli.env, capture_output=True)
    budget = max(0.3, time.monotonic() - start)  # about what a whole repair takes to read everything
    kills = 0
    for attempt in range(6):
        proc = subprocess.Popen(cli.argv("store", "repair"), env=cli.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # the first kill lands well inside a repair (a loaded machine may make the dry run, and so the
        # budget, longer than a repair); the later ones anywhere, also after a repair finished
        time.sleep(rnd.uniform(0.2, 0.6) * budget if attempt == 0 else rnd.uniform(0.15, 1.5 * budget))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        now = problems(cli)
        assert now <= before, now - before  # nothing new is broken
        for ref, expected in files.items():  # what restored before still restores
            dest = tmp_path / f"kill{kills}-{ref.replace(':', '-')}"
            cli("dataset", "download", ref, str(dest))
            assert snapshot(dest) == expected
        if not now:
            break
    assert reference.returncode == 0
    cli("store", "repair")
    assert problems(cli) == set()
    fresh = Cli(tmp_path)
    fresh.env["OSMO_CACHE_DIR"] = str(tmp_path / "fresh-cache")
    assert fresh("store", "verify", "--read-data").code == 0
    for ref, expected in files.items():
        fresh("dataset", "download", ref, str(tmp_path / f"final-{ref.replace(':', '-')}"))
        assert snapshot(tmp_path / f"final-{ref.replace(':', '-')}") == expected
    assert kills >= 1  # the loop did interrupt repairs
