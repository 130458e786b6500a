"""``osmo dataset tag|label|metadata|rename|delete``: changes recorded as events in the store."""

from __future__ import annotations

import click

from osmo_store.cli.context import json_option, pass_state
from osmo_store.cli.output import emit_json, plural
from osmo_store.errors import UsageError
from osmo_store.ids import check_key, check_name, parse_key_value, parse_ref


def _pairs(values, what: str) -> dict[str, str]:
    return dict(parse_key_value(v, what) for v in values)


@click.command()
@click.argument("source", metavar="NAME:VERSION")
@click.option("--set", "set_", multiple=True, metavar="TAG", help="Point TAG at this version (repeatable).")
@click.option("--delete", multiple=True, metavar="TAG", help="Remove TAG from the dataset (repeatable).")
@json_option
@pass_state
def tag(state, source, set_, delete, as_json) -> None:
    """Set or delete tags. 'latest' is maintained automatically."""
    if not set_ and not delete:
        raise UsageError("give --set TAG or --delete TAG")
    ref = parse_ref(source)
    for name in delete:
        check_name(name, "tag")
    log = state.repo().log
    for name in delete:
        log.delete_tag(ref.name, name)
    for name in set_:
        log.set_tag(ref, name)
    tags = state.repo().catalog.tags(log.dataset_id(ref.name))
    if as_json:
        emit_json({"dataset": ref.name, "tags": tags})
    else:
        click.echo(", ".join(f"{t}={v}" for t, v in sorted(tags.items())) or "no tags")


@click.command()
@click.argument("name")
@click.option("--set", "set_", multiple=True, metavar="KEY=VALUE", help="Set a label (repeatable).")
@click.option("--delete", multiple=True, metavar="KEY", help="Remove a label (repeatable).")
@json_option
@pass_state
def label(state, name, set_, delete, as_json) -> None:
    """Show, set or delete dataset labels."""
    check_name(name)
    pairs, keys = _pairs(set_, "--set"), [check_key(k, "--delete") for k in delete]
    repo = state.repo()
    if set_ or delete:
        labels = repo.log.change_labels(name, pairs, keys)
    else:
        labels = repo.catalog.dataset(repo.log.dataset_id(name))["labels"]
    if as_json:
        emit_json({"dataset": name, "labels": labels})
    else:
        for k, v in sorted(labels.items()):
            click.echo(f"{k}={v}")


@click.command()
@click.argument("source", metavar="NAME[:REF]")
@click.option("--set", "set_", multiple=True, metavar="KEY=VALUE", help="Set a metadata field (repeatable).")
@click.option("--delete", multiple=True, metavar="KEY", help="Remove a metadata field (repeatable).")
@json_option
@pass_state
def metadata(state, source, set_, delete, as_json) -> None:
    """Show, set or delete a version's metadata."""
    ref = parse_ref(source)
    pairs, keys = _pairs(set_, "--set"), [check_key(k, "--delete") for k in delete]
    repo = state.repo()
    if set_ or delete:
        meta = repo.log.change_metadata(ref, pairs, keys)
    else:
        meta = repo.log.resolve(ref)[1]["metadata"]
    if as_json:
        emit_json({"reference": str(ref), "metadata": meta})
    else:
        for k, v in sorted(meta.items()):
            click.echo(f"{k}={v}")


@click.command()
@click.argument("old")
@click.argument("new")
@json_option
@pass_state
def rename(state, old, new, as_json) -> None:
    """Rename dataset OLD to NEW (versions, tags and labels follow)."""
    check_name(old)
    check_name(new)
    state.repo().log.rename(old, new)
    if as_json:
        emit_json({"old": old, "new": new})
    else:
        click.echo(f"renamed {old} -> {new}")


@click.command()
@click.argument("source", metavar="NAME[:REF]")
@click.option("--all", "all_", is_flag=True, help="Delete every version and free the name.")
@click.option("--keep-tags", is_flag=True, hidden=True)  # refused with the reason (see the help text)
@json_option
@pass_state
def delete(state, source, all_, keep_tags, as_json) -> None:
    """Mark a version (or with --all, the whole dataset) deleted.

    Deleted versions can no longer be downloaded; their space is reclaimed by garbage collection.
    The tags pointing at a deleted version go with it, and the output names them. There is no
    --keep-tags (it is refused): a tag names one version, so to keep a tag, point it at another
    version first ('osmo dataset tag NAME:OTHER --set TAG'), then delete.
    """
    if keep_tags:
        raise UsageError("--keep-tags is not supported: a tag names one version and goes with it; point the tag "
                         "at another version first ('osmo dataset tag NAME:OTHER --set TAG'), then delete",
                         option="--keep-tags")
    ref = parse_ref(source)
    repo = state.repo()
    log = repo.log
    if all_:
        if ref.tag or ref.version:
            raise UsageError(f"{source}: --all deletes a whole dataset; give just NAME", dataset=ref.name)
        tags = sorted(repo.catalog.tags(log.dataset_id(ref.name)))
        count = log.delete_dataset(ref.name)
        result = {"dataset": ref.name, "deleted_versions": count, "all": True, "tags_removed": tags}
    else:
        if ref.tag is None and ref.version is None:
            raise UsageError(f"{source}: say which version (NAME:VERSION or NAME:TAG), or --all", dataset=ref.name)
        tags: list[str] = []
        version = log.delete_version(ref, tags)
        result = {"dataset": ref.name, "deleted_versions": 1, "version": version, "all": False,
                  "tags_removed": tags}
    if as_json:
        emit_json(result)
        return
    gone = f"; {plural(len(tags), 'tag')} went with it: {', '.join(tags)}" if tags else ""
    if all_:
        click.echo(f"deleted dataset {ref.name} ({plural(result['deleted_versions'], 'version')}){gone}")
    else:
        click.echo(f"deleted {ref.name}:{result['version']}{gone}")


def register_edit_commands(group: click.Group) -> None:
    for command in (tag, label, metadata, rename, delete):
        group.add_command(command)
