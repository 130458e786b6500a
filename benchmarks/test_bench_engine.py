"""pytest-benchmark suites for the storage engine.

Run with ``pytest benchmarks/ --benchmark-only`` (the default test run,
``pytest tests/``, does not collect this directory). Each benchmark runs a
few rounds only; figures land in ``extra_info`` (MB = 10**6 bytes).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess

import pytest

pytest.importorskip("pytest_benchmark")
blake3 = pytest.importorskip("blake3")
pyfastcdc = pytest.importorskip("pyfastcdc")

from benchmarks import corpus  # noqa: E402
from benchmarks._measure import MB, osmo_available, osmo_command  # noqa: E402

DATA_SIZE = 64 << 20  # 64 MiB
E2E_SCALE = 0.02


def _mean_seconds(benchmark) -> float | None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return None
    return stats.stats.mean


def _record_rate(benchmark, nbytes: int) -> None:
    mean = _mean_seconds(benchmark)
    if mean:
        benchmark.extra_info["MB/s"] = round(nbytes / MB / mean, 1)


@pytest.fixture(scope="module")
def random_64mib() -> bytes:
    return random.Random(0).randbytes(DATA_SIZE)


def _cdc():
    return pyfastcdc.FastCDC(65536, min_size=16384, max_size=262144)


# --- engine primitives -------------------------------------------------------


def test_chunking_fastcdc_64mib(benchmark, random_64mib):
    cdc = _cdc()

    def run():
        return sum(1 for _ in cdc.cut_buf(random_64mib))

    n = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["chunks"] = n
    benchmark.extra_info["avg_chunk_KiB"] = round(DATA_SIZE / n / 1024, 1)
    _record_rate(benchmark, DATA_SIZE)


def test_hashing_blake3_64mib(benchmark, random_64mib):
    def run():
        return blake3.blake3(random_64mib).digest()

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    _record_rate(benchmark, DATA_SIZE)


def test_chunking_and_hashing_64mib(benchmark, random_64mib):
    """FastCDC cut points + one BLAKE3 digest per chunk (single thread)."""
    cdc = _cdc()

    def run():
        digests = [blake3.blake3(c.data).digest() for c in cdc.cut_buf(random_64mib)]
        return len(digests)

    n = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["chunks"] = n
    _record_rate(benchmark, DATA_SIZE)


# --- end to end through the CLI ----------------------------------------------


@pytest.fixture(scope="module")
def osmo_cli() -> list[str]:
    cmd = osmo_command()
    ok, why = osmo_available(cmd)
    if not ok:
        pytest.skip(f"osmo CLI not usable: {why}")
    return cmd


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    s1 = corpus.make_v1(root / "v1", scale=E2E_SCALE, seed=0)
    s2 = corpus.make_v2(root / "v1", root / "v2", seed=1)
    return root, s1, s2


def _osmo(cmd, store, cache, *args) -> dict:
    import json

    env = dict(os.environ, OSMO_CACHE_DIR=str(cache))
    r = subprocess.run(cmd + ["--store", str(store), *args], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"osmo {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return json.loads(r.stdout)


def test_cli_upload_small_corpus(benchmark, osmo_cli, small_corpus, tmp_path):
    """First upload of a scale-0.02 corpus (~21 MB) into a fresh store, per round."""
    root, s1, _ = small_corpus
    rounds = iter(range(1000))
    reports: list[dict] = []

    def setup():
        i = next(rounds)
        store, cache = tmp_path / f"store{i}", tmp_path / f"cache{i}"
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        return (store, cache), {}

    def run(store, cache):
        reports.append(_osmo(osmo_cli, store, cache, "dataset", "upload", "bench", str(root / "v1"), "--json"))

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    rep = reports[-1]
    assert rep["logical_bytes"] == s1["bytes"]
    benchmark.extra_info["logical_bytes"] = rep["logical_bytes"]
    benchmark.extra_info["stored_bytes"] = rep["stored_bytes"]
    benchmark.extra_info["files"] = rep["files"]
    _record_rate(benchmark, s1["bytes"])


def test_cli_upload_second_version(benchmark, osmo_cli, small_corpus, tmp_path):
    """Upload of v2 on top of v1 (fresh store per round; v1 upload is in setup)."""
    root, _, s2 = small_corpus
    rounds = iter(range(1000))
    reports: list[dict] = []

    def setup():
        i = next(rounds)
        store, cache = tmp_path / f"store{i}", tmp_path / f"cache{i}"
        _osmo(osmo_cli, store, cache, "dataset", "upload", "bench", str(root / "v1"), "--json")
        return (store, cache), {}

    def run(store, cache):
        reports.append(_osmo(osmo_cli, store, cache, "dataset", "upload", "bench", str(root / "v2"), "--json"))

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    rep = reports[-1]
    assert rep["version"] == 2
    benchmark.extra_info["stored_bytes_v2"] = rep["stored_bytes"]
    benchmark.extra_info["stored_share"] = round(rep["stored_bytes"] / s2["bytes"], 4)
    _record_rate(benchmark, s2["bytes"])


def test_cli_download_small_corpus(benchmark, osmo_cli, small_corpus, tmp_path):
    """Download of v1 into an empty directory, per round."""
    root, s1, _ = small_corpus
    store, cache = tmp_path / "store", tmp_path / "cache"
    _osmo(osmo_cli, store, cache, "dataset", "upload", "bench", str(root / "v1"), "--json")
    expected = corpus.tree_digest(root / "v1")
    rounds = iter(range(1000))
    dests = []

    def setup():
        dest = tmp_path / f"out{next(rounds)}"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        dests.append(dest)
        return (dest,), {}

    def run(dest):
        _osmo(osmo_cli, store, cache, "dataset", "download", "bench:1", str(dest), "--json")

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    assert corpus.tree_digest(dests[-1]) == expected
    _record_rate(benchmark, s1["bytes"])
