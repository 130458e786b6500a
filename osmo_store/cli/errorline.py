"""Errors as the CLI prints them: one line ``osmo: error: ...``, or with ``--json`` on the command line one
JSON object. Kept apart from ``output`` (tables, progress bars): the top-level group needs only this, so a
command starts without loading the terminal libraries it does not use."""

from __future__ import annotations

import json

import click

JSON_ERRORS = "osmo.json_errors"  # in click's ``ctx.meta`` (shared by every nested context)


def json_default(obj: object) -> object:
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def wants_json(ctx: click.Context, args: list[str]) -> None:
    """Note whether the command line asks for ``--json`` (before a ``--``): its errors are then JSON
    too, usage errors included, which happen before the option is parsed."""
    given = args[:args.index("--")] if "--" in args else args
    if "--json" in given:
        ctx.meta[JSON_ERRORS] = True


def error_line(ctx: click.Context, message: str, code: str, exit_code: int, subject: dict | None = None) -> str:
    """The one stderr line of an error: ``osmo: error: MESSAGE``, or with ``--json`` one JSON object
    ``{"error": MESSAGE, "code": CODE, "exit": EXIT, ...what it names (dataset, tag, path, key...)}``."""
    if not ctx.meta.get(JSON_ERRORS):
        return f"osmo: error: {message}"
    return json.dumps({**(subject or {}), "error": message, "code": code, "exit": exit_code}, sort_keys=True,
                      default=json_default)
