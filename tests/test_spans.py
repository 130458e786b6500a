"""Planned span reads of a download: fewer requests than files, correct under any memory budget."""

from __future__ import annotations

import uuid

import pytest

from helpers.trees import random_tree, snapshot
from osmo_store.blob import MemoryBlobStore
from osmo_store.blob.wrappers import MeteredBlobStore
from osmo_store.repository import Repository, init_store
from osmo_store.transfer import spans
from osmo_store.transfer.upload import UploadRequest


@pytest.fixture
def uploaded(tmp_path, tiny_config):
    blob = MemoryBlobStore(uuid.uuid4().hex)
    init_store(blob, tiny_config)
    src = tmp_path / "src"
    random_tree(src, seed=21, files=300, max_size=3000)  # many small files, several per pack
    with Repository(blob, tiny_config, cache_dir=str(tmp_path / "c0")) as repo:
        repo.upload(UploadRequest("many", [str(src)]))
    return blob, src


def test_small_files_share_span_reads(uploaded, tmp_path, tiny_config):
    blob, src = uploaded
    metered = MeteredBlobStore(blob)
    with Repository(metered, tiny_config, cache_dir=str(tmp_path / "c1")) as repo:
        repo.log.sync()
        packs = repo.pack_count()
        repo.chunks.refresh_packs()  # this fresh client indexes the packs' footers first
        assert len(repo.tree_shape("many")) > 1  # reads the manifest nodes, which the index then keeps
        metered.requests.clear()
        repo.download("many", str(tmp_path / "out"))
    assert snapshot(tmp_path / "out") == snapshot(src)
    assert 0 < metered.requests["get_range"] <= packs < 300  # span reads only: no node read again


@pytest.mark.parametrize("budget", [1, 20_000])
def test_tiny_memory_budget_still_downloads_byte_exact(uploaded, tmp_path, tiny_config, monkeypatch, budget):
    blob, src = uploaded
    monkeypatch.setattr(spans, "BUDGET", budget)
    monkeypatch.setattr(spans.SpanReader.__init__, "__defaults__", (spans.GAP, spans.MAX_SPAN, budget))
    with Repository(blob, tiny_config, cache_dir=str(tmp_path / "c2")) as repo:
        repo.log.sync()
        repo.download("many", str(tmp_path / "out"))
        repo.download("many", str(tmp_path / "out"))  # resume: every file skipped, spans released
    assert snapshot(tmp_path / "out") == snapshot(src)
