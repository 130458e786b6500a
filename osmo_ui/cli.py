"""``osmo ui``: serve the web UI (docs/UI.md) until Ctrl-C.

Binds 127.0.0.1 unless ``--host`` names another address; then a token is needed (printed in the URL, or
taken from ``$OSMO_UI_TOKEN``). Port 0 picks a free port. The socket is bound before the server starts,
so a port in use is a one-line error (exit 2), and ``--json`` prints the URL as JSON once it listens.
Ctrl-C or SIGTERM stop it: open pages are told to go, and it exits 0 after "osmo ui: stopped".
Uvicorn's access log is off: URLs (which may hold the token) are never logged.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import webbrowser

import click

from osmo_ui.security import Guard, is_loopback
from osmo_ui.sources import Sources

DEFAULT_PORT = 8642
TOKEN_ENV = "OSMO_UI_TOKEN"
PORT_IN_USE = 2


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "the port is in use (give another with --port, or --port 0 for any free one)" \
            if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise click.UsageError(f"ui: cannot listen on {host}:{port}: {why}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def page_url(host: str, port: int, token: str | None) -> str:
    """The URL to open; for a wildcard address (every interface) it names this machine."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


@click.command("ui")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="The port to listen on; 0 picks a free one.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on. Anything but a loopback address needs a token, printed in the URL "
                   f"(or set ${TOKEN_ENV}); only do this on a network you trust.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default web browser.")
@click.option("--json", "as_json", is_flag=True, help="Print {\"url\", \"host\", \"port\"} as one JSON line once it listens.")
@click.pass_context
def ui(ctx: click.Context, port: int, host: str, open_browser: bool, as_json: bool) -> None:
    """Serve the web UI: workflows (live statuses, graph, timeline, logs, cancel and resubmit), datasets
    (versions, file trees, diffs, downloads), the storage report and the pools, from the same state and
    store as the other commands (osmo's --store picks the store). Runs until Ctrl-C."""
    import uvicorn

    from osmo_ui.app import create_app

    root = ctx.find_root()
    store_url = root.params.get("store_url") if root is not ctx else None
    token = os.environ.get(TOKEN_ENV) or None
    guard = Guard.for_host(host, token)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    url = page_url(host, port, guard.token)
    app = create_app(Sources(store_url=store_url), guard)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    if as_json:
        click.echo(json.dumps({"url": url, "host": host, "port": port, "loopback": is_loopback(host)}))
    else:
        click.echo(f"osmo ui: serving on {url}  (Ctrl-C stops it)")
    sys.stdout.flush()
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stops on Ctrl-C (and SIGTERM), then raises the signal again
        pass
    finally:
        sock.close()
    click.echo("osmo ui: stopped", err=True)
