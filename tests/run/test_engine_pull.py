"""A task whose image is not in the engine's storage: Podman pulls it, its progress in the task log,
then the task runs in it.

Nothing can be pulled from the internet here, so the test serves the image itself: the test task
image copied by skopeo into an OCI layout, served read-only by a registry of a few lines (the
distribution API's ``/v2/``, manifests and blobs) on 127.0.0.1, which Podman is told to reach without
TLS through ``$CONTAINERS_REGISTRIES_CONF`` (the runner passes the environment on, as for the storage).
"""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers.images import image_archives
from helpers.tools import require_tool

from .conftest import Osmo, tasks_of, write_spec

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Registry(BaseHTTPRequestHandler):
    """GET/HEAD /v2/, /v2/<name>/manifests/<tag or digest>, /v2/<name>/blobs/<digest> from ``layout``."""

    layout: Path
    tags: dict[str, str]  # tag -> manifest digest

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, body: bytes | None, kind: str = "application/octet-stream", digest: str = "") -> None:
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def _blob(self, digest: str) -> bytes | None:
        path = self.layout / "blobs" / digest.replace(":", "/")
        return path.read_bytes() if digest.startswith("sha256:") and path.is_file() else None

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts == ["v2"]:
            return self._answer(b"{}", "application/json")
        if len(parts) >= 4 and parts[-2] == "manifests":
            digest = self.tags.get(parts[-1], parts[-1])
            return self._answer(self._blob(digest), MANIFEST, digest)
        if len(parts) >= 4 and parts[-2] == "blobs":
            return self._answer(self._blob(parts[-1]), digest=parts[-1])
        return self._answer(None)

    do_HEAD = do_GET


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """The test task image as ``127.0.0.1:PORT/osmo/pulled:1``; yields (reference, registries.conf)."""
    skopeo = require_tool("skopeo")
    layout = tmp_path_factory.mktemp("registry") / "layout"
    archive = image_archives()["osmo-task"]
    done = subprocess.run([skopeo, "copy", "--quiet", f"docker-archive:{archive.path}:{archive.tags[0]}",
                           f"oci:{layout}:1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    index = json.loads((layout / "index.json").read_text())
    handler = type("Handler", (Registry,), {"layout": layout, "tags": {"1": index["manifests"][0]["digest"]}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    where = f"127.0.0.1:{server.server_address[1]}"
    conf = layout.parent / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{where}"\ninsecure = true\n')
    yield f"{where}/osmo/pulled:1", str(conf)
    server.shutdown()


def test_a_missing_image_is_pulled_with_its_progress_in_the_log(tmp_path, podman_store, registry):
    image, conf = registry
    osmo = Osmo(tmp_path / "osmo", OSMO_ENGINE="podman", CONTAINERS_REGISTRIES_CONF=conf, **podman_store.env)
    osmo.pool(grace_period="1s")
    spec = write_spec(tmp_path, f"""
        workflow:
          name: pull
          tasks:
          - {{name: t, image: "{image}", command: [sh, -c, "test ! -e /work && echo running in the pulled image"]}}
        """)
    osmo.submit(spec)
    info = osmo.query("pull-1")
    logs = osmo.logs("pull-1")
    assert info["status"] == "COMPLETED", logs
    lines = [line for line in logs.splitlines() if line.startswith("t | ")]
    first = lines.index(f"t | [osmo] image {image} is not here: pulling it (podman pull {image})")
    said = lines[first + 1:]
    assert said[0] == f"t | Trying to pull {image}..."  # the engine's progress, as it writes it
    assert any(line.startswith("t | Copying blob sha256:") for line in said)
    assert "t | Writing manifest to image destination" in said
    done = next(i for i, line in enumerate(said) if line.startswith(f"t | [osmo] image {image} pulled in "))
    assert said[done + 1] == "t | running in the pulled image"
    assert podman_store.run("image", "exists", image).returncode == 0
    assert tasks_of(info)["t"]["exit_code"] == 0
    podman_store.check_empty(osmo)
