"""Smoke test of benchmarks/gc_memory.py at a tiny size: the build makes a real store, garbage
collection deletes packs from it, and the collected store still verifies and reads back."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.gc_memory import Params, build_store, check_store, load_build, prepare_run, run_gc  # noqa: E402


def test_gc_benchmark_smoke(tmp_path):
    params = Params(chunks=2000, versions=10, window=2)
    build = build_store(tmp_path, params, log=lambda msg: None)
    assert build["data_chunks"] == 2000
    assert build["versions_live"] + build["versions_deleted"] == 10
    assert build["versions_deleted"] > 0
    assert load_build(tmp_path, params) is not None

    for mode in ("cold", "warm"):
        store_dir, cache_dir = prepare_run(tmp_path, mode)
        result = run_gc(store_dir, cache_dir)
        stats = result["stats"]
        assert stats["versions"] == build["versions_live"]
        assert stats["packs_deleted"] > 0
        assert result["packs_after"] < result["packs_before"] == build["packs"]
        assert (result["packs_indexed"] > 0) == (mode == "cold")
        check = check_store(store_dir, cache_dir, build)
        assert check["ok"], check["problems"]
        assert check["files_read"] > 0

    # the build's own store is untouched by the runs on its hard-linked copies
    assert sum(1 for _ in (tmp_path / "store" / "packs").rglob("*") if _.is_file()) == build["packs"]
