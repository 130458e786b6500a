"""Entry point of ``osmo``: the top-level group, global options and error handling.

Errors from the library (``OsmoError``) are printed as one line ``osmo: error: ...`` and exit with the
error's code (README lists them); so are click's usage errors (a bad option value, a missing
argument: exit 2). Anything unexpected is reported in one line too, with the traceback only under
``--debug``. When the command line has ``--json``, the line is one JSON object instead
(``errorline.error_line``: ``error``, ``code``, ``exit`` and what the error names).
"""

from __future__ import annotations

import functools
import sys
import traceback

import click

from osmo_store import __version__
from osmo_store.cli.context import State
from osmo_store.cli.errorline import error_line, wants_json
from osmo_store.errors import IndexDamagedError, OsmoError, UsageError

INTERNAL_ERROR = 70
OWN_GROUPS = ("dataset", "store")  # loaded by OsmoGroup._own when asked for


class OsmoGroup(click.Group):
    """The top-level group: one-line errors, and command groups other packages register under the
    ``osmo.commands`` entry point (``osmo workflow`` from osmo_run), so that osmo_store never imports
    them. Those, and osmo_store's own groups, are imported only when asked for (or listed by ``--help``):
    every ``osmo dataset`` command starts without loading the workflow runtime, and ``osmo workflow``
    commands without the store's engine."""

    def _own(self, name: str) -> click.Command | None:
        """osmo_store's own groups, imported when asked for: a command loads only the engine it uses
        (``osmo workflow query`` starts without the store's modules)."""
        if name == "dataset":
            from osmo_store.cli.dataset_cmds import dataset
            from osmo_store.cli.usage_cmds import retain
            dataset.add_command(retain)
            return dataset
        if name == "store":
            from osmo_store.cli.store_cmds import store
            from osmo_store.cli.usage_cmds import report
            store.add_command(report)
            return store
        return None

    @functools.cached_property
    def _plugins(self) -> dict:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group="osmo.commands") if ep.name not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(OWN_GROUPS) | set(self._plugins))

    def get_command(self, ctx: click.Context, name: str):
        if name not in self.commands and name in OWN_GROUPS:
            self.add_command(self._own(name), name)
        elif name not in self.commands and name in self._plugins:
            self.add_command(self._plugins[name].load(), name)
        return self.commands.get(name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        wants_json(ctx, args)
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            click.echo(error_line(ctx, _usage_line(exc), "usage", 2, _usage_subject(exc)), err=True)
            ctx.exit(2)

    def invoke(self, ctx: click.Context):
        try:
            result = super().invoke(ctx)
            state = ctx.find_object(State)
            note = state.damage_note() if state is not None else None
            if note:
                click.echo(note, err=True)
            return result
        except IndexDamagedError as exc:
            state = ctx.find_object(State)
            where = state.discard_index() if state is not None else None
            _fail(ctx, f"{exc}; it was removed and will be rebuilt from the store: run the command again"
                  if where else str(exc), exc.exit_code, exc.code, exc.subject)
        except OsmoError as exc:
            _fail(ctx, str(exc), exc.exit_code, exc.code, exc.subject)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted; nothing partial was committed", 130, "interrupted")
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            _fail(ctx, _usage_line(exc), 2, "usage", _usage_subject(exc))
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # the one place unexpected errors are turned into a message
            _fail(ctx, f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
                  INTERNAL_ERROR, "internal")


def _usage_line(exc: click.UsageError) -> str:
    """A usage error as one line, pointing at the command's help."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    command = exc.ctx.command_path if exc.ctx is not None else "osmo"
    return f"{message} (see '{command} --help')"


def _usage_subject(exc: click.UsageError) -> dict:
    """What a click usage error names: the option or argument, when click knows it."""
    param = getattr(exc, "param", None)
    if param is None:
        return {}
    name = param.opts[0] if isinstance(param, click.Option) and param.opts else param.name
    return {"option" if isinstance(param, click.Option) else "argument": name}


def _fail(ctx: click.Context, message: str, exit_code: int, code: str, subject: dict | None = None) -> None:
    state = ctx.find_object(State)
    if state is not None and state.debug:
        traceback.print_exc()
    click.echo(error_line(ctx, message, code, exit_code, subject), err=True)
    state and state.close()
    ctx.exit(exit_code)


@click.group(cls=OsmoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "store_url", envvar="OSMO_STORE", metavar="NAME|URL",
              help="Store: a name from 'osmo store list', a folder, s3://bucket/prefix or az://container/prefix. "
                   "Default: $OSMO_STORE, else the configured default store, else a per-user store under the "
                   "XDG data directory, created on first use.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="osmo")
@click.pass_context
def cli(ctx: click.Context, store_url: str | None, debug: bool) -> None:
    """osmo: versioned, deduplicated datasets for robotics and physical-AI pipelines.

    \b
    Quick tour:
      osmo dataset upload scans ./recordings       # version 1
      osmo dataset upload scans ./recordings       # version 2, stores only what changed
      osmo dataset list
      osmo dataset download scans:1 ./restore
    """
    ctx.obj = State(store_url, debug)
    ctx.call_on_close(ctx.obj.close)
    if store_url is not None and not store_url.removeprefix("file://").strip():
        raise UsageError(f"--store (or $OSMO_STORE) {store_url!r} names no store: give a store name, URL or "
                         "folder, or leave it out for the default store")




def main() -> None:
    cli(prog_name="osmo")


if __name__ == "__main__":
    sys.exit(main())
