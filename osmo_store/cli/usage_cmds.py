"""``osmo store report`` and ``osmo dataset retain``: see who owns the stored bytes, and free them."""

from __future__ import annotations

import os
import tempfile

import click

from osmo_store.cli.context import json_option, pass_state
from osmo_store.cli.output import emit_json, human_bytes, human_time, plural, print_table
from osmo_store.errors import UsageError
from osmo_store.gc import DEFAULT_REPACK_THRESHOLD
from osmo_store.ids import parse_duration
from osmo_store.userconfig import UserConfig

threshold_option = click.option(
    "--repack-threshold", type=click.FloatRange(0, 1, min_open=True), default=DEFAULT_REPACK_THRESHOLD,
    show_default=True, help="The threshold 'osmo store gc' will use: what deleting frees depends on it.")


def write_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a failure leaves no half-written file behind."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--html {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".osmo-report-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@click.command()
@click.option("--dataset", "dataset", metavar="NAME", help="Only this dataset (store figures stay whole).")
@click.option("--json", "fmt", flag_value="json", help="Print the report as JSON.")
@click.option("--csv", "fmt", flag_value="csv", help="Print one CSV row per version and per dataset.")
@click.option("--html", "html_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write a self-contained HTML page with charts to FILE.")
@threshold_option
@pass_state
def report(state, dataset, fmt, html_file, repack_threshold) -> None:
    """What the store holds, who owns which bytes, and what it costs per month.

    Per dataset and version: logical bytes, stored bytes, new bytes (what its upload added), unique
    bytes (exactly what deleting it would free after 'osmo store gc --min-age 0'), bytes shared with
    other datasets, dedup and compression ratios, and a note where new and unique differ. For the
    store: stored bytes in packs, of them live and dead, reclaimable (what gc would free now),
    chunks, manifest nodes, objects and requests per GB: the figures of 'osmo store stats'. Costs
    use list prices per storage class; override them in the config file's 'prices:' section
    (docs/COSTS.md defines every figure).
    """
    from osmo_store.report import estimate_costs, load_prices, to_csv, to_html, to_json, to_text

    if html_file and fmt:
        raise UsageError("report: give one of --json, --csv and --html")
    prices = load_prices(UserConfig.load().prices)  # bad prices fail before the scan
    data = state.repo().report(dataset, repack_threshold)
    data["costs"] = estimate_costs(data["store"]["stored_bytes"], data["store"]["logical_bytes"], prices)
    if html_file:
        write_file(html_file, to_html(data))
        click.echo(f"wrote {html_file}")
    elif fmt == "json":
        click.echo(to_json(data), nl=False)
    elif fmt == "csv":
        click.echo(to_csv(data), nl=False)
    else:
        click.echo(to_text(data), nl=False)


@click.command()
@click.argument("name")
@click.option("--keep-last", type=int, metavar="N", help="Keep the N newest versions.")
@click.option("--keep-within", metavar="DURATION", help="Keep versions created within DURATION (e.g. 30d, 12h).")
@click.option("--keep-tagged", is_flag=True, help="Keep versions a tag points at.")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted and the bytes it would free.")
@threshold_option
@json_option
@pass_state
def retain(state, name, keep_last, keep_within, keep_tagged, dry_run, repack_threshold, as_json) -> None:
    """Delete the versions of dataset NAME that no --keep rule keeps.

    A version is kept when any rule keeps it; the newest version is always kept. Deleted versions
    are marked deleted at once; 'osmo store gc' frees their bytes (the FREES column says how many).
    """
    from osmo_store.retention import RetentionPolicy

    policy = RetentionPolicy(keep_last, parse_duration(keep_within, "--keep-within") if keep_within else None,
                             keep_tagged).validate()
    result = state.repo().retain(name, policy, dry_run, repack_threshold)
    if as_json:
        emit_json(result)
        return
    rows = []
    for r in result["versions"]:
        action = ("keep (" + ", ".join(r["kept_by"]) + ")") if r["kept_by"] else \
            ("delete" if dry_run else ("deleted" if r["version"] in result["deleted"] else "kept (changed meanwhile)"))
        rows.append([r["version"], human_time(r["created"]), action,
                     "-" if r["kept_by"] else human_bytes(r["unique_bytes"]), human_bytes(r["owned_bytes"])])
    print_table(["version", "created", "action", "frees alone", "owns"], rows)
    count = len(result["delete"] if dry_run else result["deleted"])
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{name}: {verb} {count} of {plural(len(result['versions']), 'version')}; "
               f"'osmo store gc' then frees {human_bytes(result['frees_bytes'])}")
