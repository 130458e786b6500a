"""``osmo store ...``: create, check, rebuild the index of, and summarise a store."""

from __future__ import annotations

import click

from osmo_store.blob import open_blob_store
from osmo_store.blob.urls import without_password
from osmo_store.cli.context import json_option, pass_state
from osmo_store.cli.output import CountProgress, emit_json, human_bytes, note, plural
from osmo_store.report.render import ratio
from osmo_store.config import KiB, MiB
from osmo_store.errors import IntegrityError
from osmo_store.gc import DEFAULT_REPACK_THRESHOLD, GcOptions
from osmo_store.ids import parse_duration
from osmo_store.repository import config_with, init_store, open_store_blob
from osmo_store.userconfig import UserConfig, parse_options, redact


@click.group()
def store() -> None:
    """Create and maintain the store."""


@store.command()
@click.argument("url", metavar="[NAME|URL]", required=False)
@click.option("--no-compression", is_flag=True, help="Store chunks uncompressed (default: zstd where it saves).")
@click.option("--compression-level", type=click.IntRange(1, 22), default=3, show_default=True)
@click.option("--chunk-min", type=int, default=16 * KiB, show_default=True, help="Minimum chunk size in bytes.")
@click.option("--chunk-avg", type=int, default=64 * KiB, show_default=True, help="Average chunk size (power of 2).")
@click.option("--chunk-max", type=int, default=256 * KiB, show_default=True, help="Maximum chunk size in bytes.")
@click.option("--pack-size", type=int, default=32 * MiB, show_default=True, help="Target pack size in bytes.")
@json_option
@pass_state
def init(state, url, no_compression, compression_level, chunk_min, chunk_avg, chunk_max, pack_size, as_json) -> None:
    """Create a store at NAME|URL (default: --store, $OSMO_STORE or the per-user store).

    URL is a folder, s3://bucket/prefix or az://container/prefix (the bucket or container must
    exist); NAME is a store added with 'osmo store add'. Chunking, compression and pack size are
    fixed for the life of the store.
    """
    config = config_with(min_size=chunk_min, avg_size=chunk_avg, max_size=chunk_max, pack_target_size=pack_size,
                         compression="none" if no_compression else "zstd", compression_level=compression_level)
    blob = open_store_blob(url or state.store_url)
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
    state.quiet_damage = True
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
        for line in report.notes:
            click.echo(f"note: {line}")
        click.echo(f"{plural(report.versions, 'live version')}: {plural(report.chunks, 'chunk')} and "
                   f"{plural(report.manifest_nodes, 'manifest node')}; {plural(report.packs, 'pack')} "
                   f"({report.packs_read} read in full); {plural(report.events, 'event')}")
    if not report.ok:
        raise IntegrityError(f"verify found {plural(len(report.problems), 'problem')}; 'osmo store repair' moves "
                             "damaged objects aside and salvages what is intact")
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
        click.echo(f"reindexed {plural(stats['packs'], 'pack')}: {plural(stats['versions'], 'live version')}, "
                   f"{plural(stats['chunks'], 'chunk')}, {plural(stats['manifest_nodes'], 'manifest node')}")


@store.command()
@click.option("--dry-run", is_flag=True, help="Only read and report what would be done.")
@json_option
@pass_state
def repair(state, dry_run, as_json) -> None:
    """Move damaged objects aside and keep the damage from spreading.

    \b
    Reads the whole store (every event, every pack in full), then:
      - a damaged or missing config is written back from its copy;
      - a damaged log event is moved to quarantine/ and replaced by a placeholder;
      - from a damaged pack, every chunk that is still intact is copied to a new pack,
        and the pack is moved to quarantine/ (nothing there is ever deleted);
      - versions that still lack data are listed with their files: upload the same
        data again to heal them (or delete them).
    Safe to interrupt and run again, and to run while others upload. Exit code 0 when
    nothing is left damaged, 5 when some versions still lack data.
    """
    state.quiet_damage = True
    repo = state.repo()
    bars = StageBars(None if not as_json else False)
    try:
        result = repo.repair(dry_run=dry_run, progress=bars)
    finally:
        bars.close()
    if as_json:
        emit_json(result.to_json())
    else:
        _print_repair(result)
    if result.left:
        raise IntegrityError(f"{plural(len(result.left), 'object')} could not be repaired ({', '.join(result.left)}): "
                             "see above")
    if result.damaged_versions:
        count = len(result.damaged_versions)
        raise IntegrityError(f"{plural(count, 'version')} still {'lacks' if count == 1 else 'lack'} data: upload "
                             f"the same data again to heal {'it' if count == 1 else 'them'}, or delete "
                             f"{'it' if count == 1 else 'them'}")


def _print_repair(result) -> None:
    would = "would be " if result.dry_run else ""
    for line in result.config:
        click.echo(f"config: {line}")
    for ev in result.events:
        click.echo(f"event {ev['key']}: {ev['problem']}: {would}{ev['action']}")
    for p in result.packs:
        where = "dropped from every index" if p["missing"] else "moved to quarantine/"
        click.echo(f"{p['problem']}: {plural(p['salvaged'], 'chunk')} {would}salvaged, {p['lost']} lost; "
                   f"{would}{where}")
    for dep in result.depended:
        click.echo(f"no longer applies: {dep['key']} ({dep['op']} {dep['dataset']}): {dep['why']}")
    for v in result.damaged_versions:
        more = f" and {v['files'] - len(v['named'])} more" if v["files"] > len(v["named"]) else ""
        files = f"{plural(v['files'], 'file')} lost data: {', '.join(v['named'])}{more}" if v["files"] else ""
        click.echo(f"damaged: {v['dataset']}:{v['version']}: " + "; ".join(filter(None, [files, *v["unreadable"]])))
    nothing = not (result.config or result.events or result.packs)
    if nothing:
        click.echo("nothing to repair")
    else:
        click.echo(f"{plural(result.salvaged_chunks, 'chunk')} {would}salvaged into new packs "
                   f"({human_bytes(result.salvaged_bytes)}), {result.lost_chunks} lost, "
                   f"{plural(result.deleted_packs, 'damaged pack')} removed from packs/")


class StageBars:
    """One counting bar per stage of a long operation, each closed when the next begins."""

    def __init__(self, enabled: bool | None) -> None:
        self.enabled = enabled
        self._bar: CountProgress | None = None

    def __call__(self, label: str, total: int):
        self.close()
        self._bar = CountProgress(label, total, enabled=self.enabled)
        return self._bar.tick

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@store.command()
@click.option("--dry-run", is_flag=True, help="Only plan: report what would be condemned, repacked and deleted.")
@click.option("--min-age", default="1h", show_default=True, metavar="DURATION",
              help="Safety margin for other writers: packs newer than this are never condemned, and condemned "
                   "packs are deleted only this long after (e.g. 90s, 30m, 1h, 7d; 0 = no margin: only when "
                   "nobody else is writing).")
@click.option("--repack-threshold", type=click.FloatRange(0, 1, min_open=True), default=DEFAULT_REPACK_THRESHOLD,
              show_default=True, help="Dead share of a pack at which its live chunks are moved to a new pack.")
@json_option
@pass_state
def gc(state, dry_run, min_age, repack_threshold, as_json) -> None:
    """Delete the packs that no live version needs, safely while others upload (docs/GC.md).

    Two phases: a run condemns unreferenced packs (repacking mostly-dead ones first) and deletes the
    packs condemned by an earlier run at least --min-age ago. Run it regularly (e.g. hourly); with
    --min-age 0 everything unreferenced is deleted at once.
    """
    options = GcOptions(min_age=parse_duration(min_age, "--min-age"), repack_threshold=repack_threshold)
    repo = state.repo()
    bars = StageBars(None if not as_json else False)
    try:
        result = repo.gc(options, dry_run=dry_run, progress=bars)
    finally:
        bars.close()
    if as_json:
        emit_json(result.to_json())
        return
    would = "would " if dry_run else ""
    click.echo(f"live: {plural(result.versions, 'version')}, {plural(result.chunks, 'chunk')} and "
               f"{plural(result.manifest_nodes, 'manifest node')}")
    click.echo(f"stored: {human_bytes(result.stored_bytes)} in {plural(result.packs, 'pack')}: "
               f"{human_bytes(result.live_bytes)} live, {human_bytes(result.dead_bytes)} dead")
    click.echo(f"condemned: {plural(result.packs_condemned, 'pack')} ({human_bytes(result.bytes_condemned)}), "
               f"{result.packs_repacked} of them repacked ({human_bytes(result.bytes_repacked_live)} live "
               f"{'to move' if dry_run else 'moved'} into {plural(result.packs_written, 'new pack')} of "
               f"{human_bytes(result.bytes_written)})")
    click.echo(f"deleted: {plural(result.packs_deleted, 'pack')} ({human_bytes(result.bytes_deleted)}); "
               f"{plural(result.packs_waiting, 'condemned pack')} ({human_bytes(result.bytes_waiting)}) "
               f"{'wait' if result.packs_waiting != 1 else 'waits'} for --min-age")
    click.echo(f"kept: {plural(result.packs_kept, 'pack')} ({human_bytes(result.bytes_kept)}; "
               f"{human_bytes(result.dead_bytes_kept)} of it dead: below the repack threshold, pack framing, "
               "or too young)")
    click.echo(f"{'would free' if dry_run else 'freed'}: {human_bytes(result.freed_bytes)} (deleted minus written)"
               + ("" if options.min_age <= 0 else "; with --min-age 0 it frees what 'osmo store report' calls "
                  "reclaimable"))


@store.command()
@json_option
@pass_state
def stats(state, as_json) -> None:
    """The store's figures: what it holds, live and dead bytes, deduplication (docs/COSTS.md).

    \b
    logical      the files of every live version, each counted in full
    stored       every pack in the store; of it live (chunks and manifest nodes
                 live versions reference) and dead (the rest: unreferenced chunks,
                 pack headers and footers)
    reclaimable  what 'osmo store gc --min-age 0' would free now
    chunks       distinct file-data chunks live versions reference; manifest
                 nodes likewise
    The storage report ('osmo store report') shows the same figures.
    """
    s = state.repo().stats()
    if as_json:
        emit_json(s)
        return
    rows = [("store", s["url"]), ("datasets", s["datasets"]), ("live versions", s["versions"]),
            ("logical", human_bytes(s["logical_bytes"])),
            ("stored", f"{human_bytes(s['stored_bytes'])} in {plural(s['packs'], 'pack')}"),
            ("  live", human_bytes(s["live_bytes"])), ("  dead", human_bytes(s["dead_bytes"])),
            ("reclaimable", human_bytes(s["reclaimable_bytes"])),
            ("chunks", "?" if s["chunks"] is None else s["chunks"]),
            ("manifest nodes", "?" if s["manifest_nodes"] is None else s["manifest_nodes"]),
            ("dedup", ratio(s["dedup_ratio"])), ("compression", ratio(s["compression_ratio"]))]
    for k, v in rows:
        click.echo(f"{k:15} {v}")


@store.command()
@click.argument("name")
@click.argument("url")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A backend option, e.g. endpoint_url=..., region=..., profile=... (repeatable).")
@click.option("--default", "make_default", is_flag=True, help="Use this store when no --store is given.")
@click.option("--replace", is_flag=True, help="Overwrite an existing entry of that name.")
@json_option
def add(name, url, options, make_default, replace, as_json) -> None:
    """Remember a store under NAME in the config file, for --store NAME.

    \b
    Examples:
      osmo store add team s3://robot-data/osmo --option region=eu-central-1 --default
      osmo store add lab az://datasets/osmo --option account_name=labdata
      osmo store add local-minio s3://osmo --option endpoint_url=http://127.0.0.1:9000

    Secrets are best left where the cloud tools keep them (AWS profiles and environment,
    AZURE_STORAGE_CONNECTION_STRING); if given here they are stored in the config file (mode 0600)
    and never printed.
    """
    config = UserConfig.load()
    parsed = parse_options(options)
    open_blob_store(url, parsed).close()  # unknown options and malformed URLs fail here, not later
    location = config.add(name, url, parsed, replace=replace)
    if make_default:
        config.default_store = name
    config.save()
    if as_json:
        emit_json({"name": name, "url": without_password(location.url), "options": redact(location.options),
                   "default": config.default_store == name, "config": config.path})
    else:
        click.echo(f"added store {name} -> {without_password(location.url)} ({config.path})")


@store.command(name="list")
@json_option
def list_stores(as_json) -> None:
    """The stores in the config file (secret options shown as ***)."""
    config = UserConfig.load()
    rows = [{"name": n, "url": without_password(s.url), "options": redact(s.options), "default": n == config.default_store}
            for n, s in sorted(config.stores.items())]
    if as_json:
        emit_json({"config": config.path, "stores": rows})
        return
    if not rows:
        click.echo(f"no stores configured ({config.path}); add one with 'osmo store add NAME URL'")
    for row in rows:
        opts = " ".join(f"{k}={v}" for k, v in row["options"].items())
        click.echo(f"{'*' if row['default'] else ' '} {row['name']:16} {row['url']}  {opts}".rstrip())


@store.command()
@click.argument("name")
def remove(name) -> None:
    """Forget a configured store (its data is not touched)."""
    config = UserConfig.load()
    config.remove(name)
    config.save()
    click.echo(f"removed store {name} from {config.path}")
