"""Output helpers for the CLI: JSON, errors as a line or a JSON object, tables, human sizes, plurals and
progress bars on a terminal.

rich is imported when something is drawn (a table, a tree, a bar on a terminal), not when a command
starts: most invocations print JSON or a line, and every command's start-up time counts in scripts.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

from functools import cache
from typing import TYPE_CHECKING

import click

from osmo_store.cli.errorline import JSON_ERRORS, error_line, json_default, wants_json  # noqa: F401  (shared)
from osmo_store.report.render import human_bytes, plural  # noqa: F401  (one definition, shared)
from osmo_store.transfer.progress import Progress

if TYPE_CHECKING:
    from rich.console import Console


@cache
def err_console() -> Console:
    from rich.console import Console
    return Console(stderr=True, highlight=False)


@cache
def out_console() -> Console:
    from rich.console import Console
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def emit_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=json_default))


def human_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None) -> None:
    from rich.table import Table

    table = Table(*columns, title=title, show_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    out_console().print(table)


def note(message: str) -> None:
    """A human remark on stderr (never mixed into JSON on stdout)."""
    err_console().print(message, markup=False)


class BarProgress(Progress):
    """Files, bytes and speed on stderr; silent unless stderr is a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None  # a rich Progress while drawing
        self._task = None
        self._files = 0
        self._total_files = 0

    def start(self, label: str, files: int, total_bytes: int) -> None:
        if not self.enabled:
            return
        from rich.progress import (BarColumn, DownloadColumn, Progress as RichProgress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self._total_files = files
        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
            TransferSpeedColumn(), TextColumn("{task.fields[files]}"), TimeRemainingColumn(),
            console=err_console(), transient=False)
        self._bar.start()
        self._task = self._bar.add_task(label, total=total_bytes, files=f"0/{files} files")

    def advance(self, files: int, nbytes: int) -> None:
        if self._bar is None:
            return
        self._files += files
        self._bar.update(self._task, advance=nbytes, files=f"{self._files}/{self._total_files} files")

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class CountProgress:
    """A simple counting bar (packs checked, packs indexed)."""

    def __init__(self, label: str, total: int, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeRemainingColumn)

            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeRemainingColumn(), console=err_console())
            self._bar.start()
            self._task = self._bar.add_task(label, total=total)

    def tick(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
