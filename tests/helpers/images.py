"""The container images of ``.ci/build-images.sh``: the manifest that names them, for the script that writes
it and the tests that read it, and the image names the workflows use (docs/IMAGES.md).

``image_archives()`` runs the script (under a second when its cache is warm; a build otherwise, so the
sidecar image always holds the checkout under test) and returns what its manifest names: each archive's
path, tags and image id. When a build tool is missing or the build fails, the calling test FAILS naming
the command that installs or builds them (``require_tool``; never a skip).

``image_aliases()`` reads tests/data/image-aliases.txt, the one list of the ``image:`` names the
conformance workflows use, under which the test task image is tagged; runners that load the image use it
to know which names it answers to.

The script runs this file with the system's python3 (standard library only) to keep its manifests:
    python3 tests/helpers/images.py stale OUT NAME=KEY...     the NAMEs that OUT lacks built under KEY
    python3 tests/helpers/images.py describe ENTRY NAME KEY SECONDS TAG...   ENTRY/image.json from the archive
    python3 tests/helpers/images.py publish OUT ENTRY         add ENTRY/image.json to OUT/manifest.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / ".ci" / "build-images.sh"
BUILD_COMMAND = "bash .ci/build-images.sh"
ALIASES_FILE = ROOT / "tests" / "data" / "image-aliases.txt"
IMAGE_NAMES = ("pause", "osmo-task", "osmo-sidecar")
BUILD_TOOLS = ("mmdebstrap", "umoci", "skopeo", "go")
BUILD_TIMEOUT = 30 * 60  # a cold build of all three takes ~2.5 minutes here


@dataclass(frozen=True)
class ImageArchive:
    """One docker-archive tarball (``podman load -i``, ``ctr -n k8s.io images import``, ``skopeo``)."""

    name: str  # pause, osmo-task or osmo-sidecar
    path: Path
    tags: tuple[str, ...]  # as given to the script, e.g. ubuntu:24.04
    repo_tags: tuple[str, ...]  # as stored in the archive, e.g. docker.io/library/ubuntu:24.04
    image_id: str  # sha256:<digest of the image config>, the id engines show
    key: str  # the cache key the script built it under


def image_aliases(path: Path = ALIASES_FILE) -> list[str]:
    """The names in the alias list, in order ('#' comments and blank lines left out)."""
    names = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [name for name in names if name]


def default_output() -> Path:
    """Where the script writes the archives and manifest.json when not given ``--out``."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "osmo-images" / "out"


# ----------------------------------------------------------------------------- the manifest (both sides)
def _load_images(output: Path) -> dict:
    with open(output / "manifest.json", encoding="utf-8") as f:
        images = json.load(f)["images"]
    if not isinstance(images, dict):
        raise ValueError("'images' is not a mapping")
    return images


def read_manifest(output: Path) -> dict[str, ImageArchive]:
    """The images that ``output/manifest.json`` names, by name."""
    return {name: ImageArchive(name, output / entry["file"], tuple(entry["tags"]), tuple(entry["repo_tags"]),
                               entry["id"], entry["key"])
            for name, entry in _load_images(output).items()}


def is_current(output: Path, name: str, key: str) -> bool:
    """``output`` holds image ``name`` built under ``key`` (the file named, of the size recorded)."""
    try:
        entry = _load_images(output)[name]
        return entry["key"] == key and (output / entry["file"]).stat().st_size == entry["size"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def describe(entry: Path, name: str, key: str, seconds: int, tags: list[str]) -> None:
    """``entry/image.json`` for the archive ``entry/NAME.tar``: its tags as given and as stored (normalised),
    and its image id, the digest of its config (which docker-archive names ``<digest>.json``)."""
    archive = entry / f"{name}.tar"
    with tarfile.open(archive) as tar:
        (image,) = json.load(tar.extractfile("manifest.json"))
    info = {"name": name, "file": archive.name, "tags": tags, "repo_tags": image["RepoTags"],
            "id": "sha256:" + image["Config"].removesuffix(".json"), "size": archive.stat().st_size,
            "key": key, "build_seconds": seconds}
    (entry / "image.json").write_text(json.dumps(info, indent=2), encoding="utf-8")


def publish(output: Path, entry: Path) -> None:
    """Replace ``output/manifest.json`` (atomically) with one that also names the entry's image."""
    try:
        images = _load_images(output)
    except (OSError, ValueError, KeyError, TypeError):
        images = {}
    image = json.loads((entry / "image.json").read_text(encoding="utf-8"))
    images[image["name"]] = image
    temporary = output / "manifest.json.tmp"
    temporary.write_text(json.dumps({"built_by": ".ci/build-images.sh", "images": images}, indent=2,
                                    sort_keys=True), encoding="utf-8")
    os.replace(temporary, output / "manifest.json")


# --------------------------------------------------------------------------------------------- the tests
def run_build_script(*args: str, timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess:
    """``bash .ci/build-images.sh ARGS`` from the checkout, output captured."""
    return subprocess.run(["bash", str(BUILD_SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@lru_cache(maxsize=None)
def image_archives(output: Path | None = None) -> dict[str, ImageArchive]:
    """The three images, built first where the cache lacks them (once per test session)."""
    import pytest

    from helpers.tools import require_tool

    for tool in BUILD_TOOLS:
        require_tool(tool)
    output = output or default_output()
    result = run_build_script("--out", str(output))
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        pytest.fail(f"{BUILD_COMMAND} failed (exit {result.returncode}): {last}; run it to see the whole "
                    f"build ({BUILD_COMMAND} --help)", pytrace=False)
    archives = read_manifest(output)
    missing = [name for name in IMAGE_NAMES if name not in archives or not archives[name].path.is_file()]
    if missing:
        pytest.fail(f"{output / 'manifest.json'} names no archive for {', '.join(missing)}; "
                    f"build them with: {BUILD_COMMAND}", pytrace=False)
    return archives


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "stale":
        for name, key in (pair.split("=", 1) for pair in argv[2:]):
            if not is_current(Path(argv[1]), name, key):
                print(name)
        return 0
    if len(argv) >= 5 and argv[0] == "describe":
        describe(Path(argv[1]), argv[2], argv[3], int(argv[4]), argv[5:])
        return 0
    if len(argv) == 3 and argv[0] == "publish":
        publish(Path(argv[1]), Path(argv[2]))
        return 0
    print("usage: python3 tests/helpers/images.py stale OUT NAME=KEY... | describe ENTRY NAME KEY SECONDS TAG... "
          "| publish OUT ENTRY", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
