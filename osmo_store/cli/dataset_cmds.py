"""``osmo dataset ...``: upload, download and look at datasets (changes live in dataset_edit_cmds).

Each command imports the engine it uses when it runs (upload's, the checksum's, rich's tree), so that
every command starts without loading the others'.
"""

from __future__ import annotations

import click

from osmo_store.cli.context import json_option, pass_state
from osmo_store.cli.dataset_edit_cmds import register_edit_commands
from osmo_store.cli.output import (BarProgress, emit_json, human_bytes, human_time, note, out_console, plural,
                                   print_table)
from osmo_store.errors import UsageError
from osmo_store.report.render import ratio
from osmo_store.ids import parse_key_value, parse_ref
from osmo_store.transfer.filters import PathFilter

include_option = click.option("--include", multiple=True, metavar="GLOB",
                              help="Only files matching GLOB (repeatable). A GLOB without '/' also matches base names.")
exclude_option = click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files matching GLOB (repeatable).")


@click.group()
def dataset() -> None:
    """Upload, download and manage versioned datasets.

    References: NAME (latest version), NAME:TAG or NAME:VERSION.
    """


@dataset.command()
@click.argument("target", metavar="NAME[:TAG]")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--desc", default="", help="Description of this version.")
@click.option("--metadata", multiple=True, metavar="KEY=VALUE", help="Version metadata (repeatable).")
@click.option("--label", multiple=True, metavar="KEY=VALUE", help="Dataset label (repeatable).")
@include_option
@exclude_option
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Worker processes reading, chunking and packing files (default: CPUs; threads for uploads "
                   "under 64 MiB or to remote stores).")
@click.option("--allow-empty", is_flag=True,
              help="Commit an empty version when no file is selected (default: fail with exit code 2).")
@json_option
@pass_state
def upload(state, target, paths, desc, metadata, label, include, exclude, workers, allow_empty, as_json) -> None:
    """Upload PATH... as the next version of dataset NAME.

    A folder contributes its contents at the dataset root; a file contributes itself under its
    name. Only changed chunks are stored. Symbolic links are skipped (and reported). When no file
    is selected (an empty folder, filters that leave nothing) nothing is committed unless
    --allow-empty is given. A file that keeps changing while it is read fails the upload (exit 9).
    """
    from osmo_store.transfer.scan import check_sources
    from osmo_store.transfer.upload import UploadRequest

    ref = parse_ref(target)
    if ref.version is not None:
        raise UsageError(f"{target}: upload takes NAME or NAME:TAG; version numbers are assigned")
    req = UploadRequest(
        dataset=ref.name, paths=list(paths), tags=[ref.tag] if ref.tag else [], description=desc,
        metadata=dict(parse_key_value(m, "--metadata") for m in metadata),
        labels=dict(parse_key_value(lbl, "--label") for lbl in label),
        include=include, exclude=exclude, allow_empty=allow_empty)
    PathFilter(include, exclude)  # bad input is refused before a store is created or opened
    check_sources(paths)
    repo = state.repo(create=True)
    renamed_to = repo.log.renamed_to(ref.name)
    if renamed_to is not None:
        note(f"dataset {ref.name!r} was renamed to {renamed_to!r}; this upload starts a new dataset {ref.name!r}")
    result = repo.upload(req, BarProgress(None if not as_json else False), workers)
    for path, reason in result.skipped:
        note(f"skipped {path}: {reason}")
    if as_json:
        emit_json(result.to_json())
        return
    click.echo(f"{result.dataset}:{result.version}  {plural(result.files, 'file')}, "
               f"{human_bytes(result.logical_bytes)}, {human_bytes(result.stored_bytes)} new in the store, "
               f"{result.seconds:.1f} s")


@dataset.command()
@click.argument("source", metavar="NAME[:TAG|:VERSION]")
@click.argument("dest", type=click.Path())
@include_option
@exclude_option
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Worker processes reading the store, verifying and writing files (default: CPUs); threads for "
                   "downloads under 64 MiB or from remote stores (default: CPUs, or the store's concurrency "
                   "option if larger).")
@json_option
@pass_state
def download(state, source, dest, include, exclude, workers, as_json) -> None:
    """Download a version into DEST (verified; files already there and correct are kept)."""
    rec, result = state.repo().download(source, dest, include, exclude,
                                        BarProgress(None if not as_json else False), workers)
    if as_json:
        emit_json({"dataset": parse_ref(source).name, "version": rec["version"], **result.to_json()})
        return
    click.echo(f"{parse_ref(source).name}:{rec['version']} -> {dest}  {plural(result.files, 'file')}, "
               f"{human_bytes(result.bytes)} ({result.files_skipped} already present), {result.seconds:.1f} s")


@dataset.command("list")
@json_option
@pass_state
def list_(state, as_json) -> None:
    """List datasets: versions, latest, sizes (logical of all versions vs stored) and dedup ratio."""
    rows = state.repo().list_datasets()
    if as_json:
        emit_json(rows)
        return
    print_table(["name", "versions", "latest", "latest size", "logical (all)", "stored", "dedup", "updated"],
                [[r["name"], r["versions"], r["latest"] or "-", human_bytes(r["logical_bytes"]),
                  human_bytes(r["logical_bytes_all"]), human_bytes(r["stored_bytes"]), ratio(r["dedup_ratio"]),
                  human_time(r["updated"])] for r in rows])


@dataset.command()
@click.argument("name")
@json_option
@pass_state
def info(state, name, as_json) -> None:
    """Show a dataset's versions: status, created, files, sizes, tags, checksum.

    \b
    LOGICAL  the size of its files (what a download writes)
    STORED   the stored size of the distinct chunks and manifest nodes it references
    NEW      what its upload added to the store (packs written)
    UNIQUE   what deleting it would free now, after 'osmo store gc --min-age 0'
    DEDUP    its logical size over the size of its distinct chunks
    Where NEW and UNIQUE differ, a line below the table says why.
    """
    desc = state.repo().describe(parse_ref(name).name)
    if as_json:
        emit_json(desc)
        return
    labels = ", ".join(f"{k}={v}" for k, v in sorted(desc["labels"].items())) or "-"
    u = desc["usage"]
    click.echo(f"dataset {desc['name']}  (labels: {labels})  {human_bytes(u['logical_bytes'])} logical in all "
               f"live versions, {human_bytes(u['stored_bytes'])} stored, {human_bytes(u['unique_bytes'])} unique, "
               f"dedup {ratio(u['dedup_ratio'])}, compression {ratio(u['compression_ratio'])}")
    rows = []
    for v in desc["versions"]:
        vu = v.get("usage") or {}
        rows.append([v["version"], v["status"], human_time(v["created"]), v["user"], v["files"],
                     human_bytes(v["logical_bytes"]), human_bytes(vu.get("stored_bytes")),
                     human_bytes(v.get("new_bytes")), human_bytes(vu.get("unique_bytes")),
                     ratio(vu.get("dedup_ratio")), ",".join(v["tags"]) or "-", v["checksum"][:16]])
    print_table(["version", "status", "created", "user", "files", "logical", "stored", "new", "unique", "dedup",
                 "tags", "checksum"], rows)
    for v in desc["versions"]:
        why = (v.get("usage") or {}).get("note")
        if why:
            click.echo(f"version {v['version']}: new {human_bytes(v['new_bytes'])}, unique "
                       f"{human_bytes(v['usage']['unique_bytes'])}: {why}")
    for v in desc["versions"]:
        damage = v.get("damage")
        if damage:
            more = damage["files"] - len(damage["named"])
            files = (f"{plural(damage['files'], 'file')} lost data: {', '.join(damage['named'])}"
                     + (f" and {more} more" if more > 0 else "")) if damage["files"] else ""
            click.echo(f"damaged: version {v['version']}: " + "; ".join(filter(None, [files, *damage["unreadable"]]))
                       + " (upload the same data again to heal it; 'osmo store repair' for the rest)")


@dataset.command()
@click.argument("source", metavar="NAME[:REF]")
@click.option("--tree", "as_tree", is_flag=True, help="Show files as a folder tree.")
@include_option
@exclude_option
@json_option
@pass_state
def inspect(state, source, as_tree, include, exclude, as_json) -> None:
    """List the files of a version."""
    keep = PathFilter(include, exclude)
    rec, entries = state.repo().entries(source)
    entries = [e for e in entries if keep(e.path)]
    if as_json:
        emit_json({"version": rec["version"], "files": [
            {"path": e.path, "size": e.size, "mode": oct(e.mode), "mtime_ns": e.mtime_ns,
             "blake3": e.digest.hex(), "chunks": len(e.chunks)} for e in entries]})
        return
    if as_tree:
        from rich.tree import Tree

        root = Tree(f"{parse_ref(source).name}:{rec['version']}")
        nodes: dict[str, Tree] = {"": root}
        for e in entries:
            parts = e.path.split("/")
            for i in range(1, len(parts)):
                key = "/".join(parts[:i])
                if key not in nodes:
                    nodes[key] = nodes["/".join(parts[: i - 1])].add(parts[i - 1] + "/")
            nodes["/".join(parts[:-1])].add(f"{parts[-1]}  {human_bytes(e.size)}")
        out_console().print(root)
        return
    print_table(["path", "size", "mode", "blake3"],
                [[e.path, human_bytes(e.size), oct(e.mode & 0o777), e.digest.hex()[:16]] for e in entries])


@dataset.command()
@click.argument("a", metavar="NAME:A")
@click.argument("b", metavar="NAME:B")
@json_option
@pass_state
def diff(state, a, b, as_json) -> None:
    """Files added, removed and changed between two versions (of one dataset or two)."""
    out = state.repo().diff_summary(a, b)
    if as_json:
        emit_json(out)
        return
    for f in out["added"]:
        click.echo(f"+ {f['path']}  {human_bytes(f['size'])}")
    for f in out["removed"]:
        click.echo(f"- {f['path']}  {human_bytes(f['size'])}")
    for f in out["changed"]:
        click.echo(f"~ {f['path']}  {human_bytes(f['old_size'])} -> {human_bytes(f['new_size'])}")
    click.echo(f"{len(out['added'])} added ({human_bytes(out['bytes_added'])}), "
               f"{len(out['removed'])} removed ({human_bytes(out['bytes_removed'])}), "
               f"{len(out['changed'])} changed ({human_bytes(out['bytes_changed'])})")


@dataset.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@include_option
@exclude_option
@json_option
def checksum(paths, include, exclude, as_json) -> None:
    """The version checksum of local PATH... (compare with 'osmo dataset info')."""
    from osmo_store.transfer.checksum import folder_checksum

    result = folder_checksum(paths, include, exclude)
    if as_json:
        emit_json(result)
        return
    click.echo(f"{result['checksum']}  {plural(result['files'], 'file')}, {human_bytes(result['logical_bytes'])}")


register_edit_commands(dataset)
