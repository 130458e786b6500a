"""``osmo store ...``: create, check, rebuild the index of, and summarise a store."""

from __future__ import annotations

import click

from osmo_store.blob import open_blob_store
from osmo_store.cli.context import json_option, pass_state
from osmo_store.cli.output import CountProgress, emit_json, human_bytes, note
from osmo_store.config import KiB, MiB
from osmo_store.errors import IntegrityError
from osmo_store.repository import config_with, default_store_url, init_store


@click.group()
def store() -> None:
    """Create and maintain the store."""


@store.command()
@click.argument("url", required=False)
@click.option("--no-compression", is_flag=True, help="Store chunks uncompressed (default: zstd where it saves).")
@click.option("--compression-level", type=click.IntRange(1, 22), default=3, show_default=True)
@click.option("--chunk-min", type=int, default=16 * KiB, show_default=True, help="Minimum chunk size in bytes.")
@click.option("--chunk-avg", type=int, default=64 * KiB, show_default=True, help="Average chunk size (power of 2).")
@click.option("--chunk-max", type=int, default=256 * KiB, show_default=True, help="Maximum chunk size in bytes.")
@click.option("--pack-size", type=int, default=32 * MiB, show_default=True, help="Target pack size in bytes.")
@json_option
@pass_state
def init(state, url, no_compression, compression_level, chunk_min, chunk_avg, chunk_max, pack_size, as_json) -> None:
    """Create a store at URL (default: --store, $OSMO_STORE or the per-user store).

    Chunking, compression and pack size are fixed for the life of the store.
    """
    url = url or state.store_url or default_store_url()
    config = config_with(min_size=chunk_min, avg_size=chunk_avg, max_size=chunk_max, pack_target_size=pack_size,
                         compression="none" if no_compression else "zstd", compression_level=compression_level)
    blob = open_blob_store(url)
    init_store(blob, config)
    if as_json:
        emit_json({"store": blob.url, "store_id": config.store_id, "format_version": config.version})
    else:
        click.echo(f"initialised osmo store at {blob.url}")


@store.command()
@click.option("--read-data", is_flag=True, help="Also read every pack and check every chunk's hash.")
@json_option
@pass_state
def verify(state, read_data, as_json) -> None:
    """Check that every live version can be restored. Exit code 5 if not."""
    repo = state.repo()
    bar = CountProgress("verify packs", repo.pack_count(), enabled=None if not as_json else False)
    try:
        report = repo.verify(read_data, bar.tick)
    finally:
        bar.close()
    if as_json:
        emit_json(report.to_json())
    else:
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        click.echo(f"{report.versions} versions, {report.manifest_nodes} manifest nodes, {report.chunks} chunks, "
                   f"{report.packs} packs ({report.packs_read} read in full)")
    if not report.ok:
        raise IntegrityError(f"verify found {len(report.problems)} problem(s)")
    if not as_json:
        click.echo("ok")


@store.command()
@json_option
@pass_state
def reindex(state, as_json) -> None:
    """Rebuild the local index and catalog from the store alone."""
    repo = state.repo()
    bar = CountProgress("index packs", repo.pack_count(), enabled=None if not as_json else False)
    try:
        warnings = repo.reindex(bar.tick)
    finally:
        bar.close()
    for warning in warnings:
        note(f"warning: {warning}")
    stats = repo.stats()
    if as_json:
        emit_json({"warnings": warnings, **stats})
    else:
        click.echo(f"reindexed {stats['packs']} packs, {stats['chunks']} chunks, {stats['versions']} versions")


@store.command()
@json_option
@pass_state
def stats(state, as_json) -> None:
    """Sizes and counts: logical vs stored bytes and the deduplication ratio."""
    s = state.repo().stats()
    if as_json:
        emit_json(s)
        return
    rows = [("store", s["store"]), ("datasets", s["datasets"]), ("live versions", s["versions"]),
            ("logical bytes", human_bytes(s["logical_bytes"])), ("stored bytes", human_bytes(s["stored_bytes"])),
            ("dedup ratio", s["dedup_ratio"] or "-"), ("packs", s["packs"]), ("chunks", s["chunks"]),
            ("manifest nodes", s["manifest_nodes"])]
    for k, v in rows:
        click.echo(f"{k:15} {v}")
