"""``osmo ui`` as a test server: ``python -m osmo_store.cli.main ui --port 0 --json`` in a private
environment (the caller's ``env``: state dir, store, cache, configs), its URL read from the JSON line it
prints once it listens, stopped with SIGTERM to its process group then SIGKILL (no process left).

Its stderr goes to a file in a private temporary folder (``stderr_text()``; kept in ``stderr_log``
after ``stop()``), so tests can check what it logged. It dies with the test process (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Mapping, Sequence

from servers.base import ManagedServer, die_with_parent, stop_process_group

START_TIMEOUT = 30.0
TERM_GRACE = 8.0  # uvicorn's graceful shutdown is 2 s (osmo_ui/cli.py); open event streams add a little


class OsmoUiError(RuntimeError):
    """The server did not start (exited, or printed no JSON line in time), with its stderr."""


class OsmoUiServer(ManagedServer):
    """``OsmoUiServer(env).start()``; ``url`` (no trailing slash), ``port``, ``info`` (the JSON line),
    ``proc``. ``ui_args`` go after ``ui`` (``--host`` ...), ``osmo_args`` before it (``--store`` ...)."""

    def __init__(self, env: Mapping[str, str], ui_args: Sequence[str] = (), osmo_args: Sequence[str] = ()) -> None:
        self.env = dict(env)
        self.argv = [sys.executable, "-m", "osmo_store.cli.main", *osmo_args, "ui", "--port", "0", "--json",
                     *ui_args]
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self.dir: str | None = None
        self.stderr_log = ""

    @property
    def url(self) -> str:
        """The base URL without its query (the token, if any, is in ``info["url"]``)."""
        return f"http://{self.info['host']}:{self.info['port']}" if self.info["loopback"] \
            else f"http://127.0.0.1:{self.info['port']}"

    @property
    def port(self) -> int:
        return int(self.info["port"])

    def _start(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="osmo-ui-server-")
        with open(self._stderr_path(), "wb") as err:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=err,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=die_with_parent)
        line = self._first_line()
        try:
            self.info = json.loads(line)
        except ValueError:
            raise OsmoUiError(f"osmo ui printed {line!r}, not its JSON line\n{self.stderr_text()}") from None

    def _first_line(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=0.2):
                    line = self.proc.stdout.readline().decode(errors="replace")
                    if line:
                        return line
                if self.proc.poll() is not None:
                    raise OsmoUiError(f"osmo ui exited ({self.proc.returncode}) before listening: "
                                      f"{' '.join(self.argv)}\n{self.stderr_text()}")
        raise OsmoUiError(f"osmo ui printed nothing within {START_TIMEOUT:.0f} s\n{self.stderr_text()}")

    def _stderr_path(self) -> str:
        return os.path.join(self.dir or "", "stderr.log")

    def stderr_text(self) -> str:
        """What the server wrote to stderr so far (after ``stop()``: all of it)."""
        if self.dir and os.path.exists(self._stderr_path()):
            with open(self._stderr_path(), errors="replace") as f:
                return f.read()
        return self.stderr_log

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process_group(proc, TERM_GRACE)
            proc.stdout.close()
        if self.dir:
            self.stderr_log = self.stderr_text()
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
